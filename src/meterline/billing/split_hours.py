"""A period's rater from its hour buckets when a credit window edge falls inside an hour
(the credit book run up to now: its last window ends at the clock, rarely on an hour).

The hour buckets hold every hour the edges do not cut; each hour an edge cuts (at most
``SPLIT_HOURS_MAX`` of them) is rated from its raw events instead, folded on either side
of each edge (``core.buckets.fold``) into buckets keyed at the hour and at the edges, so
no bucket straddles an edge (``core.buckets.priced_rater``'s ``split``). The events of such
an hour are read once for every customer (one ledger scan by time) and kept on the
context under the buckets' watermark and the hour: a dashboard building the credit books
of many customers scans the ledger once, not once a customer.

Invariants: the same window charges as re-rating the period's raw events through the
buckets' watermark (tests/integration/test_split_hours.py, on both stores, events at hour
edges and late events included). The buckets, the watermark and the raw events are read
in one snapshot (a background catch-up may commit meanwhile). Periods with a line priced
per event (percentage: each event's fee depends on the events before it, in ledger order)
and jobs that rate only late events or keep their events are declined (None): the caller
re-rates. Nothing here writes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import msgspec

from meterline.billing.context import BillingContext, Loaded, cost_meters
from meterline.billing.scan import BODY_DECODER, RatingJob
from meterline.core.buckets import (
    HOUR_US,
    Bucket,
    BucketKey,
    BucketScope,
    RatedEvent,
    bucket_from_row,
    fold,
    per_event_meters,
    priced_rater,
)
from meterline.core.cuts import Cut
from meterline.core.rating import Rater
from meterline.ledger import bucket_records
from meterline.ledger.bucket_records import HOURS
from meterline.ledger.database import Connection, read_snapshot
from meterline.ledger.event_reads import scan_rows

__all__ = ["SPLIT_HOURS_MAX", "split_hour_rater"]

SPLIT_HOURS_MAX = 2
"""Hours cut by a window edge that are rated from raw events (one ledger scan each, shared
by every customer); a period with more is re-rated whole by the caller."""

HourEvents = dict[str, list[tuple[int, int, str, bytes, bytes]]]
"""Each customer's events of one hour: (sequence, timestamp_us, type, body, hash)."""

_CACHE_LOCK = threading.Lock()


def split_hour_rater(context: BillingContext, job: RatingJob, loaded: Loaded) -> Rater | None:
    """``job``'s rater (a period of ``loaded``, the current revision, its buckets caught up
    by the caller) from its hour buckets and the raw events of the hours its window edges
    cut; None when declined (see the module)."""
    edges = job.cuts or ()
    split = tuple(edge for edge in edges if edge % HOUR_US)
    hours = sorted({edge - edge % HOUR_US for edge in split})
    if not split or len(hours) > SPLIT_HOURS_MAX or job.after is not None or job.keep_events:
        return None
    meters = cost_meters(loaded) | job.also_meters
    scope = BucketScope(job.customer, loaded.revision, job.configuration, job.segments, meters)
    if per_event_meters(scope):
        return None
    connection = context.connection
    with read_snapshot(connection):
        mark = bucket_records.watermark(connection, loaded.revision)
        if mark is None or mark.through.partitions != job.through.partitions:
            return None
        stored = _stored_hours(connection, scope, job)
        raw = {hour: _hour_events(context, connection, mark.through, hour) for hour in hours}
    kept = {key: bucket for key, bucket in stored.items() if key.hour_us not in raw}
    for hour, events in raw.items():
        kept.update(_split_hour(scope, hour, split, events.get(job.customer, [])))
    return priced_rater(scope, kept, job.cuts, HOUR_US, split)


def _stored_hours(
    connection: Connection, scope: BucketScope, job: RatingJob
) -> dict[BucketKey, Bucket]:
    """The period's stored hour buckets, its own segments' only (as
    ``buckets.stored_buckets`` reads them)."""
    starts = {segment.start_us for segment in scope.segments}
    period = job.period
    rows = bucket_records.read_buckets(
        connection, scope.customer, scope.revision, period.start_us, period.end_us,
        None, None, HOURS,
    )  # fmt: skip
    found = (bucket_from_row(row) for row in rows)
    return {key: bucket for key, bucket in found if key.segment_start_us in starts}


def _split_hour(
    scope: BucketScope,
    hour: int,
    split: tuple[int, ...],
    events: list[tuple[int, int, str, bytes, bytes]],
) -> dict[BucketKey, Bucket]:
    """The hour's events folded apart on either side of each edge inside it: the part
    before the first edge keyed at the hour, each later part at the edge it starts at."""
    inside = [edge for edge in split if hour < edge < hour + HOUR_US]
    starts = [hour, *inside]
    parts: list[list[RatedEvent]] = [[] for _ in starts]
    decode = BODY_DECODER.decode
    for sequence, timestamp_us, event_type, body, event_hash in events:
        try:
            properties = decode(body).properties
        except msgspec.MsgspecError:
            continue  # unbillable usage (reported from raw events), as folds leave it
        index = sum(1 for edge in inside if edge <= timestamp_us)
        parts[index].append((sequence, timestamp_us, event_type, properties, event_hash))
    found: dict[BucketKey, Bucket] = {}
    for start, rated in zip(starts, parts, strict=True):
        if rated:
            for key, bucket in fold(scope, {}, rated, merge_prior=False).items():
                found[replace(key, hour_us=start)] = bucket
    return found


def _hour_events(
    context: BillingContext, connection: Connection, through: Cut, hour: int
) -> Mapping[str, list[tuple[int, int, str, bytes, bytes]]]:
    """Every customer's events of ``hour`` inside ``through`` (ledger order), from one
    scan, kept on the context under (``through``, ``hour``): the events inside a cut
    never change."""
    cache: dict[Any, HourEvents] = context.hour_events
    key = (through, hour)
    with _CACHE_LOCK:
        found = cache.get(key)
    if found is not None:
        return found
    events: HourEvents = {}
    rows = scan_rows(connection, through, None, hour, hour + HOUR_US)
    for sequence, customer, event_type, timestamp_us, body, event_hash in rows:
        events.setdefault(customer, []).append(
            (sequence, timestamp_us, event_type, bytes(body), bytes(event_hash))
        )
    with _CACHE_LOCK:
        if len(cache) >= SPLIT_HOURS_MAX:
            cache.clear()
        cache[key] = events
    return events
