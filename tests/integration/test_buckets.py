"""Rated-usage buckets beside the ledger, on both stores: folded in the append's own
transaction, priced as a full re-rating, rebuilt for a new revision, and checked by
reconcile's fast path, which names a tampered bucket."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meterline.billing import buckets
from meterline.billing.context import BillingContext, cost_meters
from meterline.billing.scan import RatingJob, run_jobs
from meterline.billing.service import Billing, open_billing
from meterline.core.events import format_timestamp
from meterline.core.model import segments
from meterline.ledger import bucket_records
from meterline.ledger.bucket_records import AppendedEvent
from meterline.ledger.database import Connection, open_connection
from meterline.ledger.location import Location
from meterline.live.reconcile import reconcile
from tests.property.test_control_laws import CUSTOMERS, ONCE_NOW, Clock, once_stream, once_yaml
from tests.property.test_rating_batches import us


@pytest.fixture(autouse=True, scope="module")
def _buckets_on() -> Iterator[None]:
    """Buckets are kept where METERLINE_BUCKETS asks (off by default)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METERLINE_BUCKETS", "on")
        yield


@contextmanager
def kept(location: Location, pricing: str | None = None) -> Iterator[Billing]:
    """Billing over ``location`` (which keeps buckets) with two customers' pricing."""
    with open_billing(location, Clock(ONCE_NOW)) as billing:
        assert isinstance(billing.ledger.store.fold_batch, buckets.BucketKeeper)
        billing.apply(pricing or once_yaml(2))
        yield billing


def late_stream() -> list[dict[str, Any]]:
    """The fixed stream, then late events timed back in hours already folded."""
    events = once_stream(2)
    for number, customer in enumerate(CUSTOMERS[:2]):
        events.append(
            {
                "id": f"{customer}-late",
                "customer": customer,
                "type": "llm",
                "timestamp": format_timestamp(us(2026, 10, 2, 3 + number)),
                "properties": {"model": "m", "tokens": 700},
            }
        )
    return events


def rerated_lines(context: BillingContext, customer: str) -> list[Any]:
    """The customer's open period rated from raw events (a full re-rating)."""
    loaded = context.current()
    contract = loaded.configuration.contract(customer)
    assert contract is not None
    found = buckets.period_rater(context, customer, ONCE_NOW)
    assert found is not None
    _, period = found
    spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
    job = RatingJob(
        customer,
        period,
        spans,
        context.ledger_cut(),
        loaded.configuration,
        also_meters=cost_meters(loaded),
    )
    run_jobs(context.connection, [job])
    return job.rater.lines("USD", loaded.configuration)


def bucket_lines(context: BillingContext, customer: str) -> list[Any]:
    found = buckets.period_rater(context, customer, ONCE_NOW)
    assert found is not None
    return found[0].lines("USD", context.current().configuration)


def revised_yaml() -> str:
    """The pricing with a second plan version from mid-period: a new revision."""
    version = """\
      - version: 2
        effective_from: 2026-10-10
        currency: USD
        prices:
          - {meter: tokens, model: per_unit, unit_amount: "0.0007"}
          - {meter: calls, model: per_unit, unit_amount: 2, credit_type: credits}
contracts:
"""
    return once_yaml(2).replace("contracts:\n", version, 1)


def without_roots(lines: list[Any]) -> list[Any]:
    return [dataclasses.replace(line, merkle_root=b"") for line in lines]


def test_buckets_folded_on_append_price_as_a_rerating(new_db: Callable[..., Location]) -> None:
    """Batches and late events folded as they commit give the re-rating's lines; a new
    revision's rebuild gives its own; the fast check finds nothing to name."""
    with kept(new_db()) as billing:
        stream = late_stream()
        for start in range(0, len(stream), 5):
            batch = stream[start : start + 5]
            assert billing.ledger.ingest(batch).accepted == len(batch)
        context = billing.context
        for customer in CUSTOMERS[:2]:
            assert without_roots(bucket_lines(context, customer)) == without_roots(
                rerated_lines(context, customer)
            )
            assert bucket_lines(context, customer)
        assert buckets.check_buckets(context) is None
        before = context.current().revision
        billing.apply(revised_yaml())  # a new revision: its buckets are built from the events
        revision = context.current().revision
        assert revision != before
        assert bucket_records.built_revisions(context.connection) == {revision}
        assert bucket_records.revision_buckets(context.connection, before) == []  # gone
        late = {**stream[0], "id": "after-revision", "timestamp": format_timestamp(ONCE_NOW - 1)}
        assert billing.ledger.ingest([late]).accepted == 1
        for customer in CUSTOMERS[:2]:
            assert without_roots(bucket_lines(context, customer)) == without_roots(
                rerated_lines(context, customer)
            )
        assert buckets.check_buckets(context) is None


