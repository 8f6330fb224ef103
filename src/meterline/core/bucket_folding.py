"""Folding a batch of events into stored bucket rows without a rater per period (pure).

``core.buckets.fold`` is the general fold: a ``Rater`` per customer period with its lines'
windows cut at every hour, one ``Bucket`` and ``BucketKey`` per hour, then ``rolled_up``
into days, merged with the stored rows (``bucket_from_row``) and encoded (``bucket_row``).
``folded_bucket_rows`` stores exactly the same rows, byte for byte (the law in
tests/property/test_bucket_folding.py), with far less work per event:

- **Lines not priced per event** (every line of a meter no segment of the period prices
  by percentage) need no seed: their accumulators merge exactly. They are measured
  straight from the decoded events per (line, hour): a ``sum`` or ``count`` line's hour
  is a ``Tally`` (events, int and decimal sums, first and last sequence, digest, cost),
  encoded to its row with no ``Accumulator``; a ``max``, ``latest`` or ``unique_count``
  line's hour is a ``Bucket`` fed event by event, as the rater's windows are.
- **Lines priced per event** (percentage) fold through ``core.buckets.fold`` on the scope
  reduced to those meters (``FoldingScope.per_event_scope``), seeded with their state so
  far: their fees depend on the events before.
- Each event's digest term is hashed once for all its lines; days are rolled up from the
  batch's hours in one pass; a row already stored is merged with the new bucket (a
  ``Tally`` merges with the row's text decoded once, anything else through
  ``bucket_from_row``); keys are tuples (``RowKey``: a stored row's first six columns).

Invariants (those of ``fold``): events come in ascending sequence, after every event the
stored rows hold. An event outside every segment, or a value its meter cannot measure,
touches no bucket. A decimal value that would make its line's sum over the batch inexact
is left out of that line alone, as the rater leaves it out (its ``overflow`` problem); a
bucket whose own sum would become inexact fails the fold, as the general one fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from hashlib import sha256 as _sha256
from typing import Any

import msgspec

from meterline.core.buckets import (
    DAY_US,
    DIGEST_MODULUS,
    HOUR_US,
    Bucket,
    BucketKey,
    BucketRow,
    BucketScope,
    RatedEvent,
    bucket_columns,
    bucket_from_row,
    fold,
    per_event_meters,
    rolled_up,
)
from meterline.core.economics import cost_rate
from meterline.core.meters import Accumulator, Aggregation, Meter, MeterReader, Unmeasurable
from meterline.core.money import MONEY_CONTEXT, to_decimal
from meterline.core.semantics import gauge_days

__all__ = [
    "FoldingScope",
    "RowKey",
    "Tally",
    "fold_batch",
    "folded_bucket_rows",
    "row_key",
]

ZERO = Decimal(0)
_exact_add = MONEY_CONTEXT.add
_from_bytes = int.from_bytes
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

Group = tuple[str | None, ...]
RowKey = tuple[str, int, int, str, str, int]
"""A bucket row's key as stored: customer, revision, segment start, meter, group (its
JSON text, as ``bucket_row`` writes it), hour (a day's first hour in the days table)."""

Entry = Any
"""A folded bucket: a ``Tally`` (an additive line's) or a ``Bucket``."""

_TALLY_STATE_KEYS = frozenset(
    (
        "aggregation",
        "bases",
        "daily",
        "first",
        "last",
        "latest",
        "maximum",
        "seen",
        "total",
        "whole",
    )
)
"""The keys of a stored state (``bucket_columns``)."""


class Tally:
    """An additive line's bucket (``sum`` or ``count``, not priced per event): what its
    ``Bucket`` would hold, as plain fields. ``whole`` adds int values, ``total`` decimal
    ones (exactly, as ``Accumulator`` does); ``first`` and ``last`` are sequences."""

    __slots__ = (
        "aggregation",
        "bases",
        "cost",
        "digest",
        "events",
        "fees",
        "first",
        "last",
        "total",
        "whole",
    )

    def __init__(self, aggregation: Aggregation, first: int, last: int) -> None:
        self.aggregation = aggregation
        self.events = 0
        self.whole = 0
        self.total = ZERO
        self.first = first
        self.last = last
        self.digest = 0
        self.cost = self.fees = self.bases = ZERO

    def quantity(self) -> Decimal:
        """As ``Accumulator.quantity``."""
        if self.aggregation == "count":
            return Decimal(self.events)
        return _exact_add(self.total, self.whole) if self.whole else self.total

    def columns(self) -> tuple[int, str, str, str, str, str]:
        """The row's columns after its key, as ``bucket_columns`` writes a ``Bucket`` of
        the same events (the state's keys in sorted order). ``ZERO`` itself and an int
        sum over a zero decimal sum are written as ``str`` of a Decimal writes them."""
        total, whole = self.total, self.whole
        if self.aggregation == "count":
            quantity = str(self.events)
        elif total is ZERO:
            quantity = str(whole)
        else:
            quantity = str(_exact_add(total, whole) if whole else total)
        bases, fees, cost = self.bases, self.fees, self.cost
        state = (
            f'{{"aggregation":"{self.aggregation}","bases":"{"0" if bases is ZERO else bases}",'
            f'"daily":[],"first":{self.first},"last":{self.last},"latest":null,"maximum":null,'
            f'"seen":[],"total":"{"0" if total is ZERO else total}","whole":{whole}}}'
        )
        return (
            self.events,
            quantity,
            "0" if fees is ZERO else str(fees),
            "0" if cost is ZERO else str(cost),
            f"{self.digest:064x}",
            state,
        )

    def merged(self, other: Tally) -> Tally:
        """The tally of both sets of events (disjoint), as ``Bucket.merged``."""
        result = Tally(self.aggregation, self.first, self.last)
        result.events, result.whole, result.total = self.events, self.whole, self.total
        result.fees, result.bases, result.cost = self.fees, self.bases, self.cost
        result.digest = self.digest
        result.take(other)
        return result

    def take(self, other: Tally) -> None:
        """Take ``other``'s events in place (disjoint)."""
        if other.first < self.first:
            self.first = other.first
        if other.last > self.last:
            self.last = other.last
        self.events += other.events
        self.whole += other.whole
        # ``ZERO`` + ``ZERO`` is written "0" either way: the common case skips the adds
        if self.total is not ZERO or other.total is not ZERO:
            self.total = _exact_add(self.total, other.total)
        if self.fees is not ZERO or other.fees is not ZERO:
            self.fees = _exact_add(self.fees, other.fees)
            self.bases = _exact_add(self.bases, other.bases)
        if self.cost is not ZERO or other.cost is not ZERO:
            self.cost = _exact_add(self.cost, other.cost)
        self.digest = (self.digest + other.digest) % DIGEST_MODULUS


Route = tuple[Callable[[Mapping[str, Any]], Any], str, bool, Aggregation, Meter]
"""One meter not priced per event in one segment, as the hot path unpacks it: its
reader's ``read``, key, whether it is additive (``sum``, ``count``), aggregation, meter."""


def _route(meter: Meter) -> Route:
    additive = meter.aggregation in ("sum", "count")
    return (MeterReader(meter).read, meter.key, additive, meter.aggregation, meter)


class FoldingScope:
    """A ``BucketScope`` prepared once for folding batch after batch: each segment's
    routes (event type -> the meters not priced per event that take it), the per-event
    meters' own scope, and each group's stored text."""

    __slots__ = (
        "bounds",
        "costs",
        "days",
        "groups",
        "per_event",
        "per_event_scope",
        "per_event_types",
        "routes",
        "scope",
        "starts",
    )

    def __init__(self, scope: BucketScope) -> None:
        self.scope = scope
        configuration = scope.configuration
        self.per_event = per_event_meters(scope)
        self.per_event_scope: BucketScope | None = None
        self.per_event_types: frozenset[str] = frozenset()
        if self.per_event:
            kept = tuple(meter for meter in configuration.meters if meter.key in self.per_event)
            self.per_event_scope = replace(scope, configuration=replace(configuration, meters=kept))
            self.per_event_types = frozenset(meter.event_type for meter in kept)
        self.days = gauge_days(configuration.semantics, scope.segments)
        self.costs = bool(configuration.costs)
        self.bounds = [(segment.start_us, segment.end_us) for segment in scope.segments]
        self.starts = [segment.start_us for segment in scope.segments]
        self.routes: list[dict[str, tuple[Route, ...]]] = []
        for segment in scope.segments:
            wanted = {price.meter for price in segment.terms.prices()} | scope.also_meters
            table: dict[str, list[Route]] = {}
            for meter in configuration.meters:
                if meter.key in wanted and meter.key not in self.per_event:
                    table.setdefault(meter.event_type, []).append(_route(meter))
            self.routes.append({kind: tuple(routes) for kind, routes in table.items()})
        self.groups: dict[Group, str] = {}

    def group_text(self, group: Group) -> str:
        """A group as stored (``bucket_row``'s JSON)."""
        text = self.groups.get(group)
        if text is None:
            text = self.groups[group] = _encode(list(group)).decode()
        return text

    def accumulator(self, meter: Meter) -> Accumulator:
        """As ``Rater.accumulator``: a ``latest`` meter's read per day under ``gauge: day``."""
        if meter.aggregation == "latest" and self.days is not None:
            return Accumulator(meter.aggregation, days=self.days)
        return Accumulator(meter.aggregation)


Place = tuple[int, str, Group, int]
"""Where an event lands while folding: (segment index, meter, group, hour)."""


def _segment_of(bounds: Sequence[tuple[int, int]], timestamp_us: int) -> int:
    for index, (start, end) in enumerate(bounds):
        if start <= timestamp_us < end:
            return index
    return -1


def _measured(folding: FoldingScope, events: Iterable[RatedEvent]) -> dict[Place, Entry]:
    """The hours of the lines not priced per event (hot path: once per event and meter)."""
    hours: dict[Place, Entry] = {}
    line_totals: dict[tuple[int, str, Group], Decimal] = {}  # decimal sums, for overflow
    bounds, all_routes = folding.bounds, folding.routes
    only = (*bounds[0], all_routes[0]) if len(bounds) == 1 else None
    for sequence, timestamp_us, event_type, properties, event_hash in events:
        if only is not None:
            if not only[0] <= timestamp_us < only[1]:
                continue
            index, routes = 0, only[2].get(event_type)
        else:
            index = _segment_of(bounds, timestamp_us)
            if index < 0:
                continue
            routes = all_routes[index].get(event_type)
        if not routes:
            continue
        hour = timestamp_us - timestamp_us % HOUR_US
        term = -1
        for read, key, additive, aggregation, meter in routes:
            reading = read(properties)
            if reading is None or type(reading) is Unmeasurable:
                continue
            group, number, raw = reading
            place = (index, key, group, hour)
            entry = hours.get(place)
            if additive:
                if number is not None and type(number) is not int:  # a decimal sum value
                    line = (index, key, group)
                    try:
                        line_totals[line] = _exact_add(line_totals.get(line, ZERO), number)
                    except ArithmeticError:
                        continue  # the rater's ``overflow``: not this line's usage
                    if entry is None:
                        entry = hours[place] = Tally(aggregation, sequence, sequence)
                    entry.total = _exact_add(entry.total, number)
                elif entry is None:
                    entry = hours[place] = Tally(aggregation, sequence, sequence)
                    if number:
                        entry.whole = number
                elif number:
                    entry.whole += number
                entry.events += 1
                entry.last = sequence
            else:
                if entry is None:
                    entry = hours[place] = Bucket(folding.accumulator(meter))
                entry.accumulator.add(sequence, timestamp_us, number, raw)
            if term < 0:  # the event's digest term (``event_digest``), once for all its lines
                term = _from_bytes(_sha256(event_hash).digest(), "big")
            entry.digest += term
    return hours


def _hour_cost(
    folding: FoldingScope, meter: str, group: Group, hour_us: int, tally: Tally
) -> Decimal:
    """As ``core.buckets._cost``: the hour's quantity at the rate in force at its start."""
    found = folding.scope.configuration.meter(meter)
    assert found is not None
    rate = cost_rate(folding.scope.configuration, found, group, hour_us)
    return ZERO if rate is None else MONEY_CONTEXT.multiply(tally.quantity(), rate)


def row_key(key: BucketKey) -> RowKey:
    """``key`` as a stored row's first six columns."""
    group = _encode(list(key.group)).decode()
    return (key.customer, key.revision, key.segment_start_us, key.meter, group, key.hour_us)


def fold_batch(
    folding: FoldingScope, seeds: Mapping[BucketKey, Bucket], events: Sequence[RatedEvent]
) -> tuple[dict[RowKey, Entry], dict[RowKey, Entry]]:
    """The new events' buckets alone, by hour and rolled up by day (not yet merged with
    what is stored): ``fold(scope, seeds, events, merge_prior=False)`` and ``rolled_up``
    of it, the same buckets. ``seeds``: the per-event meters' stored buckets (hours or
    days), as ``fold`` takes them."""
    scope = folding.scope
    customer, revision, starts, texts = (
        scope.customer,
        scope.revision,
        folding.starts,
        folding.groups,
    )
    hours: dict[RowKey, Entry] = {}
    rolled: dict[RowKey, Entry] = {}
    own: set[RowKey] = set()  # days whose tally is their own (not their first hour's)
    others: dict[RowKey, list[Bucket]] = {}
    for (index, meter, group, hour), entry in _measured(folding, events).items():
        entry.digest %= DIGEST_MODULUS
        text = texts.get(group) or folding.group_text(group)
        start = starts[index]
        hours[(customer, revision, start, meter, text, hour)] = entry
        day = (customer, revision, start, meter, text, hour - hour % DAY_US)
        if type(entry) is not Tally:
            others.setdefault(day, []).append(entry)
            continue
        if folding.costs:
            entry.cost = _hour_cost(folding, meter, group, hour, entry)
        known = rolled.get(day)
        if known is None:
            rolled[day] = entry
        elif day in own:
            known.take(entry)
        else:
            rolled[day] = known.merged(entry)
            own.add(day)
    rolled.update((day, Bucket.merged_all(buckets)) for day, buckets in others.items())
    if folding.per_event_scope is not None:
        wanted = folding.per_event_types
        chosen = [event for event in events if event[2] in wanted]
        if chosen:
            general = fold(folding.per_event_scope, seeds, chosen, merge_prior=False)
            hours.update((row_key(key), bucket) for key, bucket in general.items())
            rolled.update(
                (row_key(key), bucket) for key, bucket in rolled_up(general.items()).items()
            )
    return hours, rolled


def _stored_tally(row: Sequence[Any], aggregation: Aggregation) -> Tally | None:
    """A stored row as a ``Tally``, as ``bucket_from_row`` would read it; None when it does
    not hold one (it is then merged through ``bucket_from_row``)."""
    state = _decode(row[11])
    if type(state) is not dict or state.keys() != _TALLY_STATE_KEYS:
        return None
    first, last, whole = state["first"], state["last"], state["whole"]
    if (
        state["aggregation"] != aggregation
        or state["daily"] != []
        or state["seen"] != []
        or state["latest"] is not None
        or state["maximum"] is not None
        or type(first) is not int
        or type(last) is not int
        or type(whole) is not int
    ):
        return None
    tally = Tally(aggregation, first, last)
    tally.events = int(row[6])
    tally.whole = whole
    tally.total = to_decimal(state["total"], "total")
    tally.fees = to_decimal(row[8], "fees")
    tally.bases = to_decimal(state["bases"], "bases")
    tally.cost = to_decimal(row[9], "cost")
    tally.digest = int(row[10], 16)
    return tally


def folded_bucket_rows(
    folded: Mapping[RowKey, Entry], stored: Mapping[RowKey, Sequence[Any]]
) -> list[BucketRow]:
    """The rows to write for ``folded`` buckets (one table's, from ``fold_batch``): each
    merged with its ``stored`` row (keyed by ``RowKey``) when there is one."""
    rows: list[BucketRow] = []
    for key, entry in folded.items():
        row = stored.get(key)
        if type(entry) is Tally:
            known = None if row is None else _stored_tally(row, entry.aggregation)
            if row is None or known is not None:
                merged = entry if known is None else known.merged(entry)
                rows.append((*key, *merged.columns()))
                continue
            entry = _bucket_of(entry)
        bucket = entry if row is None else bucket_from_row(row)[1].merged(entry)
        rows.append((*key, *bucket_columns(bucket)))
    return rows


def _bucket_of(tally: Tally) -> Bucket:
    """A tally as the ``Bucket`` the general fold makes."""
    usage = Accumulator(tally.aggregation, tally.events, tally.first, tally.last)
    usage._whole, usage._total = tally.whole, tally.total
    return Bucket(usage, tally.fees, tally.bases, tally.cost, tally.digest)
