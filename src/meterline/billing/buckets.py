"""Rated-usage buckets kept current beside the ledger, and read (shell of ``core.buckets``).

Buckets are folded off the append path: appends never wait for a fold. Each kept
revision has a watermark (``ledger.bucket_records``): the ledger cut up to which its
buckets hold the events. ``catch_up`` reads the events past the watermark, one partition
at a time in batches of at most ``CATCH_UP_BATCH_ROWS``, folds them, and writes their
buckets and the advanced watermark in one short transaction per batch; a batch another
catch-up folded first (or a revision started over meanwhile) is rolled back and read
again, and a crash mid-way re-folds from the old watermark, so no event counts twice.
Every read (``period_rater``, ``job_rater``, ``line_days``, ``bucket_checks``)
catches up first, so it reflects every event committed before it started; a keeper
catches up in the background so reads find little to fold: in the embedded server a
process of its own (``keeper_process``), in stream workers a ``bucket_keeper.BucketKeeper``
thread that folds when appends pause or the backlog passes a bound.

A revision's buckets are started over from the first event (``rebuild``: when a pricing
file is applied, or on first use) and kept current after. A late event folds into the
hour it is timed in; a new revision (new prices, contracts) gets buckets of its own.
Starting one keeps the older revisions finalized period invoices were rated under, only
within those invoices' periods (``closing_periods``, ``bucket_records.keep_periods``),
and drops every other: a closed period is read from the buckets of the revision that
billed it (``billing.closed_buckets``), which no keeper catches up any more. A
fold that fails (a bucket row edited into nonsense) drops the revision's buckets, logged;
the next read that builds (a draft, reconcile, the export) rebuilds them from the
ledger. ``bucket_checks.check_buckets`` (reconcile) compares the buckets with a
re-derivation from raw events through their watermark, naming the first bucket that
differs. ``audit`` never reads buckets.
"""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, MutableSequence
from contextlib import contextmanager
from datetime import date
from typing import Any

import msgspec

from meterline.billing import revisions
from meterline.billing.context import BillingContext, Loaded, billing_cycle, cost_meters
from meterline.billing.fold_memory import KnownRows, fold_scopes, keep_known, take_known
from meterline.billing.scan import BODY_DECODER, RatingJob
from meterline.billing.split_hours import split_hour_rater
from meterline.core.bucket_folding import FoldingScope, RowKey, fold_batch, folded_bucket_rows
from meterline.core.buckets import (
    DAY_US,
    HOUR_US,
    Bucket,
    BucketKey,
    BucketRow,
    BucketScope,
    RatedEvent,
    bucket_from_row,
    bucket_rater,
    merge_buckets,
    priced_rater,
)
from meterline.core.cuts import Cut
from meterline.core.model import segments
from meterline.core.periods import BillingPeriod, local_date, period_containing
from meterline.core.rating import Rater
from meterline.ledger import bucket_records
from meterline.ledger.bucket_records import DAYS, HOURS, AppendedEvent, Watermark
from meterline.ledger.database import Connection, database_errors
from meterline.ledger.event_reads import scan_rows

__all__ = [
    "BUCKETS_SETTING",
    "CATCH_UP_BATCH_ROWS",
    "buckets_wanted",
    "catch_up",
    "closing_periods",
    "ensure_built",
    "job_buckets",
    "job_rater",
    "keep_buckets",
    "keep_buckets_if_wanted",
    "line_days",
    "period_rater",
    "rebuild",
    "settled_reading",
]

_log = logging.getLogger(__name__)

CATCH_UP_BATCH_ROWS = 10_000
"""Events of one partition a catch-up folds per transaction: the write transaction that
stores their buckets stays short (at most about two bucket rows an event), and a crash
loses at most this much folding."""

CATCH_UP_ATTEMPTS_MAX = 100
"""Batches in a row a catch-up may find folded first by another before it gives up for
now (the other catch-up is folding the same events; the next read or tick goes on)."""

_FAR_FUTURE_US = 2**62


def store_errors() -> tuple[type[Exception], ...]:
    """Errors of the store itself, which a catch-up passes on (the buckets stay as they
    were) rather than take for a fold that cannot be done."""
    return (sqlite3.Error, *database_errors())


BUCKETS_SETTING = "METERLINE_BUCKETS"
"""Set to ``off`` to keep no rated-usage buckets in the processes that open billing (the
server, ``open_billing``, stream workers); on by default. Without buckets every finance
read re-rates its periods from raw events."""

_OFF = ("off", "0", "false", "no")


def buckets_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether buckets are kept: unless ``METERLINE_BUCKETS`` says ``off`` (``0``,
    ``false``, ``no``)."""
    value = (os.environ if environ is None else environ).get(BUCKETS_SETTING, "")
    return value.strip().lower() not in _OFF


def keep_buckets(context: BillingContext) -> None:
    """Keep ``context``'s buckets (creating the tables): reads build and catch them up."""
    bucket_records.ensure_bucket_tables(context.connection)
    context.keeps_buckets = True


