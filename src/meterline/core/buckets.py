"""Rated-usage buckets (pure): a customer's rated events folded per line and UTC hour.

A bucket is one line of one configuration revision (customer, contract segment, meter,
group) in one UTC hour: the meter's accumulator over the events it took (their count,
quantity state, first and last sequence), under a percentage price the fees and bases of
those events, the cost of an additive meter's quantity, and a lineage digest. Amounts of
graduated, volume and package prices are not additive per hour, so a bucket stores only
what is (accumulators merge exactly: sums, counts, maxima, latest readings, sets of unique
values; percentage fees are per event), and ``bucket_rater`` hands the period's merged
lines to the rater's own pricing at read time: the amounts equal a full re-rating exactly
(the law in tests/property/test_bucket_laws.py).

Folding (``fold``) seeds a rater with each line's state so far (its buckets merged) and
feeds it the new events, which must follow every event folded before in ledger sequence
(the order a full re-rating feeds them): a late event of an earlier hour is one more
event of its line, and a percentage price's position and free allowance see exactly the
events a re-rating shows them before it.

Lineage digest: the sum modulo 2**256 of SHA-256(event ledger hash) over a bucket's
events. Addition modulo 2**256 is commutative and associative, so the digest is a
function of the set of events alone, never of the order they arrived or were folded in:
a late event adds its term without re-reading the others, and a bucket is checked by
summing again over the events a re-derivation gives it (``first_difference``). A sum,
unlike XOR, does not cancel an event counted twice.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from meterline.core.economics import cost_rate
from meterline.core.line_pricing import RatingError
from meterline.core.lineage import MerkleBuilder
from meterline.core.meters import Accumulator, Meter
from meterline.core.model import Configuration, Segment
from meterline.core.money import MONEY_CONTEXT, to_decimal
from meterline.core.rating import Rater, RaterState
from meterline.core.rating_lines import SharedLineage

__all__ = [
    "DAY_US",
    "DIGEST_MODULUS",
    "HOUR_US",
    "Bucket",
    "BucketDifference",
    "BucketKey",
    "BucketRow",
    "BucketScope",
    "LineKey",
    "RatedEvent",
    "bucket_columns",
    "bucket_from_row",
    "bucket_order",
    "bucket_rater",
    "bucket_row",
    "event_digest",
    "first_difference",
    "first_row_difference",
    "fold",
    "hour_of",
    "merge_buckets",
    "per_event_meters",
    "priced_rater",
    "rolled_up",
]

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
DIGEST_MODULUS = 2**256
ZERO = Decimal(0)

Group = tuple[str | None, ...]
LineKey = tuple[int, str, Group]
"""A line of a period: (its segment's start, meter key, group values)."""

RatedEvent = tuple[int, int, str, Mapping[str, Any], bytes]
"""(sequence, timestamp_us, event type, properties, ledger hash), as ``Rater.add`` takes."""


@dataclass(frozen=True, slots=True)
class BucketKey:
    """Where a bucket sits: a customer's line under one configuration revision, one hour."""

    customer: str
    revision: int
    segment_start_us: int
    meter: str
    group: Group
    hour_us: int

    @property
    def line(self) -> LineKey:
        return (self.segment_start_us, self.meter, self.group)


@dataclass(slots=True)
class Bucket:
    """One line's rated usage in one hour (see the module docstring)."""

    accumulator: Accumulator
    fees: Decimal = ZERO
    """Under a percentage price: the fees of the bucket's events (before min/max)."""
    bases: Decimal = ZERO
    """Under a percentage price: the sum of the bases the fees were taken on."""
    cost: Decimal = ZERO
    """An additive (sum, count) meter's quantity times its cost rate at the hour's start."""
    digest: int = 0

    @property
    def events(self) -> int:
        return self.accumulator.events

    def quantity(self) -> Decimal:
        return self.accumulator.quantity()

    def merged(self, other: Bucket) -> Bucket:
        """The bucket of both sets of events (they must be disjoint)."""
        return Bucket(
            self.accumulator.merged(other.accumulator),
            MONEY_CONTEXT.add(self.fees, other.fees),
            MONEY_CONTEXT.add(self.bases, other.bases),
            MONEY_CONTEXT.add(self.cost, other.cost),
            (self.digest + other.digest) % DIGEST_MODULUS,
        )

    @staticmethod
    def merged_all(buckets: Sequence[Bucket]) -> Bucket:
        """The bucket of every one's events (disjoint; at least one): ``merged`` in turn,
        with one new accumulator instead of one per step."""
        first = buckets[0]
        if len(buckets) == 1:
            return first
        usage = first.accumulator.merged(buckets[1].accumulator)
        fees, bases, cost, digest = first.fees, first.bases, first.cost, first.digest
        add = MONEY_CONTEXT.add
        for index, bucket in enumerate(buckets):
            if index > 1:
                usage.take(bucket.accumulator)
            if index > 0:
                fees = add(fees, bucket.fees)
                bases = add(bases, bucket.bases)
                cost = add(cost, bucket.cost)
                digest += bucket.digest
        return Bucket(usage, fees, bases, cost, digest % DIGEST_MODULUS)


@dataclass(frozen=True, slots=True)
class BucketScope:
    """One customer's billing period under one configuration revision: what folding and
    pricing its buckets need. ``segments``: the period's contract segments."""

    customer: str
    revision: int
    configuration: Configuration
    segments: Sequence[Segment]
    also_meters: frozenset[str] = field(default_factory=frozenset)
    """Unpriced meters bucketed too (the cost-only meters of unit economics)."""

    def key(self, line: LineKey, hour_us: int) -> BucketKey:
        start, meter, group = line
        return BucketKey(self.customer, self.revision, start, meter, group, hour_us)


@dataclass(frozen=True, slots=True)
class BucketDifference:
    """The first bucket whose stored state differs from a re-derivation: its key and the
    fields that differ (``missing``: one side has no such bucket)."""

    key: BucketKey
    fields: tuple[str, ...]

    def describe(self) -> str:
        key = self.key
        group = ",".join("" if value is None else value for value in key.group)
        return (
            f"bucket customer={key.customer} revision={key.revision} meter={key.meter}"
            f" group=[{group}] hour_us={key.hour_us} segment_start_us={key.segment_start_us}"
            f" differs in {', '.join(self.fields)}"
        )


def hour_of(timestamp_us: int) -> int:
    """The UTC hour an instant falls in (its start)."""
    return timestamp_us - timestamp_us % HOUR_US


def event_digest(event_hash: bytes) -> int:
    """One event's term of a lineage digest."""
    return int.from_bytes(hashlib.sha256(event_hash).digest(), "big")


def bucket_order(key: BucketKey) -> tuple[Any, ...]:
    """A total order on keys (groups may hold None): customer, revision, line, hour."""
    group = tuple((0, "") if value is None else (1, value) for value in key.group)
    return (key.customer, key.revision, key.segment_start_us, key.meter, group, key.hour_us)


def merge_buckets(buckets: Iterable[tuple[BucketKey, Bucket]]) -> dict[LineKey, Bucket]:
    """Each line's buckets merged: its state over every hour."""
    lines: dict[LineKey, Bucket] = {}
    for key, bucket in buckets:
        known = lines.get(key.line)
        lines[key.line] = bucket if known is None else known.merged(bucket)
    return lines


def rolled_up(buckets: Iterable[tuple[BucketKey, Bucket]]) -> dict[BucketKey, Bucket]:
    """Hour buckets merged per UTC day: keyed by the day's first hour (what period reads
    take: 31 rows a line a month, not 744). Each day's hours are gathered first and
    merged once."""
    days: dict[tuple[Any, ...], tuple[BucketKey, list[Bucket]]] = {}
    for key, bucket in buckets:
        day_us = key.hour_us - key.hour_us % DAY_US
        place = (key.customer, key.revision, key.segment_start_us, key.meter, key.group, day_us)
        found = days.get(place)
        if found is None:
            day = key if key.hour_us == day_us else BucketKey(*place)
            days[place] = (day, [bucket])
        else:
            found[1].append(bucket)
    return {day: Bucket.merged_all(hours) for day, hours in days.values()}


def bucket_rater(
    scope: BucketScope,
    lines: Mapping[LineKey, Bucket],
    keep_events: bool = False,
    cuts: tuple[int, ...] | None = None,
) -> Rater:
    """A rater holding ``lines`` (``merge_buckets``) as if it had been fed their events:
    ``lines()`` prices them as a full re-rating does (without Merkle roots, which are made
    from raw events), and events fed next continue each line."""
    rater = Rater(
        scope.configuration,
        list(scope.segments),
        keep_events=keep_events,
        cuts=cuts,
        lineage=False,
        also_meters=scope.also_meters,
    )
    index_of = {segment.start_us: index for index, segment in enumerate(scope.segments)}
    position = {meter.key: index for index, meter in enumerate(scope.configuration.meters)}

    def made(item: tuple[LineKey, Bucket]) -> tuple[int, int]:
        # the order a re-rating makes lines in: by first event, then by the meters' order
        first = item[1].accumulator.first_sequence
        return (-1 if first is None else first, position.get(item[0][1], -1))

    states: list[Any] = []
    for (start, meter_key, group), bucket in sorted(lines.items(), key=made):
        index = index_of.get(start)
        meter = scope.configuration.meter(meter_key)
        if index is None or meter is None:
            raise RatingError(f"a bucket of meter {meter_key!r} names no line of the period")
        accumulator = rater.accumulator(meter).merged(bucket.accumulator)
        states.append(
            (
                (index, meter_key, group),
                accumulator,
                SharedLineage(MerkleBuilder()),
                (bucket.fees, bucket.bases),
                [] if keep_events else None,
                None,
                None,
                {},
            )
        )
    try:
        rater.import_state(RaterState(0, (), tuple(states)))
    except KeyError:
        raise RatingError("a bucket names a meter its segment does not rate") from None
    return rater


def priced_rater(
    scope: BucketScope,
    buckets: Mapping[BucketKey, Bucket],
    cuts: tuple[int, ...] | None = None,
    span_us: int = HOUR_US,
    split: tuple[int, ...] = (),
) -> Rater | None:
    """A rater holding the scope's ``buckets`` (each ``span_us`` long: hours, or days
    rolled up) as a full re-rating of their events would hold them: its lines, and with
    ``cuts`` (credit windows) each window's usage and fees for ``window_charges``. None
    when a window edge is not on a bucket's edge (a bucket would straddle it): the caller
    reads hours, or re-rates from raw events. ``split``: edges off the span that no bucket
    straddles (the caller folded the hour each cuts apart, each part keyed where it
    starts: ``billing.split_hours``)."""
    rater = bucket_rater(scope, merge_buckets(buckets.items()), cuts=cuts)
    edges = rater.cuts or ()
    if any(edge % span_us and edge not in split for edge in edges):
        return None
    if rater.cuts is None:
        return rater
    index_of = {segment.start_us: index for index, segment in enumerate(scope.segments)}
    for key, bucket in buckets.items():
        line = rater._lines[(index_of[key.segment_start_us], key.meter, key.group)]
        window = bisect_right(edges, key.hour_us)
        if line.windows is None:
            line.windows, line.window_fees = {}, {}
        assert line.window_fees is not None
        known = line.windows.get(window)
        if known is None:
            known = rater.accumulator(line.meter)
        line.windows[window] = known.merged(bucket.accumulator)
        line.window_fees[window] = MONEY_CONTEXT.add(
            line.window_fees.get(window, ZERO), bucket.fees
        )
        line.window_bases[window] = MONEY_CONTEXT.add(
            line.window_bases.get(window, ZERO), bucket.bases
        )
    return rater


def _hour_edges(segments: Sequence[Segment]) -> tuple[int, ...]:
    if not segments:
        return ()
    start, end = segments[0].start_us, segments[-1].end_us
    first = hour_of(start) + HOUR_US
    return tuple(range(first, end, HOUR_US))


def fold(
    scope: BucketScope,
    prior: Mapping[BucketKey, Bucket],
    events: Sequence[RatedEvent],
    merge_prior: bool = True,
) -> dict[BucketKey, Bucket]:
    """The buckets ``events`` touch, with the events folded in: ``prior`` holds the
    scope's buckets so far (at least the buckets the events touch, and every bucket of a
    ``per_event_meters`` meter); events come in ascending sequence, after every event
    ``prior`` holds. Events outside every segment and values a meter cannot measure are
    not usage (unbillable usage is reported from raw events); nothing else is left out.

    Only lines priced per event (percentage) are seeded with their state so far: their
    fees depend on the events before; every other line's new hours are measured alone
    and merged (accumulators merge exactly). ``merge_prior=False``: the new events'
    buckets alone (``prior`` then only seeds: any bucket of the per-event lines will do,
    hours or days rolled up)."""
    per_event = per_event_meters(scope)
    seeds = merge_buckets((key, bucket) for key, bucket in prior.items() if key.meter in per_event)
    rater = bucket_rater(scope, seeds, True, _hour_edges(scope.segments))
    rater.add_batch(events)
    timestamps = {event[0]: event[1] for event in events}
    terms: dict[int, int] = {}  # each event's digest term, hashed once for all its lines
    cuts = rater.cuts or ()
    edges = (scope.segments[0].start_us, *cuts) if scope.segments else ()
    touched: dict[BucketKey, Bucket] = {}
    for (index, meter_key, group), line in rater._lines.items():
        if not line.windows:
            continue
        line_key = (scope.segments[index].start_us, meter_key, group)
        digests: dict[int, int] = {}
        for sequence, event_hash in line.members or ():
            hour = hour_of(timestamps[sequence])
            term = terms.get(sequence)
            if term is None:
                term = terms[sequence] = event_digest(event_hash)
            digests[hour] = (digests.get(hour, 0) + term) % DIGEST_MODULUS
        fees = line.window_fees or {}
        for window, accumulator in line.windows.items():
            hour = hour_of(edges[window])
            bucket = Bucket(
                accumulator,
                fees.get(window, ZERO),
                line.window_bases.get(window, ZERO),
                _cost(scope.configuration, line.meter, group, hour, accumulator),
                digests.get(hour, 0),
            )
            key = scope.key(line_key, hour)
            known = prior.get(key) if merge_prior else None
            touched[key] = bucket if known is None else known.merged(bucket)
    return touched


def per_event_meters(scope: BucketScope) -> frozenset[str]:
    """The meters some segment prices per event (percentage): their buckets seed a fold."""
    return frozenset(
        price.meter
        for segment in scope.segments
        for price in segment.terms.prices()
        if price.model == "percentage"
    )


def _cost(
    configuration: Configuration,
    meter: Meter,
    group: Group,
    hour_us: int,
    usage: Accumulator,
) -> Decimal:
    if meter.aggregation not in ("sum", "count") or not configuration.costs:
        return ZERO
    rate = cost_rate(configuration, meter, group, hour_us)
    if rate is None:
        return ZERO
    return MONEY_CONTEXT.multiply(usage.quantity(), rate)


def first_difference(
    stored: Mapping[BucketKey, Bucket], derived: Mapping[BucketKey, Bucket]
) -> BucketDifference | None:
    """The first bucket (in ``bucket_order``) where the stored buckets and a re-derivation
    from raw events differ, naming what differs; None when they agree."""
    for key in sorted(stored.keys() | derived.keys(), key=bucket_order):
        mine, theirs = stored.get(key), derived.get(key)
        if mine is None or theirs is None:
            return BucketDifference(key, ("missing",))
        fields = _differing(mine, theirs)
        if fields:
            return BucketDifference(key, fields)
    return None


def _differing(mine: Bucket, theirs: Bucket) -> tuple[str, ...]:
    pairs = {
        "events": (mine.events, theirs.events),
        "quantity": (mine.quantity(), theirs.quantity()),
        "fees": (mine.fees, theirs.fees),
        "bases": (mine.bases, theirs.bases),
        "cost": (mine.cost, theirs.cost),
        "digest": (mine.digest, theirs.digest),
        "first_sequence": (mine.accumulator.first_sequence, theirs.accumulator.first_sequence),
        "last_sequence": (mine.accumulator.last_sequence, theirs.accumulator.last_sequence),
    }
    return tuple(name for name, (left, right) in pairs.items() if left != right)


_encode = msgspec.json.Encoder().encode
"""Encodes a state whose keys ``bucket_row`` writes in sorted order (the stored form)."""
_decode = msgspec.json.decode
BucketRow = tuple[str, int, int, str, str, int, int, str, str, str, str, str]
"""A bucket as stored: customer, revision, segment start, meter, group (JSON), hour,
events, quantity, fees, cost, digest (hex), and the rest of its state (JSON)."""


def bucket_row(key: BucketKey, bucket: Bucket) -> BucketRow:
    """``key`` and ``bucket`` as a stored row (exact decimals as text; the state's keys
    in sorted order)."""
    return (
        key.customer,
        key.revision,
        key.segment_start_us,
        key.meter,
        _encode(list(key.group)).decode(),
        key.hour_us,
        *bucket_columns(bucket),
    )


def bucket_columns(bucket: Bucket) -> tuple[int, str, str, str, str, str]:
    """A stored row's columns after its key: events, quantity, fees, cost, digest (hex)
    and the rest of the state (JSON, keys in sorted order)."""
    usage = bucket.accumulator
    latest = usage._latest
    maximum = usage._maximum
    state = {
        "aggregation": usage.aggregation,
        "bases": str(bucket.bases),
        "daily": [
            [day, at, sequence, str(value)]
            for day, (at, sequence, value) in sorted(usage._daily.items())
        ]
        if usage._daily
        else [],
        "first": usage.first_sequence,
        "last": usage.last_sequence,
        "latest": None if latest is None else [latest[0], latest[1], str(latest[2])],
        "maximum": None if maximum is None else str(maximum),
        "seen": sorted(usage._seen) if usage._seen else [],
        "total": str(usage._total),
        "whole": usage._whole,
    }
    return (
        usage.events,
        str(bucket.quantity()),
        str(bucket.fees),
        str(bucket.cost),
        f"{bucket.digest:064x}",
        _encode(state).decode(),
    )


def bucket_from_row(row: Sequence[Any]) -> tuple[BucketKey, Bucket]:
    """A stored row read back (``bucket_row``'s inverse)."""
    customer, revision, start, meter, group, hour, events, _, fees, cost, digest, text = row
    state = _decode(text)
    usage = Accumulator(state["aggregation"], int(events), state["first"], state["last"])
    usage._total = to_decimal(state["total"], "total")
    usage._whole = int(state["whole"])
    if state["maximum"] is not None:
        usage._maximum = to_decimal(state["maximum"], "maximum")
    usage._seen = set(state["seen"])
    if state["latest"] is not None:
        at, sequence, value = state["latest"]
        usage._latest = (at, sequence, to_decimal(value, "latest"))
    usage._daily = {
        day: (at, sequence, to_decimal(value, "daily"))
        for day, at, sequence, value in state["daily"]
    }
    key = BucketKey(customer, int(revision), int(start), meter, tuple(_decode(group)), int(hour))
    bucket = Bucket(
        usage,
        to_decimal(fees, "fees"),
        to_decimal(state["bases"], "bases"),
        to_decimal(cost, "cost"),
        int(digest, 16),
    )
    return key, bucket


def first_row_difference(
    stored: Iterable[Sequence[Any]], derived: Iterable[Sequence[Any]]
) -> BucketDifference | None:
    """``first_difference`` over stored rows (``bucket_row``'s) and derived rows, without
    decoding the rows that are equal: both sorted by key, walked together; a row whose
    text differs is decoded and compared field by field (equal values written otherwise
    are no difference)."""
    mine = sorted((tuple(row) for row in stored), key=_row_key)
    theirs = sorted((tuple(row) for row in derived), key=_row_key)
    left = right = 0
    while left < len(mine) or right < len(theirs):
        ours = mine[left] if left < len(mine) else None
        other = theirs[right] if right < len(theirs) else None
        if ours is None or (other is not None and _row_key(other) < _row_key(ours)):
            assert other is not None
            return BucketDifference(bucket_from_row(other)[0], ("missing",))
        if other is None or _row_key(ours) < _row_key(other):
            customer, revision, start, meter, group, hour = ours[:6]
            key = BucketKey(customer, revision, start, meter, tuple(_decode(group)), hour)
            return BucketDifference(key, ("missing",))
        if ours != other:
            key, expected = bucket_from_row(other)
            try:
                fields = _differing(bucket_from_row(ours)[1], expected)
            except (ValueError, KeyError, TypeError, ArithmeticError):
                fields = ("unreadable",)  # a row edited into something that does not decode
            if fields:
                return BucketDifference(key, fields)
        left, right = left + 1, right + 1
    return None


def _row_key(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(row[:6])
