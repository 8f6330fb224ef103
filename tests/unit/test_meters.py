"""Meters: events to exact quantities, filters, groups, problems as data."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meterline.core.meters import Meter, PropertyFilter, measure, meter_errors

EVENTS: list[tuple[int, int, str, dict[str, Any]]] = [
    (1, 100, "llm.completion", {"model": "gpt-4o", "input_tokens": 1200, "user": "u1"}),
    (2, 300, "llm.completion", {"model": "gpt-4o", "input_tokens": "800", "user": "u2"}),
    (3, 200, "llm.completion", {"model": "claude", "input_tokens": D("0.5"), "user": "u1"}),
    (4, 250, "embedding.create", {"model": "embed", "tokens": 10}),
    (
        5,
        50,
        "llm.completion",
        {"model": "claude", "input_tokens": 700, "user": "u3", "usage": {"cached": 40}},
    ),
]


def quantities(meter: Meter) -> dict[tuple[str | None, ...], D]:
    return measure(meter, EVENTS).quantities()


def test_each_aggregation() -> None:
    """count, sum, max, unique_count and latest over the same events."""

    def meter(aggregation: str, prop: str | None = "input_tokens") -> Meter:
        return Meter("m", "llm.completion", aggregation, prop)  # type: ignore[arg-type]

    assert quantities(meter("count", None)) == {(): D(4)}
    assert quantities(meter("sum")) == {(): D("2700.5")}
    assert quantities(meter("max")) == {(): D(1200)}
    assert quantities(meter("unique_count", "user")) == {(): D(3)}
    assert quantities(meter("latest")) == {(): D(800)}


def test_numeric_strings_are_exact() -> None:
    """ "0.1" ten times sums to exactly 1, as does Decimal 0.1."""
    events = [(n, n, "t", {"v": "0.1" if n % 2 else D("0.1")}) for n in range(10)]
    assert measure(Meter("m", "t", "sum", "v"), events).quantities() == {(): D(1)}


def test_group_by_model() -> None:
    """Grouping by model gives one quantity per model."""
    meter = Meter("tokens", "llm.completion", "sum", "input_tokens", group_by=("model",))
    assert quantities(meter) == {("claude",): D("700.5"), ("gpt-4o",): D(2000)}


def test_filters_equals_one_of_exists() -> None:
    """Filters select by equality, membership and existence of a property."""
    by_model = Meter(
        "m", "llm.completion", "count", filters=(PropertyFilter("model", equals="claude"),)
    )
    assert quantities(by_model) == {(): D(2)}
    by_users = Meter(
        "m", "llm.completion", "count", filters=(PropertyFilter("user", one_of=("u1", "u3")),)
    )
    assert quantities(by_users) == {(): D(3)}
    cached = Meter(
        "m",
        "llm.completion",
        "sum",
        "usage.cached",
        filters=(PropertyFilter("usage.cached", exists=True),),
    )
    assert quantities(cached) == {(): D(40)}


def test_unmeasurable_events_are_problems_not_zero() -> None:
    """A missing or non-numeric value is reported with its sequence, not counted as 0."""
    events = [
        (1, 1, "t", {"v": 5}),
        (2, 2, "t", {}),
        (3, 3, "t", {"v": "lots"}),
        (4, 4, "t", {"v": True}),
    ]
    measurement = measure(Meter("m", "t", "sum", "v"), events)
    assert measurement.quantities() == {(): D(5)}
    assert [(p.sequence, p.reason) for p in measurement.problems] == [
        (2, "v is missing"),
        (3, "v='lots' is not a number"),
        (4, "v=True is not a number"),
    ]


def test_accumulator_tracks_lineage_bounds() -> None:
    """Each group knows its event count and first/last ledger sequence."""
    meter = Meter("m", "llm.completion", "count", group_by=("model",))
    groups = measure(meter, EVENTS).groups
    claude = groups[("claude",)]
    assert (claude.events, claude.first_sequence, claude.last_sequence) == (2, 3, 5)


def test_meter_errors_name_the_path() -> None:
    """A meter without the property its aggregation needs is named by path."""
    assert meter_errors(Meter("m", "t", "sum"), "meters[0]") == [
        "meters[0].property: sum needs a property to aggregate"
    ]
    assert meter_errors(Meter("m", "t", "median", "v"), "m") == [  # type: ignore[arg-type]
        "m.aggregation: 'median' is not one of count, sum, max, unique_count, latest"
    ]


event_lists = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.integers(0, 10**6), st.decimals(0, 1000, places=3)),
        st.integers(0, 1000),
    ),
    max_size=40,
)


def as_events(rows: list[tuple[str, Any, int]]) -> list[tuple[int, int, str, dict[str, Any]]]:
    return [
        (n + 1, time, "t", {"g": group, "v": value}) for n, (group, value, time) in enumerate(rows)
    ]


@given(
    rows=event_lists,
    data=st.data(),
    aggregation=st.sampled_from(["count", "sum", "max", "unique_count", "latest"]),
)
def test_arrival_order_never_changes_quantities(
    rows: list[tuple[str, Any, int]], data: st.DataObject, aggregation: str
) -> None:
    """Any permutation of the same events measures the same quantities."""
    meter = Meter("m", "t", aggregation, "v", group_by=("g",))  # type: ignore[arg-type]
    events = as_events(rows)
    shuffled = data.draw(st.permutations(events))
    assert measure(meter, shuffled).quantities() == measure(meter, events).quantities()


@given(rows=event_lists)
def test_group_sums_add_up_to_the_total(rows: list[tuple[str, Any, int]]) -> None:
    """The sum over groups equals the ungrouped sum, exactly."""
    events = as_events(rows)
    grouped = measure(Meter("m", "t", "sum", "v", group_by=("g",)), events).quantities()
    total = measure(Meter("m", "t", "sum", "v"), events).quantities()
    assert sum(grouped.values(), D(0)) == total.get((), D(0))
