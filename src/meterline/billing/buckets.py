"""Rated-usage buckets kept current beside the ledger, and read (shell of ``core.buckets``).

``keep_buckets`` installs a fold on the ledger store: each append folds the events it
accepted into the current configuration revision's buckets inside the append's own
transaction (``ledger.bucket_records``), so buckets and events commit together or not at
all. A revision's buckets are built once from every ledger event (``rebuild``: when a
pricing file is applied, or on first use) in one transaction that holds appends off, and
kept current after; a revision not built yet is not folded (its build reads the events).
A late event folds into the hour it is timed in; a new revision (new prices, contracts)
gets buckets of its own. A fold that fails (a bucket row edited into nonsense) never stops
ingestion: the revision's buckets are dropped in the same transaction, logged, and
rebuilt from the ledger by the next read. Reads: ``period_rater`` (a customer's period
priced from its buckets), ``job_rater`` and ``line_days`` (drafts and unit economics),
``check_buckets`` (reconcile: buckets against a re-derivation from raw events, naming the
first bucket that differs). ``audit`` never reads buckets.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import islice
from typing import Any

import msgspec

from meterline.billing import revisions
from meterline.billing.context import BillingContext, Loaded, billing_cycle, cost_meters
from meterline.billing.scan import BODY_DECODER, RatingJob
from meterline.core.buckets import (
    DAY_US,
    HOUR_US,
    Bucket,
    BucketDifference,
    BucketKey,
    BucketScope,
    RatedEvent,
    bucket_from_row,
    bucket_rater,
    bucket_row,
    first_row_difference,
    fold,
    merge_buckets,
    per_event_meters,
    priced_rater,
    rolled_up,
)
from meterline.core.cuts import Cut
from meterline.core.model import segments
from meterline.core.periods import BillingPeriod, local_date, period_containing
from meterline.core.rating import Rater
from meterline.ledger import bucket_records
from meterline.ledger.bucket_records import DAYS, HOURS, AppendedEvent
from meterline.ledger.database import Connection, open_connection
from meterline.ledger.event_reads import scan_rows

__all__ = [
    "REBUILD_BATCH_ROWS",
    "BucketKeeper",
    "bucket_table_rows",
    "check_buckets",
    "ensure_built",
    "job_buckets",
    "job_rater",
    "keep_buckets",
    "line_days",
    "period_rater",
    "rebuild",
]

_log = logging.getLogger(__name__)

REBUILD_BATCH_ROWS = 50_000
"""Events read and folded at a time while a revision's buckets are built."""

_FAR_FUTURE_US = 2**62


@dataclass
class BucketKeeper:
    """The store's ``fold_batch``: folds an append's events into the current revision's
    buckets, on the append's connection and in its transaction."""

    context: BillingContext

    def __call__(self, connection: Connection, events: Sequence[AppendedEvent]) -> None:
        revision = bucket_records.latest_revision(connection)
        if revision is None or revision not in bucket_records.built_revisions(connection):
            return
        loaded = self.context.load(revision)
        if loaded is None:
            return
        connection.execute("SAVEPOINT meterline_buckets")
        try:
            fold_events(connection, loaded, events)
        except Exception:
            # A projection never stops ingestion: its revision is dropped, in this same
            # transaction, and rebuilt from the ledger on the next read that asks.
            connection.execute("ROLLBACK TO SAVEPOINT meterline_buckets")
            bucket_records.forget_revision(connection, revision)
            _log.exception("rated-usage buckets of revision %d dropped: a fold failed", revision)
        connection.execute("RELEASE SAVEPOINT meterline_buckets")


BUCKETS_SETTING = "METERLINE_BUCKETS"
"""Set to ``on`` to keep rated-usage buckets in the processes that open billing (the
server, ``open_billing``, stream workers). Off by default: the fold costs ingest most of
its throughput on spread-out traffic and its transaction can wait on billing's writes
(BENCHMARKS.md, docs/finance.md); reads re-rate when no buckets are kept."""


def buckets_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``METERLINE_BUCKETS`` asks for buckets (``on``, ``1``, ``true``, ``yes``)."""
    value = (os.environ if environ is None else environ).get(BUCKETS_SETTING, "")
    return value.strip().lower() in ("on", "1", "true", "yes")


def keep_buckets_if_wanted(context: BillingContext) -> BucketKeeper | None:
    """``keep_buckets`` when ``METERLINE_BUCKETS`` asks for them; None otherwise."""
    return keep_buckets(context) if buckets_wanted() else None


def keep_buckets(context: BillingContext) -> BucketKeeper:
    """Fold every later append of ``context``'s ledger into buckets (creating the tables)."""
    bucket_records.ensure_bucket_tables(context.connection)
    keeper = BucketKeeper(context)
    context.ledger.store.fold_batch = keeper
    return keeper