def keep_buckets_if_wanted(context: BillingContext) -> bool:
    """``keep_buckets`` unless ``METERLINE_BUCKETS`` says ``off``; whether it did."""
    if buckets_wanted():
        keep_buckets(context)
    return context.keeps_buckets


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


def _folding_groups(
    loaded: Loaded, events: Iterable[AppendedEvent]
) -> list[tuple[FoldingScope, BillingPeriod, list[RatedEvent]]]:
    """``events`` (ledger order) decoded and grouped by customer period under ``loaded``;
    events no contract period takes and bodies that do not decode (unbillable usage,
    reported from raw events) are left out."""
    scopes = fold_scopes(loaded, _scope)
    groups: dict[tuple[str, int], tuple[FoldingScope, BillingPeriod, list[RatedEvent]]] = {}
    latest: dict[str, tuple[int, int, list[RatedEvent]]] = {}  # each customer's last
    decode = BODY_DECODER.decode
    for sequence, customer, _, event_type, timestamp_us, _, body, event_hash in events:
        place = latest.get(customer)
        if place is None or not place[0] <= timestamp_us < place[1]:
            found = scopes.find(customer, timestamp_us)
            if found is None:
                continue
            folding, period = found
            group = groups.get((customer, period.start_us))
            if group is None:
                group = groups[(customer, period.start_us)] = (folding, period, [])
            place = latest[customer] = (period.start_us, period.end_us, group[2])
        try:
            properties = decode(body).properties
        except msgspec.MsgspecError:
            continue
        place[2].append((sequence, timestamp_us, event_type, properties, event_hash))
    return list(groups.values())


def _grouped(
    loaded: Loaded, events: Iterable[AppendedEvent]
) -> list[tuple[BucketScope, BillingPeriod, list[RatedEvent]]]:
    """``_folding_groups`` with each group's ``BucketScope``."""
    return [
        (folding.scope, period, rated) for folding, period, rated in _folding_groups(loaded, events)
    ]


def folded_rows(
    connection: Connection,
    loaded: Loaded,
    events: Iterable[AppendedEvent],
    known: KnownRows | None = None,
) -> list[tuple[str, list[BucketRow]]]:
    """The bucket rows (per table: hours, days) that folding ``events`` (ledger order,
    every one past the stored buckets' watermark) into ``loaded``'s stored buckets makes:
    the touched buckets, merged with what they held. Reads only; the caller writes.

    Every customer period of the batch is folded first (``core.bucket_folding``), then
    the stored rows of the hours and days it touches are read by key ranges, a few
    statements for the whole batch (only the places ``known`` does not rule out), and
    merged."""
    with _collector_paused():  # when not paused already (``catch_up``)
        tables: dict[str, dict[RowKey, Any]] = {HOURS: {}, DAYS: {}}
        # customer by customer in key order: each store's B-tree takes the rows in order
        groups = sorted(_folding_groups(loaded, events), key=lambda group: group[0].scope.customer)
        for folding, period, rated in groups:
            seeds: dict[BucketKey, Bucket] = {}
            if folding.per_event_scope is not None and any(
                event[2] in folding.per_event_types for event in rated
            ):
                # the per-event lines' days: their fees depend on the events before
                seeds = stored_buckets(
                    connection, folding.scope, period, folding.per_event, None, DAYS
                )
            hours, days = fold_batch(folding, seeds, rated)
            tables[HOURS].update(hours)
            tables[DAYS].update(days)
        written: list[tuple[str, list[BucketRow]]] = []
        for table, folded in tables.items():
            places = [(key[0], *key[2:]) for key in folded]
            if known is not None:
                places = known.unknown(table, places)
            rows = bucket_records.buckets_at(connection, loaded.revision, places, table)
            stored = {tuple(row[:6]): row for row in rows}
            written.append((table, folded_bucket_rows(folded, stored)))
    return written


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a batch folds (and resumed as it
    was after): a batch makes a dozen objects an event and no reference cycles, so the
    collector's passes over them (promoting them to older generations, scanned again and
    again) found nothing and cost about a third of the fold; resumed once the batch's
    objects are freed, its one pass finds few."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _events(
    connection: Connection, through: Cut, after: Cut | None, customers: list[str] | None = None
) -> Iterable[AppendedEvent]:
    """The events past ``after`` and inside ``through`` (of ``customers`` when given), in
    ledger order, as folds take them."""
    rows = scan_rows(connection, through, after, 0, _FAR_FUTURE_US, customers)
    for sequence, customer, event_type, timestamp_us, body, event_hash in rows:
        yield (sequence, customer, None, event_type, timestamp_us, None, bytes(body), event_hash)


