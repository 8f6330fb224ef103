"""Walking the chains in parallel worker processes: what ``verify`` and ``audit`` run.

``verify_chains_parallel(store)`` answers what ``Ledger.verify`` answers (the same
``ChainReport``: the same first bad item, record count and heads), reading the ledger in
ranges of whole batches (``core.chain_ranges``) walked by ``audit_workers()`` worker
processes. Each worker opens its own read-only connection to the store (SQLite file or
PostgreSQL) and walks the ranges it is handed; this process reads the batches (not the
events), plans the ranges and merges the outcomes in (partition, range) order, stopping
at the first range with a problem.

Invariants:

* **Bounded memory.** No process holds more than one range's rows at a time (they are
  streamed), and at most ``RANGES_IN_FLIGHT_PER_WORKER`` ranges per worker are planned
  ahead.
* **Correct with one worker**, and when parallel walking does not pay or cannot run: a
  ledger under ``PARALLEL_VERIFY_MIN_EVENTS`` events or an in-memory SQLite database is
  walked in this process by ``Ledger.verify``; with ``METERLINE_AUDIT_WORKERS=1`` a
  larger one has its ranges walked one after another in this process (no worker: the
  same ranges and merge, about half ``Ledger.verify``'s CPU per event, which makes a
  record object per event).
* **Exact when anything fails.** A store that fails while a worker reads it is walked
  again here by ``Ledger.verify``, which names where it stopped as it always does; a
  worker that dies (or cannot start) has its range walked here.
* **Appends may go on.** The ranges before a partition's last are fixed by batches that
  exist (the ledger is append-only); the last range reads its batches, its records and
  the partition's stored head in one snapshot (``read_snapshot``), so an event appended
  meanwhile is seen with its batch or not at all, and the head checked is that
  snapshot's.
* Workers start with the ``forkserver`` method (``spawn`` where there is none): never a
  ``fork`` of a process holding open connections and threads.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from meterline.core.chain import BatchRecord, ChainReport, HeadState, StoredRecord
from meterline.core.chain_ranges import (
    ChainRange,
    RangeOutcome,
    checkpoint_expectations,
    merge_ranges,
    plan_ranges,
    walk_range,
    with_batches,
)
from meterline.core.checkpoint_note import PartitionHead
from meterline.ledger.database import (
    Connection,
    PostgresConnection,
    connect_sqlite,
    database_errors,
    open_connection,
    read_snapshot,
    stream_rows,
)
from meterline.ledger.event_ledger import Ledger
from meterline.ledger.heads import HEAD_ROWS, head_row
from meterline.ledger.location import is_postgres
from meterline.ledger.sql_reads import SqlLedgerReads
from meterline.ledger.store import LedgerStore

AUDIT_WORKERS_ENV = "METERLINE_AUDIT_WORKERS"
"""Environment variable setting ``audit_workers()`` (``1`` walks every chain in-process)."""

PARALLEL_VERIFY_MIN_EVENTS = 200_000
"""A ledger holds at least this many events before its chains are walked by worker
processes (starting them costs ~0.3 s; one process walks ~150,000 events/s)."""

CHAIN_RANGE_EVENTS = 100_000
"""Events per range handed to a worker (whole batches): small enough to share the work
evenly, large enough that a range's query and hand-over cost nothing next to its walk."""

RANGES_IN_FLIGHT_PER_WORKER = 2
"""Ranges planned ahead per worker: keeps each busy without planning the whole ledger."""

_RECORDS = f"SELECT {SqlLedgerReads.record_columns} FROM events"
_BATCHES = (
    "SELECT partition_number, batch_number, first_sequence, last_sequence, root, chain_hash"
    " FROM batches"
)
_log = logging.getLogger(__name__)


