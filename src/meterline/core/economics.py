"""Unit economics (pure): recognized revenue against cost of goods sold, and gross margin.

A row is one slice of rated usage: a customer's usage of one meter and group (the
model, the GPU) in one billing period (a *line*: ``LineUsage``), or on one day of it (a
day slice), with what it was charged at list price (``list_price_charges``: the invoice
lines before credits, amounts billed early and the like), the revenue recognized for it
and what serving it cost. A cost-only meter (no price) has cost and no charges.

Revenue is the journal's, allocated in two steps (one definition for every report):
what a customer's period recognized (revenue net of contra-revenue) is allocated over
the period's *lines* in proportion to their positive list-price charges
(``allocate_recognized``, exact: the lines of a period sum to what the books
recognized), so prepaid credit earns at its cost basis and free credit earns nothing;
then each line's share goes over the line's days in proportion to the day slices'
positive charges (``day_slices``). Charges and cost of a line are split over its days in
proportion to its events there (``spread``). Invariant: the day slices of a line sum
exactly to the line (charges, cost, revenue, events, quantity), so summarizing day
slices by dimensions without ``day`` equals summarizing the lines (tested by property:
tests/unit/test_economics_lines.py); a report without ``day`` reads lines alone. (Before
this two-step rule revenue was allocated over the day slices at once; the figures may
differ from that by a minor unit here and there, allocation rounding.) Gross margin is
recognized revenue less cost. ``summarize`` adds rows up by any of their dimensions;
``merge_margins`` adds up summaries of disjoint slices (per customer, say); a slice whose
margin is below zero is flagged.

Cost of one line: its quantity times the most specific cost rate in force (``costs`` in
the pricing file: per meter, optionally per group, effective-dated). A cost carried on
each event (the provider's bill, ``properties.cost_usd``) is a cost-only ``sum`` meter
over that property with a rate of 1: the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal, Inexact, localcontext
from functools import partial
from operator import attrgetter
from typing import cast

from meterline.core.exchange import ExchangeError, ReportingCurrency
from meterline.core.meters import Meter
from meterline.core.model import Configuration, CostRate
from meterline.core.money import MONEY_CONTEXT, allocate
from meterline.core.periods import local_midnight_us

ZERO = Decimal(0)
HUNDRED = Decimal(100)
ONE = Decimal(1)
OPEN_PERIOD_INVOICE = "draft"
"""The invoice a slice of an open period names (its period is drafted, not invoiced)."""
DIMENSIONS = ("customer", "period", "day", "meter", "model", "product", "plan")
"""What rows can be summarized by."""


@dataclass(frozen=True, slots=True)
class UsageSlice:
    """Rated usage of one line on one day: list-price charges, cost, events, in
    ``currency``; ``revenue``: the recognized revenue allocated to it (zero until
    ``allocate_recognized``)."""

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
    list_price_charges: Decimal
    cost: Decimal
    invoice: str = ""
    line: int = 0
    revenue: Decimal = ZERO
    cost_currency: str = ""
    """The currency ``cost`` is in when the provider bills in another than ``currency``
    (empty: the same); ``in_reporting`` converts both into one."""

    def dimension(self, name: str) -> str:
        value = getattr(self, name)
        return value.isoformat() if isinstance(value, date) else str(value)


@dataclass(frozen=True, slots=True)
class Margin:
    """Recognized revenue, cost and gross margin (revenue less cost) of a group of slices,
    with their charges at list price beside them. ``open``: the group holds an open
    period, whose usage the journal recognizes only when the period is invoiced (its
    revenue so far is the recognized part alone, such as prepaid credit consumed)."""

    key: tuple[str, ...]
    currency: str
    revenue: Decimal
    cost: Decimal
    events: int
    list_price_charges: Decimal = ZERO
    open: bool = False

    @property
    def margin(self) -> Decimal:
        with localcontext(MONEY_CONTEXT):
            return self.revenue - self.cost

    @property
    def margin_percent(self) -> Decimal | None:
        """Margin as a share of revenue, in percent (None without revenue)."""
        return share_percent(self.margin, self.revenue)

    @property
    def margin_at_list_price(self) -> Decimal:
        """Charges at list price less cost: what an open period's margin reads so far."""
        with localcontext(MONEY_CONTEXT):
            return self.list_price_charges - self.cost

    @property
    def margin_percent_at_list_price(self) -> Decimal | None:
        """The margin at list price as a share of the charges, in percent."""
        return share_percent(self.margin_at_list_price, self.list_price_charges)

    @property
    def negative(self) -> bool:
        """Cost exceeds revenue: recognized revenue for closed periods; for a group with
        an open period, whose usage is not recognized yet, the charges at list price (a
        period is not flagged for being open)."""
        if self.open:
            return self.margin < 0 and self.margin_at_list_price < 0
        return self.margin < 0


