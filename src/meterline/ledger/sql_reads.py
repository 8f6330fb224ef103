"""The reads and API keys both SQL ledger stores share (SQLite and PostgreSQL).

The stores differ in how they append (see ``ledger.sqlite`` and ``ledger.postgres``);
what they read is the same SQL, run through ``ledger.database``'s connections.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from meterline.core.chain import GENESIS_HASH, Checkpoint, StoredRecord
from meterline.core.cuts import Cut
from meterline.ledger.cut_sql import cut_condition
from meterline.ledger.database import open_connection, stream_rows
from meterline.ledger.store import (
    SCAN_ROWS_MAX,
    SEQUENCE_MAX,
    EventPage,
    EventQuery,
    StoredEvent,
)


class SqlLedgerReads:
    """Queries, verification inputs and API keys over a store's ``events``, ``commits``
    and ``api_keys`` tables."""

    path: str
    record_columns = "sequence, customer, event_id, type, timestamp_us, body, hash"
    """The columns of a ``StoredRecord``, in its order."""
    partitions: int
    _connection: Any
    _write_lock: threading.Lock

    def _reader(self) -> Any:
        raise NotImplementedError

    def head(self) -> tuple[int, bytes]:
        row = (
            self._reader()
            .execute("SELECT sequence, hash FROM events ORDER BY sequence DESC LIMIT 1")
            .fetchone()
        )
        return (0, GENESIS_HASH) if row is None else (row[0], row[1])

    def cut(self) -> Cut:
        if self.partitions == 1:
            return Cut((self.head()[0],))
        heads: dict[int, tuple[int, bytes]] = self.chain_heads()  # type: ignore[attr-defined]
        return Cut(tuple(heads.get(p, (0, GENESIS_HASH))[0] for p in range(self.partitions)))

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
        query = f"SELECT {self.record_columns} FROM events WHERE {condition}"
        try:
            for row in stream_rows(connection, query + " ORDER BY sequence", parameters):
                yield StoredRecord(*row)
        finally:
            connection.close()

    def checkpoints(self) -> list[Checkpoint]:
        rows = (
            self._reader()
            .execute("SELECT last_sequence, last_hash FROM commits ORDER BY commit_number")
            .fetchall()
        )
        return [Checkpoint(sequence, digest) for sequence, digest in rows]

    def query(self, query: EventQuery) -> EventPage:
        head_sequence = self.head()[0]
        window_end = min(query.after_sequence + SCAN_ROWS_MAX, SEQUENCE_MAX)
        clauses = ["sequence > ?", "sequence <= ?"]
        parameters: list[object] = [query.after_sequence, window_end]
        for clause, value in (
            ("customer = ?", query.customer),
            ("type = ?", query.type),
            ("timestamp_us >= ?", query.start_us),
            ("timestamp_us < ?", query.end_us),
        ):
            if value is not None:
                clauses.append(clause)
                parameters.append(value)
        parameters.append(query.limit)
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
        events = [StoredEvent(StoredRecord(*row[:-1]), row[-1]) for row in rows]
        if len(events) == query.limit:
            next_after: int | None = events[-1].record.sequence
        elif window_end < head_sequence:
            next_after = window_end
        else:
            next_after = None
        return EventPage(events, next_after)

    # -- API keys ------------------------------------------------------------------------

    def put_key(
        self,
        key_id: str,
        secret_sha256: bytes,
        scope: str,
        customer: str | None,
        name: str,
        created_at_us: int,
    ) -> None:
        with self._write_lock:
            self._connection.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (key_id, secret_sha256, scope, customer, name, created_at_us),
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
