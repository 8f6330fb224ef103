"""A closed period read from the rated-usage buckets of the revision that billed it.

A finalized period invoice rated under revision R (not the one in force) is read, for
unit economics (``drafts.rated_periods(..., from_buckets=True)``), from R's buckets when
they hold exactly the events it billed: R's watermark includes the invoice's cut, and
none of the customer's events timed in the period lies past the cut and inside the
watermark (a late event would be in the buckets, not on the invoice: the period is then
re-rated from raw events, as it is whenever the buckets cannot tell).

Invariants:

- R's buckets are never caught up by the keeper or by the reads of the revision in force:
  R closes no more periods, and a closed period never changes (a late event becomes an
  adjustment on a later invoice). They are built from the first event when missing (a
  ledger whose older revisions' buckets were dropped before they were kept), or caught
  up to the ledger head when their watermark stands before an invoice's cut, once, by
  the first read that needs them; then pruned to the periods R's finalized invoices
  billed (``bucket_records.keep_periods``).
- Which revisions are kept: the one in force, whole; an older one only while a finalized
  period invoice names it, and only within those invoices' periods
  (``buckets.closing_periods``); every other revision's buckets go when a newer one is
  built. So the tables hold the current revision's buckets plus at most one copy of each
  closed period's.
- A reading is used only when R's watermark is the same after the buckets were read as
  when the late events were checked (another read catching R up meanwhile means a
  re-rating instead), so buckets and the check always agree.
- A reading is kept in memory (per billing store, at most ``READINGS_KEPT_MAX``) under
  its invoice and R's watermark: while the watermark stands there, the buckets and the
  events between the invoice's cut and the watermark (the ledger is append-only) are the
  same, so the reading is too; a moved watermark is another key. A kept rater is only
  read after (its zero-usage lines made before it is kept).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from datetime import date
from typing import Any
from weakref import WeakKeyDictionary

from meterline.billing import buckets, late
from meterline.billing.context import BillingContext, Loaded
from meterline.billing.documents import currency_of
from meterline.billing.scan import RatingJob
from meterline.core.cuts import Cut
from meterline.core.rating import Rater
from meterline.ledger import bucket_records, event_reads
from meterline.ledger.billing_records import BillingStore, StoredInvoice
from meterline.ledger.bucket_records import Watermark

__all__ = ["READINGS_KEPT_MAX", "read_closed_period", "settled_watermark"]

READINGS_KEPT_MAX = 1_000
"""Closed-period readings (a finalized invoice's rater and line days) kept in memory per
billing store, the least recently used dropped first: a dashboard reads every closed
period after each ledger change, and a kept reading costs one watermark read."""

_Reading = tuple[Rater, dict[tuple[int, str, tuple[str | None, ...]], Counter[date]]]
_kept: WeakKeyDictionary[BillingStore, OrderedDict[tuple[Any, ...], _Reading]] = WeakKeyDictionary()
_kept_lock = threading.Lock()


def read_closed_period(context: BillingContext, stored: StoredInvoice, job: RatingJob) -> bool:
    """Give ``job`` (the re-rating of finalized ``stored``, rated under an older revision)
    its rater and days from that revision's buckets when they hold exactly the events
    the invoice billed (see the module); whether it did. Never when this billing keeps
    no buckets."""
    if not context.keeps_buckets:
        return False
    loaded = context.load(stored.revision)
    contract = None if loaded is None else loaded.configuration.contract(stored.customer)
    if loaded is None or contract is None:
        return False
    cut = late.stored_invoice_cut(context, stored)
    mark = settled_watermark(context, loaded, cut)
    if mark is None:
        return False
    key = (stored.invoice_id, loaded.revision, mark.generation, mark.through, job.also_meters)
    kept = _remembered(context.store, key)
    if kept is not None:
        job.rater, job.days = kept
        return True
    connection = context.connection
    arrived_late = event_reads.customer_event_hashes(
        connection, stored.customer, cut, mark.through, stored.period_start_us, stored.period_end_us
    )
    if arrived_late:
        return False
    reading = buckets.settled_reading(context, job, loaded, contract.timezone)
    if reading is None or bucket_records.watermark(connection, loaded.revision) != mark:
        return False
    job.rater, job.days = reading
    try:
        reading[0].lines(currency_of(job.segments), job.configuration)  # idle lines, once
    except Exception:  # not kept: pricing the reading again tells the caller why
        return True
    _remember(context.store, key, reading)
    return True


def _remembered(store: BillingStore, key: tuple[Any, ...]) -> _Reading | None:
    with _kept_lock:
        readings = _kept.get(store)
        found = None if readings is None else readings.get(key)
        if found is not None and readings is not None:
            readings.move_to_end(key)
        return found


def _remember(store: BillingStore, key: tuple[Any, ...], reading: _Reading) -> None:
    with _kept_lock:
        readings = _kept.setdefault(store, OrderedDict())
        readings[key] = reading
        while len(readings) > READINGS_KEPT_MAX:
            readings.popitem(last=False)


def settled_watermark(context: BillingContext, loaded: Loaded, cut: Cut) -> Watermark | None:
    """The watermark of ``loaded``'s buckets once it includes ``cut``: as it stands when it
    does, else after building them (when missing) or catching them up to the ledger head,
    and pruning an older revision's to the periods its invoices billed; None when they
    still do not (a fold failed and dropped them)."""
    connection = context.connection
    mark = bucket_records.watermark(connection, loaded.revision)
    if _includes(mark, cut):
        return mark
    if mark is None:
        bucket_records.ensure_bucket_tables(connection)
        partitions = context.ledger.store.partitions
        bucket_records.start(connection, loaded.revision, context.clock(), partitions)
    buckets.catch_up(context, loaded)
    current = context.load()
    if current is not None and current.revision != loaded.revision:
        periods = buckets.closing_periods(context).get(loaded.revision, {})
        bucket_records.keep_periods(connection, loaded.revision, periods)
    mark = bucket_records.watermark(connection, loaded.revision)
    return mark if _includes(mark, cut) else None


def _includes(mark: Watermark | None, cut: Cut) -> bool:
    """Whether buckets at ``mark`` hold every event of ``cut`` (same partitions)."""
    return (
        mark is not None
        and mark.through.partitions == cut.partitions
        and mark.through.includes(cut)
    )