def audit_workers() -> int:
    """Worker processes ``verify`` and ``audit`` walk the chains with:
    ``METERLINE_AUDIT_WORKERS`` if set, else ``os.cpu_count()``."""
    configured = os.environ.get(AUDIT_WORKERS_ENV, "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            _log.warning("%s=%r is not a number; using 1", AUDIT_WORKERS_ENV, configured)
            return 1
    return os.cpu_count() or 1


def verify_chains_parallel(
    store: LedgerStore,
    checkpoints: Iterable[tuple[str, Iterable[PartitionHead]]] = (),
    workers: int | None = None,
    min_events: int | None = None,
    range_events: int | None = None,
) -> ChainReport:
    """``Ledger(store).verify(checkpoints)``, walked by ``workers`` processes (default
    ``audit_workers()``) in ranges of ``range_events`` (default ``CHAIN_RANGE_EVENTS``)
    when the ledger holds at least ``min_events`` events (default
    ``PARALLEL_VERIFY_MIN_EVENTS``)."""
    listed = [(label, list(heads)) for label, heads in checkpoints]
    count = audit_workers() if workers is None else workers
    min_events = PARALLEL_VERIFY_MIN_EVENTS if min_events is None else min_events
    range_events = CHAIN_RANGE_EVENTS if range_events is None else range_events
    location = _location(store)
    try:
        stored_heads = store.partition_heads()
        events = sum(head.sequence for head in stored_heads.values())
        if location is not None and events >= min_events:
            report = _walk_in_workers(store, location, listed, count, range_events)
            if report is not None:
                return report
    except database_errors():
        pass  # the walk below meets the failure and names where it stopped
    return Ledger(store).verify(listed)


def _location(store: LedgerStore) -> str | None:
    """Where a worker can open the store (None: an in-memory or temporary database)."""
    path = str(getattr(store, "path", "") or "")
    if is_postgres(path):
        return path
    if path and path != ":memory:" and Path(path).is_file():
        return str(Path(path).resolve())  # workers may run in another directory
    return None


def _walk_in_workers(
    store: LedgerStore,
    location: str,
    checkpoints: list[tuple[str, list[PartitionHead]]],
    workers: int,
    range_events: int,
) -> ChainReport | None:
    """The report of the walk in ``workers`` processes (None: a store failed; walk again
    here for the exact report)."""
    expected = checkpoint_expectations(checkpoints)
    partitions = store.partitions
    ranges = (
        chain_range
        for partition in range(partitions)
        for chain_range in plan_ranges(
            partition, store.batches([partition]), expected.get(partition, {}), range_events
        )
    )
    pool = _pool(workers) if workers > 1 else None
    failed: list[RangeOutcome] = []
    try:
        outcomes = _outcomes(pool, location, ranges, workers * RANGES_IN_FLIGHT_PER_WORKER, failed)
        report = merge_ranges(
            partitions, outcomes, checkpoints, lambda: _stray(location, partitions)
        )
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return None if failed else report


def _pool(workers: int) -> ProcessPoolExecutor:
    try:
        context: Any = multiprocessing.get_context("forkserver")
        # the server imports this module once; each worker forks from it ready to walk
        context.set_forkserver_preload([__name__])
    except ValueError:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context)


def _outcomes(
    pool: ProcessPoolExecutor | None,
    location: str,
    ranges: Iterator[ChainRange],
    window: int,
    failed: list[RangeOutcome],
) -> Iterator[tuple[int, RangeOutcome]]:
    """Each range's outcome, in order, ``window`` ranges handed out ahead; a store failure
    is noted in ``failed`` and ends the walk (reported as a problem, so nothing after it
    is read). Without a ``pool`` each range is walked here."""
    queue: deque[tuple[ChainRange, Future[RangeOutcome] | None]] = deque()

    def submit(chain_range: ChainRange) -> None:
        if pool is None:
            queue.append((chain_range, None))
            return
        try:
            queue.append((chain_range, pool.submit(walk_stored_range, location, chain_range)))
        except Exception as error:  # no worker could start (or the pool broke): walk it here
            _log.warning("could not hand a range to a worker (%s); walking it here", error)
            queue.append((chain_range, None))

    def next_outcome() -> tuple[int, RangeOutcome]:
        chain_range, future = queue.popleft()
        outcome = _result(chain_range, future, location)
        if outcome.check == "store":
            failed.append(outcome)
        return chain_range.partition, outcome

    for chain_range in ranges:
        submit(chain_range)
        if len(queue) >= window:
            yield next_outcome()
    while queue:
        yield next_outcome()


