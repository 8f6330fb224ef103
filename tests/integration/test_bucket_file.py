"""A SQLite ledger's rated-usage buckets in a file of their own (``LEDGER.db-buckets``,
``ledger.bucket_records``), with real connections and processes: a fold's write
transaction never holds up an append (nor an append a fold's); a reader's snapshot pairs
buckets and watermark as one while the keeper commits; a ledger made before the bucket
file (its bucket tables in the ledger file) and a bucket file of another ledger give the
re-rating's drafts; a keeper killed again and again while appends go on loses nothing."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from meterline.billing import buckets
from meterline.billing.keeper_process import KeeperPace, KeeperProcess
from meterline.ledger import bucket_records
from meterline.ledger.database import connect_sqlite, open_connection, read_snapshot
from meterline.ledger.location import Location, bucket_file
from tests.integration.test_buckets import (
    CUSTOMERS,
    assert_equal_to_rerating,
    calls_folded,
    kept,
    late_stream,
)
from tests.integration.test_keeper_process import WAIT_S, folded, many_events, wait_until


@pytest.fixture(autouse=True)
def _buckets_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buckets.BUCKETS_SETTING, raising=False)


def sqlite_ledger(tmp_path: Path) -> str:
    """A fresh SQLite ledger's path: the bucket file is SQLite's alone (PostgreSQL keeps
    its buckets beside the ledger's tables, MVCC), so these tests run once, not per store."""
    return str(tmp_path / "ledger.db")


def test_a_fold_transaction_never_holds_up_an_append(tmp_path: Path) -> None:
    """Two real connections: a bucket transaction held open (the keeper's, mid-batch)
    while the ledger appends and commits; and an append's transaction held open while a
    bucket transaction commits."""
    path = sqlite_ledger(tmp_path)
    with kept(path) as billing:
        stream = late_stream()
        assert billing.ledger.ingest(stream[:10]).accepted == 10
        keeper = open_connection(path)
        try:
            with bucket_records.bucket_transaction(keeper):
                keeper.execute("DELETE FROM usage_buckets WHERE 0")
                appended = threading.Thread(
                    target=lambda: billing.ledger.ingest(stream[10:20]), daemon=True
                )
                appended.start()
                appended.join(WAIT_S)
                assert not appended.is_alive()  # committed while the buckets' writer is held
            assert billing.ledger.store.cut().events == 20
            appender = connect_sqlite(path)  # the ledger file only, as the store appends
            try:
                appender.execute("BEGIN IMMEDIATE")
                assert buckets.catch_up(billing.context) == 20  # folds and commits meanwhile
                appender.execute("ROLLBACK")
            finally:
                appender.close()
        finally:
            keeper.close()
        assert_equal_to_rerating(billing, 20)


def test_a_reader_sees_buckets_and_watermark_as_one(new_db: Callable[..., Location]) -> None:
    """A read snapshot taken before the keeper commits a batch sees the buckets and the
    watermark from before it, both, and the ledger holds every event they name; the next
    snapshot sees both after."""
    location = new_db()
    with kept(location) as billing:
        stream = late_stream()
        context = billing.context
        assert billing.ledger.ingest(stream[:10]).accepted == 10
        assert buckets.catch_up(context) == 10
        revision = context.current().revision
        reader = open_connection(str(location))
        bucket_records.ensure_bucket_tables(reader)
        try:
            with read_snapshot(reader):
                before = bucket_records.watermark(reader, revision)
                assert before is not None and before.through.events == 10
                assert billing.ledger.ingest(stream[10:]).accepted == len(stream) - 10
                assert buckets.catch_up(context) == len(stream) - 10  # the keeper commits
                counted = sum(
                    row[6] for row in bucket_records.revision_buckets(reader, revision)
                    if row[3] == "calls"
                )  # fmt: skip
                assert counted == 10  # the buckets of the watermark read, not the keeper's
                assert bucket_records.watermark(reader, revision) == before
                stored = reader.execute("SELECT count(*) FROM events").fetchone()[0]
                assert stored >= before.through.events
            after = bucket_records.watermark(reader, revision)
            assert after is not None and after.through.events == len(stream)
        finally:
            reader.close()
        assert calls_folded(context) == len(stream)


def old_layout(path: str) -> None:
    """Move the ledger's buckets back into the ledger file, as a ledger made before the
    bucket file holds them, and remove the bucket file."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.executescript(bucket_records.BUCKETS_SCHEMA)  # in the ledger file
        connection.execute("ATTACH DATABASE ? AS moved", (bucket_file(path),))
        for table in ("usage_buckets", "usage_bucket_days", "bucket_revisions",
                      "bucket_watermarks"):  # fmt: skip
            connection.execute(f"INSERT INTO main.{table} SELECT * FROM moved.{table}")
        connection.execute("DETACH DATABASE moved")
    finally:
        connection.close()
    for suffix in ("", "-wal", "-shm"):
        Path(bucket_file(path) + suffix).unlink(missing_ok=True)


def test_an_old_ledger_with_its_buckets_inside_gives_the_same_drafts(tmp_path: Path) -> None:
    """A ledger whose bucket tables are in the ledger file (made before the bucket file):
    its first use drops them there and rebuilds them in the bucket file; the drafts are
    the ones it gave before, and equal a re-rating."""
    path = sqlite_ledger(tmp_path)
    stream = late_stream()
    with kept(path) as billing:
        assert billing.ledger.ingest(stream).accepted == len(stream)
        assert buckets.catch_up(billing.context) == len(stream)
        before = [billing.draft(customer, from_buckets=True) for customer in CUSTOMERS[:2]]
    old_layout(path)
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert "usage_buckets" in tables
        connection.execute("UPDATE usage_buckets SET events = events + 1000")  # never read
    with kept(path) as billing:
        after = [billing.draft(customer, from_buckets=True) for customer in CUSTOMERS[:2]]
        assert after == before
        assert_equal_to_rerating(billing, len(stream))
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert not tables & {"usage_buckets", "usage_bucket_days", "bucket_watermarks"}
    assert Path(bucket_file(path)).exists()


def test_a_bucket_file_of_another_ledger_is_started_over(tmp_path: Path) -> None:
    """A ledger made again where another was (its bucket file left behind), and a copy
    with its bucket file: the first starts the stale buckets over, the second keeps
    them; both give the re-rating's lines."""
    path = sqlite_ledger(tmp_path)
    stream = late_stream()
    with kept(path) as billing:
        assert billing.ledger.ingest(stream).accepted == len(stream)
        assert buckets.catch_up(billing.context) == len(stream)
    copy = str(tmp_path / "copy.db")
    shutil.copyfile(path, copy)
    shutil.copyfile(bucket_file(path), bucket_file(copy))
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)  # the ledger goes, its buckets stay
    with kept(path) as billing:  # a new ledger, fewer events
        assert billing.ledger.ingest(stream[:7]).accepted == 7
        assert buckets.catch_up(billing.context) == 7  # from the empty start
        assert_equal_to_rerating(billing, 7)
    with kept(copy) as billing:  # the copy: its buckets came with it, nothing to fold
        context = billing.context
        mark = bucket_records.watermark(context.connection, context.current().revision)
        assert mark is not None and mark.through.events == len(stream)
        assert_equal_to_rerating(billing, len(stream))


