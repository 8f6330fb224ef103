"""Reconcile's check of the rated-usage buckets, and their export (beside
``billing.buckets``, which keeps them).

``check_buckets`` compares the current revision's stored buckets with buckets
re-derived from the raw events through their watermark, every event folded at once by
the general fold (``core.buckets.fold``: not the batch fold that stored them, so the
check is independent of it), and names the first bucket that differs.
``bucket_table_rows`` reads them as export rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from meterline.billing.buckets import _events, _grouped, _ready, ensure_built
from meterline.billing.context import BillingContext, Loaded
from meterline.core.buckets import (
    Bucket,
    BucketDifference,
    BucketKey,
    bucket_from_row,
    bucket_row,
    first_row_difference,
    fold,
    rolled_up,
)
from meterline.ledger import bucket_records, event_reads
from meterline.ledger.bucket_records import DAYS, HOURS, Watermark
from meterline.ledger.database import Connection, read_snapshot

__all__ = ["bucket_table_rows", "check_buckets"]


CHECK_EVENTS_PER_SCAN_MAX = 1_000_000
"""Events the check re-derives at once: customers are taken in sets (in order) of at most
this many events each (a customer with more is a set of its own), one ledger scan per
set, so its memory stays bounded whatever the ledger's size (the events of a set are
held decoded while they fold: ~2 KB each)."""

CHECK_CUSTOMERS_PER_SCAN_MAX = 10_000
"""Customers per set at the most (each is one parameter of the scan's ``IN`` list)."""


def check_buckets(context: BillingContext) -> BucketDifference | None:
    """Reconcile's fast path: the current revision's stored buckets (caught up first)
    against buckets re-derived from the raw events up to their watermark (every event of
    a set of customers folded at once); the first bucket that differs (the hours table
    before the days table, each in key order), or None. Without built buckets there is
    nothing to differ. Everything is read in one snapshot (a background catch-up may
    commit meanwhile), a set of customers at a time (``CHECK_EVENTS_PER_SCAN_MAX``)."""
    loaded = context.load()
    if loaded is None or not _ready(context, loaded):
        return None
    connection = context.connection
    first_day_difference = None
    with read_snapshot(connection):
        since = bucket_records.watermark(connection, loaded.revision)
        if since is None:
            return None  # no longer kept
        for customers in _customer_sets(connection, loaded.revision, since):
            hours, days = _set_differences(connection, loaded, since, customers)
            if hours is not None:
                return hours
            first_day_difference = first_day_difference or days
    return first_day_difference


def _customer_sets(
    connection: Connection, revision: int, since: Watermark
) -> Iterator[list[str]]:
    """Every customer with an event inside the watermark or a stored bucket, in order,
    in sets of at most ``CHECK_EVENTS_PER_SCAN_MAX`` events."""
    counts = event_reads.customer_event_counts(connection, since.through)
    customers = sorted(counts.keys() | bucket_records.revision_customers(connection, revision))
    chosen: list[str] = []
    events = 0
    for customer in customers:
        count = counts.get(customer, 0)
        full = len(chosen) >= CHECK_CUSTOMERS_PER_SCAN_MAX
        if chosen and (full or events + count > CHECK_EVENTS_PER_SCAN_MAX):
            yield chosen
            chosen, events = [], 0
        chosen.append(customer)
        events += count
    if chosen:
        yield chosen


def _set_differences(
    connection: Connection, loaded: Loaded, since: Watermark, customers: list[str]
) -> tuple[BucketDifference | None, BucketDifference | None]:
    """The first difference of ``customers``' hours, and of their days."""
    derived: dict[BucketKey, Bucket] = {}
    events = _events(connection, since.through, None, customers)
    for scope, _, rated in _grouped(loaded, events):
        derived.update(fold(scope, {}, rated))
    found = []
    for table, expected in ((HOURS, derived), (DAYS, rolled_up(derived.items()))):
        stored = bucket_records.revision_buckets(connection, loaded.revision, table, customers)
        made = (bucket_row(key, bucket) for key, bucket in expected.items())
        found.append(first_row_difference(stored, made))
    return found[0], found[1]


def bucket_table_rows(context: BillingContext) -> Iterable[tuple[Any, ...]]:
    """The current revision's buckets as export rows (built first when they are not):
    customer, revision, segment start, meter, model (group values joined by '/'), hour,
    events, quantity, fees, cost, digest."""
    if not ensure_built(context):
        return
    loaded = context.current()
    for row in bucket_records.streamed_revision_buckets(context.connection, loaded.revision):
        key, bucket = bucket_from_row(row)
        model = "/".join(value for value in key.group if value is not None)
        yield (
            key.customer,
            key.revision,
            key.segment_start_us,
            key.meter,
            model,
            key.hour_us,
            bucket.events,
            bucket.quantity(),
            bucket.fees,
            bucket.cost,
            f"{bucket.digest:064x}",
        )
