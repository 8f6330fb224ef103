"""A closed period read from the buckets of the revision that billed it, on both stores:
a period closed under revision 1 and read after revision 2 is applied gives the same
lines and unit economics as its re-rating from raw events, whether revision 1's buckets
were kept, never built, or reached by a late event; only the revisions finalized
invoices name are kept, and only within their periods."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from meterline.billing import buckets
from meterline.billing.late import rerate, stored_invoice_cut
from meterline.billing.scan import RatingJob, run_jobs
from meterline.billing.service import Billing
from meterline.ledger import bucket_records
from meterline.ledger.database import write_transaction
from meterline.ledger.location import Location
from tests.integration.test_buckets import as_data, kept, late_stream, revised_yaml
from tests.property.test_control_laws import CUSTOMERS, Clock
from tests.property.test_rating_batches import us

CLOSED_THROUGH = us(2026, 11, 1)


def closed_under_revision_one(billing: Billing, caught_up: bool = True) -> int:
    """October closed under revision 1 (two invoices), its buckets caught up (as the
    keeper does) unless not ``caught_up``, then revision 2 applied: the revision of the
    closed period."""
    assert billing.ledger.ingest(late_stream()[:-2]).accepted == 24
    clock = billing.context.clock
    assert isinstance(clock, Clock)
    clock.now_us = us(2026, 11, 2)
    revision = billing.context.current().revision
    assert len(billing.close(CLOSED_THROUGH)) == 2
    if caught_up:
        assert buckets.catch_up(billing.context) == 24
    billing.apply(revised_yaml())
    assert billing.context.current().revision != revision
    return revision


def closed_jobs(billing: Billing) -> dict[str, RatingJob]:
    pairs = billing.rated_periods(from_buckets=True)
    return {job.customer: job for document, job in pairs if as_data(document)["number"]}


def without_roots(lines: list[Any]) -> list[Any]:
    return [dataclasses.replace(line, merkle_root=b"") for line in lines]


def assert_equal_to_rerating(billing: Billing, jobs: dict[str, RatingJob]) -> None:
    """Each closed job's lines equal the re-rating of its invoice from raw events, and
    unit economics equals the one a billing keeping no buckets computes."""
    from meterline.finance.economics import usage_slices

    context = billing.context
    for stored in context.period_invoices():
        job = jobs[stored.customer]
        fresh, loaded = rerate(context, stored, stored_invoice_cut(context, stored))
        run_jobs(context.connection, [fresh])
        currency = as_data(stored.record)["currency"]
        expected = fresh.rater.lines(currency, loaded.configuration)
        assert expected
        assert without_roots(job.rater.lines(currency, loaded.configuration)) == without_roots(
            expected
        )
    fast = usage_slices(billing)
    context.keeps_buckets = False
    try:
        assert closed_jobs(billing)[CUSTOMERS[0]].days is None  # re-rated
        assert fast == usage_slices(billing)
    finally:
        context.keeps_buckets = True
    assert any(item.list_price_charges for item in fast)


def late_event() -> dict[str, Any]:
    """One of the first customer's events timed in the closed October, arriving late."""
    return {**late_stream()[-2], "id": "after-close"}


