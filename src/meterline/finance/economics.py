"""Unit economics from the ledger (the shell around ``core.economics``).

``period_lines`` reads every finalized period (as billed) and every open period (its
draft now) from the rated-usage buckets when they hold its events (``billing.buckets``,
``drafts.rated_periods``: every customer's open period in one read of the day buckets,
``billing.period_reads``; else re-rates it, keeping each line's events), and turns each
line into one ``LineUsage``: charges at list price as the re-rating prices the line
(rounded like the invoice line, which an audit proves it equals; each slice names the
invoice line), cost from the line's quantity and cost rate (rounded once, to the
currency's minor unit, by ``money.round_amount``), and the line's events per day.
Charges that are not usage (fees, minimum-commitment true-ups, discounts) are charges of
the customer and period on the period's first day, under the meter ``(fee)``,
``(commitment)``, ``(discount)``. Revenue is what the journal (``finance.books``)
recognized in each customer's period, as of the same instant, allocated over the
period's lines (``core.economics.lines_with_revenue``) and then each line's share over
its days (``core.economics.day_slices``): an open period has earned only what was
recognized so far. ``usage_slices`` gives the day slices, or with ``days=False`` one
slice per line (their sums per line are equal, exactly): every report (``economics``,
the dashboard, the finance tables and export) uses this one definition.
``finance.kept_economics`` keeps the lines in a long-lived process.

``live_margins`` reads the live projection's figures instead: the current period, as of
now, without a re-rating; the live engine keeps no journal, so its rows carry the
period's charges at list price (spend), recognize no revenue, and are open (their
margin reads at list price).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext
from typing import Any

from meterline.billing.scan import RatingJob
from meterline.billing.service import Billing
from meterline.core.books import day_of
from meterline.core.documents import FeeLine, Invoice, MeterUsageLine
from meterline.core.economics import (
    OPEN_PERIOD_INVOICE,
    LineUsage,
    Margin,
    UsageSlice,
    cost_rate_of,
    every_day_slice,
    lines_with_revenue,
    model_of,
)
from meterline.core.events import format_timestamp
from meterline.core.invoicing import usage_lines
from meterline.core.journal import CHART, JournalEntry
from meterline.core.money import MONEY_CONTEXT, round_amount
from meterline.core.periods import local_date
from meterline.finance.books import Books, build_books

ZERO = Decimal(0)
OTHER_REVENUE = {
    "fee": "(fee)",
    "commitment": "(commitment)",
    "discount": "(discount)",
    "coupon": "(coupon)",
    "trial": "(trial)",
}
"""Invoice line kinds charged besides usage, and the meter name their slices get."""


def usage_slices(
    billing: Billing,
    at_us: int | None = None,
    customer: str | None = None,
    books: Books | None = None,
    recognized: bool = True,
    days: bool = True,
) -> list[UsageSlice]:
    """Every slice of rated usage, finalized periods and open ones, as of ``at_us``; with
    the revenue ``books`` (built as of ``at_us`` when not given) recognized, unless
    ``recognized`` is False (list-price charges and cost only). ``days``: a slice per line
    per day; False: one per line (``LineUsage.usage``), what a report without ``day``
    needs (summing the day slices gives the same figures exactly)."""
    at = billing.clock() if at_us is None else at_us
    lines, periods = period_lines(billing, at, customer)
    if recognized:
        entries = (books if books is not None else build_books(billing, at)).entries
        lines = lines_with_revenue(lines, recognized_by_period(entries, periods))
    return every_day_slice(lines) if days else [line.usage for line in lines]


Periods = dict[tuple[str, str, str], tuple[date, date]]
"""Each (customer, period label, currency) read: its first day and the day after its last."""


def period_lines(
    billing: Billing, at_us: int, customer: str | None = None
) -> tuple[list[LineUsage], Periods]:
    """Every line of rated usage (no revenue yet) of every finalized period and every
    open one as of ``at_us`` (of ``customer`` only when given), and the periods read."""
    lines: list[LineUsage] = []
    periods: Periods = {}
    for document, job in billing.rated_periods(at_us, customer, from_buckets=True):
        lines += _period_lines(billing, document, job)
        timezone = document.timezone or "UTC"
        period = document.period_span()
        key = (job.customer, period.label, document.currency)
        periods[key] = (day_of(period.start, timezone), day_of(period.end, timezone))
    return lines, periods


def recognized_by_period(
    entries: Iterable[JournalEntry], periods: Mapping[tuple[str, str, str], tuple[date, date]]
) -> dict[tuple[str, str, str], Decimal]:
    """Revenue net of contra-revenue the journal recognized per (customer, period label,
    currency) on the period's days [first, end)."""
    spans: dict[tuple[str, str], list[tuple[date, date, str]]] = {}
    for (customer, label, currency), (first, end) in periods.items():
        spans.setdefault((customer, currency), []).append((first, end, label))
    totals: dict[tuple[str, str, str], Decimal] = {key: ZERO for key in periods}
    with localcontext(MONEY_CONTEXT):
        for item in entries:
            for posting in item.postings:
                if CHART[posting.account] not in ("revenue", "contra_revenue"):
                    continue
                for first, end, label in spans.get((item.customer, posting.currency), []):
                    if first <= item.day < end:
                        key = (item.customer, label, posting.currency)
                        totals[key] -= posting.amount
    return totals