def _result(
    chain_range: ChainRange, future: Future[RangeOutcome] | None, location: str
) -> RangeOutcome:
    """A range's outcome from its worker, or walked here if the worker could not."""
    if future is not None:
        try:
            return future.result()
        except Exception as error:  # a worker that died: its range is walked here
            _log.warning("a chain worker failed (%s); walking its range here", error)
    try:
        return walk_stored_range(location, chain_range)
    finally:
        connection = _connections.pop(location, None)
        if connection is not None:
            connection.close()


_connections: dict[str, Connection] = {}
"""A worker's read-only connection per store (opened on its first range)."""


def _connection(location: str) -> Connection:
    connection = _connections.get(location)
    if connection is None:
        if is_postgres(location):
            connection = PostgresConnection(location)
            connection.execute("SET default_transaction_read_only = on")
        else:
            connection = connect_sqlite(location)
            connection.execute("PRAGMA query_only = ON")
        _connections[location] = connection
    return connection


def walk_stored_range(location: str, chain_range: ChainRange) -> RangeOutcome:
    """A worker's task: walk one range of the store at ``location`` (``walk_range``) on
    this process's read-only connection; a store that fails is a ``store`` outcome."""
    conditions, parameters = ["partition_number = ?"], [chain_range.partition]
    if chain_range.after_sequence is not None:
        conditions.append("sequence > ?")
        parameters.append(chain_range.after_sequence)
    if chain_range.through_sequence is not None:
        conditions.append("sequence <= ?")
        parameters.append(chain_range.through_sequence)
    query = f"{_RECORDS} WHERE {' AND '.join(conditions)} ORDER BY sequence"
    try:
        connection = _connection(location)
        with read_snapshot(connection):
            if chain_range.later_batches:
                later = stream_rows(
                    connection,
                    f"{_BATCHES} WHERE partition_number = ? AND batch_number > ?"
                    " ORDER BY batch_number",
                    [chain_range.partition, chain_range.start.batches],
                )
                chain_range = with_batches(chain_range, map(_batch_record, later))
                stored_head = _stored_head(connection, chain_range.partition)
            else:
                stored_head = None
            rows = stream_rows(connection, query, parameters)
            # plain row tuples: the walk checks them without a record object each
            return walk_range(chain_range, rows, stored_head)
    except database_errors() as error:
        return RangeOutcome(0, chain_range.start, str(error), check="store")


def _stored_head(connection: Connection, partition: int) -> HeadState | None:
    """The partition's stored head (what the next append continues from), if any."""
    found = connection.execute(f"{HEAD_ROWS} WHERE partition_number = ?", (partition,)).fetchall()
    return head_row(tuple(found[0])).head if found else None


def _batch_record(row: tuple[Any, ...]) -> BatchRecord:
    return BatchRecord(row[0], row[1], row[2], row[3], bytes(row[4]), bytes(row[5]))


def _stray(location: str, partitions: int) -> StoredRecord | None:
    """The first record (in (partition, sequence) order) of a partition the ledger does
    not have."""
    query = f"{_RECORDS} WHERE partition_number >= ? ORDER BY partition_number, sequence LIMIT 1"
    connection = open_connection(location)
    try:
        for row in stream_rows(connection, query, [partitions]):
            return StoredRecord._make(row)
        return None
    finally:
        connection.close()
