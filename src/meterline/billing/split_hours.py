"""A period's rater from its hour buckets when a credit window edge falls inside an hour
(the credit book run up to now: its last window ends at the clock, rarely on an hour).

The hour buckets hold every hour the edges do not cut; each hour an edge cuts (at most
``SPLIT_HOURS_MAX`` of them) is rated from its raw events instead, folded on either side
of each edge (``core.buckets.fold``) into buckets keyed at the hour and at the edges, so
no bucket straddles an edge (``core.buckets.priced_rater``'s ``split``). The raw events
are read by the sequence range the hour's stored buckets span (their lines' first to
last event: sequences index the ledger; its times do not), so the read costs the events
of that range, not a scan of the ledger; an hour no bucket holds reads nothing.

Invariants: the same window charges as re-rating the period's raw events through the
buckets' watermark (tests/integration/test_split_hours.py, on both stores, events at hour
edges and late events included). The buckets, the watermark and the raw events are read
in one snapshot (a background catch-up may commit meanwhile). Periods with a line priced
per event (percentage: each event's fee depends on the events before it, in ledger order)
and jobs that rate only late events or keep their events are declined (None): the caller
re-rates. Nothing here writes.
"""

from __future__ import annotations

from dataclasses import replace

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
from meterline.core.partitions import partition_of
from meterline.core.rating import Rater
from meterline.ledger import bucket_records
from meterline.ledger.bucket_records import HOURS
from meterline.ledger.database import Connection, read_snapshot
from meterline.ledger.event_reads import scan_rows

__all__ = ["SPLIT_HOURS_MAX", "split_hour_rater"]

SPLIT_HOURS_MAX = 2
"""Hours cut by a window edge that are rated from raw events (one read each); a period
with more is re-rated whole by the caller."""


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
        raw = {
            hour: _hour_events(
                connection,
                job.customer,
                mark.through,
                hour,
                [bucket for key, bucket in stored.items() if key.hour_us == hour],
            )
            for hour in hours
        }
    kept = {key: bucket for key, bucket in stored.items() if key.hour_us not in raw}
    for hour, events in raw.items():
        kept.update(_split_hour(scope, hour, split, events))
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
    connection: Connection, customer: str, through: Cut, hour: int, stored: list[Bucket]
) -> list[tuple[int, int, str, bytes, bytes]]:
    """The customer's events timed in ``hour`` inside ``through`` (ledger order) that its
    stored buckets of the hour hold: read by the sequence range those buckets span (from
    their lines' first to last event), not by a scan of the ledger. An event no bucket
    holds is in no line (unbillable usage), so it changes no rating."""
    firsts = [bucket.accumulator.first_sequence for bucket in stored]
    lasts = [bucket.accumulator.last_sequence for bucket in stored]
    known = [first for first in firsts if first is not None]
    ends = [last for last in lasts if last is not None]
    if not known or not ends:
        return []
    partition = partition_of(customer, through.partitions)
    low = Cut.empty(through.partitions).advanced(partition, min(known) - 1)
    high = Cut.empty(through.partitions).advanced(
        partition, min(max(ends), through.head(partition))
    )
    rows = scan_rows(connection, high, low, hour, hour + HOUR_US, [customer])
    return [
        (sequence, timestamp_us, event_type, bytes(body), bytes(event_hash))
        for sequence, _, event_type, timestamp_us, body, event_hash in rows
    ]
