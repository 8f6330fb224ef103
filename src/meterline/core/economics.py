"""Unit economics (pure): revenue against cost of goods sold, and gross margin.

A row is one slice of rated usage: a customer's usage of one meter and group (the
model, the GPU) on one day of one billing period, with the revenue it earned and what
serving it cost. Revenue and cost of a priced line are split over the line's days in
proportion to its events there (``money.allocate``: the days sum to the line exactly);
a cost-only meter (no price) has cost and no revenue. ``summarize`` adds rows up by any
of their dimensions; a slice whose margin is below zero is flagged.

Cost of one line: its quantity times the most specific cost rate in force (``costs`` in
the pricing file: per meter, optionally per group, effective-dated). A cost carried on
each event (the provider's bill, ``properties.cost_usd``) is a cost-only ``sum`` meter
over that property with a rate of 1: the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, Inexact, localcontext

from meterline.core.meters import Meter
from meterline.core.model import Configuration
from meterline.core.money import MONEY_CONTEXT, allocate

ZERO = Decimal(0)
HUNDRED = Decimal(100)
DIMENSIONS = ("customer", "period", "day", "meter", "model", "product", "plan")
"""What rows can be summarized by."""


@dataclass(frozen=True, slots=True)
class UsageSlice:
    """Rated usage of one line on one day: revenue, cost, events, in ``currency``."""

    customer: str
    period: str
    day: date
    meter: str
    model: str
    product: str
    plan: str
    currency: str
    events: int
    quantity: Decimal
    revenue: Decimal
    cost: Decimal
    invoice: str = ""
    line: int = 0

    def dimension(self, name: str) -> str:
        value = getattr(self, name)
        return value.isoformat() if isinstance(value, date) else str(value)


@dataclass(frozen=True, slots=True)
class Margin:
    """Revenue, cost and gross margin of a group of slices."""

    key: tuple[str, ...]
    currency: str
    revenue: Decimal
    cost: Decimal
    events: int

    @property
    def margin(self) -> Decimal:
        with localcontext(MONEY_CONTEXT):
            return self.revenue - self.cost

    @property
    def margin_percent(self) -> Decimal | None:
        """Margin as a share of revenue, in percent (None without revenue)."""
        if self.revenue == 0:
            return None
        with localcontext(MONEY_CONTEXT) as context:
            context.traps[Inexact] = False  # a ratio for reading, not money
            context.prec = 28
            return (self.margin * HUNDRED / self.revenue).quantize(Decimal("0.1"))

    @property
    def negative(self) -> bool:
        return self.margin < 0


def cost_rate(
    configuration: Configuration, meter: Meter, group: tuple[str | None, ...], at_us: int
) -> Decimal | None:
    """The most specific cost rate of ``meter`` for ``group`` in force at ``at_us``."""
    return next(
        (
            rate.per_unit
            for rate in configuration.cost_rates(meter.key, at_us)
            if rate.applies_to(meter.group_by, group)
        ),
        None,
    )


def model_of(group: Mapping[str, str | None]) -> str:
    """A line's group as one label (``gpt-4o``; ``h100``; ``a/b`` for two dimensions)."""
    return "/".join(str(value) for value in group.values() if value is not None)


def spread(
    days: Sequence[tuple[date, int]], revenue: Decimal, cost: Decimal, currency: str
) -> list[tuple[date, int, Decimal, Decimal]]:
    """A line's revenue and cost over its days, by share of events (exact sums)."""
    if not days:
        return []
    weights = [Decimal(count) for _, count in days]
    if sum(weights) == 0:
        weights = [Decimal(1)] * len(days)
    revenues = _allocate_signed(revenue, weights, currency)
    costs = _allocate_signed(cost, weights, currency)
    return [
        (day, count, day_revenue, day_cost)
        for (day, count), day_revenue, day_cost in zip(days, revenues, costs, strict=True)
    ]


def _allocate_signed(amount: Decimal, weights: list[Decimal], currency: str) -> list[Decimal]:
    sign = -1 if amount < 0 else 1
    return [sign * part for part in allocate(abs(amount), weights, currency)]


def summarize(slices: Iterable[UsageSlice], by: Sequence[str]) -> list[Margin]:
    """Slices added up per value of the ``by`` dimensions (and currency), largest
    revenue first."""
    for name in by:
        if name not in DIMENSIONS:
            raise ValueError(f"by: {name!r} is not one of {', '.join(DIMENSIONS)}")
    totals: dict[tuple[tuple[str, ...], str], list[Decimal]] = {}
    events: dict[tuple[tuple[str, ...], str], int] = {}
    with localcontext(MONEY_CONTEXT):
        for item in slices:
            key = (tuple(item.dimension(name) for name in by), item.currency)
            figures = totals.setdefault(key, [ZERO, ZERO])
            figures[0] += item.revenue
            figures[1] += item.cost
            events[key] = events.get(key, 0) + item.events
    result = [
        Margin(key, currency, revenue, cost, events[(key, currency)])
        for (key, currency), (revenue, cost) in totals.items()
    ]
    result.sort(key=lambda margin: (-margin.revenue, margin.key))
    return result