def share_percent(part: Decimal, whole: Decimal) -> Decimal | None:
    """``part`` as a share of ``whole`` in percent, to one decimal (None without a whole):
    a ratio for reading, not money."""
    if whole == 0:
        return None
    with localcontext(MONEY_CONTEXT) as context:
        context.traps[Inexact] = False
        context.prec = 28
        return (part * HUNDRED / whole).quantize(Decimal("0.1"))


def cost_rate_of(
    configuration: Configuration, meter: Meter, group: tuple[str | None, ...], at_us: int
) -> CostRate | None:
    """The most specific cost rate of ``meter`` for ``group`` in force at ``at_us``."""
    return next(
        (
            rate
            for rate in configuration.cost_rates(meter.key, at_us)
            if rate.applies_to(meter.group_by, group)
        ),
        None,
    )


def cost_rate(
    configuration: Configuration, meter: Meter, group: tuple[str | None, ...], at_us: int
) -> Decimal | None:
    """The per-unit cost of ``cost_rate_of``."""
    rate = cost_rate_of(configuration, meter, group, at_us)
    return None if rate is None else rate.per_unit


def in_reporting(slices: Iterable[UsageSlice], reporting: ReportingCurrency) -> list[UsageSlice]:
    """``slices`` in the reporting currency: charges and revenue from the slice's currency,
    cost from its cost currency, each at the rate in force at the start of the slice's day
    (UTC), exact (rounded where it is shown)."""
    result = []
    for item in slices:
        at_us = local_midnight_us("UTC", item.day)
        convert = partial(reporting.exact, at_us=at_us)
        result.append(
            replace(
                item,
                currency=reporting.currency,
                cost_currency="",
                list_price_charges=convert(item.list_price_charges, item.currency),
                revenue=convert(item.revenue, item.currency),
                cost=convert(item.cost, item.cost_currency or item.currency),
            )
        )
    return result


def _one_currency(item: UsageSlice) -> None:
    if item.cost_currency and item.cost_currency != item.currency:
        raise ExchangeError(
            f"economics: {item.customer} is billed in {item.currency} and its {item.meter}"
            f" costs are in {item.cost_currency}; declare a reporting currency (the pricing"
            " file's reporting section) and read margin in it (--reporting)"
        )


def model_of(group: Mapping[str, str | None]) -> str:
    """A line's group as one label (``gpt-4o``; ``h100``; ``a/b`` for two dimensions)."""
    return "/".join(str(value) for value in group.values() if value is not None)


def spread(
    days: Sequence[tuple[date, int]], revenue: Decimal, cost: Decimal, currency: str
) -> list[tuple[date, int, Decimal, Decimal]]:
    """A line's list-price charges and cost over its days, by share of events (exact
    sums)."""
    if not days:
        return []
    weights = [Decimal(count) for _, count in days]
    if sum(weights) == 0:
        weights = [Decimal(1)] * len(days)
    revenues = (
        _allocate_signed(revenue, weights, currency) if revenue else _zeros(revenue, days, currency)
    )
    costs = _allocate_signed(cost, weights, currency) if cost else _zeros(cost, days, currency)
    return [
        (day, count, day_revenue, day_cost)
        for (day, count), day_revenue, day_cost in zip(days, revenues, costs, strict=True)
    ]