@pytest.mark.parametrize("table", bucket_records.TABLES)
def test_a_tampered_bucket_is_named(new_db: Callable[..., Location], table: str) -> None:
    """A bucket edited behind the ledger's back is the difference the fast check (and
    ``meterline reconcile``) names."""
    location = new_db()
    with kept(location) as billing:
        assert billing.ledger.ingest(late_stream()).accepted == 26
        context = billing.context
        revision = context.current().revision
        rows = bucket_records.revision_buckets(context.connection, revision, table)
        victim = rows[len(rows) // 2]
        connection = open_connection(str(location))
        try:
            connection.execute(
                f"UPDATE {table} SET digest = ? WHERE customer = ? AND revision = ?"
                " AND segment_start_us = ? AND meter = ? AND group_values = ? AND hour_us = ?",
                ("0" * 64, *victim[:6]),
            )
            if connection.in_transaction:
                connection.execute("COMMIT")
        finally:
            connection.close()
        difference = buckets.check_buckets(context)
        assert difference is not None
        assert (difference.key.customer, difference.key.meter, difference.key.hour_us) == (
            victim[0],
            victim[3],
            victim[5],
        )
        assert difference.fields == ("digest",)
        report = reconcile(billing)  # the command's check names it too, and fails
        assert not report.passed
        assert report.buckets_checked
        assert report.bucket_difference == difference.describe()
        assert report.as_dict()["buckets"]["first_difference"] == difference.describe()


class Refusing:
    """A fold that folds, then fails: the append must leave nothing behind."""

    def __init__(self, keeper: buckets.BucketKeeper) -> None:
        self.keeper = keeper

    def __call__(self, connection: Connection, events: list[AppendedEvent]) -> None:
        self.keeper(connection, events)
        raise OSError("disk gone mid-commit")


def test_a_failed_fold_writes_neither_events_nor_buckets(
    new_db: Callable[..., Location],
) -> None:
    """Buckets and events commit together: a fold that fails rolls back the append."""
    with kept(new_db()) as billing:
        stream = once_stream(2)
        assert billing.ledger.ingest(stream[:10]).accepted == 10
        context = billing.context
        revision = context.current().revision
        before = bucket_records.revision_buckets(context.connection, revision)
        store = billing.ledger.store
        keeper = store.fold_batch
        assert isinstance(keeper, buckets.BucketKeeper)
        store.fold_batch = Refusing(keeper)
        with pytest.raises(OSError):
            billing.ledger.ingest(stream[10:])
        store.fold_batch = keeper
        assert store.head()[0] == 10
        assert bucket_records.revision_buckets(context.connection, revision) == before
        assert billing.ledger.ingest(stream[10:]).accepted == len(stream) - 10
        assert buckets.check_buckets(context) is None


def as_data(document: Any) -> dict[str, Any]:
    """A document as plain data (a dict, or a typed record's data where they are typed)."""
    if isinstance(document, dict):
        return document
    from meterline.core.documents import document_data  # type: ignore[import-not-found]

    data: dict[str, Any] = document_data(document)
    return data


def strip_roots(document: Any) -> dict[str, Any]:
    """A draft without its lines' Merkle roots (made from raw events only)."""
    document = as_data(document)
    lines = []
    for line in document["lines"]:
        if "lineage" in line:
            line = {**line, "lineage": {**line["lineage"], "merkle_root": ""}}
        lines.append(line)
    return {**document, "lines": lines}


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_drafts_and_economics_from_buckets_equal_the_rerating(
    new_db: Callable[..., Location], timezone: str
) -> None:
    """A draft (credit windows included), unit economics and the revenue journal's credit
    books read from buckets equal the ones re-rated from raw events (what they fall back
    to when buckets are not built); in a zone whose days are not UTC days, from hours."""
    from meterline.finance.books import build_books
    from meterline.finance.economics import usage_slices

    location = new_db()
    pricing = once_yaml(2).replace(
        "    start: 2026-10-01\n", f"    start: 2026-10-01\n    timezone: {timezone}\n"
    )
    with kept(location, pricing) as billing:
        assert billing.ledger.ingest(late_stream()).accepted == 26
        fast_drafts = [strip_roots(billing.draft(c, from_buckets=True)) for c in CUSTOMERS[:2]]
        fast_slices = usage_slices(billing)
        fast_books = build_books(billing).entries  # credit books of the open period
        _, job = billing.rated_periods(from_buckets=True)[0]
        assert job.days is not None  # read from buckets, not re-rated
        connection = open_connection(str(location))
        try:
            connection.execute("DELETE FROM bucket_revisions")
            if connection.in_transaction:
                connection.execute("COMMIT")
        finally:
            connection.close()
        billing.ledger.store.fold_batch = None  # keeps none, so builds none on first use
        _, job = billing.rated_periods(from_buckets=True)[0]
        assert job.days is None  # not built: re-rated
        assert fast_drafts == [strip_roots(billing.draft(c)) for c in CUSTOMERS[:2]]
        assert fast_slices == usage_slices(billing)
        assert fast_books == build_books(billing).entries
        assert any(item.list_price_charges for item in fast_slices)


def test_buckets_export_as_parquet(new_db: Callable[..., Location], tmp_path: Path) -> None:
    """The usage_buckets table holds every bucket, its events adding up to the ledger's."""
    import duckdb

    from meterline.finance.export import export_tables

    with kept(new_db()) as billing:
        assert billing.ledger.ingest(late_stream()).accepted == 26
        export_tables(billing, tmp_path, tables=["usage_buckets"])
        revision = billing.context.current().revision
        stored = bucket_records.revision_buckets(billing.context.connection, revision)
    path = str(tmp_path / "usage_buckets.parquet")
    ((count, events, tokens),) = duckdb.sql(
        "SELECT count(*), sum(events), sum(quantity) FILTER (WHERE meter = 'tokens')"
        f" FROM read_parquet('{path}')"
    ).fetchall()
    assert count == len(stored)
    assert events == 2 * 26  # each event is one tokens and one calls bucket's
    assert tokens == 2 * (12 * 1500 + 700)


def test_a_bucket_that_cannot_be_read_never_stops_ingestion(
    new_db: Callable[..., Location],
) -> None:
    """A bucket row edited into nonsense: the next append still commits, the revision's
    buckets are dropped with it, and the next read rebuilds them from the ledger."""
    location = new_db()
    with kept(location) as billing:
        stream = late_stream()
        assert billing.ledger.ingest(stream[:20]).accepted == 20
        context = billing.context
        revision = context.current().revision
        connection = open_connection(str(location))
        try:
            connection.execute("UPDATE usage_buckets SET state = 'not json'")
            if connection.in_transaction:
                connection.execute("COMMIT")
        finally:
            connection.close()
        assert billing.ledger.ingest(stream[20:]).accepted == len(stream) - 20
        assert revision not in bucket_records.built_revisions(context.connection)
        assert bucket_records.revision_buckets(context.connection, revision) == []
        report = reconcile(billing)  # builds them again, then checks them
        assert report.buckets_checked and report.bucket_difference is None
        for customer in CUSTOMERS[:2]:
            assert without_roots(bucket_lines(context, customer)) == without_roots(
                rerated_lines(context, customer)
            )


def test_finalized_periods_read_from_buckets_until_a_late_event(
    new_db: Callable[..., Location],
) -> None:
    """A closed period whose buckets hold exactly what it billed is read from them (the
    same unit economics as re-rating it); once a late event arrives it is re-rated."""
    from meterline.finance.economics import usage_slices

    location = new_db()
    with kept(location) as billing:
        assert billing.ledger.ingest(late_stream()).accepted == 26
        clock = billing.context.clock
        assert isinstance(clock, Clock)
        clock.now_us = us(2026, 11, 2)
        assert len(billing.close(us(2026, 11, 1))) == 2
        for arrived_late in (False, True):
            if arrived_late:
                late = {**late_stream()[0], "id": "after-close"}
                assert billing.ledger.ingest([late]).accepted == 1
            pairs = billing.rated_periods(from_buckets=True)
            closed = {job.customer: job for document, job in pairs if as_data(document)["number"]}
            assert sorted(closed) == list(CUSTOMERS[:2])
            # the late event is the first customer's: only its closed period is re-rated
            assert (closed[CUSTOMERS[0]].days is None) == arrived_late
            assert closed[CUSTOMERS[1]].days is not None
            fast = usage_slices(billing)
            store = billing.ledger.store
            keeper, store.fold_batch = store.fold_batch, None
            connection = open_connection(str(location))
            try:
                connection.execute("UPDATE bucket_revisions SET revision = -revision")
                if connection.in_transaction:
                    connection.execute("COMMIT")
                assert fast == usage_slices(billing)  # re-rated: buckets not built
                connection.execute("UPDATE bucket_revisions SET revision = -revision")
                if connection.in_transaction:
                    connection.execute("COMMIT")
            finally:
                connection.close()
            store.fold_batch = keeper
