"""Unit economics from the ledger (the shell around ``core.economics``).

``usage_slices`` re-rates every finalized period (as billed) and every open period (its
draft now) keeping each line's events, and turns each line into per-day slices: revenue
as the re-rating prices the line (rounded like the invoice line, which an audit proves
it equals; each slice names the invoice line), cost from the line's quantity and cost
rate (rounded once, to the currency's minor unit, by ``money.round_amount``), split over
the days by event count.
Charges that are not usage (fees, minimum-commitment true-ups, discounts) are revenue of
the customer and period on the period's first day, under the meter ``(fee)``,
``(commitment)``, ``(discount)``.

``live_margins`` reads the live projection's figures instead: the current period, as of
now, without a re-rating.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterline.billing.scan import RatingJob
from meterline.billing.service import Billing
from meterline.core.books import day_of
from meterline.core.economics import Margin, UsageSlice, cost_rate, model_of, spread
from meterline.core.events import format_timestamp
from meterline.core.invoicing import usage_lines
from meterline.core.money import round_amount
from meterline.core.periods import local_date

ZERO = Decimal(0)
OTHER_REVENUE = {
    "fee": "(fee)",
    "commitment": "(commitment)",
    "discount": "(discount)",
    "coupon": "(coupon)",
    "trial": "(trial)",
}
"""Invoice line kinds counted as revenue besides usage, and the meter name they get."""


def usage_slices(
    billing: Billing, at_us: int | None = None, customer: str | None = None
) -> list[UsageSlice]:
    """Every slice of rated usage, finalized periods and open ones, as of ``at_us``."""
    slices: list[UsageSlice] = []
    for document, job in billing.rated_periods(at_us, customer):
        slices += _period_slices(billing, document, job)
    return slices


def _period_slices(billing: Billing, document: dict[str, Any], job: RatingJob) -> list[UsageSlice]:
    timezone = str(document.get("timezone") or "UTC")
    currency = str(document["currency"])
    label = str(document["period"]["label"])
    invoice = str(document.get("number") or "draft")
    start_day = day_of(document["period"]["start"], timezone)
    configuration = job.configuration
    stamps = billing.event_days(job.customer, job.period.start_us, job.period.end_us)
    lines: dict[tuple[str, str, str], dict[str, Any]] = {}
    slices: list[UsageSlice] = []
    for line in document["lines"]:
        if line["kind"] == "usage" and "service" in line:
            key = (line["service"]["start"], line["meter"], model_of(line["group"]))
            lines[key] = line
        elif line["kind"] in OTHER_REVENUE:
            slices.append(
                UsageSlice(
                    job.customer,
                    label,
                    start_day,
                    OTHER_REVENUE[line["kind"]],
                    "",
                    "(platform)",
                    str(line.get("plan") or ""),
                    currency,
                    0,
                    ZERO,
                    Decimal(str(line["amount"])),
                    ZERO,
                    invoice,
                    int(line["number"]),
                )
            )
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
        # revenue as the ledger re-rates it (equal to the billed line: meterline audit)
        revenue = rerated.get((segment_index, meter.key, model_of(labels)), ZERO)
        rate = cost_rate(configuration, meter, group, service_start)
        cost = round_amount(quantity * rate, currency) if rate is not None else ZERO
        if revenue == 0 and cost == 0:
            continue
        days: Counter[Any] = Counter(
            local_date(timezone, stamps[sequence])
            for sequence, _ in job.rater.members(segment_index, meter.key, group)
            if sequence in stamps
        )
        for index, (day, events, day_revenue, day_cost) in enumerate(
            spread(sorted(days.items()), revenue, cost, currency)
        ):
            slices.append(
                UsageSlice(
                    job.customer,
                    label,
                    day,
                    meter.key,
                    model,
                    meter.product or meter.key,
                    segment.terms.plan.label,
                    currency,
                    events,
                    quantity if index == 0 else ZERO,  # a line's slices sum to it
                    day_revenue,
                    day_cost,
                    invoice,
                    int(line["number"]) if line else 0,
                )
            )
    return slices


@dataclass(frozen=True, slots=True)
class LiveMargin:
    """One customer's current period (``period``: its first day), live: spend (usage
    revenue so far) and cost."""

    customer: str
    currency: str
    period: str
    revenue: Decimal
    cost: Decimal

    def margin(self) -> Margin:
        return Margin((self.customer,), self.currency, self.revenue, self.cost, 0)


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