def test_a_closed_period_reads_the_buckets_of_its_revision(
    new_db: Callable[..., Location],
) -> None:
    """Revision 1's buckets outlive revision 2's build, pruned to the closed periods, and
    the closed period is read from them, equal to its re-rating; a late event past their
    watermark leaves them exact; one they hold makes that customer's period re-rate."""
    with kept(new_db()) as billing:
        revision = closed_under_revision_one(billing)
        context = billing.context
        current = context.current().revision
        assert bucket_records.built_revisions(context.connection) == {revision, current}
        start, end = us(2026, 10, 1), us(2026, 11, 1)
        kept_rows = bucket_records.revision_buckets(context.connection, revision)
        assert kept_rows
        assert all(start <= row[5] < end for row in kept_rows)  # only the closed periods
        jobs = closed_jobs(billing)
        assert sorted(jobs) == list(CUSTOMERS[:2])
        assert all(job.days is not None for job in jobs.values())  # from revision 1's buckets
        assert_equal_to_rerating(billing, jobs)
        mark = bucket_records.watermark(context.connection, revision)

        assert billing.ledger.ingest([late_event()]).accepted == 1
        jobs = closed_jobs(billing)
        assert all(job.days is not None for job in jobs.values())  # past the watermark
        again = closed_jobs(billing)  # the watermark stands: the reading kept is read
        assert all(again[name].rater is job.rater for name, job in jobs.items())
        assert bucket_records.watermark(context.connection, revision) == mark  # not caught up
        assert_equal_to_rerating(billing, jobs)

        assert buckets.catch_up(context, context.load(revision)) == 1  # now they hold it
        jobs = closed_jobs(billing)
        assert jobs[CUSTOMERS[0]].days is None  # re-rated: its buckets hold the late event
        assert jobs[CUSTOMERS[1]].days is not None
        assert_equal_to_rerating(billing, jobs)


def forget(billing: Billing, revision: int) -> None:
    with write_transaction(billing.context.connection):
        bucket_records.forget_revision(billing.context.connection, revision)


@pytest.mark.parametrize("state", ["behind", "never built", "never built, a late event"])
def test_a_closed_period_builds_its_revisions_buckets_once(
    new_db: Callable[..., Location], state: str
) -> None:
    """Revision 1's buckets behind the invoices' cut (closed before any catch-up) or never
    built (dropped, as on a ledger made before they were kept): the first read builds or
    catches them up to the ledger head, pruned, and reads them; with a late event already
    in the ledger, that customer's period is re-rated."""
    with kept(new_db()) as billing:
        revision = closed_under_revision_one(billing, caught_up=False)
        context = billing.context
        mark = bucket_records.watermark(context.connection, revision)
        assert mark is not None and mark.through.events == 0  # behind the invoices' cut
        arrived_late = state.endswith("a late event")
        if arrived_late:
            assert billing.ledger.ingest([late_event()]).accepted == 1
        if state.startswith("never built"):
            forget(billing, revision)
            assert revision not in bucket_records.built_revisions(context.connection)
        jobs = closed_jobs(billing)
        assert revision in bucket_records.built_revisions(context.connection)
        mark = bucket_records.watermark(context.connection, revision)
        assert mark is not None and mark.through == context.ledger_cut()
        rows = bucket_records.revision_buckets(context.connection, revision)
        assert rows and all(us(2026, 10, 1) <= row[5] < CLOSED_THROUGH for row in rows)
        assert (jobs[CUSTOMERS[0]].days is None) == arrived_late
        assert jobs[CUSTOMERS[1]].days is not None
        assert_equal_to_rerating(billing, jobs)
        again = closed_jobs(billing)  # done once: the next read reads them as they stand
        assert bucket_records.watermark(context.connection, revision) == mark
        assert (again[CUSTOMERS[0]].days is None) == arrived_late


def test_only_revisions_finalized_invoices_name_are_kept(
    new_db: Callable[..., Location],
) -> None:
    """A revision no finalized invoice was rated under loses its buckets when a newer one
    is built; the closing revision keeps its own."""
    with kept(new_db()) as billing:
        revision = closed_under_revision_one(billing)
        context = billing.context
        unnamed = context.current().revision
        version = revised_yaml().split("      - version: 2\n", 1)[1].split("contracts:\n")[0]
        third = "      - version: 3\n" + version.replace("2026-10-10", "2026-12-01")
        billing.apply(revised_yaml().replace("contracts:\n", third + "contracts:\n", 1))
        newest = context.current().revision
        assert newest not in (revision, unnamed)
        assert bucket_records.built_revisions(context.connection) == {revision, newest}
        assert bucket_records.revision_buckets(context.connection, unnamed) == []
        assert all(job.days is not None for job in closed_jobs(billing).values())
