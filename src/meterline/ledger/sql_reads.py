"""The reads and API keys both SQL ledger stores share (SQLite and PostgreSQL).

What they read is the same SQL, run through ``ledger.database``'s connections; their
opening and append steps are shared too (``ledger.sql_writes``), each store keeping what
differs (``ledger.sqlite``, ``ledger.postgres``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import astuple
from typing import Any

from meterline.core.chain import BatchRecord, HeadState, StoredRecord, ledger_head_hash
from meterline.core.cuts import Cut
from meterline.core.events import PreparedEvent
from meterline.core.partitions import partition_of
from meterline.keys import NewKey
from meterline.ledger.cut_sql import cut_condition
from meterline.ledger.database import ThreadConnections, open_connection, stream_rows
from meterline.ledger.heads import (
    HEAD_ROWS,
    LEASE_SECONDS_DEFAULT,
    HeadRow,
    Lease,
    head_row,
)
from meterline.ledger.store import (
    SCAN_ROWS_MAX,
    SEQUENCE_MAX,
    EventPage,
    EventQuery,
    StoredEvent,
    position,
    split_position,
)

SCHEMA_VERSION = 2
"""The version of the tables both stores keep; a ledger of another version is refused."""
META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
"""The ledger's settings (schema version, dedup key, partitions), one row a name."""

EVENTS_APPEND_ONLY = """\
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: events cannot be updated'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: events cannot be deleted'); END;
"""
"""The triggers that keep stored events from being updated or deleted (SQLite's syntax;
``ledger.database`` translates it for PostgreSQL)."""


def event_row(
    sequence: int, event: PreparedEvent, ingested_at_us: int, digest: bytes
) -> tuple[object, ...]:
    """The columns both stores' ``events`` tables begin with, for ``event`` at ``sequence``:
    sequence, customer, event_id, type, timestamp_us, ingested_at_us, body, hash."""
    customer, event_id, event_type, timestamp_us, body = event
    return (sequence, customer, event_id, event_type, timestamp_us, ingested_at_us, body, digest)


def ledger_schema(integer: str, sequence: str, events_end: str) -> str:
    """The tables both stores create: ``meta``, ``events`` (its ``sequence`` column's
    type and constraint, then its columns in ``event_row``'s order, then ``events_end``:
    the partition number column and what closes the table), the events' append-only
    triggers and the API keys, with ``integer`` the store's 64-bit integer type."""
    return (
        f"""
{META_SCHEMA}
CREATE TABLE IF NOT EXISTS events (
    sequence {sequence},
    customer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    timestamp_us {integer} NOT NULL,
    ingested_at_us {integer} NOT NULL,
    body BLOB NOT NULL,
    hash BLOB NOT NULL,
{events_end}
"""
        + EVENTS_APPEND_ONLY
        + api_keys_schema(integer)
    )


def api_keys_schema(integer: str) -> str:
    """The API keys table both stores keep, with ``integer`` their 64-bit integer type."""
    return f"""CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    scope TEXT NOT NULL,
    customer TEXT,
    name TEXT NOT NULL,
    created_at_us {integer} NOT NULL,
    revoked_at_us {integer}
);
"""