def _scope(loaded: Loaded, customer: str, at_us: int) -> tuple[BucketScope, BillingPeriod] | None:
    """The customer's period containing ``at_us`` under ``loaded``; None without one."""
    configuration = loaded.configuration
    contract = configuration.contract(customer)
    if contract is None:
        return None
    period = period_containing(billing_cycle(configuration, contract), at_us)
    spans = segments(configuration, contract, period.start_us, period.end_us)
    if not spans:
        return None
    scope = BucketScope(customer, loaded.revision, configuration, spans, cost_meters(loaded))
    return scope, period


def stored_buckets(
    connection: Connection,
    scope: BucketScope,
    period: BillingPeriod,
    meters: Iterable[str] | None = None,
    hours: Iterable[int] | None = None,
    table: str = HOURS,
) -> dict[BucketKey, Bucket]:
    """The scope's stored buckets of ``table`` (of ``meters``, at ``hours``, when given),
    its own segments' only: an hour or day a period edge cuts may hold the neighbouring
    period's too."""
    starts = {segment.start_us for segment in scope.segments}
    rows = bucket_records.read_buckets(
        connection,
        scope.customer,
        scope.revision,
        period.start_us,
        period.end_us,
        meters,
        hours,
        table,
    )
    found = (bucket_from_row(row) for row in rows)
    return {key: bucket for key, bucket in found if key.segment_start_us in starts}


def _grouped(
    loaded: Loaded, events: Iterable[AppendedEvent]
) -> list[tuple[BucketScope, BillingPeriod, list[RatedEvent]]]:
    """``events`` (ledger order) decoded and grouped by customer period under ``loaded``;
    events no contract period takes and bodies that do not decode (unbillable usage,
    reported from raw events) are left out."""
    groups: dict[tuple[str, int], tuple[BucketScope, BillingPeriod, list[RatedEvent]]] = {}
    scopes: dict[str, list[tuple[BucketScope, BillingPeriod]]] = {}
    decode = BODY_DECODER.decode
    for event in events:
        sequence, customer, _, event_type, timestamp_us, _, body, event_hash = event[:8]
        known = scopes.setdefault(customer, [])
        found = next((item for item in known if item[1].contains(timestamp_us)), None)
        if found is None:
            found = _scope(loaded, customer, timestamp_us)
            if found is None or not found[1].contains(timestamp_us):
                continue
            known.append(found)
        try:
            properties = decode(body).properties
        except msgspec.MsgspecError:
            continue
        scope, period = found
        group = groups.setdefault((customer, period.start_us), (scope, period, []))
        group[2].append((sequence, timestamp_us, event_type, properties, event_hash))
    return list(groups.values())


def fold_events(connection: Connection, loaded: Loaded, events: Iterable[AppendedEvent]) -> None:
    """Fold ``events`` (ledger order) into ``loaded``'s buckets, hours and days."""
    for scope, period, rated in _grouped(loaded, events):
        # read only what the fold needs: the per-event lines' days (their fees depend on
        # the events before), then the stored buckets of the hours and days it touches
        per_event = per_event_meters(scope)
        seeds = (
            stored_buckets(connection, scope, period, per_event, None, DAYS) if per_event else {}
        )
        fresh = fold(scope, seeds, rated, merge_prior=False)
        for table, new in ((HOURS, fresh), (DAYS, rolled_up(fresh.items()))):
            hours = {key.hour_us for key in new}
            stored = stored_buckets(connection, scope, period, None, hours, table)
            rows = []
            for key, bucket in new.items():
                known = stored.get(key)
                rows.append(bucket_row(key, bucket if known is None else known.merged(bucket)))
            bucket_records.write_buckets(connection, rows, table)


def _all_events(connection: Connection, through: Cut) -> Iterable[AppendedEvent]:
    rows = scan_rows(connection, through, None, 0, _FAR_FUTURE_US)
    for sequence, customer, event_type, timestamp_us, body, event_hash in rows:
        yield (sequence, customer, None, event_type, timestamp_us, None, bytes(body), event_hash)


def rebuild(context: BillingContext, loaded: Loaded | None = None) -> None:
    """Build the current (or ``loaded``) revision's buckets from every ledger event, in
    one transaction that holds appends off, and mark the revision built."""
    chosen = loaded or context.load()
    if chosen is None:
        return
    connection = open_connection(context.ledger.store.path)
    try:
        bucket_records.ensure_bucket_tables(connection)

        def build() -> None:
            source = _all_events(connection, context.ledger_cut())
            while batch := list(islice(source, REBUILD_BATCH_ROWS)):
                fold_events(connection, chosen, batch)

        bucket_records.rebuilt(connection, chosen.revision, context.clock(), build)
    finally:
        connection.close()


def apply_pricing(
    context: BillingContext,
    text: str,
    name: str = "pricing.yaml",
    dry_run: bool = False,
    allow_retire_all: bool = False,
) -> revisions.ApplyReport:
    """``revisions.apply``; then, unless a dry run, the new revision's buckets are built
    when this ledger keeps them (``keep_buckets``), so no read waits for them."""
    report = revisions.apply(context, text, name, dry_run, allow_retire_all)
    if not dry_run:
        ensure_built(context)
    return report


