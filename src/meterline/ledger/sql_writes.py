"""What both SQL ledger stores do the same way when they open and append.

Opening: the ledger's idempotency key is settled in ``meta`` first (chosen once, when the
ledger is created), then the tables are created (no-ops when they exist) with the
settings the creator stores, and the stored schema version is checked.

Appending is the same steps on either store, in one write transaction
(``database.write_transaction``; nothing is written when a step fails):

1. lock the head rows of the partitions the batch writes;
2. check the writer leases against them (``heads.check_leases``);
3. stage each new event at its partition's next sequence, a replay answered
   ``duplicate`` (same bytes) or ``conflict`` (``replay_outcome``), and write the rows;
4. seal each written partition's batch: the Merkle root over its leaf hashes, chained to
   the partition's previous batch, recorded with the partition's new head (``_seal``).

Each store keeps what differs: the driver and its connections, how the head rows are
locked (SQLite: ``BEGIN IMMEDIATE`` takes the file; PostgreSQL: the rows themselves,
``FOR UPDATE``), how a replay is found (SQLite: an in-memory hash index confirmed against
the rows; PostgreSQL: the unique index) and how rows go in (``executemany``; binary COPY).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, NamedTuple, TypeVar

from meterline.core.chain import BatchRecord, HeadState, seal_batch
from meterline.core.events import (
    event_source,
    same_event,
    source_idempotency_key,
)
from meterline.core.outcomes import EventOutcome
from meterline.errors import StoreError
from meterline.ledger.database import Connection, write_transaction
from meterline.ledger.heads import (
    HEADS_SCHEMA,
    INSERT_BATCH,
    UPDATE_HEAD,
    batch_rows,
    check_leases,
    head_row,
    head_updates,
    initial_heads_sql,
)
from meterline.ledger.location import describe
from meterline.ledger.sql_reads import META_SCHEMA, SCHEMA_VERSION, SqlLedgerReads
from meterline.ledger.store import (
    AppendBatch,
    DedupKey,
    Leases,
    check_dedup_key,
    settled_dedup_key,
)

Staged = TypeVar("Staged")
"""What a store's ``_write`` answers and its ``_committed`` takes once the append commits."""

Rows = list[tuple[object, ...]]
"""Parameters of one statement per row."""

_READ_SETTING = "SELECT value FROM meta WHERE name = ?"
_STORE_SETTING = "INSERT OR IGNORE INTO meta VALUES (?, ?)"


class LockedBatch(NamedTuple):
    """A batch inside its append's transaction, the head rows it writes locked."""

    batch: AppendBatch
    partitions: list[int]
    """Each event's partition."""
    heads: dict[int, HeadState]
    """Each written partition's head, locked until the transaction ends."""
    epochs: dict[int, int]
    """The lease epoch each written partition's batch records (``heads.check_leases``)."""
    ingested_at_us: int
    """The append's time: each event's ingest time and its batches' commit time."""


def replay_outcome(
    position: int, event_id: str, body: bytes, found: tuple[int, bytes]
) -> EventOutcome:
    """The answer to event ``event_id`` (``body``, at ``position``) whose idempotency key
    is stored or staged already, as ``found`` (its sequence and bytes): ``duplicate`` when
    the bytes are the same, else ``conflict``; either names the stored sequence."""
    return EventOutcome(
        position, "duplicate" if same_event(found[1], body) else "conflict", event_id, found[0]
    )


