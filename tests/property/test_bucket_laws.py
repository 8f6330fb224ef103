"""Rated-usage buckets equal a full re-rating, exactly (hypothesis).

Whatever the events (every aggregation, ints, decimals, values a meter cannot measure,
events outside the contract), in whatever ledger order they arrive (an event's time is
drawn apart from its sequence, so most events are late for some hour already folded),
cut into batches anywhere, under a contract whose prices change mid-period (an amendment)
and under a second configuration revision with other prices (percentage free allowances,
whose fees depend on each event's position): the lines priced from the buckets equal the
lines of a full re-rating, and the buckets equal those folded in one batch (so the lineage
digest is order independent). A tampered bucket is the first difference named.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D
from functools import cache
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.config.schema import parse_configuration
from meterline.config.source import read_yaml
from meterline.core.buckets import (
    Bucket,
    BucketKey,
    BucketScope,
    bucket_from_row,
    bucket_order,
    bucket_rater,
    bucket_row,
    first_difference,
    first_row_difference,
    fold,
    merge_buckets,
    priced_rater,
)
from meterline.core.model import Configuration, segments
from meterline.core.rating import Rater, window_charges
from tests.property.test_rating_batches import CUTS, OCTOBER, PRICING, split_stream

REVISED = "semantics: {percentage_free: amount}\n" + PRICING.replace(
    '{meter: spend, model: percentage, rate: "0.1", fixed_fee: "0.05"}',
    '{meter: spend, model: percentage, rate: "0.1", fixed_fee: "0.05", free_events: 2,'
    " free_units: 30}",
).replace(
    "{meter: calls, model: per_unit, unit_amount: 1}",
    '{meter: calls, model: volume, tiers: [{up_to: 3, unit_amount: 2}, {unit_amount: "0.5"}]}',
)


@cache
def configuration(revision: int) -> Configuration:
    data, positions = read_yaml(PRICING if revision == 1 else REVISED)
    return parse_configuration(data, positions)


def scope(revision: int) -> BucketScope:
    config = configuration(revision)
    contract = config.contract("acme")
    assert contract is not None
    spans = segments(config, contract, OCTOBER.start_us, OCTOBER.end_us)
    return BucketScope("acme", revision, config, spans, frozenset({"unpriced"}))


Event = tuple[int, int, str, dict[str, Any], bytes]


def folded(revision: int, events: list[Event], cuts: list[int]) -> dict[BucketKey, Bucket]:
    """The buckets after folding ``events`` in the batches ``cuts`` makes."""
    buckets: dict[BucketKey, Bucket] = {}
    for low, high in pairwise([0, *cuts, len(events)]):
        buckets.update(fold(scope(revision), buckets, events[low:high]))
    return buckets


def rerated(revision: int, events: list[Event], cuts: tuple[int, ...] | None = None) -> Rater:
    chosen = scope(revision)
    rater = Rater(
        chosen.configuration, list(chosen.segments), cuts=cuts, also_meters=frozenset({"unpriced"})
    )
    for event in events:
        rater.add(*event)
    return rater


def without_roots(lines: list[Any]) -> list[Any]:
    return [dataclasses.replace(line, merkle_root=b"") for line in lines]


def quantities(rater: Rater) -> list[Any]:
    return sorted(((s, m.key, str(g), q, n) for s, m, g, q, n in rater.quantities()))


@settings(max_examples=120, deadline=None)
@given(stream=split_stream(), revision=st.sampled_from([1, 2]))
def test_buckets_price_exactly_as_a_full_rerating(
    stream: tuple[list[Event], list[int]], revision: int
) -> None:
    """Lines priced from buckets folded batch by batch == a full re-rating's lines."""
    events, cuts = stream
    # stored and read back: the rows keep every bucket exactly
    buckets = dict(
        bucket_from_row(bucket_row(*item)) for item in folded(revision, events, cuts).items()
    )
    from_buckets = bucket_rater(scope(revision), merge_buckets(buckets.items()))
    full = rerated(revision, events)
    config = configuration(revision)
    assert without_roots(from_buckets.lines("USD", config)) == without_roots(
        full.lines("USD", config)
    )
    assert quantities(from_buckets) == quantities(full)
    assert first_difference(buckets, folded(revision, events, [])) is None
    # credit windows (on hours) from the buckets: the charges of a re-rating with them
    windowed = priced_rater(scope(revision), buckets, CUTS)
    assert windowed is not None
    assert window_charges(windowed, "USD", config) == window_charges(
        rerated(revision, events, CUTS), "USD", config
    )


@settings(max_examples=40, deadline=None)
@given(stream=split_stream(), data=st.data())
def test_a_tampered_bucket_is_the_first_difference(
    stream: tuple[list[Event], list[int]], data: st.DataObject
) -> None:
    """Changing one stored bucket (its events, fees or digest) names exactly that bucket."""
    events, cuts = stream
    buckets = folded(1, events, cuts)
    if not buckets:
        return
    keys = sorted(buckets, key=bucket_order)
    victim = data.draw(st.sampled_from(keys))
    original = buckets[victim]
    how = data.draw(st.sampled_from(["digest", "fees", "events"]))
    if how == "digest":
        tampered = dataclasses.replace(original, digest=original.digest + 1)
    elif how == "fees":
        tampered = dataclasses.replace(original, fees=original.fees + D("0.01"))
    else:
        accumulator = dataclasses.replace(original.accumulator, events=original.events + 1)
        tampered = dataclasses.replace(original, accumulator=accumulator)
    stored = {**buckets, victim: tampered}
    difference = first_difference(stored, folded(1, events, []))
    assert difference is not None
    assert difference.key == victim
    assert how in difference.fields
    assert "acme" in difference.describe()
    # the same, over stored rows (what reconcile compares without decoding equal rows)
    rows = [bucket_row(key, bucket) for key, bucket in stored.items()]
    derived = [bucket_row(key, bucket) for key, bucket in folded(1, events, []).items()]
    assert first_row_difference(rows, derived) == difference
    assert first_row_difference(derived, derived) is None


def test_a_revision_change_rebuilds_its_own_buckets() -> None:
    """Buckets are per revision: the revised prices read the revised buckets only."""
    day = OCTOBER.start_us + 5 * 86_400_000_000
    events = [
        (1, day, "charge", {"amount": 10}, b"1"),
        (2, day + 1, "charge", {"amount": 25}, b"2"),
        (3, day - 7_200_000_000, "charge", {"amount": 40}, b"3"),  # late, two hours back
    ]
    for revision in (1, 2):
        buckets = folded(revision, events, [1, 2])
        assert {key.revision for key in buckets} == {revision}
        from_buckets = bucket_rater(scope(revision), merge_buckets(buckets.items()))
        full = rerated(revision, events)
        config = configuration(revision)
        assert without_roots(from_buckets.lines("USD", config)) == without_roots(
            full.lines("USD", config)
        )