def _next_batch(mark: Cut, target: Cut, batch_rows: int | None = None) -> Cut | None:
    """The watermark after the next batch: one partition behind ``target`` moved up by
    at most ``batch_rows`` (``CATCH_UP_BATCH_ROWS`` unless given; sequences are
    gap-free); None when none is behind."""
    behind = target.union(mark).between(mark)
    if not behind:
        return None
    partition, low, high = behind[0]
    return mark.advanced(partition, min(high, low + (batch_rows or CATCH_UP_BATCH_ROWS)))


def catch_up(
    context: BillingContext,
    loaded: Loaded | None = None,
    stopping: threading.Event | None = None,
    batches_max: int | None = None,
    held: MutableSequence[float] | None = None,
    batch_rows: int | None = None,
) -> int:
    """Fold every event committed before this call into the current (or ``loaded``)
    revision's buckets, when they are kept: batch by batch (see the module), each batch's
    buckets and watermark written in one transaction; between batches, stop early once
    ``stopping`` is set or ``batches_max`` batches are written. The events folded by this
    call. ``held``, when given, is told the seconds each written batch's transaction held
    the buckets' write lock (from the lock taken to ``COMMIT`` done; on SQLite the bucket
    file's, ``bucket_records.bucket_transaction``);
    ``batch_rows`` bounds a batch's events (``CATCH_UP_BATCH_ROWS`` unless given: a
    keeper beside appends folds smaller ones).

    A fold that fails (a stored bucket that does not decode) drops the revision's
    buckets (logged): reads then re-rate until a build. Errors of the store go on."""
    chosen = loaded or context.load()
    if chosen is None:
        return 0
    connection = context.connection
    target = context.ledger_cut()
    folded = attempts = written = 0
    while attempts < CATCH_UP_ATTEMPTS_MAX and not (stopping and stopping.is_set()):
        if batches_max is not None and written >= batches_max:
            return folded
        since = bucket_records.watermark(connection, chosen.revision)
        if since is None or since.through.partitions != target.partitions:
            return folded
        through = _next_batch(since.through, target, batch_rows)
        if through is None:
            return folded
        with _collector_paused():  # resumed once the batch's objects are freed
            events = list(_events(connection, through, since.through))
            known = take_known(chosen.revision, since)
            try:
                rows = folded_rows(connection, chosen, events, known)
            except store_errors():
                raise  # the store is busy or gone: the buckets are as they were; try later
            except Exception:
                # A projection never stops anything: its buckets go, and a build starts over.
                _log.exception(
                    "rated-usage buckets of revision %d dropped: a fold failed", chosen.revision
                )
                with bucket_records.bucket_transaction(connection):
                    bucket_records.forget_revision(connection, chosen.revision)
                return folded
            if _store_batch(connection, chosen.revision, since, through, rows, held):
                keep_known(chosen.revision, since.generation, through, known, rows)
                folded += len(events)
                attempts = 0
                written += 1
            else:
                attempts += 1  # folded first by another catch-up: read the watermark again
            del events, rows
    return folded


def _store_batch(
    connection: Connection,
    revision: int,
    since: Watermark,
    through: Cut,
    rows: list[tuple[str, list[BucketRow]]],
    held: MutableSequence[float] | None = None,
) -> bool:
    """Write a folded batch's buckets and move the watermark to ``through``, in one
    transaction; False (nothing written) when the watermark has moved from ``since``.
    ``held`` is told how long the written transaction held the write lock (on SQLite the
    bucket file's, never the ledger's: ``bucket_records.bucket_transaction``)."""
    with bucket_records.bucket_transaction(connection):
        taken = time.perf_counter()
        if not bucket_records.advance(connection, revision, since, through):
            return False
        for table, table_rows in rows:
            bucket_records.write_buckets(connection, table_rows, table)
    if held is not None:
        held.append(time.perf_counter() - taken)
    return True


def rebuild(context: BillingContext, loaded: Loaded | None = None) -> None:
    """Start the current (or ``loaded``) revision's buckets over and fold every ledger
    event into them (``catch_up``, batch by batch: appends go on meanwhile)."""
    chosen = loaded or context.load()
    if chosen is None:
        return
    connection = context.connection
    bucket_records.ensure_bucket_tables(connection)
    partitions = context.ledger.store.partitions
    closing = closing_periods(context)
    bucket_records.restart(connection, chosen.revision, context.clock(), partitions, closing)
    for revision, periods in closing.items():
        if revision != chosen.revision:
            bucket_records.keep_periods(connection, revision, periods)
    catch_up(context, chosen)


