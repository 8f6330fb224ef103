"""Revenue allocated over a period's lines, then each line's share over its days
(``core.economics.lines_with_revenue``, ``day_slices``): the day slices of every line sum
to the line exactly, so any summary without ``day`` is the same from lines or from days;
a period's revenue sums to what the books recognized; summaries of disjoint parts add up
(``merge_margins``) to the summary of the whole."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.economics import (
    DIMENSIONS,
    OPEN_PERIOD_INVOICE,
    LineUsage,
    UsageSlice,
    every_day_slice,
    lines_with_revenue,
    merge_margins,
    summarize,
)

FIRST = date(2026, 10, 1)
PERIODS = ("2026-09-01", "2026-10-01")
CURRENCIES = {"USD": Decimal("0.01"), "JPY": Decimal(1)}


@st.composite
def a_line(draw: st.DrawFn) -> LineUsage:
    currency = draw(st.sampled_from(sorted(CURRENCIES)))
    unit = CURRENCIES[currency]
    charges = draw(st.integers(-5_000, 100_000)) * unit
    cost = draw(st.integers(0, 50_000)) * unit
    count = draw(st.integers(0, 6))  # 0: a fee, its one day its own
    offsets = sorted(draw(st.sets(st.integers(0, 30), min_size=count, max_size=count)))
    days = tuple((FIRST + timedelta(days=o), draw(st.integers(0, 40))) for o in offsets)
    usage = UsageSlice(
        draw(st.sampled_from(["acme", "initech", "umbrella"])),
        draw(st.sampled_from(PERIODS)),
        days[0][0] if days else FIRST,
        draw(st.sampled_from(["tokens", "calls", "(fee)"])),
        draw(st.sampled_from(["gpt-4o", "h100", ""])),
        draw(st.sampled_from(["chat", "gpu"])),
        "pro@1",
        currency,
        sum(events for _, events in days),
        Decimal(draw(st.integers(0, 10_000))),
        charges,
        cost,
        draw(st.sampled_from([OPEN_PERIOD_INVOICE, "INV-1"])),
        draw(st.integers(0, 5)),
    )
    return LineUsage(usage, days)


@st.composite
def lines_and_recognized(
    draw: st.DrawFn,
) -> tuple[list[LineUsage], dict[tuple[str, str, str], Decimal]]:
    lines = draw(st.lists(a_line(), max_size=12))
    keys = {(x.usage.customer, x.usage.period, x.usage.currency) for x in lines}
    keys |= set(draw(st.lists(st.tuples(st.just("acme"), st.just(PERIODS[0]), st.just("USD")))))
    recognized = {
        key: draw(st.integers(-20_000, 200_000)) * CURRENCIES[key[2]] for key in sorted(keys)
    }
    return lines, recognized


@settings(max_examples=300, deadline=None)
@given(
    lines_and_recognized(),
    st.lists(st.sampled_from([d for d in DIMENSIONS if d != "day"]), unique=True, max_size=4),
)
def test_summaries_without_day_are_the_same_from_lines_and_from_days(
    drawn: tuple[list[LineUsage], dict[tuple[str, str, str], Decimal]], by: list[str]
) -> None:
    lines, recognized = drawn
    allocated = lines_with_revenue(lines, recognized)
    days = every_day_slice(allocated)
    per_line = [line.usage for line in allocated]
    assert summarize(days, by) == summarize(per_line, by)
    # every line's days sum to the line, field by field
    for line in allocated:
        parts = every_day_slice([line])
        assert (
            sum((p.list_price_charges for p in parts), Decimal(0)) == line.usage.list_price_charges
        )
        assert sum((p.cost for p in parts), Decimal(0)) == line.usage.cost
        assert sum((p.revenue for p in parts), Decimal(0)) == line.usage.revenue
        assert sum((p.quantity for p in parts), Decimal(0)) == line.usage.quantity
        assert sum(p.events for p in parts) == line.usage.events
        assert [p.day for p in parts] == ([d for d, _ in line.days] or [line.usage.day])
    # a period's revenue is what the books recognized, to the minor unit
    totals: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for item in days:
        totals[(item.customer, item.period, item.currency)] += item.revenue
    for key, amount in recognized.items():
        assert totals[key] == amount


@settings(max_examples=200, deadline=None)
@given(lines_and_recognized(), st.lists(st.sampled_from(DIMENSIONS), unique=True, max_size=3))
def test_summaries_of_each_customer_add_up_to_the_summary_of_all(
    drawn: tuple[list[LineUsage], dict[tuple[str, str, str], Decimal]], by: list[str]
) -> None:
    lines, recognized = drawn
    days = every_day_slice(lines_with_revenue(lines, recognized))
    customers = sorted({item.customer for item in days})
    parts = [summarize([s for s in days if s.customer == c], by) for c in customers]
    assert merge_margins(parts) == summarize(days, by)
