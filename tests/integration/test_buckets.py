"""Rated-usage buckets beside the ledger, on both stores: folded off the append path by
catch-ups (each batch's buckets and watermark in one transaction, so a crash or a racing
catch-up never counts an event twice), priced as a full re-rating, rebuilt for a new
revision, and checked by reconcile's fast path, which names a tampered bucket."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.billing import bucket_checks, bucket_keeper, buckets
from meterline.billing.context import BillingContext, cost_meters
from meterline.billing.scan import RatingJob, run_jobs
from meterline.billing.service import Billing, open_billing
from meterline.core.events import format_timestamp
from meterline.core.model import segments
from meterline.ledger import bucket_records
from meterline.ledger.database import open_connection
from meterline.ledger.location import Location
from meterline.live.reconcile import reconcile
from tests.conftest import Databases
from tests.property.test_control_laws import CUSTOMERS, ONCE_NOW, Clock, once_stream, once_yaml
from tests.property.test_rating_batches import us


@pytest.fixture(autouse=True)
def _buckets_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buckets are kept by default (``METERLINE_BUCKETS`` unset)."""
    monkeypatch.delenv(buckets.BUCKETS_SETTING, raising=False)


@contextmanager
def kept(location: Location, pricing: str | None = None) -> Iterator[Billing]:
    """Billing over ``location`` (which keeps buckets) with two customers' pricing."""
    with open_billing(location, Clock(ONCE_NOW)) as billing:
        assert billing.context.keeps_buckets
        billing.apply(pricing or once_yaml(2))
        yield billing