def closing_periods(context: BillingContext) -> dict[int, dict[str, list[tuple[int, int]]]]:
    """The periods finalized period invoices billed ([start_us, end_us) per customer), by
    the revision each was rated under: the older revisions whose buckets are kept, and the
    periods they are kept for."""
    periods: dict[int, dict[str, list[tuple[int, int]]]] = {}
    for invoice in context.period_invoices():
        spans = periods.setdefault(invoice.revision, {}).setdefault(invoice.customer, [])
        spans.append((invoice.period_start_us, invoice.period_end_us))
    return periods


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
    """Build the current revision's buckets unless they are built, and catch them up;
    False when this billing keeps no buckets (no ``keep_buckets``) or has no pricing."""
    if not context.keeps_buckets:
        return False
    loaded = context.load()
    if loaded is None:
        return False
    if loaded.revision not in bucket_records.built_revisions(context.connection):
        rebuild(context, loaded)
    else:
        catch_up(context, loaded)
    return True


def _ready(context: BillingContext, loaded: Loaded) -> bool:
    """Whether ``loaded``'s buckets are kept, caught up first (so a read reflects every
    event committed before it started). Never when this billing keeps none
    (``METERLINE_BUCKETS=off``): its reads re-rate, whatever another process built."""
    built = bucket_records.built_revisions
    if not context.keeps_buckets or loaded.revision not in built(context.connection):
        return False
    catch_up(context, loaded)
    return loaded.revision in built(context.connection)  # a failed fold drops them


def period_rater(
    context: BillingContext, customer: str, at_us: int, loaded: Loaded | None = None
) -> tuple[Rater, BillingPeriod] | None:
    """A rater holding the customer's period (containing ``at_us``) from its buckets,
    priced as a full re-rating would; None when the revision's buckets are not built or
    the customer has no contract then."""
    chosen = loaded or context.load()
    connection = context.connection
    if chosen is None or not _ready(context, chosen):
        return None
    found = _scope(chosen, customer, at_us)
    if found is None:
        return None
    scope, period = found
    lines = merge_buckets(stored_buckets(connection, scope, period).items())
    return bucket_rater(scope, lines), period


def _job_scope(context: BillingContext, job: RatingJob, loaded: Loaded) -> BucketScope | None:
    if not _ready(context, loaded):
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
    else hours; when a window edge is inside an hour (the credit book's window ending
    now), the hours and that hour's raw events (``billing.split_hours``). None when the
    revision's buckets are not built or ``split_hours`` declines (re-rate instead)."""
    if found is None and any(edge % HOUR_US for edge in job.cuts or ()):
        # an edge inside an hour (the window ending now): hours, and that hour's raw events
        return split_hour_rater(context, job, loaded) if _job_scope(context, job, loaded) else None
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
    days = _local_days(job, stored, span_us, timezone)
    if days is None and span_us == DAY_US:
        return line_days(context, job, loaded, timezone, job_buckets(context, job, loaded, HOUR_US))
    return days


def _local_days(
    job: RatingJob, stored: dict[BucketKey, Bucket], span_us: int, timezone: str
) -> dict[tuple[int, str, tuple[str | None, ...]], Counter[date]] | None:
    """Each line's events per local day from ``stored`` buckets of ``span_us``; None when
    one spans two local days."""
    index_of = {segment.start_us: index for index, segment in enumerate(job.segments)}
    days: dict[tuple[int, str, tuple[str | None, ...]], Counter[date]] = {}
    dated: dict[int, date | None] = {}  # each bucket start's local day (None: spans two)
    for key, bucket in stored.items():
        if key.hour_us not in dated:
            first = local_date(timezone, key.hour_us)
            last = local_date(timezone, key.hour_us + span_us - 1)
            dated[key.hour_us] = first if first == last else None
        first_day = dated[key.hour_us]
        if first_day is None:
            return None
        line = (index_of[key.segment_start_us], key.meter, key.group)
        days.setdefault(line, Counter())[first_day] += bucket.events
    return days


def settled_reading(
    context: BillingContext, job: RatingJob, loaded: Loaded, timezone: str
) -> tuple[Rater, dict[tuple[int, str, tuple[str | None, ...]], Counter[date]]] | None:
    """``job``'s rater and each line's local days from ``loaded``'s buckets as they stand,
    caught up by nobody (a closed period under an older revision: the caller has checked
    they hold exactly its events): from days, else hours; None when neither tells."""
    meters = cost_meters(loaded) | job.also_meters
    scope = BucketScope(job.customer, loaded.revision, job.configuration, job.segments, meters)
    for span_us, table in ((DAY_US, DAYS), (HOUR_US, HOURS)):
        stored = stored_buckets(context.connection, scope, job.period, None, None, table)
        rater = priced_rater(scope, stored, job.cuts, span_us)
        days = None if rater is None else _local_days(job, stored, span_us, timezone)
        if rater is not None and days is not None:
            return rater, days
    return None