class SqlLedgerStore(SqlLedgerReads, Generic[Staged]):
    """A ledger store over SQL tables: the opening and append steps both stores share."""

    ledger_tables: str
    """The tables (``sql_reads.ledger_schema``) of a ledger keyed by ``(customer, id)``."""
    source_ledger_tables: str
    """The tables of a ledger keyed by ``(source, id)``: events carry their source."""
    dedup_key: DedupKey
    _by_source: bool

    # -- opening -----------------------------------------------------------------------

    def _settings_lock(self) -> AbstractContextManager[Any]:
        """What serializes processes settling the ledger's settings at once."""
        raise NotImplementedError

    def _holds_events(self) -> bool:
        """Whether an ``events`` table exists already (a ledger from before the dedup key
        was a setting)."""
        raise NotImplementedError

    def _stored_dedup_key(self) -> str | None:
        """The idempotency key ``meta`` holds, None when it holds none."""
        row = self._connection.execute(_READ_SETTING, ("dedup_key",)).fetchone()
        return None if row is None else str(row[0])

    def _settle_dedup_key(self, wanted: DedupKey | None, create: bool = True) -> None:
        """Settle the ledger's idempotency key: stored in ``meta`` when the ledger is
        created (``wanted`` or the default; a ledger created before the setting existed
        is keyed by ``(customer, id)``); a different explicit ``wanted`` is refused. With
        ``create=False`` it is only read (nothing is written)."""
        if wanted is not None:
            check_dedup_key(wanted)
        if create:
            connection = self._connection
            connection.executescript(META_SCHEMA)
            with self._settings_lock():
                stored = self._stored_dedup_key()
                if stored is None:
                    chosen = settled_dedup_key(None, self._holds_events(), wanted)
                    connection.execute(_STORE_SETTING, ("dedup_key", chosen))
                else:
                    chosen = settled_dedup_key(stored, True, wanted)
            if wanted is not None and wanted != chosen:
                raise StoreError(
                    f"{describe(self.path)}: the ledger deduplicates by {chosen}, not {wanted}"
                )
        else:
            chosen = settled_dedup_key(self._stored_dedup_key(), True, wanted)
        self.dedup_key = chosen
        self._by_source = chosen == "source_id"

    def _create_tables(self, settings: Mapping[str, object]) -> None:
        """Create the ledger's tables for its dedup key (no-ops when they exist) and store
        each of ``settings`` in ``meta`` unless it is stored already (the creator's stays)."""
        connection = self._connection
        tables = self.source_ledger_tables if self._by_source else self.ledger_tables
        connection.executescript(tables + HEADS_SCHEMA)
        with self._settings_lock():
            for name, value in settings.items():
                connection.execute(_STORE_SETTING, (name, str(value)))

    def _create_head_rows(self, partitions: Iterable[int]) -> None:
        """The empty head row of each of ``partitions`` (no-ops when they exist)."""
        for statement, parameters in initial_heads_sql(partitions):
            self._connection.execute(statement, parameters)

    def _settings(self) -> dict[str, str]:
        """The ledger's settings (``meta``), its schema version checked: StoreError when
        it has none (not a meterline ledger) or another one."""
        rows = dict(self._connection.execute("SELECT name, value FROM meta").fetchall())
        version = rows.get("schema_version")
        if version is None:
            raise StoreError(f"{describe(self.path)}: no schema version: not a meterline ledger")
        if int(version) != SCHEMA_VERSION:
            raise StoreError(
                f"{describe(self.path)}: schema version {version}, expected {SCHEMA_VERSION}"
            )
        return rows

    # -- appending ---------------------------------------------------------------------

    def append(
        self, batch: AppendBatch, ingested_at_us: int, leases: Leases = None
    ) -> list[EventOutcome]:
        """Append ``batch`` (positions and events) in one transaction: each new event at
        its partition's next sequence, a replay answered ``duplicate`` (same bytes) or
        ``conflict``, each written partition's batch sealed and its head moved; nothing
        is written when any step fails (a lease included)."""
        if not batch:
            return []
        partitions = self._partitions_of(batch)
        connection, write_lock = self._writer(partitions, leases)
        with write_lock:
            with write_transaction(connection):
                head_rows = [
                    head_row(tuple(row))
                    for row in self._lock_heads(connection, sorted(set(partitions)))
                ]
                epochs = check_leases(head_rows, leases, ingested_at_us)
                heads = {row.partition: row.head for row in head_rows}
                locked = LockedBatch(batch, partitions, heads, epochs, ingested_at_us)
                staged = self._write(connection, locked)
            return self._committed(staged)

    def _partitions_of(self, batch: AppendBatch) -> list[int]:
        """Each event's partition."""
        raise NotImplementedError

    def _writer(
        self, partitions: Sequence[int], leases: Leases
    ) -> tuple[Connection, threading.Lock]:
        """The connection and lock an append writes with: the store's one writer."""
        return self._connection, self._write_lock

    def _lock_heads(self, connection: Connection, partitions: list[int]) -> Iterable[Any]:
        """Inside the append's transaction: the ``HEAD_ROWS`` of ``partitions`` (ascending),
        locked until it ends."""
        raise NotImplementedError

    def _write(self, connection: Connection, locked: LockedBatch) -> Staged:
        """Stage the ``locked`` batch after its heads, write its new events and ``_seal``
        each partition written."""
        raise NotImplementedError

    def _committed(self, staged: Staged) -> list[EventOutcome]:
        """After the commit: each event's outcome (and whatever the store remembers)."""
        raise NotImplementedError

    def _identities(self, batch: AppendBatch) -> tuple[list[tuple[str, ...]], list[str] | None]:
        """Each event's idempotency key, and (keyed by source) each event's source."""
        if not self._by_source:
            return [(event.customer, event.id) for _, event in batch], None
        sources = [event_source(event.body) for _, event in batch]
        keys: list[tuple[str, ...]] = [
            source_idempotency_key(event.customer, event.id, source)
            for (_, event), source in zip(batch, sources, strict=True)
        ]
        return keys, sources

    def _identity(self, customer: str, event_id: str, source: str) -> tuple[str, ...]:
        """The idempotency key of a stored event, as this ledger defines it."""
        if self._by_source:
            return source_idempotency_key(customer, event_id, source)
        return (customer, event_id)

    def _seal(
        self, connection: Connection, locked: LockedBatch, leaves: Mapping[int, list[bytes]]
    ) -> None:
        """Seal each partition's batch of ``leaves`` (the leaf hashes written, in sequence
        order) after its locked head, and record the batches and the new heads."""
        sealed: list[BatchRecord] = []
        new_heads: dict[int, HeadState] = {}
        for partition, hashes in leaves.items():
            record, new_heads[partition] = seal_batch(partition, locked.heads[partition], hashes)
            sealed.append(record)
        batches = batch_rows(sealed, locked.ingested_at_us, locked.epochs)
        self._record_batches(connection, batches, head_updates(new_heads))

    def _record_batches(self, connection: Connection, batches: Rows, heads: Rows) -> None:
        """Insert the ``batches`` rows (``INSERT_BATCH``) and rewrite the ``heads``
        (``UPDATE_HEAD``'s parameters)."""
        connection.executemany(INSERT_BATCH, batches)
        connection.executemany(UPDATE_HEAD, heads)

    def close(self) -> None:
        self._connection.close()
        self._readers.close()
