"""The embedded ledger store: one SQLite file in WAL mode, fsync'd on every commit.

Idempotency without a unique index: a unique text index costs SQLite most of its insert
speed, so the store keeps an in-memory map from a 64-bit hash of the idempotency key
(``(customer, id)``, or ``(source, id)`` on a ledger created with
``dedup_key="source_id"``, whose events carry a ``source`` column) to the sequences stored
under that hash. A hit is always confirmed against the stored row (its key and bytes),
so a hash collision can never drop a real event; it only costs one extra read. The map
is rebuilt from the file on open and caught up inside every write transaction whenever
another process appended, so several writers stay exact.
The file holds one partition (``ledger.heads``): an append writes its events, their
batch record (the Merkle root over their leaf hashes, chained to the previous batch) and
the partition's new head. Invariants: ``events``, ``batches`` and ``checkpoints`` refuse
UPDATE and DELETE (triggers); an append is one ``BEGIN IMMEDIATE ... COMMIT`` with
``synchronous=FULL``. The steps of opening and appending are ``ledger.sql_writes``'s; this
module keeps what is SQLite's: the file's one writer, the hash index, ``executemany``.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from hashlib import sha256
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from meterline.core.chain import GENESIS_HASH
from meterline.core.events import event_source, source_idempotency_key
from meterline.core.outcomes import EventOutcome, Status
from meterline.errors import StoreError
from meterline.ledger.database import ThreadConnections, connect_sqlite, write_transaction
from meterline.ledger.heads import HEAD_ROWS
from meterline.ledger.sql_reads import SCHEMA_VERSION, event_row, ledger_schema
from meterline.ledger.sql_writes import LockedBatch, SqlLedgerStore, replay_outcome
from meterline.ledger.store import AppendBatch, DedupKey

CHECKPOINT_INTERVAL_S = 0.05
"""How often the background thread copies the WAL back into the database file."""
WRITER_CHECKPOINT_PAGES = 8192
"""WAL size (pages) past which the writer checkpoints itself, should the thread fall behind."""

_EVENTS_END = "    partition_number INTEGER NOT NULL DEFAULT 0\n);"
_SCHEMA = ledger_schema("INTEGER", "INTEGER PRIMARY KEY", _EVENTS_END)
_SOURCE_SCHEMA = _SCHEMA.replace(
    _EVENTS_END, "    partition_number INTEGER NOT NULL DEFAULT 0,\n    source TEXT NOT NULL\n);", 1
)
"""The schema of a ledger keyed by ``(source, id)``: events carry their source (``""``
when they have none)."""
_EVENT_COLUMNS = "sequence, customer, event_id, type, timestamp_us, ingested_at_us, body, hash"
_INSERT_EVENT = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_EVENT_WITH_SOURCE = (
    f"INSERT INTO events ({_EVENT_COLUMNS}, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ONE_HEAD = f"{HEAD_ROWS} WHERE partition_number = 0"

KeyFunction = Callable[[tuple[str, ...]], int]
_LEAF_PREFIX = b"\x00"
"""RFC 6962's prefix of a leaf hash (``core.chain.event_hash`` spells it too)."""
_digest = type(sha256()).digest
_customer_of = itemgetter(0)
_id_of = itemgetter(1)
_type_of = itemgetter(2)
_timestamp_of = itemgetter(3)
_body_of = itemgetter(4)
_ACCEPTED: Status = "accepted"


class _Staged(NamedTuple):
    """One batch made ready to write: event rows, their leaf hashes (in sequence order),
    an outcome per event, the dedup keys staged (key to sequence or sequences), the
    sequence after the last row, and whether every key is new to the index."""

    rows: Iterable[tuple[object, ...]]
    leaves: list[bytes]
    outcomes: list[EventOutcome]
    keys: dict[int, int | tuple[int, ...]]
    next_sequence: int
    new_keys: bool


class _Checkpointer(threading.Thread):
    """Copies committed WAL frames into the database off the commit path (PASSIVE mode).

    Checkpointing inside the committing thread costs appends ~5-10% (measured); here it
    runs beside them, and SQLite still checkpoints in the writer past
    ``WRITER_CHECKPOINT_PAGES`` if this thread ever falls behind.
    """

    def __init__(self, path: str) -> None:
        super().__init__(name="meterline-checkpointer", daemon=True)
        self._path = path
        self._stopping = threading.Event()

    def run(self) -> None:
        connection = connect_sqlite(self._path)
        try:
            while not self._stopping.wait(CHECKPOINT_INTERVAL_S):
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            connection.close()

    def stop(self, wait: bool = True) -> None:
        self._stopping.set()
        if wait:
            self.join()