def ensure_built(context: BillingContext) -> bool:
    """Build the current revision's buckets unless they are built; False when this
    ledger keeps no buckets (no ``keep_buckets``) or has no pricing yet."""
    if not isinstance(context.ledger.store.fold_batch, BucketKeeper):
        return False
    loaded = context.load()
    if loaded is None:
        return False
    if loaded.revision not in _built(context.connection):
        rebuild(context, loaded)
    return True


def period_rater(
    context: BillingContext, customer: str, at_us: int, loaded: Loaded | None = None
) -> tuple[Rater, BillingPeriod] | None:
    """A rater holding the customer's period (containing ``at_us``) from its buckets,
    priced as a full re-rating would; None when the revision's buckets are not built or
    the customer has no contract then."""
    chosen = loaded or context.load()
    connection = context.connection
    if chosen is None or chosen.revision not in _built(connection):
        return None
    found = _scope(chosen, customer, at_us)
    if found is None:
        return None
    scope, period = found
    lines = merge_buckets(stored_buckets(connection, scope, period).items())
    return bucket_rater(scope, lines), period


def _job_scope(context: BillingContext, job: RatingJob, loaded: Loaded) -> BucketScope | None:
    if loaded.revision not in _built(context.connection):
        return None
    meters = cost_meters(loaded) | job.also_meters
    return BucketScope(job.customer, loaded.revision, job.configuration, job.segments, meters)


Found = tuple[BucketScope, dict[BucketKey, Bucket], int]
"""A period's scope, its stored buckets and their span (``DAY_US`` or ``HOUR_US``)."""


def job_buckets(
    context: BillingContext, job: RatingJob, loaded: Loaded, span_us: int = DAY_US
) -> Found | None:
    """The scope of ``job`` and its stored buckets, rolled up by day (or by hour);
    None when they are not built."""
    scope = _job_scope(context, job, loaded)
    if scope is None:
        return None
    table = DAYS if span_us == DAY_US else HOURS
    return scope, stored_buckets(context.connection, scope, job.period, None, None, table), span_us


def job_rater(
    context: BillingContext, job: RatingJob, loaded: Loaded, found: Found | None = None
) -> Rater | None:
    """The rater ``job`` (a period of ``loaded``, the current revision) would end with,
    from its buckets, credit windows included: priced as a full re-rating, without
    Merkle roots, unbillable usage or members. Days when the windows start on UTC days,
    else hours; None when the revision's buckets are not built or a credit window does not
    start on an hour (re-rate instead)."""
    found = found or job_buckets(context, job, loaded)
    if found is None:
        return None
    scope, stored, span_us = found
    rater = priced_rater(scope, stored, job.cuts, span_us)
    if rater is None and span_us == DAY_US:
        return job_rater(context, job, loaded, job_buckets(context, job, loaded, HOUR_US))
    return rater


def line_days(
    context: BillingContext,
    job: RatingJob,
    loaded: Loaded,
    timezone: str,
    found: Found | None = None,
) -> dict[tuple[int, str, tuple[str | None, ...]], Counter[date]] | None:
    """Each line's events per local day in ``timezone`` (keyed like ``Rater.members``),
    from the period's buckets: UTC days when the zone's days are UTC days, else hours;
    None when buckets are not built or an hour spans two local days (a zone offset that
    is not whole hours)."""
    found = found or job_buckets(context, job, loaded)
    if found is None:
        return None
    _, stored, span_us = found
    index_of = {segment.start_us: index for index, segment in enumerate(job.segments)}
    days: dict[tuple[int, str, tuple[str | None, ...]], Counter[date]] = {}
    for key, bucket in stored.items():
        first = local_date(timezone, key.hour_us)
        if first != local_date(timezone, key.hour_us + span_us - 1):
            if span_us == DAY_US:
                hours = job_buckets(context, job, loaded, HOUR_US)
                return line_days(context, job, loaded, timezone, hours)
            return None
        line = (index_of[key.segment_start_us], key.meter, key.group)
        days.setdefault(line, Counter())[first] += bucket.events
    return days


def _built(connection: Connection) -> set[int]:
    return bucket_records.built_revisions(connection)


def check_buckets(context: BillingContext) -> BucketDifference | None:
    """Reconcile's fast path: the current revision's stored buckets against buckets
    re-derived from raw events (every event folded at once); the first bucket that
    differs, or None. Without built buckets there is nothing to differ."""
    loaded = context.load()
    connection = context.connection
    if loaded is None or loaded.revision not in _built(connection):
        return None
    derived: dict[BucketKey, Bucket] = {}
    for scope, _, rated in _grouped(loaded, _all_events(connection, context.ledger_cut())):
        derived.update(fold(scope, {}, rated))
    for table, expected in ((HOURS, derived), (DAYS, rolled_up(derived.items()))):
        rows = bucket_records.revision_buckets(connection, loaded.revision, table)
        made = (bucket_row(key, bucket) for key, bucket in expected.items())
        difference = first_row_difference(rows, made)
        if difference is not None:
            return difference
    return None


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