def _zeros(amount: Decimal, days: Sequence[tuple[date, int]], currency: str) -> list[Decimal]:
    """``_allocate_signed`` of a zero ``amount`` over whole-number weights (event counts),
    without dividing it once a day: every share is the one a single weight gets (zero
    times a whole number over a whole number keeps the zero's exponent whatever the
    weights, and the floor to minor units then treats each share alike)."""
    return _allocate_signed(amount, [ONE], currency) * len(days)


def _allocate_signed(amount: Decimal, weights: list[Decimal], currency: str) -> list[Decimal]:
    sign = -1 if amount < 0 else 1
    return [sign * part for part in allocate(abs(amount), weights, currency)]


def with_revenue(item: UsageSlice, revenue: Decimal) -> UsageSlice:
    """``dataclasses.replace(item, revenue=revenue)``, made directly (a hundred thousand
    slices a read: ``replace`` costs several times the constructor)."""
    return UsageSlice(
        item.customer, item.period, item.day, item.meter, item.model, item.product,
        item.plan, item.currency, item.events, item.quantity, item.list_price_charges,
        item.cost, item.invoice, item.line, revenue, item.cost_currency,
    )  # fmt: skip


def allocate_recognized(
    slices: Sequence[UsageSlice], recognized: Mapping[tuple[str, str, str], Decimal]
) -> list[UsageSlice]:
    """``slices`` with ``revenue`` set: what the books recognized for each (customer,
    period, currency) allocated over that period's slices by their positive list-price
    charges (exact: they sum to it). A period whose slices charged nothing (or that has
    none) gets one slice ``(recognized)`` with the revenue alone."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for index, item in enumerate(slices):
        groups.setdefault((item.customer, item.period, item.currency), []).append(index)
    result = list(slices)
    for key in sorted(set(groups) | set(recognized)):
        amount = recognized.get(key, ZERO)
        members = groups.get(key, [])
        weights = [max(ZERO, slices[index].list_price_charges) for index in members]
        if any(weights):
            for index, part in zip(members, _allocate_signed(amount, weights, key[2]), strict=True):
                result[index] = with_revenue(slices[index], part)
        elif amount != 0:
            customer, period, currency = key
            result.append(
                UsageSlice(
                    customer, period, date.fromisoformat(period), "(recognized)", "",
                    "(platform)", "", currency, 0, ZERO, ZERO, ZERO, revenue=amount,
                )
            )  # fmt: skip
    return result


def _key_of(by: Sequence[str]) -> Callable[[UsageSlice], tuple[str, ...]]:
    """A slice's values of the ``by`` dimensions as text (``UsageSlice.dimension``);
    without ``day`` (the one dimension that is not text) read straight off the slice."""
    if "day" in by or not by:
        return lambda item: tuple(item.dimension(name) for name in by)
    if len(by) == 1:
        (name,) = by
        return lambda item: (getattr(item, name),)
    return cast(Callable[[UsageSlice], tuple[str, ...]], attrgetter(*by))


def summarize(slices: Iterable[UsageSlice], by: Sequence[str]) -> list[Margin]:
    """Slices added up per value of the ``by`` dimensions (and currency), largest
    revenue first."""
    for name in by:
        if name not in DIMENSIONS:
            raise ValueError(f"by: {name!r} is not one of {', '.join(DIMENSIONS)}")
    totals: dict[tuple[tuple[str, ...], str], list[Decimal]] = {}
    events: dict[tuple[tuple[str, ...], str], int] = {}
    opened: set[tuple[tuple[str, ...], str]] = set()  # groups holding an open period
    named = _key_of(by)
    with localcontext(MONEY_CONTEXT):
        for item in slices:
            _one_currency(item)
            key = (named(item), item.currency)
            figures = totals.setdefault(key, [ZERO, ZERO, ZERO])
            figures[0] += item.revenue
            figures[1] += item.cost
            figures[2] += item.list_price_charges
            events[key] = events.get(key, 0) + item.events
            if item.invoice == OPEN_PERIOD_INVOICE:
                opened.add(key)
    result = [
        Margin(*group, revenue, cost, events[group], charges, group in opened)
        for group, (revenue, cost, charges) in totals.items()
    ]
    result.sort(key=lambda margin: (-margin.revenue, -margin.list_price_charges, margin.key))
    return result


@dataclass(frozen=True, slots=True)
class LineUsage:
    """One line of a period as a slice (``usage``: the line's whole charges, cost, events
    and quantity, its ``day`` the line's first) and its events per day, in day order;
    ``days`` empty: a charge of one day (a fee, a true-up), the slice is its own day."""

    usage: UsageSlice
    days: tuple[tuple[date, int], ...] = ()


def lines_with_revenue(
    lines: Sequence[LineUsage], recognized: Mapping[tuple[str, str, str], Decimal]
) -> list[LineUsage]:
    """``lines`` with the revenue of ``allocate_recognized`` (over the lines), in the same
    order; a period whose lines charged nothing gets its ``(recognized)`` line after."""
    allocated = allocate_recognized([line.usage for line in lines], recognized)
    result = [LineUsage(item, line.days) for item, line in zip(allocated, lines, strict=False)]
    result += [LineUsage(item) for item in allocated[len(lines) :]]
    return result


def day_slices(line: LineUsage) -> list[UsageSlice]:
    """The line's slice per day: charges and cost by share of events (``spread``), the
    line's revenue by share of the days' positive charges (all on the first day when no
    day charged), the quantity on the first day; they sum to the line exactly."""
    item = line.usage
    if not line.days:
        return [item]
    spread_days = spread(line.days, item.list_price_charges, item.cost, item.currency)
    weights = [max(ZERO, charges) for _, _, charges, _ in spread_days]
    if not item.revenue:
        revenues = _zeros(item.revenue, line.days, item.currency)
    elif any(weights):
        revenues = _allocate_signed(item.revenue, weights, item.currency)
    else:
        revenues = [item.revenue] + [ZERO] * (len(line.days) - 1)
    return [
        UsageSlice(
            item.customer,
            item.period,
            day,
            item.meter,
            item.model,
            item.product,
            item.plan,
            item.currency,
            events,
            item.quantity if index == 0 else ZERO,
            charges,
            cost,
            item.invoice,
            item.line,
            revenue,
            item.cost_currency,
        )
        for index, ((day, events, charges, cost), revenue) in enumerate(
            zip(spread_days, revenues, strict=True)
        )
    ]


def every_day_slice(lines: Iterable[LineUsage]) -> list[UsageSlice]:
    """``day_slices`` of every line, in order."""
    result: list[UsageSlice] = []
    for line in lines:
        result += day_slices(line)
    return result


def merge_margins(parts: Iterable[Iterable[Margin]]) -> list[Margin]:
    """Summaries (``summarize`` by the same dimensions) of disjoint sets of slices added up
    into the summary of their union, in ``summarize``'s order."""
    merged: dict[tuple[tuple[str, ...], str], Margin] = {}
    with localcontext(MONEY_CONTEXT):
        for part in parts:
            for item in part:
                group = (item.key, item.currency)
                known = merged.get(group)
                merged[group] = item if known is None else Margin(
                    item.key, item.currency, known.revenue + item.revenue,
                    known.cost + item.cost, known.events + item.events,
                    known.list_price_charges + item.list_price_charges,
                    known.open or item.open,
                )  # fmt: skip
    result = list(merged.values())
    result.sort(key=lambda margin: (-margin.revenue, -margin.list_price_charges, margin.key))
    return result
