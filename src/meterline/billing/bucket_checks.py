"""Reconcile's check of the rated-usage buckets, and their export (beside
``billing.buckets``, which keeps them).

``check_buckets`` compares the current revision's stored buckets with buckets
re-derived from the raw events through their watermark, every event folded at once by
the general fold (``core.buckets.fold``: not the batch fold that stored them, so the
check is independent of it), and names the first bucket that differs.
``bucket_table_rows`` reads them as export rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meterline.billing.buckets import _events, _grouped, _ready, ensure_built
from meterline.billing.context import BillingContext
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
from meterline.ledger import bucket_records
from meterline.ledger.bucket_records import DAYS, HOURS, Watermark
from meterline.ledger.database import Connection, read_snapshot

__all__ = ["bucket_table_rows", "check_buckets"]


def check_buckets(context: BillingContext) -> BucketDifference | None:
    """Reconcile's fast path: the current revision's stored buckets (caught up first)
    against buckets re-derived from the raw events up to their watermark (every event
    folded at once); the first bucket that differs, or None. Without built buckets there
    is nothing to differ."""
    loaded = context.load()
    if loaded is None or not _ready(context, loaded):
        return None
    stored = _stored_at_watermark(context.connection, loaded.revision)
    if stored is None:
        return None
    since, tables = stored
    derived: dict[BucketKey, Bucket] = {}
    for scope, _, rated in _grouped(loaded, _events(context.connection, since.through, None)):
        derived.update(fold(scope, {}, rated))
    for table, expected in ((HOURS, derived), (DAYS, rolled_up(derived.items()))):
        made = (bucket_row(key, bucket) for key, bucket in expected.items())
        difference = first_row_difference(tables[table], made)
        if difference is not None:
            return difference
    return None


def _stored_at_watermark(
    connection: Connection, revision: int
) -> tuple[Watermark, dict[str, list[tuple[Any, ...]]]] | None:
    """``revision``'s watermark and every stored bucket row of both tables, read in one
    snapshot (a background catch-up may commit meanwhile); None when the buckets are no
    longer kept."""
    with read_snapshot(connection):
        since = bucket_records.watermark(connection, revision)
        if since is None:
            return None
        tables = {
            table: bucket_records.revision_buckets(connection, revision, table)
            for table in (HOURS, DAYS)
        }
    return since, tables


def bucket_table_rows(context: BillingContext) -> Iterable[tuple[Any, ...]]:
    """The current revision's buckets as export rows (built first when they are not):
    customer, revision, segment start, meter, model (group values joined by '/'), hour,
    events, quantity, fees, cost, digest."""
    if not ensure_built(context):
        return
    loaded = context.current()
    for row in bucket_records.revision_buckets(context.connection, loaded.revision):
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
