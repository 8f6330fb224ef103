"""The production ledger store: PostgreSQL, partitions that own everything.

Every event belongs to its customer's partition (``core.partitions``). Each partition has
its own gap-free sequence, its own batch chain and Merkle tree (``core.chain``), its own
child table (``events`` is declaratively partitioned by ``partition_number``), its own
head row in ``partition_heads`` and at most one writer at a time, holding a fenced lease
(``ledger.heads``). Nothing shared across partitions is locked or counted on the write
path: an append locks the head rows of the partitions it writes (``SELECT ... FOR
UPDATE``, in partition order), numbers each partition's events from its head, copies
them, records one batch per partition and rewrites those heads, in one transaction. A
fenced append of one partition (a stream worker's) writes on that partition's own
connection, so the partitions one process holds commit in parallel. Readers read
through consistent cuts (``core.cuts``): the head rows, read in one statement, name
committed events only.

Idempotency is a unique index on ``(customer, event_id, partition_number)``; a customer
lives in one partition, so it is ``(customer, event_id)``, checked inside the partition's
own transaction. (A ledger keyed by ``(source, id)`` keeps one partition: a source's ids
may name customers of any partition.) An append is optimistic (events fresh from the
stream are new): it copies the batch under a savepoint without reading its keys first;
if the index refuses one, it rolls back to the savepoint, reads which of its keys are
stored (one query) and copies the rest, so a replay is answered ``duplicate`` (same
bytes) or ``conflict`` (other bytes) and writes nothing. Rows go in by binary ``COPY``.
Invariants: ``events``, ``batches`` and ``checkpoints`` refuse UPDATE and DELETE
(triggers); an append is one transaction, committed with ``synchronous_commit``. The steps
of opening and appending are ``ledger.sql_writes``'s; this module keeps what is
PostgreSQL's: partitions, row locks, the unique index and COPY.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from hashlib import sha256
from typing import Any

import psycopg.errors
from psycopg.types.string import BytesBinaryDumper

from meterline.core.outcomes import EventOutcome
from meterline.core.partitions import DEFAULT_PARTITIONS, PartitionMap, check_partition_count
from meterline.errors import StoreError
from meterline.ledger.database import (
    SCHEMA_WRITE,
    PostgresConnection,
    ThreadConnections,
    write_transaction,
)
from meterline.ledger.heads import HEAD_ROWS
from meterline.ledger.location import describe
from meterline.ledger.sql_reads import SCHEMA_VERSION, event_row, ledger_schema
from meterline.ledger.sql_writes import LockedBatch, Rows, SqlLedgerStore, replay_outcome
from meterline.ledger.store import AppendBatch, DedupKey, Leases

_UNIQUE_CUSTOMER_ID = "    UNIQUE (customer, event_id, partition_number)\n"
_SCHEMA = ledger_schema(
    "BIGINT",
    "BIGINT NOT NULL",
    "    partition_number INTEGER NOT NULL,\n    PRIMARY KEY (partition_number, sequence),\n"
    + _UNIQUE_CUSTOMER_ID
    + ") PARTITION BY LIST (partition_number);",
)
_SOURCE_OWNER = "(CASE WHEN source = '' THEN customer ELSE '' END)"
"""The second part of a ``(source, id)`` key: the customer of an event without a source."""
_SOURCE_SCHEMA = (
    _SCHEMA.replace(
        "    PRIMARY KEY (partition_number, sequence),\n" + _UNIQUE_CUSTOMER_ID,
        "    source TEXT NOT NULL,\n    PRIMARY KEY (partition_number, sequence)\n",
        1,
    )
    + f"CREATE UNIQUE INDEX IF NOT EXISTS events_source_event_id ON events (source,"
    f" {_SOURCE_OWNER}, event_id, partition_number);\n"
    "CREATE INDEX IF NOT EXISTS events_customer_event_id ON events (customer, event_id);\n"
)
"""The schema of a ledger keyed by ``(source, id)``: each event's source (``""`` when it
has none) in a column, unique with the event id (and the customer when there is no
source); ``(customer, event_id)`` is an ordinary index for reads by customer."""

_COPIED_COLUMNS = (
    "sequence",
    "customer",
    "event_id",
    "type",
    "timestamp_us",
    "ingested_at_us",
    "body",
    "hash",
    "partition_number",
)
_LOCK_HEADS = f"{HEAD_ROWS} WHERE partition_number = ANY(%s) ORDER BY partition_number FOR UPDATE"
_RECORD_BATCHES = (
    "WITH recorded AS (INSERT INTO batches (partition_number, batch_number, first_sequence,"
    " last_sequence, root, chain_hash, committed_at_us, lease_epoch)"
    " SELECT * FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bytea[],"
    " %s::bytea[], %s::bigint[], %s::bigint[]))"
    " UPDATE partition_heads AS heads SET sequence = new.sequence, batches = new.batches,"
    " chain_hash = new.chain_hash, frontier = new.frontier"
    " FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bytea[], %s::bytea[])"
    " AS new (partition_number, sequence, batches, chain_hash, frontier)"
    " WHERE heads.partition_number = new.partition_number"
)
_STORED_KEYS = (
    "SELECT customer, event_id, sequence, body FROM events"
    " WHERE (customer, event_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
)
_STORED_SOURCE_KEYS = (
    f"SELECT source, {_SOURCE_OWNER}, event_id, sequence, body FROM events"
    f" WHERE (source, {_SOURCE_OWNER}, event_id)"
    " IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))"
)


def _children_schema(partitions: int) -> str:
    """The child table of each partition (PostgreSQL's dialect)."""
    return "".join(
        f"CREATE TABLE IF NOT EXISTS events_p{partition} PARTITION OF events"
        f" FOR VALUES IN ({partition});\n"
        for partition in range(partitions)
    )


class PostgresStore(SqlLedgerStore[list[EventOutcome]]):
    """The ledger store over one PostgreSQL schema; safe for threads and processes."""

    ledger_tables = _SCHEMA
    source_ledger_tables = _SOURCE_SCHEMA
    _connection: PostgresConnection

    def __init__(
        self, url: str, partitions: int | None = None, dedup_key: DedupKey | None = None
    ) -> None:
        self.path = url
        self._connection = self._writer_connection(url)
        self._write_lock = threading.Lock()
        self._partition_writers: dict[int, tuple[PostgresConnection, threading.Lock]] = {}
        """A fenced writer's connection per partition (``append`` with ``leases`` of one
        partition), so one process's partitions commit in parallel, each on its own
        connection, holding only its own head row."""
        self._partition_writers_lock = threading.Lock()
        self._readers = ThreadConnections(url)
        self._settle_dedup_key(dedup_key)
        self._copied_columns = (*_COPIED_COLUMNS, "source") if self._by_source else _COPIED_COLUMNS
        self._copy_events = (
            f"COPY events ({', '.join(self._copied_columns)}) FROM STDIN (FORMAT BINARY)"
        )
        self.partitions = self._migrate(partitions)
        self._partition_of = PartitionMap(self.partitions)
        self._event_types: list[str] | None = None

    @staticmethod
    def _writer_connection(url: str) -> PostgresConnection:
        connection = PostgresConnection(url)
        # The appends' binary COPY takes ``bytea`` by its oid, which psycopg maps to a
        # dumper written in Python (for ``psycopg.Binary``); the bytes dumper (in C when
        # psycopg's binary build is installed) writes the same bytes, about 0.4 µs less
        # per event. Only the writer connections' adapters change.
        connection.raw.adapters.register_dumper(bytes, BytesBinaryDumper)
        return connection

    def _writer(
        self, partitions: Sequence[int], leases: Leases
    ) -> tuple[PostgresConnection, threading.Lock]:
        """The connection and lock an append writes with: a fenced append of one
        partition gets that partition's own (opened on first use), anything else the
        store's shared writer. No deadlock between them: an append of one partition
        locks one head row, a shared one locks its rows in partition order."""
        if leases is None or len(leases) != 1:
            return self._connection, self._write_lock
        (partition,) = leases
        if any(other != partition for other in partitions):
            return self._connection, self._write_lock
        with self._partition_writers_lock:
            writer = self._partition_writers.get(partition)
            if writer is None:
                writer = (self._writer_connection(self.path), threading.Lock())
                self._partition_writers[partition] = writer
        return writer

    # -- opening (the steps are ledger.sql_writes') ---------------------------------------

    def _settings_lock(self) -> AbstractContextManager[Any]:
        """The schema's migration lock (a session advisory lock)."""
        return self._connection.migration_lock()

    def _holds_events(self) -> bool:
        row = self._connection.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()
        return bool(row and row[0])

    def _migrate(self, partitions: int | None) -> int:
        """Create the schema once; return the ledger's partition count (set at creation:
        ``partitions`` or the default; a different explicit count is refused)."""
        default = 1 if self._by_source else DEFAULT_PARTITIONS
        wanted = check_partition_count(partitions or default)
        self._create_tables({"schema_version": SCHEMA_VERSION, "partitions": wanted})
        stored = int(self._settings()["partitions"])
        if partitions is not None and partitions != stored:
            raise StoreError(
                f"{describe(self.path)}: the ledger has {stored} partitions, not {partitions}"
                " (see `meterline partitions`)"
            )
        if self._by_source and stored != 1:
            raise StoreError(
                f"{describe(self.path)}: a ledger keyed by (source, id) keeps one partition"
                " (a source's ids may name customers of any partition)"
            )
        self._create_partitions(stored)
        return stored

    def _create_partitions(self, count: int) -> None:
        """Each partition's child table and head row (no-ops when they exist)."""
        self._connection.raw.execute(_children_schema(count))
        self._create_head_rows(range(count))

    def set_partitions(self, count: int) -> None:
        """Change how many partitions the ledger has: only while it holds no event (a
        customer's partition follows from the count, and its events, chain and dedup
        index live there; create a ledger with room to grow, see docs/production.md)."""
        check_partition_count(count)
        if self._by_source and count != 1:
            raise StoreError("a ledger keyed by (source, id) keeps one partition")
        with self._write_lock:
            # the whole ledger's shape: the schema-wide lock, and every head row, which
            # an append locks first (so none commits an event while the count changes)
            with write_transaction(self._connection, SCHEMA_WRITE) as connection:
                sequences = connection.execute(
                    "SELECT sequence FROM partition_heads ORDER BY partition_number FOR UPDATE"
                ).fetchall()
                if any(sequence for (sequence,) in sequences):
                    raise StoreError(
                        f"{describe(self.path)} holds events: its {self.partitions} partitions"
                        " are fixed (customers would move away from their events)"
                    )
                connection.execute("UPDATE meta SET value = ? WHERE name = 'partitions'", (count,))
                connection.execute(
                    "DELETE FROM partition_heads WHERE partition_number >= ?", (count,)
                )
            self._create_partitions(count)
        self.partitions = count

    # -- writing -------------------------------------------------------------------------

    def _partitions_of(self, batch: AppendBatch) -> list[int]:
        """Each event's partition (customers' partitions are remembered: a SHA-256 each)."""
        partition_of = self._partition_of
        if partition_of.count != self.partitions:  # set_partitions changed it (no events yet)
            partition_of = self._partition_of = PartitionMap(self.partitions)
        return [partition_of(event.customer) for _, event in batch]

    def _lock_heads(self, connection: PostgresConnection, partitions: list[int]) -> Any:
        """The head rows of ``partitions``, ``FOR UPDATE`` in partition order."""
        return connection.raw.execute(_LOCK_HEADS, (partitions,))

    def _write(self, connection: PostgresConnection, locked: LockedBatch) -> list[EventOutcome]:
        """Optimistic: events fresh from the stream are new, so the batch goes in without
        reading its keys first; the unique index refuses any stored one, and then (rolled
        back to the savepoint) the keys are read and the batch staged again without them.
        Same transaction, same row locks."""
        raw = connection.raw
        raw.execute("SAVEPOINT meterline_append")
        keys, sources = self._identities(locked.batch)
        rows, outcomes = self._stage(locked, keys, sources, {})
        if rows:
            try:
                self._copy(connection, locked, rows)
            except psycopg.errors.UniqueViolation:
                raw.execute("ROLLBACK TO SAVEPOINT meterline_append")
                rows, outcomes = self._stage(locked, keys, sources, self._stored(raw, keys))
                if rows:
                    self._copy(connection, locked, rows)
        return outcomes

    def _committed(self, staged: list[EventOutcome]) -> list[EventOutcome]:
        return staged

    @staticmethod
    def _stage(
        locked: LockedBatch,
        keys: list[tuple[str, ...]],
        sources: list[str] | None,
        stored: dict[tuple[str, ...], tuple[int, bytes]],
    ) -> tuple[list[tuple[object, ...]], list[EventOutcome]]:
        """The rows to copy (each partition's sequences from its locked head; each row
        with its source when ``sources`` are given) and every event's outcome; ``stored``
        and earlier events of the batch (by ``keys``) make an event a duplicate or a
        conflict."""
        next_sequence = {partition: head.sequence + 1 for partition, head in locked.heads.items()}
        ingested_at_us = locked.ingested_at_us
        staged: dict[tuple[str, ...], tuple[int, bytes]] = {}
        rows: list[tuple[object, ...]] = []
        outcomes: list[EventOutcome] = []
        for number, ((position, event), partition) in enumerate(
            zip(locked.batch, locked.partitions, strict=True)
        ):
            event_id, body = event.id, event.body
            key = keys[number]
            found = (stored.get(key) or staged.get(key)) if stored else staged.get(key)
            if found is not None:
                outcomes.append(replay_outcome(position, event_id, body, found))
                continue
            sequence = next_sequence[partition]
            next_sequence[partition] = sequence + 1
            staged[key] = (sequence, body)
            digest = sha256(b"\x00" + body).digest()  # core.chain.event_hash, inlined
            row = (*event_row(sequence, event, ingested_at_us, digest), partition)
            rows.append(row if sources is None else (*row, sources[number]))
            outcomes.append(EventOutcome(position, "accepted", event_id, sequence))
        return rows, outcomes

    def _stored(
        self, raw: psycopg.Connection[Any], keys: list[tuple[str, ...]]
    ) -> dict[tuple[str, ...], tuple[int, bytes]]:
        """The stored (sequence, bytes) of every key of a batch already in the ledger."""
        columns = [list(column) for column in zip(*keys, strict=True)]
        query = _STORED_SOURCE_KEYS if self._by_source else _STORED_KEYS
        rows = raw.execute(query, columns)
        return {tuple(row[:-2]): (row[-2], row[-1]) for row in rows}

    def _copy_types(self, raw: psycopg.Connection[Any]) -> list[str]:
        """The PostgreSQL types of the copied columns, as the table declares them (a
        binary COPY must name them exactly)."""
        if self._event_types is None:
            rows = raw.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped"
            ).fetchall()
            declared = dict(rows)
            self._event_types = [declared[column] for column in self._copied_columns]
        return self._event_types

    def _copy(
        self, connection: PostgresConnection, locked: LockedBatch, rows: list[tuple[object, ...]]
    ) -> None:
        """Copy ``rows`` (binary COPY), then seal each partition's batch."""
        leaves: dict[int, list[bytes]] = {}
        if len(locked.heads) == 1:  # one partition (a stream worker's batch): no grouping
            leaves[next(iter(locked.heads))] = [row[7] for row in rows]  # type: ignore[misc]
        else:
            for row in rows:
                leaves.setdefault(row[8], []).append(row[7])  # type: ignore[arg-type]
        raw = connection.raw
        types = self._copy_types(raw)
        with raw.cursor() as cursor, cursor.copy(self._copy_events) as copy:
            copy.set_types(types)
            write_row = copy.write_row
            for row in rows:
                write_row(row)
        self._seal(connection, locked, leaves)

    def _record_batches(self, connection: PostgresConnection, batches: Rows, heads: Rows) -> None:
        """One statement: the batches inserted and the heads rewritten (each an
        ``unnest`` of columns)."""
        batch_columns = [list(column) for column in zip(*batches, strict=True)]
        head_columns = [
            list(column) for column in zip(*[(head[-1], *head[:-1]) for head in heads], strict=True)
        ]
        connection.raw.execute(_RECORD_BATCHES, (*batch_columns, *head_columns))

    def close(self) -> None:
        super().close()
        with self._partition_writers_lock:
            writers, self._partition_writers = list(self._partition_writers.values()), {}
        for connection, _ in writers:
            connection.close()