def _period_lines(billing: Billing, document: Invoice, job: RatingJob) -> list[LineUsage]:
    timezone = document.timezone or "UTC"
    currency = document.currency
    label = document.period_span().label
    invoice = document.number or OPEN_PERIOD_INVOICE
    configuration = job.configuration
    # a period read from buckets knows each line's days; a re-rated one reads event times
    stamps = (
        {}
        if job.days is not None
        else billing.event_days(job.customer, job.period.start_us, job.period.end_us)
    )
    lines = {
        (line.service.start, line.meter, model_of(line.group)): line
        for line in document.lines
        if isinstance(line, MeterUsageLine)
    }
    slices = _other_charges(document, job.customer)
    rounding = job.segments[0].terms.plan.billing.rounding if job.segments else "half_up"
    rerated = {
        (rated.segment, rated.detail["meter"], model_of(rated.detail["group"])): round_amount(
            rated.amount, currency, rounding
        )
        for rated in usage_lines(
            job.rater.lines(currency, configuration), job.segments, configuration
        )
    }
    for segment_index, meter, group, quantity, _count in job.rater.quantities():
        segment = job.segments[segment_index]
        labels = dict(zip(meter.group_by, group, strict=True))
        service_start = max(segment.start_us, job.period.start_us)
        line = lines.get((format_timestamp(service_start), meter.key, model_of(labels)))
        model = model_of(labels) or meter.key  # an ungrouped meter is its own "model"
        # charges as the ledger re-rates them (equal to the billed line: meterline audit)
        charges = rerated.get((segment_index, meter.key, model_of(labels)), ZERO)
        rate = cost_rate_of(configuration, meter, group, service_start)
        cost_currency = currency if rate is None else rate.currency
        cost = ZERO if rate is None else round_amount(quantity * rate.per_unit, cost_currency)
        if charges == 0 and cost == 0:
            continue
        days: Counter[Any] = (job.days or {}).get((segment_index, meter.key, group)) or Counter(
            local_date(timezone, stamps[sequence])
            for sequence, _ in job.rater.members(segment_index, meter.key, group)
            if sequence in stamps
        )
        ordered = tuple(sorted(days.items()))
        if not ordered:
            continue
        usage = UsageSlice(
            job.customer,
            label,
            ordered[0][0],
            meter.key,
            model,
            meter.product or meter.key,
            segment.terms.plan.label,
            currency,
            sum(count for _, count in ordered),
            quantity,
            charges,
            cost,
            invoice,
            line.number if line else 0,
            cost_currency="" if cost_currency == currency else cost_currency,
        )
        slices.append(LineUsage(usage, ordered))
    return slices


def _other_charges(document: Invoice, customer: str) -> list[LineUsage]:
    """Fees, commitment true-ups and discounts: charges of the period's first day."""
    timezone = document.timezone or "UTC"
    period = document.period_span()
    return [
        LineUsage(
            UsageSlice(
                customer,
                period.label,
                day_of(period.start, timezone),
                OTHER_REVENUE[line.kind],
                "",
                "(platform)",
                line.plan if isinstance(line, FeeLine) else "",
                document.currency,
                0,
                ZERO,
                Decimal(line.amount),
                ZERO,
                document.number or OPEN_PERIOD_INVOICE,
                line.number,
            )
        )
        for line in document.lines
        if line.kind in OTHER_REVENUE
    ]


@dataclass(frozen=True, slots=True)
class LiveMargin:
    """One customer's current period (``period``: its first day), live: spend (usage
    charged at list price so far) and cost. Nothing is recognized live (the journal
    recognizes a period's usage when it is invoiced)."""

    customer: str
    currency: str
    period: str
    list_price_charges: Decimal
    cost: Decimal

    def margin(self) -> Margin:
        return Margin(
            (self.customer,), self.currency, ZERO, self.cost, 0, self.list_price_charges, True
        )


def live_margins(figures: list[dict[str, Any]]) -> list[LiveMargin]:
    """Live margins from the live engine's figure documents (``Figures.as_dict``, as
    ``GET /v1/live/{customer}`` answers)."""
    result = []
    for item in figures:
        currency = str(item["currency"])
        result.append(
            LiveMargin(
                str(item["customer"]),
                currency,
                str(item.get("period", {}).get("start", ""))[:10],
                # the projection's exact figures, rounded once for a report
                round_amount(Decimal(str(item["spend"])), currency),
                round_amount(Decimal(str(item["cost"])), currency),
            )
        )
    return result
