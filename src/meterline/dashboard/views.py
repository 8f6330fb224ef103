"""What the dashboard's pages show, shaped from finance's figures (pure: no I/O, no clock).

The route handlers (``routes.py``) read the ledger, billing and the live engine; these
functions turn what they read into rows and charts, and format figures for reading.
Figures stay exact ``Decimal`` in every row and total; only the text a page shows is
written by ``core.money``'s display: an amount at its currency's minor unit (a credit
type exactly, trimmed), quantities and percentages without exponents. Dates are ISO 8601.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, localcontext
from typing import Any

from meterline.core.control_policies import Block
from meterline.core.cuts import Cut
from meterline.core.economics import Margin
from meterline.core.journal import CHART, DEFERRED, Balances, JournalEntry, Rollforward
from meterline.core.money import (
    MONEY_CONTEXT,
    display_amount,
    display_figure,
    display_quantity,
    round_amount,
    to_decimal,
)
from meterline.dashboard.charts import Series, line_chart, stacked_bar_chart

ZERO = Decimal(0)
NO_VALUE = "\u2013"
"""What a page shows for a figure that does not exist (an en dash)."""
EVENTFUL_KINDS = ("usage", "adjustment")
"""Invoice line kinds with ledger events behind them (the rest have no lineage)."""


# -- formatting ---------------------------------------------------------------------------


def money(value: Decimal | str | int | None, unit: str) -> str:
    """An amount in ``unit`` for reading (``core.money.display_amount``): ``1,234.50`` in
    USD, ``19,999.5`` in credits; a dash for None. The unit is required: every amount on a
    page is in a currency or a credit type."""
    if value is None or value == "":
        return NO_VALUE
    return display_amount(decimal_of(value), unit or "")


def quantity(value: Decimal | str | int | None) -> str:
    """A quantity for reading: exact, thousands separated, no exponent; a dash for None."""
    if value is None or value == "":
        return NO_VALUE
    return display_quantity(decimal_of(value))


def is_negative(value: Decimal | str | int | None) -> bool:
    """Whether a figure (a Decimal, or a document's decimal string) is below zero."""
    return value is not None and value != "" and decimal_of(value) < 0


def percent(value: Decimal | None) -> str:
    """A margin percentage at one place (``27.2%``); a dash without revenue to divide by."""
    return NO_VALUE if value is None else f"{display_quantity(value, 1)}%"


def decimal_of(value: Any) -> Decimal:
    """A figure from a document (an exact decimal string, or a Decimal) as a Decimal."""
    return to_decimal(value, "figure")


def key_label(key: Sequence[str]) -> str:
    """A summary row's key for reading: its parts joined, ``(none)`` for empty ones."""
    return " / ".join(part or "(none)" for part in key)


def compact_json(value: Any) -> str:
    """A small document on one line (event properties, a firing's observed values)."""
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


def short_hash(value: str, length: int = 12) -> str:
    return value[:length] + "…" if len(value) > length else value


# -- margins ------------------------------------------------------------------------------


def totals_by_currency(margins: Iterable[Margin], label: str = "total") -> list[Margin]:
    """Margins added up per currency (e.g. every customer's current period, live)."""
    totals: dict[str, list[Decimal]] = {}
    with localcontext(MONEY_CONTEXT):
        for item in margins:
            figures = totals.setdefault(item.currency, [ZERO, ZERO])
            figures[0] += item.revenue
            figures[1] += item.cost
    return [
        Margin((label,), currency, revenue, cost, 0)
        for currency, (revenue, cost) in sorted(totals.items())
    ]


def daily_chart(by_day: Sequence[Margin], currency: str) -> str:
    """Revenue, cost and margin per day in ``currency`` as a line chart; days without
    usage between the first and the last are drawn at zero, not skipped."""
    days = {date.fromisoformat(m.key[0]): m for m in by_day if m.currency == currency}
    title = f"Usage revenue, cost and margin per day ({currency})"
    if not days:
        return line_chart(title, [], [], unit=currency)
    first, last = min(days), max(days)
    labels: list[str] = []
    revenue: list[Decimal] = []
    cost: list[Decimal] = []
    margin: list[Decimal] = []
    day = first
    while day <= last:
        item = days.get(day)
        labels.append(day.isoformat())
        revenue.append(item.revenue if item else ZERO)
        cost.append(item.cost if item else ZERO)
        margin.append(item.margin if item else ZERO)
        day += timedelta(days=1)
    series = [
        Series("revenue", tuple(revenue)),
        Series("cost", tuple(cost)),
        Series("margin", tuple(margin)),
    ]
    return line_chart(title, labels, series, unit=currency)


# -- customers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockView:
    """One active block as the pages show it."""

    policy: str
    features: str
    reason: str
    since: str


def block_views(blocks: Iterable[Block], format_time: Callable[[int], str]) -> list[BlockView]:
    """Active blocks for reading (``format_time`` writes a microsecond instant)."""
    return [
        BlockView(
            block.policy,
            ", ".join(block.features) if block.features else "all features",
            block.reason,
            format_time(block.since_us),
        )
        for block in blocks
    ]


def status_text(blocks: Sequence[BlockView]) -> str:
    """``allowed``, ``blocked`` (everything) or ``blocked: a, b`` (those features)."""
    if not blocks:
        return "allowed"
    if any(block.features == "all features" for block in blocks):
        return "blocked"
    return "blocked: " + ", ".join(sorted({block.features for block in blocks}))


@dataclass(frozen=True, slots=True)
class CustomerRow:
    """A customer's line on the customers page: status and this period's live figures."""

    customer: str
    plan: str
    status: str
    blocks: list[BlockView]
    remaining: dict[str, str]
    live: Margin | None
    period: str

    @property
    def blocked(self) -> bool:
        return bool(self.blocks)


def live_margin(figures: Mapping[str, Any] | None) -> Margin | None:
    """A live figures document (``LiveLink.figures``) as a margin: spend against cost,
    the projection's exact figures rounded once (``money.round_amount``) for the page."""
    if figures is None:
        return None
    currency = str(figures["currency"])
    return Margin(
        (str(figures["customer"]),),
        currency,
        round_amount(decimal_of(figures["spend"]), currency),
        round_amount(decimal_of(figures["cost"]), currency),
        sum(int(line["events"]) for line in figures.get("lines", ())),
    )


def period_text(figures: Mapping[str, Any] | None) -> str:
    """A live figures document's period as ``start to end`` (ISO dates)."""
    if figures is None:
        return NO_VALUE
    period = figures["period"]
    return f"{period['start'][:10]} {NO_VALUE} {period['end'][:10]}"


def customer_row(
    customer: str, plan: str, blocks: list[BlockView], figures: Mapping[str, Any] | None
) -> CustomerRow:
    remaining = dict(figures.get("remaining", {})) if figures else {}
    return CustomerRow(
        customer,
        plan,
        status_text(blocks),
        blocks,
        {unit: money(value, unit) for unit, value in sorted(remaining.items())},
        live_margin(figures),
        period_text(figures),
    )


# -- invoices -----------------------------------------------------------------------------


def has_events(line: Mapping[str, Any]) -> bool:
    """Whether a line has ledger events behind it (a page of events, proofs)."""
    lineage = line.get("lineage")
    return (
        line.get("kind") in EVENTFUL_KINDS
        and isinstance(lineage, Mapping)
        and int(lineage.get("events") or 0) > 0
    )


def group_text(group: Any) -> str:
    if not group:
        return ""
    return ", ".join(f"{name}={value}" for name, value in sorted(group.items()))


# -- revenue ------------------------------------------------------------------------------


def month_bounds(month: str) -> tuple[date, date]:
    """The first and last day of ``YYYY-MM``."""
    year, number = (int(part) for part in month.split("-"))
    return date(year, number, 1), date(year, number, calendar.monthrange(year, number)[1])


def _account_order(account: str) -> tuple[int, str]:
    kinds = ("asset", "liability", "revenue", "contra_revenue", "expense")
    return kinds.index(CHART[account]) if account in CHART else len(kinds), account


@dataclass(frozen=True, slots=True)
class WaterfallTable:
    """Revenue recognized per month and account in one currency, with totals."""

    currency: str
    months: list[str]
    accounts: list[str]
    cells: dict[tuple[str, str], Decimal]
    month_totals: dict[str, Decimal]
    account_totals: dict[str, Decimal]
    total: Decimal
    chart: str


def waterfall_tables(waterfall: Mapping[tuple[str, str, str], Decimal]) -> list[WaterfallTable]:
    """The waterfall (``Books.waterfall``) as one table and stacked-bar chart per currency."""
    tables = []
    for currency in sorted({key[2] for key in waterfall}):
        cells = {(m, a): v for (m, a, c), v in waterfall.items() if c == currency}
        months = sorted({m for m, _ in cells})
        accounts = sorted({a for _, a in cells}, key=_account_order)
        with localcontext(MONEY_CONTEXT):
            month_totals = {
                m: sum((cells.get((m, a), ZERO) for a in accounts), ZERO) for m in months
            }
            account_totals = {
                a: sum((cells.get((m, a), ZERO) for m in months), ZERO) for a in accounts
            }
            total = sum(month_totals.values(), ZERO)
        series = [
            Series(account, tuple(cells.get((m, account), ZERO) for m in months))
            for account in accounts
        ]
        chart = stacked_bar_chart(
            f"Revenue recognized per month and account ({currency})", months, series, unit=currency
        )
        tables.append(
            WaterfallTable(
                currency, months, accounts, cells, month_totals, account_totals, total, chart
            )
        )
    return tables


@dataclass(frozen=True, slots=True)
class RollforwardRow:
    """Deferred revenue of one account over one month (``month``, its local label): the
    account's roll-forward over it, opening + billed - recognized = closing."""

    month: str
    rollforward: Rollforward


def rollforward_rows(
    per_month: Iterable[tuple[str, Sequence[Rollforward]]],
) -> list[RollforwardRow]:
    """Each month's roll-forwards (``Books.rollforwards`` over the month), leaving out
    accounts that never moved."""
    rows = []
    for month, rollforwards in per_month:
        for item in rollforwards:
            if item.account not in DEFERRED:
                continue
            if not (item.opening or item.billed or item.recognized or item.closing):
                continue
            rows.append(RollforwardRow(month, item))
    return rows


@dataclass(frozen=True, slots=True)
class BalanceRow:
    account: str
    kind: str
    currency: str
    debit: Decimal | None
    credit: Decimal | None


@dataclass(frozen=True, slots=True)
class TrialBalance:
    rows: list[BalanceRow]
    debits: dict[str, Decimal]
    credits: dict[str, Decimal]

    @property
    def balanced(self) -> bool:
        return all(self.debits[c] == self.credits.get(c, ZERO) for c in self.debits) and all(
            c in self.debits for c in self.credits
        )


def trial_balance(balances: Balances) -> TrialBalance:
    """The trial balance as debit and credit columns, with each currency's totals (equal
    when the books balance)."""
    rows = []
    debits: dict[str, Decimal] = {}
    credits: dict[str, Decimal] = {}
    with localcontext(MONEY_CONTEXT):
        for (account, currency), value in sorted(
            balances.items(), key=lambda item: (item[0][1], _account_order(item[0][0]))
        ):
            debit = value if value > 0 else None
            credit = -value if value < 0 else None
            debits[currency] = debits.get(currency, ZERO) + (debit or ZERO)
            credits[currency] = credits.get(currency, ZERO) + (credit or ZERO)
            rows.append(BalanceRow(account, CHART.get(account, ""), currency, debit, credit))
    return TrialBalance(rows, debits, credits)


@dataclass(frozen=True, slots=True)
class JournalRow:
    entry_id: str
    day: str
    description: str
    cause: str
    customer: str
    postings: list[tuple[str, Decimal, str]]


def journal_rows(entries: Sequence[JournalEntry], limit: int) -> list[JournalRow]:
    """The latest ``limit`` journal entries, newest first."""
    latest = sorted(entries, key=lambda item: (item.day, item.entry_id), reverse=True)[:limit]
    return [
        JournalRow(
            item.entry_id,
            item.day.isoformat(),
            item.description,
            item.cause,
            item.customer,
            [(p.account, p.amount, p.currency) for p in item.postings],
        )
        for item in latest
    ]


# -- controls -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FiringRow:
    """A control firing on the controls page; ``observed`` are the exact figures the
    control compared (``core.money.display_figure``: never rounded, never ``0E-7``)."""

    firing: str
    at: str
    customer: str
    policy: str
    kind: str
    level: str
    crossing: int
    observed: str
    actions: str
    results: str


def firing_rows(
    documents: Iterable[Mapping[str, Any]], results: Mapping[tuple[int, str], Any]
) -> list[FiringRow]:
    """Firings (``firing_document``) newest first, with what each action did."""
    rows = []
    for document in documents:
        number = int(str(document["firing"]).split("-")[-1])
        done = {
            action: results[(number, action)]
            for action in document["actions"]
            if (number, action) in results
        }
        rows.append(
            FiringRow(
                str(document["firing"]),
                str(document["at"]),
                str(document["customer"]),
                str(document["policy"]),
                str(document["kind"]),
                str(document["level"]),
                int(document["crossing"]),
                ", ".join(
                    f"{k}={display_figure(v)}" for k, v in sorted(document["observed"].items())
                ),
                ", ".join(document["actions"]),
                compact_json(done) if done else "",
            )
        )
    rows.sort(key=lambda row: (row.at, row.firing), reverse=True)
    return rows


# -- unbillable usage -----------------------------------------------------------------------

UNBILLABLE_ROWS = 200
"""Unbillable records listed on the page (their count is always shown)."""


@dataclass(frozen=True, slots=True)
class UnbillableView:
    """The unbillable usage page: events per customer and reason, and the records."""

    summary: list[dict[str, Any]]
    records: list[dict[str, Any]]
    records_total: int
    events: int
    failed: list[dict[str, Any]]
    through: str
    """The ledger cut the report was derived through."""


def unbillable_view(
    document: Mapping[str, Any], meanings: Mapping[str, str], limit: int = UNBILLABLE_ROWS
) -> UnbillableView:
    """An unbillable usage report (``UnbillableReport.as_dict``) as the page shows it: one
    summary row per customer and reason (with what the reason ``meanings`` say), then the
    first ``limit`` records."""
    summary = []
    records: list[dict[str, Any]] = []
    for customer in document["customers"]:
        for reason, events in customer["reasons"].items():
            summary.append(
                {
                    "customer": customer["customer"],
                    "reason": reason,
                    "meaning": meanings.get(reason, ""),
                    "events": events,
                }
            )
        records.extend(customer["usage"])
    return UnbillableView(
        summary,
        records[:limit],
        len(records),
        document["events"],
        list(document["failed"]),
        str(Cut.from_json(document["through"])),
    )