def test_a_keeper_killed_again_and_again_while_appends_go_on_loses_nothing(
    new_db: Callable[..., Location],
) -> None:
    """A keeper process SIGKILLed several times part-way through while the ledger keeps
    appending: each one started in its place folds on from the watermark, and the
    buckets hold every event once (equal to a re-rating)."""
    with kept(new_db()) as billing:
        stream = many_events(12)
        first_part = len(stream) // 2
        assert billing.ledger.ingest(stream[:first_part]).accepted == first_part
        keeper = KeeperProcess(
            str(billing.context.store.path), KeeperPace(batch_rows=2, idle_s=0, backlog_max=0)
        ).start()
        try:
            appended = first_part
            for kill in range(4):
                pid = keeper.pid
                assert pid is not None
                reached = folded(billing) + 1
                assert wait_until(lambda reached=reached: folded(billing) >= reached)
                os.kill(pid, signal.SIGKILL)
                more = stream[appended : appended + 6]
                assert billing.ledger.ingest(more).accepted == len(more)
                appended += len(more)
                restarted = kill + 1
                assert wait_until(lambda n=restarted: keeper.restarts == n and keeper.is_alive())
            rest = stream[appended:]
            assert billing.ledger.ingest(rest).accepted == len(rest)
            assert wait_until(lambda: folded(billing) == len(stream))
        finally:
            keeper.stop()
        assert_equal_to_rerating(billing, len(stream))