class SqlLedgerReads:
    """Queries, verification inputs and API keys over a store's ``events``, ``commits``
    and ``api_keys`` tables."""

    path: str
    record_columns = (
        "sequence, customer, event_id, type, timestamp_us, body, hash, partition_number"
    )
    """The columns of a ``StoredRecord``, in its order."""
    partitions: int
    _connection: Any
    _write_lock: threading.Lock
    _readers: ThreadConnections
    """One reading connection per thread."""

    def _reader(self) -> Any:
        return self._readers.get()

    def partition_heads(self) -> dict[int, HeadState]:
        """Each partition's stored head (``verify`` recomputes them; these are what the
        next append continues from)."""
        return {row.partition: row.head for row in self.head_rows()}

    def head_rows(self) -> list[HeadRow]:
        """Each partition's head row, with its lease."""
        rows = self._reader().execute(f"{HEAD_ROWS} ORDER BY partition_number")
        return [head_row(tuple(row)) for row in rows]

    def head(self) -> tuple[int, bytes]:
        """The events the ledger holds and its head hash (the root over the partition
        heads, as a checkpoint computes it)."""
        heads = self.partition_heads()
        return sum(head.sequence for head in heads.values()), ledger_head_hash(
            heads, self.partitions
        )

    def cut(self) -> Cut:
        heads = self.partition_heads()
        return Cut(tuple(heads.get(p, HeadState()).sequence for p in range(self.partitions)))

    def records(
        self, after: Cut | None = None, partitions: list[int] | None = None
    ) -> Iterator[StoredRecord]:
        connection = open_connection(self.path)
        parameters: list[object]
        if after is None and partitions is None:
            condition, parameters = "1 = 1", []
        else:
            condition, parameters = cut_condition(
                None, after or Cut.empty(self.partitions), partitions
            )
        query = (
            f"SELECT {self.record_columns} FROM events WHERE {condition}"
            " ORDER BY partition_number, sequence"
        )
        try:
            for row in stream_rows(connection, query, parameters):
                yield StoredRecord(*row)
        finally:
            connection.close()

    def batches(self, partitions: list[int] | None = None) -> Iterator[BatchRecord]:
        """Every committed batch (of ``partitions`` only, when given), in (partition,
        batch) order."""
        connection = open_connection(self.path)
        query = (
            "SELECT partition_number, batch_number, first_sequence, last_sequence, root,"
            " chain_hash FROM batches"
        )
        parameters: list[object] = []
        if partitions is not None:
            query += f" WHERE partition_number IN ({', '.join('?' * len(partitions))})"
            parameters = list(partitions)
        try:
            for row in stream_rows(
                connection, query + " ORDER BY partition_number, batch_number", parameters
            ):
                yield BatchRecord(row[0], row[1], row[2], row[3], bytes(row[4]), bytes(row[5]))
        finally:
            connection.close()

    def checkpoint_notes(self, after_number: int = 0) -> list[tuple[int, str]]:
        """The stored checkpoints past ``after_number``: (number, signed note), in order."""
        rows = self._reader().execute(
            "SELECT checkpoint_number, note FROM checkpoints WHERE checkpoint_number > ?"
            " ORDER BY checkpoint_number",
            (after_number,),
        )
        return [(number, note) for number, note in rows]

    def add_checkpoint(self, number: int, created_at_us: int, note: str, digest: bytes) -> bool:
        """Store checkpoint ``number``; False when another process stored it first."""
        with self._write_lock:
            cursor = self._connection.execute(
                "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?)",
                (number, created_at_us, note, digest),
            )
        return bool(cursor.rowcount == 1)

    # -- writer leases (ledger.heads) ------------------------------------------------------

    def acquire_lease(
        self, partition: int, owner: str, now_us: int, seconds: float = LEASE_SECONDS_DEFAULT
    ) -> Lease | None:
        """Take ``partition``'s writer lease for ``owner`` when it is free, expired or
        already ``owner``'s, with a new epoch (fencing any earlier holder); None when
        another writer holds it."""
        expires_us = now_us + int(seconds * 1_000_000)
        with self._write_lock:
            row = self._connection.execute(
                "UPDATE partition_heads SET lease_owner = ?, lease_epoch = lease_epoch + 1,"
                " lease_expires_us = ? WHERE partition_number = ? AND (lease_owner IS NULL"
                " OR lease_expires_us <= ? OR lease_owner = ?) RETURNING lease_epoch",
                (owner, expires_us, partition, now_us, owner),
            ).fetchone()
        return None if row is None else Lease(partition, owner, row[0], expires_us)

    def renew_lease(
        self, lease: Lease, now_us: int, seconds: float = LEASE_SECONDS_DEFAULT
    ) -> Lease | None:
        """``lease`` extended from ``now_us``; None when it was taken over."""
        expires_us = now_us + int(seconds * 1_000_000)
        with self._write_lock:
            cursor = self._connection.execute(
                "UPDATE partition_heads SET lease_expires_us = ? WHERE partition_number = ?"
                " AND lease_owner = ? AND lease_epoch = ?",
                (expires_us, lease.partition, lease.owner, lease.epoch),
            )
        if cursor.rowcount != 1:
            return None
        return Lease(lease.partition, lease.owner, lease.epoch, expires_us)

    def release_lease(self, lease: Lease) -> None:
        """Give ``lease`` up (a no-op when it was taken over)."""
        with self._write_lock:
            self._connection.execute(
                "UPDATE partition_heads SET lease_owner = NULL, lease_expires_us = 0"
                " WHERE partition_number = ? AND lease_owner = ? AND lease_epoch = ?",
                (lease.partition, lease.owner, lease.epoch),
            )

    def query(self, query: EventQuery) -> EventPage:
        """One page, partition by partition, each in sequence order; the cursor is a
        position (``ledger.store.position``: the sequence itself on one partition)."""
        after_partition, after_sequence = split_position(query.after_sequence)
        first, last = 0, self.partitions - 1
        if query.customer is not None:
            first = last = partition_of(query.customer, self.partitions)
            if after_partition == 0:  # a bare sequence: within the customer's partition
                after_partition = first
        if after_partition < first:
            after_partition, after_sequence = first, 0
        heads = self.cut().heads
        events: list[StoredEvent] = []
        for partition in range(after_partition, last + 1):
            window_end = min(after_sequence + SCAN_ROWS_MAX, SEQUENCE_MAX)
            found = self._query_partition(
                query, partition, after_sequence, window_end, query.limit - len(events)
            )
            events += found
            if len(events) == query.limit:
                return EventPage(events, position(partition, events[-1].record.sequence))
            if window_end < heads[partition]:
                return EventPage(events, position(partition, window_end))
            after_sequence = 0
        return EventPage(events, None)

    def _query_partition(
        self, query: EventQuery, partition: int, after: int, through: int, limit: int
    ) -> list[StoredEvent]:
        clauses = ["partition_number = ?", "sequence > ?", "sequence <= ?"]
        parameters: list[object] = [partition, after, through]
        for clause, value in (
            ("customer = ?", query.customer),
            ("type = ?", query.type),
            ("timestamp_us >= ?", query.start_us),
            ("timestamp_us < ?", query.end_us),
        ):
            if value is not None:
                clauses.append(clause)
                parameters.append(value)
        parameters.append(limit)
        rows = (
            self._reader()
            .execute(
                f"SELECT {self.record_columns}, ingested_at_us FROM events"
                f" WHERE {' AND '.join(clauses)}"
                " ORDER BY sequence LIMIT ?",
                parameters,
            )
            .fetchall()
        )
        return [StoredEvent(StoredRecord(*row[:-1]), row[-1]) for row in rows]

    # -- API keys ------------------------------------------------------------------------

    def put_key(self, key: NewKey) -> None:
        with self._write_lock:
            self._connection.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                astuple(key),
            )

    def get_key(self, key_id: str) -> tuple[bytes, str, str | None, int | None] | None:
        row = (
            self._reader()
            .execute(
                "SELECT secret_sha256, scope, customer, revoked_at_us FROM api_keys"
                " WHERE key_id = ?",
                (key_id,),
            )
            .fetchone()
        )
        return None if row is None else (row[0], row[1], row[2], row[3])

    def list_keys(self) -> list[tuple[str, str, str | None, str, int, int | None]]:
        return [
            tuple(row)
            for row in self._reader()
            .execute(
                "SELECT key_id, scope, customer, name, created_at_us, revoked_at_us FROM api_keys"
                " ORDER BY created_at_us"
            )
            .fetchall()
        ]

    def revoke_key(self, key_id: str, revoked_at_us: int) -> bool:
        with self._write_lock:
            cursor = self._connection.execute(
                "UPDATE api_keys SET revoked_at_us = ? WHERE key_id = ? AND revoked_at_us IS NULL",
                (revoked_at_us, key_id),
            )
        return bool(cursor.rowcount == 1)
