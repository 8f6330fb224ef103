"""The production ledger store: PostgreSQL, one hash chain per partition.

Every event belongs to its customer's partition (``core.partitions``) and chains from the
previous event of that partition, so partitions can be written, verified and proven on
their own. Ledger sequences stay one gap-free order across partitions (billing, the live
engine and queries read "everything after sequence N"): an append allocates them under
the schema's write lock, held to the commit, so a reader that sees sequence N sees every
sequence below it. The lock covers a batch's chaining (each partition's tail must be
known), its insert and its commit; fetching, decoding, validation and the live engines
run outside it, in as many workers as there are partitions. One lock per ledger is the
ceiling of this design (see BENCHMARKS.md, "Production scale").

Idempotency is a unique index on ``(customer, event_id)`` (on a ledger created with
``dedup_key="source_id"``: events carry a ``source`` column and the unique index is on
``(source, customer when there is no source, event_id)``, see
``core.events.source_idempotency_key``). An append is optimistic (events
fresh from the stream are new): it copies the batch under a savepoint without reading its
keys first; if the index refuses one, it rolls back to the savepoint, reads which of its
keys are stored (one query) and copies the rest, so a replay is answered ``duplicate``
(same bytes) or ``conflict`` (other bytes) and writes nothing, in the same transaction
under the same lock. Rows go in by binary ``COPY``. The tail of each partition's chain
is kept in ``chain_heads`` (a cache, rewritten in the same transaction; ``verify`` never
trusts it). Invariants: ``events`` and ``commits`` refuse UPDATE and DELETE (triggers);
an append is one transaction, committed with ``synchronous_commit``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from hashlib import sha256

import psycopg.errors

from meterline.core.chain import GENESIS_HASH
from meterline.core.events import PreparedEvent, event_source, same_event, source_idempotency_key
from meterline.core.outcomes import EventOutcome, Status
from meterline.core.partitions import DEFAULT_PARTITIONS, check_partition_count, partition_of
from meterline.errors import StoreError
from meterline.ledger.database import PostgresConnection, ThreadConnections, describe
from meterline.ledger.sql_reads import SqlLedgerReads
from meterline.ledger.store import DEFAULT_DEDUP_KEY, DedupKey, check_dedup_key

SCHEMA_VERSION = 1

_META = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    sequence BIGINT PRIMARY KEY,
    customer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    timestamp_us BIGINT NOT NULL,
    ingested_at_us BIGINT NOT NULL,
    body BLOB NOT NULL,
    hash BLOB NOT NULL,
    partition_number INTEGER NOT NULL,
    UNIQUE (customer, event_id)
);
CREATE TABLE IF NOT EXISTS commits (
    commit_number INTEGER PRIMARY KEY,
    first_sequence BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL,
    last_hash BLOB NOT NULL,
    committed_at_us BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_heads (
    partition_number INTEGER PRIMARY KEY,
    sequence BIGINT NOT NULL,
    hash BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: events cannot be updated'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: events cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS commits_append_only_update BEFORE UPDATE ON commits
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: commits cannot be updated'); END;
CREATE TRIGGER IF NOT EXISTS commits_append_only_delete BEFORE DELETE ON commits
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: commits cannot be deleted'); END;
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    scope TEXT NOT NULL,
    customer TEXT,
    name TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT
);
"""
_UNIQUE_CUSTOMER_ID = "    UNIQUE (customer, event_id)\n"
_SOURCE_OWNER = "(CASE WHEN source = '' THEN customer ELSE '' END)"
"""The second part of a ``(source, id)`` key: the customer of an event without a source."""
_SOURCE_SCHEMA = (
    _SCHEMA.replace(_UNIQUE_CUSTOMER_ID, "    source TEXT NOT NULL\n", 1)
    + f"CREATE UNIQUE INDEX IF NOT EXISTS events_source_event_id ON events (source,"
    f" {_SOURCE_OWNER}, event_id);\n"
    "CREATE INDEX IF NOT EXISTS events_customer_event_id ON events (customer, event_id);\n"
)
"""The schema of a ledger keyed by ``(source, id)``: each event's source (``""`` when it
has none) in a column, unique with the event id (and the customer when there is no
source); ``(customer, event_id)`` is an ordinary index for reads by customer."""
PARTITION_CACHE_MAX = 1_000_000
"""Customers whose partition an append remembers; the memory is dropped when it is full."""

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
_HEAD_AND_TAILS = (
    "SELECT -1, (SELECT sequence FROM events ORDER BY sequence DESC LIMIT 1), NULL::bytea"
    " UNION ALL SELECT partition_number, sequence, hash FROM chain_heads"
    " WHERE partition_number = ANY(%s)"
)
_RECORD_COMMIT = (
    "WITH recorded AS (INSERT INTO commits (first_sequence, last_sequence, last_hash,"
    " committed_at_us) VALUES (%s, %s, %s, %s))"
    " INSERT INTO chain_heads (partition_number, sequence, hash)"
    " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bytea[])"
    " ON CONFLICT (partition_number) DO UPDATE SET sequence = excluded.sequence,"
    " hash = excluded.hash"
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


class PostgresStore(SqlLedgerReads):
    """The ledger store over one PostgreSQL schema; safe for threads and processes."""

    record_columns = (
        "sequence, customer, event_id, type, timestamp_us, body, hash, partition_number"
    )

    def __init__(
        self, url: str, partitions: int | None = None, dedup_key: DedupKey | None = None
    ) -> None:
        self.path = url
        self._connection = PostgresConnection(url)
        self._write_lock = threading.Lock()
        self._readers = ThreadConnections(url)
        self.dedup_key = self._dedup_setting(dedup_key)
        self._by_source = self.dedup_key == "source_id"
        self._copied_columns = (*_COPIED_COLUMNS, "source") if self._by_source else _COPIED_COLUMNS
        self._copy_events = (
            f"COPY events ({', '.join(self._copied_columns)}) FROM STDIN (FORMAT BINARY)"
        )
        self.partitions = self._migrate(partitions)
        self._partition_cache: dict[str, int] = {}
        self._cached_count = self.partitions
        self._event_types: list[str] | None = None
        self._begin = (
            f"BEGIN; SELECT pg_advisory_xact_lock({int(self._connection.write_lock_key)});"
            " SAVEPOINT meterline_append"
        )

    def _dedup_setting(self, wanted: DedupKey | None) -> DedupKey:
        """The ledger's idempotency key: stored in ``meta`` when the ledger is created
        (``wanted`` or the default; a ledger created before the setting existed is keyed
        by ``(customer, id)``); a different explicit ``wanted`` is refused."""
        if wanted is not None:
            check_dedup_key(wanted)
        connection = self._connection
        connection.executescript(_META)
        with connection.migration_lock():
            row = connection.execute("SELECT value FROM meta WHERE name = 'dedup_key'").fetchone()
            if row is None:
                existing = connection.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()
                chosen = DEFAULT_DEDUP_KEY if existing[0] else (wanted or DEFAULT_DEDUP_KEY)
                connection.execute(
                    "INSERT INTO meta VALUES ('dedup_key', ?) ON CONFLICT (name) DO NOTHING",
                    (chosen,),
                )
            else:
                chosen = check_dedup_key(row[0])
        if wanted is not None and wanted != chosen:
            raise StoreError(
                f"{describe(self.path)}: the ledger deduplicates by {chosen}, not {wanted}"
            )
        return chosen

    def _migrate(self, partitions: int | None) -> int:
        """Create the schema once; return the ledger's partition count (set at creation:
        ``partitions`` or the default; a different explicit count is refused)."""
        connection = self._connection
        connection.executescript(_SOURCE_SCHEMA if self._by_source else _SCHEMA)
        wanted = check_partition_count(partitions or DEFAULT_PARTITIONS)
        with connection.migration_lock():
            for name, value in (("schema_version", SCHEMA_VERSION), ("partitions", wanted)):
                connection.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                    (name, str(value)),
                )
            rows = dict(connection.execute("SELECT name, value FROM meta").fetchall())
        if int(rows["schema_version"]) != SCHEMA_VERSION:
            raise StoreError(
                f"{describe(self.path)}: schema version {rows['schema_version']},"
                f" expected {SCHEMA_VERSION}"
            )
        stored = int(rows["partitions"])
        if partitions is not None and partitions != stored:
            raise StoreError(
                f"{describe(self.path)}: the ledger has {stored} partitions, not {partitions}"
                " (see `meterline partitions`)"
            )
        return stored

    def _reader(self) -> PostgresConnection:
        return self._readers.get()  # type: ignore[no-any-return]

    def set_partitions(self, count: int) -> None:
        """Change how many partitions new events are spread over (existing chains stay:
        every record names its partition). Run with the workers stopped."""
        check_partition_count(count)
        with self._write_lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("UPDATE meta SET value = ? WHERE name = 'partitions'", (count,))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        self.partitions = count

    def chain_heads(self) -> dict[int, tuple[int, bytes]]:
        """Each partition's last sequence and hash."""
        rows = self._reader().execute("SELECT partition_number, sequence, hash FROM chain_heads")
        return {partition: (sequence, digest) for partition, sequence, digest in rows}

    # -- writing -------------------------------------------------------------------------

    def append(
        self, batch: Sequence[tuple[int, PreparedEvent]], ingested_at_us: int
    ) -> list[EventOutcome]:
        if not batch:
            return []
        partition_of_batch = self._partitions_of(batch)
        connection = self._connection
        raw = connection.raw
        with self._write_lock:
            try:
                # one round trip: the transaction, the schema's write lock, a savepoint
                raw.execute(self._begin)
                first, tails = self._head_and_tails(set(partition_of_batch))
                # Optimistic: events fresh from the stream are new, so the batch goes in
                # without reading its keys first; the unique index refuses any stored
                # one, and then (rolled back to the savepoint) the keys are read and the
                # batch staged again without them. Same transaction, same lock.
                keys, sources = self._keys_of(batch)
                rows, outcomes = self._stage(
                    batch,
                    keys,
                    sources,
                    partition_of_batch,
                    {},
                    dict(tails),
                    first,
                    ingested_at_us,
                )
                if rows:
                    try:
                        self._write(rows, ingested_at_us)
                    except psycopg.errors.UniqueViolation:
                        raw.execute("ROLLBACK TO SAVEPOINT meterline_append")
                        rows, outcomes = self._stage(
                            batch,
                            keys,
                            sources,
                            partition_of_batch,
                            self._stored(keys),
                            tails,
                            first,
                            ingested_at_us,
                        )
                        if rows:
                            self._write(rows, ingested_at_us)
                raw.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    raw.execute("ROLLBACK")
                raise
        return outcomes

    def _partitions_of(self, batch: Sequence[tuple[int, PreparedEvent]]) -> list[int]:
        """Each event's partition (customers' partitions are remembered: a SHA-256 each)."""
        count = self.partitions
        if count != self._cached_count or len(self._partition_cache) > PARTITION_CACHE_MAX:
            self._partition_cache = {}
            self._cached_count = count
        cache = self._partition_cache
        partitions = []
        for _, event in batch:
            partition = cache.get(event.customer)
            if partition is None:
                partition = cache[event.customer] = partition_of(event.customer, count)
            partitions.append(partition)
        return partitions

    def _keys_of(
        self, batch: Sequence[tuple[int, PreparedEvent]]
    ) -> tuple[list[tuple[str, ...]], list[str] | None]:
        """Each event's idempotency key, and (keyed by source) each event's source."""
        if not self._by_source:
            return [(event.customer, event.id) for _, event in batch], None
        sources = [event_source(event.body) for _, event in batch]
        keys: list[tuple[str, ...]] = [
            source_idempotency_key(event.customer, event.id, source)
            for (_, event), source in zip(batch, sources, strict=True)
        ]
        return keys, sources

    @staticmethod
    def _stage(
        batch: Sequence[tuple[int, PreparedEvent]],
        keys: list[tuple[str, ...]],
        sources: list[str] | None,
        partition_of_batch: list[int],
        stored: dict[tuple[str, ...], tuple[int, bytes]],
        tails: dict[int, bytes],
        first: int,
        ingested_at_us: int,
    ) -> tuple[list[tuple[object, ...]], list[EventOutcome]]:
        """The rows to copy (sequences from ``first``, chained from ``tails``, which it
        advances; each with its source when ``sources`` are given) and every event's
        outcome; ``stored`` and earlier events of the batch (by ``keys``) make an event a
        duplicate or a conflict."""
        sequence = first
        staged: dict[tuple[str, ...], tuple[int, bytes]] = {}
        rows: list[tuple[object, ...]] = []
        outcomes: list[EventOutcome] = []
        for number, ((position, event), partition) in enumerate(
            zip(batch, partition_of_batch, strict=True)
        ):
            customer, event_id, event_type, timestamp_us, body = event
            key = keys[number]
            found = stored.get(key) or staged.get(key)
            if found is not None:
                status: Status = "duplicate" if same_event(found[1], body) else "conflict"
                outcomes.append(EventOutcome(position, status, event_id, found[0]))
                continue
            digest = sha256(tails.get(partition, GENESIS_HASH) + body).digest()
            tails[partition] = digest
            staged[key] = (sequence, body)
            row: tuple[object, ...] = (
                sequence,
                customer,
                event_id,
                event_type,
                timestamp_us,
                ingested_at_us,
                body,
                digest,
                partition,
            )
            rows.append(row if sources is None else (*row, sources[number]))
            outcomes.append(EventOutcome(position, "accepted", event_id, sequence))
            sequence += 1
        return rows, outcomes

    def _stored(self, keys: list[tuple[str, ...]]) -> dict[tuple[str, ...], tuple[int, bytes]]:
        """The stored (sequence, bytes) of every key of a batch already in the ledger."""
        columns = [list(column) for column in zip(*keys, strict=True)]
        query = _STORED_SOURCE_KEYS if self._by_source else _STORED_KEYS
        rows = self._connection.raw.execute(query, columns)
        return {tuple(row[:-2]): (row[-2], row[-1]) for row in rows}

    def _head_and_tails(self, partitions: set[int]) -> tuple[int, dict[int, bytes]]:
        """The next ledger sequence and the chain tails of ``partitions`` (one query)."""
        rows = self._connection.raw.execute(_HEAD_AND_TAILS, (sorted(partitions),)).fetchall()
        head = 0
        tails: dict[int, bytes] = {}
        for partition, sequence, digest in rows:
            if partition < 0:
                head = sequence or 0
            else:
                tails[partition] = digest
        return head + 1, tails

    def _copy_types(self) -> list[str]:
        """The PostgreSQL types of the copied columns, as the table declares them (a
        binary COPY must name them exactly)."""
        if self._event_types is None:
            rows = self._connection.raw.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped"
            ).fetchall()
            declared = dict(rows)
            self._event_types = [declared[column] for column in self._copied_columns]
        return self._event_types

    def _write(self, rows: list[tuple[object, ...]], ingested_at_us: int) -> None:
        """Copy ``rows`` (binary COPY), then record the commit and the new chain heads in
        one statement."""
        raw = self._connection.raw
        heads: dict[object, tuple[object, object]] = {}
        types = self._copy_types()
        with raw.cursor() as cursor:
            with cursor.copy(self._copy_events) as copy:
                copy.set_types(types)
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
                    heads[row[8]] = (row[0], row[7])
            cursor.execute(
                _RECORD_COMMIT,
                (
                    rows[0][0],
                    rows[-1][0],
                    rows[-1][7],
                    ingested_at_us,
                    list(heads),
                    [head[0] for head in heads.values()],
                    [head[1] for head in heads.values()],
                ),
            )

    def close(self) -> None:
        self._connection.close()
        self._readers.close()
