"""The fast fold stores exactly the rows of the general fold (hypothesis).

``core.bucket_folding`` (what ``billing.buckets.folded_rows`` keeps buckets with) measures
lines not priced per event without a rater and encodes their rows without bucket
objects; the general path is ``core.buckets.fold`` (a rater per period, its windows cut
at every hour), ``rolled_up``, each bucket merged with its stored row through
``bucket_from_row`` and encoded by ``bucket_row``. Whatever the events (every
aggregation, groups, filters, ints, decimals, values a meter cannot measure, negatives,
events outside the contract, late events, a contract change mid-period, percentage
prices with free events, cost rates changing mid-period, gauges read per day) and
wherever the stream is cut into batches, both write the same rows, text for text, batch
after batch, onto the same stored rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.config.schema import parse_configuration
from meterline.config.source import read_yaml
from meterline.core.bucket_folding import (
    FoldingScope,
    RowKey,
    fold_batch,
    folded_bucket_rows,
    row_key,
)
from meterline.core.buckets import (
    Bucket,
    BucketKey,
    BucketScope,
    bucket_from_row,
    bucket_row,
    fold,
    per_event_meters,
    rolled_up,
)
from meterline.core.events import timestamp_to_us
from meterline.core.model import Configuration, segments
from tests.property.test_bucket_laws import REVISED
from tests.property.test_rating_batches import OCTOBER, PRICING, event

COSTS = """
costs:
  - {meter: tokens, where: {model: a}, per_unit: "0.0000015"}
  - {meter: tokens, per_unit: "0.0000006"}
  - {meter: tokens, per_unit: "0.00000125", effective_from: 2026-10-12}
  - {meter: calls, per_unit: "0.25"}
  - {meter: unpriced, per_unit: "1"}
  - {meter: spend, per_unit: "0.5"}
"""

VARIANTS = {
    "plain": PRICING,
    "costs": PRICING + COSTS,
    "revised": REVISED + COSTS,
    "gauge_day": "semantics: {gauge: day}\n" + PRICING,
    "no_percentage": PRICING.replace(
        '{meter: spend, model: percentage, rate: "0.1", fixed_fee: "0.05"}',
        "{meter: spend, model: per_unit, unit_amount: 1}",
    )
    + COSTS,
}


def us(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


@cache
def configuration(variant: str) -> Configuration:
    data, positions = read_yaml(VARIANTS[variant])
    return parse_configuration(data, positions)


def scope(variant: str) -> BucketScope:
    config = configuration(variant)
    contract = config.contract("acme")
    assert contract is not None
    spans = segments(config, contract, OCTOBER.start_us, OCTOBER.end_us)
    return BucketScope("acme", 3, config, spans, frozenset({"unpriced"}))


Event = tuple[int, int, str, dict[str, Any], bytes]
Store = dict[RowKey, tuple[Any, ...]]

WINDOWS = (
    (us(2026, 10, 2, 22), 3 * 3_600_000_000),  # the contract's start
    (us(2026, 10, 14, 22), 5 * 3_600_000_000),  # the amendment
    (us(2026, 10, 11, 23), 2 * 24 * 3_600_000_000),  # the cost rate's change
    (us(2026, 10, 27, 23), 2 * 3_600_000_000),  # the contract's end
    (OCTOBER.start_us, OCTOBER.end_us - OCTOBER.start_us),  # the whole month
)


@st.composite
def crowded_stream(draw: st.DrawFn) -> tuple[list[Event], list[int]]:
    """Events in ascending sequence, timed within a few hours (so batches meet stored
    hours and days) or over the month, and where the stream is cut into batches."""
    base, span = draw(st.sampled_from(WINDOWS))
    drawn = draw(st.lists(event(), min_size=1, max_size=60))
    events = [
        (number, base + timestamp % span, kind, properties, b"%d" % number)
        for number, (timestamp, kind, properties) in enumerate(drawn, start=1)
    ]
    cuts = draw(st.sets(st.integers(1, len(events)), max_size=len(events)))
    return events, sorted(cuts)


def general_rows(chosen: BucketScope, hours: Store, days: Store, events: list[Event]) -> tuple:
    """The rows the general path writes for one batch (what ``folded_rows`` did)."""
    per_event = per_event_meters(chosen)
    seeds = dict(bucket_from_row(row) for row in days.values())
    seeds = {key: bucket for key, bucket in seeds.items() if key.meter in per_event}
    fresh = fold(chosen, seeds, events, merge_prior=False)
    written = []
    for new, store in ((fresh, hours), (rolled_up(fresh.items()), days)):
        rows = []
        for key, bucket in new.items():
            row = store.get(row_key(key))
            merged = bucket if row is None else bucket_from_row(row)[1].merged(bucket)
            rows.append(bucket_row(key, merged))
        written.append(sorted(rows))
    return tuple(written)


def fast_rows(folding: FoldingScope, hours: Store, days: Store, events: list[Event]) -> tuple:
    seeds: dict[BucketKey, Bucket] = dict(bucket_from_row(row) for row in days.values())
    seeds = {key: bucket for key, bucket in seeds.items() if key.meter in folding.per_event}
    new_hours, new_days = fold_batch(folding, seeds, events)
    return (
        sorted(folded_bucket_rows(new_hours, hours)),
        sorted(folded_bucket_rows(new_days, days)),
    )


@settings(max_examples=300, deadline=None)
@given(stream=crowded_stream(), variant=st.sampled_from(sorted(VARIANTS)))
def test_the_fast_fold_stores_the_general_folds_rows(
    stream: tuple[list[Event], list[int]], variant: str
) -> None:
    events, cuts = stream
    chosen = scope(variant)
    folding = FoldingScope(chosen)
    hours: Store = {}
    days: Store = {}
    for low, high in pairwise([0, *cuts, len(events)]):
        batch = events[low:high]
        expected = general_rows(chosen, hours, days, batch)
        assert fast_rows(folding, hours, days, batch) == expected
        for store, rows in zip((hours, days), expected, strict=True):
            store.update((row[:6], row) for row in rows)
    # and the buckets folded batch by batch are those of every event folded at once
    every = fold(chosen, {}, events)
    assert hours == {row_key(key): bucket_row(key, bucket) for key, bucket in every.items()}


def test_a_stored_row_of_another_form_merges_as_the_general_path_merges() -> None:
    """A stored additive row whose state is not a plain tally (a maximum set, an
    aggregation that differs) is merged through ``bucket_from_row``, as before."""
    chosen = scope("costs")
    folding = FoldingScope(chosen)
    hour = us(2026, 10, 5, 10)
    events: list[Event] = [(1, hour + 5, "llm", {"tokens": 7, "model": "a"}, b"1")]
    first = general_rows(chosen, {}, {}, events)
    odd = list(first[0][0])
    odd[11] = odd[11].replace('"maximum":null', '"maximum":"3"')
    hours: Store = {tuple(odd[:6]): tuple(odd)}
    later: list[Event] = [(2, hour + 9, "llm", {"tokens": 5, "model": "a"}, b"2")]
    assert fast_rows(folding, hours, {}, later)[0] == general_rows(chosen, hours, {}, later)[0]