def test_buckets_can_be_turned_off(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``METERLINE_BUCKETS=off``: no buckets are built, reads re-rate."""
    monkeypatch.setenv(buckets.BUCKETS_SETTING, "off")
    with open_billing(new_db(), Clock(ONCE_NOW)) as billing:
        assert not billing.context.keeps_buckets
        billing.apply(once_yaml(2))
        assert billing.ledger.ingest(once_stream(2)).accepted == 24
        assert not buckets.ensure_built(billing.context)
        assert bucket_records.built_revisions(billing.context.connection) == set()
        assert billing.draft(CUSTOMERS[0], from_buckets=True) == billing.draft(CUSTOMERS[0])


def test_a_billing_that_keeps_no_buckets_never_reads_them(
    new_db: Callable[..., Location],
) -> None:
    """Buckets another process built are not read (nor caught up) where they are off."""
    with kept(new_db()) as billing:
        assert billing.ledger.ingest(once_stream(2)).accepted == 24
        context = billing.context
        assert buckets.period_rater(context, CUSTOMERS[0], ONCE_NOW) is not None
        assert billing.ledger.ingest([late_stream()[-1]]).accepted == 1
        context.keeps_buckets = False
        assert buckets.period_rater(context, CUSTOMERS[0], ONCE_NOW) is None
        assert calls_folded(context) == 24  # not caught up either


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


def test_buckets_caught_up_price_as_a_rerating(new_db: Callable[..., Location]) -> None:
    """Batches and late events, caught up by the reads, give the re-rating's lines; a new
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
        assert bucket_checks.check_buckets(context) is None
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
        assert bucket_checks.check_buckets(context) is None


BUCKET_WHERE = (
    " WHERE customer = ? AND revision = ? AND segment_start_us = ? AND meter = ?"
    " AND group_values = ? AND hour_us = ?"
)
"""Names one bucket row by its key (a row's first six columns)."""


def bucket_connection(location: Location) -> Any:
    """A connection of its own that reaches the buckets (on SQLite, their file attached)."""
    connection = open_connection(str(location))
    bucket_records.ensure_bucket_tables(connection)
    return connection


def behind_its_back(location: Location, sql: str, parameters: tuple[Any, ...]) -> None:
    """Run ``sql`` on a connection of its own and commit: a tamper the billing never saw."""
    connection = bucket_connection(location)
    try:
        connection.execute(sql, parameters)
        if connection.in_transaction:
            connection.execute("COMMIT")
    finally:
        connection.close()


@pytest.mark.parametrize("events_per_scan", [1_000_000, 1])
@pytest.mark.parametrize("table", bucket_records.TABLES)
def test_a_tampered_bucket_is_named(
    new_db: Callable[..., Location],
    table: str,
    events_per_scan: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bucket edited behind the ledger's back is the difference the fast check (and
    ``meterline reconcile``) names, however many customers it re-derives at once."""
    monkeypatch.setattr(bucket_checks, "CHECK_EVENTS_PER_SCAN_MAX", events_per_scan)
    location = new_db()
    with kept(location) as billing:
        assert billing.ledger.ingest(late_stream()).accepted == 26
        context = billing.context
        assert buckets.catch_up(context) == 26
        revision = context.current().revision
        rows = bucket_records.revision_buckets(context.connection, revision, table)
        victim = rows[len(rows) // 2]
        behind_its_back(
            location, f"UPDATE {table} SET digest = ?{BUCKET_WHERE}", ("0" * 64, *victim[:6])
        )
        difference = bucket_checks.check_buckets(context)
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


def test_the_check_names_hours_before_days_and_a_stranger_s_bucket(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Customers are checked a set at a time, yet the named difference is the one a
    whole-ledger check names: the first hour bucket in key order (a later customer's)
    before any day bucket (an earlier one's); a bucket of a customer without events is
    named missing."""
    monkeypatch.setattr(bucket_checks, "CHECK_EVENTS_PER_SCAN_MAX", 1)  # one customer a set
    location = new_db()
    with kept(location) as billing:
        assert billing.ledger.ingest(late_stream()).accepted == 26
        context = billing.context
        assert buckets.catch_up(context) == 26
        revision = context.current().revision
        hours = bucket_records.revision_buckets(context.connection, revision, bucket_records.HOURS)
        days = bucket_records.revision_buckets(context.connection, revision, bucket_records.DAYS)
        first, last = sorted({row[0] for row in hours})[0], sorted({row[0] for row in hours})[-1]
        assert first != last
        day_victim = next(row for row in days if row[0] == first)
        hour_victim = next(row for row in hours if row[0] == last)
        for table, victim in (
            (bucket_records.DAYS, day_victim),
            (bucket_records.HOURS, hour_victim),
        ):
            sql = f"UPDATE {table} SET digest = ?{BUCKET_WHERE}"
            behind_its_back(location, sql, ("0" * 64, *victim[:6]))
        difference = bucket_checks.check_buckets(context)
        assert difference is not None and difference.key.customer == last
        assert difference.key.hour_us == hour_victim[5]
        sql = f"UPDATE {bucket_records.HOURS} SET digest = ?{BUCKET_WHERE}"
        behind_its_back(location, sql, (hour_victim[10], *hour_victim[:6]))
        difference = bucket_checks.check_buckets(context)
        assert difference is not None and difference.key.customer == first  # the day
        stranger = ("zz-no-events", *hour_victim[1:])
        columns = ", ".join("?" * len(stranger))
        behind_its_back(
            location, f"INSERT INTO {bucket_records.HOURS} VALUES ({columns})", stranger
        )
        difference = bucket_checks.check_buckets(context)
        assert difference is not None and difference.key.customer == "zz-no-events"
        assert difference.fields == ("missing",)


def calls_folded(context: BillingContext) -> int:
    """Events the stored hour buckets count (each event is one ``calls`` bucket's)."""
    rows = bucket_records.revision_buckets(context.connection, context.current().revision)
    return sum(row[6] for row in rows if row[3] == "calls")


def assert_equal_to_rerating(billing: Billing, events: int) -> None:
    """Every event folded once, and the buckets equal a full re-rating."""
    context = billing.context
    assert buckets.catch_up(context) == 0  # caught up already: nothing left behind
    assert calls_folded(context) == events
    mark = bucket_records.watermark(context.connection, context.current().revision)
    assert mark is not None and mark.through == context.ledger_cut()
    assert bucket_checks.check_buckets(context) is None
    for customer in CUSTOMERS[:2]:
        assert without_roots(bucket_lines(context, customer)) == without_roots(
            rerated_lines(context, customer)
        )


def test_a_failed_catch_up_transaction_folds_nothing_twice(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catch-up whose transaction fails after writing some of a batch's buckets leaves
    buckets and watermark as they were; the next one re-folds from there, so the buckets
    equal a full re-rating and count every event once. Appends never wait for a fold."""
    monkeypatch.setattr(buckets, "CATCH_UP_BATCH_ROWS", 7)
    with kept(new_db()) as billing:
        stream = late_stream()
        assert billing.ledger.ingest(stream[:10]).accepted == 10  # nothing folded yet
        context = billing.context
        revision = context.current().revision
        assert bucket_records.watermark(context.connection, revision).through.events == 0
        assert buckets.catch_up(context) == 10  # two batches: 7, then 3
        before = bucket_records.revision_buckets(context.connection, revision)
        assert billing.ledger.ingest(stream[10:]).accepted == len(stream) - 10
        written = bucket_records.write_buckets

        def fails_after_the_first_table(connection: Any, rows: Any, table: str = "") -> None:
            written(connection, rows, table or bucket_records.HOURS)
            if table == bucket_records.DAYS:
                raise OSError("disk gone mid-commit")

        monkeypatch.setattr(bucket_records, "write_buckets", fails_after_the_first_table)
        with pytest.raises(OSError):
            buckets.catch_up(context)
        monkeypatch.setattr(bucket_records, "write_buckets", written)
        assert bucket_records.revision_buckets(context.connection, revision) == before
        mark = bucket_records.watermark(context.connection, revision)
        assert mark is not None and mark.through.events == 10
        assert buckets.catch_up(context) == len(stream) - 10  # from the old watermark
        assert_equal_to_rerating(billing, len(stream))


def test_a_catch_up_overtaken_by_another_folds_nothing_twice(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two catch-ups fold the same batch: the one that stores second finds the watermark
    moved, writes nothing, and goes on from the new watermark."""
    monkeypatch.setattr(buckets, "CATCH_UP_BATCH_ROWS", 5)
    with kept(new_db()) as billing:
        stream = late_stream()
        assert billing.ledger.ingest(stream).accepted == len(stream)
        fold_rows = buckets.folded_rows
        overtaken: list[int] = []

        def overtaken_once(*arguments: Any) -> Any:
            rows = fold_rows(*arguments)
            if not overtaken:  # another catch-up stores this batch (and the rest) first
                overtaken.append(0)
                overtaken[0] = buckets.catch_up(billing.context)
            return rows

        monkeypatch.setattr(buckets, "folded_rows", overtaken_once)
        assert buckets.catch_up(billing.context) == 0  # every batch was the other's
        assert overtaken == [len(stream)]
        monkeypatch.setattr(buckets, "folded_rows", fold_rows)
        assert_equal_to_rerating(billing, len(stream))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cuts=st.lists(st.integers(1, 25), max_size=6),
    catch_ups=st.lists(st.booleans(), min_size=7, max_size=7),
    batch_rows=st.integers(1, 30),
)
def test_any_interleaving_of_appends_and_catch_ups_gives_the_rerating(
    databases: Databases,
    tmp_path_factory: pytest.TempPathFactory,
    cuts: list[int],
    catch_ups: list[bool],
    batch_rows: int,
) -> None:
    """The stream (late events included) appended in any chunks, with catch-ups of any
    batch size between any of them: the buckets equal a full re-rating, every event
    counted once."""
    stream = late_stream()
    edges = [0, *sorted(set(cuts)), len(stream)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(buckets, "CATCH_UP_BATCH_ROWS", batch_rows)
        with kept(databases.new(tmp_path_factory.mktemp("law"))) as billing:
            for index, (start, end) in enumerate(pairwise(edges)):
                assert billing.ledger.ingest(stream[start:end]).accepted == end - start
                if catch_ups[index]:
                    buckets.catch_up(billing.context)
            buckets.catch_up(billing.context)
            assert_equal_to_rerating(billing, len(stream))


CRASHING_CATCH_UP = """
import os, signal, sys
from meterline.billing import buckets
from meterline.billing.service import open_billing
from meterline.ledger import bucket_records

buckets.CATCH_UP_BATCH_ROWS = 4
advance, written = bucket_records.advance, bucket_records.write_buckets
batches = []

def counted(*arguments):
    moved = advance(*arguments)
    batches.append(moved)
    return moved

def killed_in_the_second_batch(connection, rows, table=bucket_records.HOURS):
    written(connection, rows, table)
    if len(batches) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction: watermark moved, rows written

bucket_records.advance = counted
bucket_records.write_buckets = killed_in_the_second_batch
with open_billing(sys.argv[1], lambda: int(sys.argv[2])) as billing:
    buckets.catch_up(billing.context)
"""


def test_a_process_killed_mid_catch_up_folds_nothing_twice(
    new_db: Callable[..., Location],
) -> None:
    """A process killed (SIGKILL) inside a catch-up's second batch transaction: its
    first batch is stored, the second is not; a later catch-up goes on from there and
    the buckets equal a full re-rating."""
    location = new_db()
    with kept(location) as billing:
        stream = late_stream()
        assert billing.ledger.ingest(stream).accepted == len(stream)
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        crashed = subprocess.run(
            [sys.executable, "-c", CRASHING_CATCH_UP, str(location), str(ONCE_NOW)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert crashed.returncode == -9, crashed.stderr
        context = billing.context
        mark = bucket_records.watermark(context.connection, context.current().revision)
        assert mark is not None and mark.through.events == 4  # the first batch only
        assert calls_folded(context) == 4
        assert buckets.catch_up(context) == len(stream) - 4
        assert_equal_to_rerating(billing, len(stream))


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
        connection = bucket_connection(location)
        try:
            connection.execute("DELETE FROM bucket_revisions")
            if connection.in_transaction:
                connection.execute("COMMIT")
        finally:
            connection.close()
        billing.context.keeps_buckets = False  # keeps none, so builds none on first use
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
    """A bucket row edited into nonsense: appends still commit, the catch-up that cannot
    fold drops the revision's buckets, and the next read that builds (reconcile)
    rebuilds them from the ledger."""
    location = new_db()
    with kept(location) as billing:
        stream = late_stream()
        assert billing.ledger.ingest(stream[:20]).accepted == 20
        context = billing.context
        assert buckets.catch_up(context) == 20
        revision = context.current().revision
        connection = bucket_connection(location)
        try:
            connection.execute("UPDATE usage_buckets SET state = 'not json'")
            if connection.in_transaction:
                connection.execute("COMMIT")
        finally:
            connection.close()
        assert billing.ledger.ingest(stream[20:]).accepted == len(stream) - 20
        assert buckets.catch_up(context) == 0  # cannot fold: drops them
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
            billing.context.keeps_buckets = False
            connection = bucket_connection(location)
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
            billing.context.keeps_buckets = True


def test_the_embedded_server_folds_appends_in_the_background(
    new_db: Callable[..., Location],
) -> None:
    """The embedded server's keeper folds what is appended without any read asking, and
    stops with the server."""
    import asyncio
    import time

    from meterline.api.services import open_services

    with kept(new_db()) as billing:
        services = open_services(billing.ledger, billing, live=False)
        keeper = services.buckets
        assert keeper is not None and keeper.is_alive()
        try:
            stream = late_stream()
            assert billing.ledger.ingest(stream).accepted == len(stream)
            context = billing.context
            deadline = time.monotonic() + 30
            while calls_folded(context) < len(stream) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert calls_folded(context) == len(stream)  # no read caught up: the keeper did
        finally:
            asyncio.run(services.stop())
        assert not keeper.is_alive()
        assert keeper.folded == len(stream)
        assert_equal_to_rerating(billing, len(stream))


class Seconds:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_keeper_waits_for_appends_to_pause(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While appends keep coming a keeper folds nothing (they need the process), until
    the ledger stands still for its idle time; then it folds, a batch a look."""
    monkeypatch.setattr(buckets, "CATCH_UP_BATCH_ROWS", 7)
    with kept(new_db()) as billing:
        context = billing.context
        clock = Seconds()
        keeper = bucket_keeper.BucketKeeper(context, idle_s=0.2, backlog_max=1_000, clock=clock)
        stream = late_stream()
        assert billing.ledger.ingest(stream[:10]).accepted == 10
        assert keeper.look() == pytest.approx(0.2)  # the ledger just moved
        clock.now += 0.15
        assert billing.ledger.ingest(stream[10:]).accepted == len(stream) - 10
        assert keeper.look() == pytest.approx(0.2)  # it moved again: wait afresh
        clock.now += 0.15
        assert keeper.look() == pytest.approx(0.05)
        assert keeper.folded == 0 and calls_folded(context) == 0
        clock.now += 0.05
        assert keeper.look() == 0  # idle: one batch folded, look again at once
        assert keeper.folded == 7
        while keeper.look() == 0:
            pass
        assert keeper.folded == len(stream)
        assert keeper.look() == bucket_keeper.CATCH_UP_INTERVAL_S  # nothing behind
        assert_equal_to_rerating(billing, len(stream))


def test_a_keeper_folds_a_backlog_past_its_bound_while_appends_go_on(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``backlog_max`` events behind, a keeper folds a batch even though the ledger
    keeps moving, so a read never has more than about that much to fold first."""
    monkeypatch.setattr(buckets, "CATCH_UP_BATCH_ROWS", 7)
    with kept(new_db()) as billing:
        context = billing.context
        keeper = bucket_keeper.BucketKeeper(context, idle_s=60, backlog_max=10, clock=Seconds())
        stream = late_stream()
        assert billing.ledger.ingest(stream[:10]).accepted == 10
        assert keeper.look() == pytest.approx(60) and keeper.folded == 0  # at the bound
        assert billing.ledger.ingest(stream[10:12]).accepted == 2
        assert keeper.look() == 0 and keeper.folded == 7  # past it: one batch
        assert keeper.look() == pytest.approx(60) and keeper.folded == 7  # 5 behind: waits