class SqliteStore(SqlLedgerStore[_Staged]):
    """The ledger store over one SQLite file; safe for threads and for several processes."""

    partitions = 1
    """One hash chain."""
    ledger_tables = _SCHEMA
    source_ledger_tables = _SOURCE_SCHEMA

    def __init__(
        self,
        path: str | Path,
        key_function: KeyFunction = hash,
        dedup_key: DedupKey | None = None,
        create: bool = True,
    ) -> None:
        """The store over the file at ``path``; with ``create=False`` the file must already
        hold a ledger and its schema is left exactly as found (the proof tools: creating
        would re-create an append-only trigger someone dropped, erasing the evidence)."""
        self.path = str(path)
        self._key = key_function
        self._connection = connect_sqlite(self.path)
        self._write_lock = threading.Lock()
        self._readers = ThreadConnections(self.path)
        self._index: dict[int, int | tuple[int, ...]] = {}
        self._indexed_through = 0
        self._settle_dedup_key(dedup_key, create)
        if create:
            self._create_tables({"schema_version": SCHEMA_VERSION})
            self._create_head_rows([0])
        self._settings()
        self._catch_up(self._connection)
        self._connection.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
        self._checkpointer = _Checkpointer(self.path)
        self._checkpointer.start()
        # A store dropped without close() must not leave its thread polling forever.
        weakref.finalize(self, self._checkpointer.stop, False)

    # -- opening (the steps are ledger.sql_writes') ---------------------------------------

    def _settings_lock(self) -> AbstractContextManager[Any]:
        """The file's one writer (``BEGIN IMMEDIATE``)."""
        return write_transaction(self._connection)

    def _holds_events(self) -> bool:
        return (
            self._connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone()
            is not None
        )

    def _stored_dedup_key(self) -> str | None:
        try:
            return super()._stored_dedup_key()
        except sqlite3.OperationalError:
            return None  # no meta table: not a ledger; the schema check says so

    # -- writing -------------------------------------------------------------------------

    def _catch_up(self, connection: sqlite3.Connection) -> tuple[int, bytes]:
        """Index every record appended since the last one indexed; return the chain tail."""
        row = connection.execute(
            "SELECT sequence, hash FROM events ORDER BY sequence DESC LIMIT 1"
        ).fetchone()
        tail = (0, GENESIS_HASH) if row is None else (row[0], row[1])
        if tail[0] != self._indexed_through:
            if self._by_source:
                rows = connection.execute(
                    "SELECT sequence, customer, event_id, source FROM events WHERE sequence > ?",
                    (self._indexed_through,),
                )
                for sequence, customer, event_id, source in rows:
                    key = self._key(source_idempotency_key(customer, event_id, source))
                    self._remember(self._index, key, sequence)
            else:
                rows = connection.execute(
                    "SELECT sequence, customer, event_id FROM events WHERE sequence > ?",
                    (self._indexed_through,),
                )
                for sequence, customer, event_id in rows:
                    self._remember(self._index, self._key((customer, event_id)), sequence)
            self._indexed_through = tail[0]
        return tail

    @staticmethod
    def _remember(index: dict[int, int | tuple[int, ...]], key: int, sequence: int) -> None:
        known = index.get(key)
        if known is None:
            index[key] = sequence
        elif type(known) is int:
            index[key] = (known, sequence)
        else:
            index[key] = (*known, sequence)  # type: ignore[misc]

    def _stored(
        self,
        sequences: int | tuple[int, ...],
        identity: tuple[str, ...],
        pending: list[tuple[object, ...]],
        first_pending: int,
    ) -> tuple[int, bytes] | None:
        """The stored (sequence, bytes) of the event with idempotency key ``identity``,
        confirming a hash hit."""
        source = "source" if self._by_source else "''"
        for sequence in (sequences,) if type(sequences) is int else sequences:  # type: ignore[union-attr]
            if sequence >= first_pending:
                row = pending[sequence - first_pending]
                found = (row[1], row[2], row[6], row[8] if self._by_source else "")
            else:
                fetched = self._connection.execute(
                    f"SELECT customer, event_id, body, {source} FROM events WHERE sequence = ?",
                    (sequence,),
                ).fetchone()
                if fetched is None:
                    raise StoreError(f"index names sequence {sequence}, which is not stored")
                found = fetched
            if self._identity(found[0], found[1], found[3]) == identity:  # type: ignore[arg-type]
                return sequence, found[2]  # type: ignore[return-value]
        return None

    def _find(
        self,
        key: int,
        identity: tuple[str, ...],
        staged: dict[int, int | tuple[int, ...]],
        pending: list[tuple[object, ...]],
        first_pending: int,
    ) -> tuple[int, bytes] | None:
        """The stored or staged copy of the event keyed ``identity`` under a hash hit."""
        for candidates in (self._index.get(key), staged.get(key)):
            if candidates is not None:
                found = self._stored(candidates, identity, pending, first_pending)
                if found is not None:
                    return found
        return None

    def _partitions_of(self, batch: AppendBatch) -> list[int]:
        return [0] * len(batch)  # the one partition

    def _lock_heads(self, connection: sqlite3.Connection, partitions: list[int]) -> list[Any]:
        """The one head row (``BEGIN IMMEDIATE`` holds the whole file already), after the
        dedup index caught up with what other processes appended."""
        self._catch_up(connection)
        return connection.execute(_ONE_HEAD).fetchall()

    def _write(self, connection: sqlite3.Connection, locked: LockedBatch) -> _Staged:
        staged = self._stage(locked.batch, locked.heads[0].sequence + 1, locked.ingested_at_us)
        if staged.leaves:
            insert = _INSERT_EVENT_WITH_SOURCE if self._by_source else _INSERT_EVENT
            connection.executemany(insert, staged.rows)
            self._seal(connection, locked, {0: staged.leaves})
        return staged

    def _committed(self, staged: _Staged) -> list[EventOutcome]:
        """Remember the committed batch's keys in the dedup index; its outcomes."""
        self._index_staged(staged)
        self._indexed_through = staged.next_sequence - 1
        return staged.outcomes

    def _stage(self, batch: AppendBatch, first: int, ingested_at_us: int) -> _Staged:
        """The rows, leaves and outcomes of ``batch`` appended from sequence ``first``: at
        once, column by column, when no event is already stored and no two share a key
        (the common batch); else event by event (``_stage_each``)."""
        positions, events = zip(*batch, strict=True)
        customers = list(map(_customer_of, events))
        event_ids = list(map(_id_of, events))
        bodies = list(map(_body_of, events))
        # Keys straight from short-lived identities: the fewer objects a batch keeps, the
        # less the cyclic GC walks (it took ~10% of the library path's CPU, BENCHMARKS.md).
        identities: Iterator[tuple[str, ...]]
        if self._by_source:
            sources = list(map(event_source, bodies))
            identities = map(source_idempotency_key, customers, event_ids, sources)
        else:
            identities = zip(customers, event_ids, strict=True)
        keys = list(map(self._key, identities))
        index = self._index
        if len(set(keys)) < len(keys) or not index.keys().isdisjoint(keys):
            return self._stage_each(batch, keys, first, ingested_at_us)
        sequences = range(first, first + len(keys))
        # core.chain.event_hash, inlined on the hot path; verify() re-checks it.
        leaves = list(map(_digest, map(sha256, map(_LEAF_PREFIX.__add__, bodies))))
        columns = [
            sequences,
            customers,
            event_ids,
            map(_type_of, events),
            map(_timestamp_of, events),
            repeat(ingested_at_us, len(keys)),
            bodies,
            leaves,
        ]
        if self._by_source:
            columns.append(sources)
        rows = zip(*columns, strict=True)  # consumed once, by executemany
        outcomes = list(map(EventOutcome, positions, repeat(_ACCEPTED), event_ids, sequences))
        staged_keys: dict[int, int | tuple[int, ...]] = dict(zip(keys, sequences, strict=True))
        return _Staged(rows, leaves, outcomes, staged_keys, first + len(keys), True)

    def _stage_each(
        self,
        batch: AppendBatch,
        keys: list[int],
        first: int,
        ingested_at_us: int,
    ) -> _Staged:
        """``_stage`` one event at a time, for a batch holding a replay (stored, or twice
        in the batch): each hash hit is confirmed against the stored or staged row."""
        index = self._index
        staged: dict[int, int | tuple[int, ...]] = {}
        rows: list[tuple[object, ...]] = []
        leaves: list[bytes] = []
        outcomes: list[EventOutcome] = []
        identities, sources = self._identities(batch)
        sequence = first
        for number, ((position, event), key) in enumerate(zip(batch, keys, strict=True)):
            if key in index or key in staged:
                found = self._find(key, identities[number], staged, rows, first)
                if found is not None:
                    outcomes.append(replay_outcome(position, event.id, event.body, found))
                    continue
                self._remember(staged, key, sequence)
            else:
                staged[key] = sequence
            digest = sha256(_LEAF_PREFIX + event.body).digest()
            leaves.append(digest)
            row = event_row(sequence, event, ingested_at_us, digest)
            rows.append(row if sources is None else (*row, sources[number]))
            outcomes.append(EventOutcome(position, "accepted", event.id, sequence))
            sequence += 1
        return _Staged(rows, leaves, outcomes, staged, sequence, False)

    def _index_staged(self, staged: _Staged) -> None:
        """Remember the committed batch's keys in the in-memory dedup index."""
        index = self._index
        if staged.new_keys:
            index.update(staged.keys)
            return
        for key, value in staged.keys.items():
            if key in index:
                for staged_sequence in (value,) if type(value) is int else value:  # type: ignore[union-attr]
                    self._remember(index, key, staged_sequence)
            else:
                index[key] = value

    def close(self) -> None:
        self._checkpointer.stop()
        super().close()
