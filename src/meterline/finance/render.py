"""Finance's figures as Rich tables, for the CLI and the demo (no I/O of its own).

Amounts are written by ``core.money``'s display, at their currency's minor unit; the
reports stay exact (``--json``), so a rounded column may differ from its rounded total by
a cent. The one-truth table is a proof: its figures are shown exactly (without exponent
notation), since the point is that they are equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from rich.table import Table

from meterline.core.economics import Margin
from meterline.core.money import display_amount, display_figure, display_quantity
from meterline.core.revenue_bridge import Bridge
from meterline.finance.truth import TruthReport


def _amount(value: str, currency: str | None) -> str:
    """A report's exact amount for reading ('' stays ''); exactly when the currency is
    not one (a total over several currencies)."""
    if value == "":
        return ""
    return display_quantity(value) if currency is None else display_amount(value, currency)


def _one_currency(rows: Iterable[dict[str, Any]]) -> str | None:
    """The currency every row is in, or None when they differ (or there are none)."""
    currencies = {row["currency"] for row in rows}
    return currencies.pop() if len(currencies) == 1 else None


def margin_table(
    rows: Sequence[Margin], dimensions: Sequence[str], title: str, live: bool = False
) -> Table:
    """Recognized revenue, COGS, margin (revenue - COGS), margin % and the charges at list
    price per row; a negative margin is flagged, a row holding an open period (whose usage
    the journal recognizes at its close) is marked. ``live``: the live projection's rows,
    which recognize nothing: charges at list price, COGS and the margin on those."""
    table = Table(title=title)
    for name in dimensions:
        table.add_column(name)
    columns = (
        ("list-price charges", "COGS", "margin at list price", "margin %", "")
        if live
        else ("revenue", "COGS", "margin", "margin %", "list-price charges", "")
    )
    for column in columns:
        table.add_column(column, justify="right")
    for margin in rows:
        currency = margin.currency
        if live:
            at_list = margin.margin_at_list_price
            table.add_row(
                *margin.key,
                f"{display_amount(margin.list_price_charges, currency)} {currency}",
                display_amount(margin.cost, currency),
                display_amount(at_list, currency),
                _percent(margin.margin_percent_at_list_price),
                "[red]negative margin[/red]" if at_list < 0 else "",
            )
            continue
        flag = "[red]negative margin[/red]" if margin.negative else ""
        if margin.open:
            flag = " ".join(filter(None, (flag, "open period")))
        table.add_row(
            *margin.key,
            f"{display_amount(margin.revenue, currency)} {currency}",
            display_amount(margin.cost, currency),
            display_amount(margin.margin, currency),
            _percent(margin.margin_percent),
            display_amount(margin.list_price_charges, currency),
            flag,
        )
    return table


def _percent(share: Decimal | None) -> str:
    return "" if share is None else f"{display_quantity(share, 1)}%"


def revenue_tables(reports: dict[str, Any]) -> list[Table]:
    """The waterfall, the deferred revenue roll-forward and the trial balance."""
    months = reports["months"]
    waterfall = Table(title="Revenue waterfall (recognized, by month)")
    waterfall.add_column("account")
    for name in months:
        waterfall.add_column(name, justify="right")
    waterfall.add_column("total", justify="right")
    for row in reports["waterfall"]:
        currency = row["currency"]
        waterfall.add_row(
            f"{row['account']} ({currency})",
            *[_amount(row["months"].get(name, ""), currency) for name in months],
            _amount(row["total"], currency),
        )
    # the month totals add every row up, whatever its currency: in one currency they are
    # amounts in it; over several, exact sums
    overall = _one_currency(reports["waterfall"])
    waterfall.add_row(
        "[bold]total[/bold]",
        *[_amount(reports["waterfall_totals"][name], overall) for name in months],
        "",
    )
    rolled = Table(title="Deferred revenue roll-forward")
    for column in ("month", "account", "opening", "+ billed", "- recognized", "= closing"):
        rolled.add_column(column, justify="left" if column in ("month", "account") else "right")
    for row in reports["rollforward"]:
        rolled.add_row(
            row["month"],
            f"{row['account']} ({row['currency']})",
            *(
                _amount(row[name], row["currency"])
                for name in ("opening", "billed", "recognized", "closing")
            ),
        )
    dated = f" at the end of {reports['balances_at']}" if reports.get("balances_at") else ""
    trial = Table(title=f"Trial balance{dated} as of {reports['as_of']}")
    for column in ("account", "debit", "credit"):
        trial.add_column(column, justify="left" if column == "account" else "right")
    for row in reports["trial_balance"]:
        currency = row["currency"]
        trial.add_row(
            f"{row['account']} ({currency})",
            _amount(row["debit"], currency),
            _amount(row["credit"], currency),
        )
    totals = reports["trial_balance_totals"]
    overall = _one_currency(reports["trial_balance"])
    trial.add_row(
        "[bold]total[/bold]", _amount(totals["debit"], overall), _amount(totals["credit"], overall)
    )
    return [waterfall, rolled, trial]


def truth_table(truth: TruthReport) -> Table:
    """The chain's steps side by side: each figure and what it must equal."""
    table = Table(title="One truth: events -> rated usage -> invoices -> journal -> reports")
    for column in ("step", "figure", "this step", "must equal", "from", ""):
        table.add_column(column)
    for check in truth.checks:
        mark = "ok" if check.agrees else "[red]DIFFERS[/red]"
        value, expected = display_figure(check.value), display_figure(check.expected)
        table.add_row(check.step, check.figure, value, expected, check.source, mark)
    verdict = "one truth" if truth.agrees else "DIFFERENT"
    table.caption = f"{verdict}: {len(truth.checks)} checks"
    return table


CAUSES_SHOWN = 3
"""How many of a bridge line's causes its table names before counting the rest (every
cause is in ``--json``)."""


def bridge_table(bridge: Bridge, title: str) -> Table:
    """A bridge as a table: the starting figure, each reason with its amount and the first
    of its causes, and the figure it closes to."""
    currency = bridge.currency
    table = Table(title=title)
    table.add_column("")
    table.add_column(currency, justify="right")
    table.add_column("causes")
    table.add_row(f"[bold]{bridge.start_name}[/bold]", display_amount(bridge.start, currency), "")
    for line in bridge.lines:
        shown = ", ".join(line.causes[:CAUSES_SHOWN])
        more = len(line.causes) - CAUSES_SHOWN
        table.add_row(
            line.reason,
            display_amount(line.amount, currency),
            shown + (f" and {more} more" if more > 0 else ""),
        )
    table.add_row(f"[bold]= {bridge.end_name}[/bold]", display_amount(bridge.end, currency), "")
    return table
