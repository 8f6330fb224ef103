"""Unit economics kept in a long-lived process (``finance.kept_economics``) always equal
a fresh full computation (``usage_slices``), on both stores: for random interleavings of
appends (late events into a closed October among them), a price change in the middle of
November, October's close, and reads at advancing clocks. After events alone only the
customers of the new events are read again."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.billing.service import Billing
from meterline.core.economics import UsageSlice, summarize
from meterline.core.events import format_timestamp
from meterline.finance.economics import usage_slices
from meterline.finance.kept_economics import KeptEconomics
from meterline.ledger.location import Location
from tests.integration.test_buckets import kept
from tests.integration.test_economics_batched import pricing
from tests.property.test_control_laws import CUSTOMERS, Clock, once_stream
from tests.property.test_rating_batches import us

HOUR_US = 3_600_000_000
OCTOBER_US = us(2026, 10, 1)
CLOSE_THROUGH_US = us(2026, 11, 1, 6)

OPERATIONS = st.one_of(
    st.tuples(
        st.just("append"),
        st.integers(0, 2),
        st.integers(0, 24 * 45),  # hours back from now: late events among them
        st.sampled_from(["m", "n"]),
        st.integers(1, 5000),
    ),
    st.tuples(st.just("advance"), st.integers(1, 24 * 6)),
    st.tuples(st.just("reprice")),
    st.tuples(st.just("close")),
    st.tuples(st.just("read")),
)


def ordered(slices: list[UsageSlice]) -> list[str]:
    return sorted(repr(item) for item in slices)


def same_as_fresh(billing: Billing, economics: KeptEconomics) -> None:
    """Every view of the kept result equals the fresh full computation."""
    assert ordered(economics.lines()) == ordered(usage_slices(billing, days=False))
    fresh = usage_slices(billing)
    assert ordered(economics.slices()) == ordered(fresh)
    for by in (["customer", "model"], ["day"], ["period", "meter"]):
        assert economics.summary(by) == summarize(fresh, by)
    assert economics.summary(["day"], period="2026-11-01", without_meters=["calls"]) == (
        summarize([s for s in fresh if s.period == "2026-11-01" and s.meter != "calls"], ["day"])
    )


def run(billing: Billing, operations: list[tuple[Any, ...]], numbers: Any) -> None:
    clock = billing.context.clock
    assert isinstance(clock, Clock)
    economics = KeptEconomics(billing)
    repriced = closed = False
    for operation in operations:
        kind = operation[0]
        if kind == "append":
            _, customer, back, model, tokens = operation
            stamp = max(OCTOBER_US, clock.now_us - back * HOUR_US)
            event = {
                "id": f"e-{next(numbers)}",
                "customer": CUSTOMERS[customer],
                "type": "llm",
                "timestamp": format_timestamp(stamp),
                "properties": {"model": model, "tokens": tokens},
            }
            assert billing.ledger.ingest([event]).accepted == 1
        elif kind == "advance":
            clock.now_us = min(clock.now_us + operation[1] * HOUR_US, us(2026, 11, 30))
        elif kind == "reprice" and not repriced:
            billing.apply(pricing("UTC", repriced=True))
            repriced = True
        elif kind == "close" and not closed and clock.now_us > CLOSE_THROUGH_US:
            billing.close(CLOSE_THROUGH_US)
            closed = True
        elif kind == "read":
            same_as_fresh(billing, economics)
    same_as_fresh(billing, economics)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(OPERATIONS, min_size=1, max_size=25))
def test_the_kept_result_always_equals_a_fresh_computation(
    new_db: Callable[..., Location], operations: list[tuple[Any, ...]]
) -> None:
    with kept(new_db(f"kept-{next(_LEDGERS)}"), pricing("UTC")) as billing:
        assert billing.ledger.ingest(once_stream(3)).accepted == 36
        run(billing, [("read",), *operations], count())


_LEDGERS = count()


def test_after_events_alone_only_their_customers_are_read_again(
    new_db: Callable[..., Location],
) -> None:
    """A scripted run: one event re-reads one customer; a close, a price change and a new
    day re-read every customer; every read equals the fresh computation."""
    with kept(new_db(), pricing("UTC")) as billing:
        clock = billing.context.clock
        assert isinstance(clock, Clock)
        assert billing.ledger.ingest(once_stream(3)).accepted == 36
        economics = KeptEconomics(billing)
        economics.lines()
        assert economics.read_customers == 3
        same_as_fresh(billing, economics)
        assert economics.read_customers == 0
        numbers = count()
        steps = [
            ([("append", 1, 2, "n", 700)], 1),
            ([("advance", 1)], 0),  # the same day (UTC): nothing changed
            ([("advance", 24)], 3),  # a new day: every customer
            ([("advance", 24 * 12), ("close",)], 3),  # November, October closed
            ([("append", 2, 24 * 10, "m", 900)], 1),  # late into the closed October
            ([("reprice",)], 3),
        ]
        for operations, customers in steps:
            run(billing, operations, numbers)
            # run's own KeptEconomics checked equality; this one checks what it re-read
            economics.lines()
            assert economics.read_customers == customers, operations
            same_as_fresh(billing, economics)
