"""Where the ledger lives: a SQLite file or a PostgreSQL database, behind one connection.

A location is a file path (the embedded default) or a ``postgresql://`` URL (the
production store). Every store writes its SQL once, in SQLite's dialect with ``?``
placeholders; ``PostgresConnection`` runs the same statements on PostgreSQL through
psycopg 3, translating the few differences in one place:

* ``?`` placeholders become ``%s`` (a literal ``%`` is escaped);
* ``INSERT OR IGNORE`` becomes ``INSERT ... ON CONFLICT DO NOTHING``;
* schemas: ``INTEGER`` is ``BIGINT`` (microsecond times), ``INTEGER PRIMARY KEY`` an
  identity, ``BLOB`` is ``BYTEA``, and each append-only trigger calls one PL/pgSQL
  function that refuses the change with the same message.

**Write locks.** Every write transaction of the stores (controls, webhooks, billing)
opens with ``write_transaction(connection, *locks)``, naming what it must serialize
with: ``WriteLock(purpose, key)``. On SQLite every one is ``BEGIN IMMEDIATE``, the
file's one writer, as before. On PostgreSQL it is ``BEGIN`` plus one transaction
advisory lock per ``WriteLock``, keyed by (schema, purpose, key) and taken in key order
(two transactions needing the same locks never deadlock on them); without locks the
transaction relies on row locks and unique constraints only. So writes wait only for
writes of the same key: a customer's control state (``control-customer``), one webhook
endpoint's ordered queue (``webhook-endpoint``); never for writes of another customer
or partition. The event append takes no advisory lock at all: it locks the head rows of
the partitions it writes (``ledger/postgres.py``).

Locks that still span the schema, and why (none is taken per event):

* ``migrate`` (a session lock): creating or changing the schema, so processes starting
  together on an empty database do not race;
* ``write`` (``SCHEMA_WRITE``, also what a bare ``BEGIN IMMEDIATE`` takes):
  ``set_partitions``, which changes the partition count and also locks every head row;
* ``revision-numbers``, ``invoice-numbers``, ``credit-note-numbers``, ``grant-numbers``,
  ``credit-action-numbers``, ``override-numbers``: each a ledger-wide number that must
  commit in number order (invoice and credit-note numbers are gap-free legal sequences,
  ``MAX + 1``; a reader that saw grant, action or override N must have seen every one
  below it). Taken by applying a configuration, period close, threshold and purchase
  invoices, credit notes, grants, manual credit actions and overrides: one transaction
  each, never per event.

**The bucket file (SQLite).** A SQLite ledger's rated-usage buckets live in a file of
their own (``location.bucket_file``), attached as schema ``buckets`` to the connections
that read or fold them (``attach_buckets``; never to the appending connection or the
record stores'), so a fold's write transaction (``bucket_records.bucket_transaction``)
takes only that file's writer and an append only the ledger's. ``BEGIN IMMEDIATE`` on a
connection with the file attached takes both writers (SQLite starts a write on every
attached database), so nothing that writes buckets uses it. ``read_snapshot`` starts
the bucket file's snapshot before the ledger's: the ledger it reads holds at least every
event the buckets it reads were folded from.

Schemas are created under a session advisory lock, so processes starting together on an
empty database do not race. A URL's ``options=-csearch_path=NAME`` keeps several ledgers
(the tests' isolated ones) in one database; every lock is scoped to the schema.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from meterline.errors import StoreError
from meterline.ledger.location import (
    CONNECT_TIMEOUT_S,
    Location,
    bucket_file,
    describe,
    is_postgres,
)

SQLITE_PAGE_BYTES = 16 * 1024
"""The page size of a new SQLite ledger file."""
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite statement waits for another connection's write lock."""
SQLITE_BUCKET_PAGE_BYTES = SQLITE_PAGE_BYTES
"""The page size of a new bucket file: the ledger's (4 KiB pages made a fold take ~1.2x
the CPU; BENCHMARKS.md, issue 20)."""
BUCKET_SCHEMA = "buckets"
"""The name a SQLite connection attaches the ledger's bucket file under."""
STREAM_ROWS = 50_000
"""Rows a streamed PostgreSQL read fetches per round trip."""
LOCK_KEYS_CACHED_MAX = 10_000
"""Advisory lock keys a connection remembers (one per customer or endpoint it wrote for)
before it forgets them all and hashes again."""

if TYPE_CHECKING:
    import psycopg

_SQLITE_INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
_SQLITE_DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
_SQLITE_UNDEFINED_TABLE: tuple[type[Exception], ...] = (sqlite3.OperationalError,)


def psycopg_driver() -> ModuleType:
    """The PostgreSQL driver, imported on first use: a process that only opens SQLite
    files never loads it (~100 ms of every command's start)."""
    import psycopg
    import psycopg.errors

    return psycopg


def _loaded_psycopg() -> ModuleType | None:
    """The driver when some connection has loaded it; None otherwise (then no statement
    can have raised one of its errors)."""
    return sys.modules.get("psycopg.errors") and sys.modules.get("psycopg")


def integrity_errors() -> tuple[type[Exception], ...]:
    """What a unique or check constraint raises, on either store (write ``except
    integrity_errors():``: evaluated only when an error passes)."""
    driver = _loaded_psycopg()
    if driver is None:
        return _SQLITE_INTEGRITY_ERRORS
    return (sqlite3.IntegrityError, driver.IntegrityError)


def database_errors() -> tuple[type[Exception], ...]:
    """What any failed statement raises, on either store (``except database_errors():``)."""
    driver = _loaded_psycopg()
    if driver is None:
        return _SQLITE_DATABASE_ERRORS
    return (sqlite3.DatabaseError, driver.Error)


def undefined_table_errors() -> tuple[type[Exception], ...]:
    """What reading a table that does not exist raises, on either store."""
    driver = _loaded_psycopg()
    if driver is None:
        return _SQLITE_UNDEFINED_TABLE
    return (sqlite3.OperationalError, driver.errors.UndefinedTable)


Connection = Any
"""A ``sqlite3.Connection`` or a ``PostgresConnection``: both answer ``execute``,
``executemany``, ``executescript``, ``in_transaction`` and ``close``."""


# -- translating SQLite's dialect ---------------------------------------------------------

_PLACEHOLDER_SPLIT = re.compile(r"('(?:[^']|'')*')")
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO", re.IGNORECASE)
_TRIGGER = re.compile(
    r"CREATE\s+TRIGGER\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+BEFORE\s+(UPDATE|DELETE)\s+ON\s+(\w+)"
    r"\s+BEGIN\s+SELECT\s+RAISE\s*\(\s*ABORT\s*,\s*('(?:[^']|'')*')\s*\)\s*;\s*END\s*;",
    re.IGNORECASE,
)
_DROP_TRIGGER = re.compile(r"DROP\s+TRIGGER\s+IF\s+EXISTS\s+\w+\s*;", re.IGNORECASE)
_REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION meterline_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = TG_ARGV[0], ERRCODE = 'restrict_violation';
END $$;
"""


def translate_statement(sql: str) -> str:
    """One SQLite statement in PostgreSQL's dialect (placeholders, OR IGNORE)."""
    parts = _PLACEHOLDER_SPLIT.split(sql)
    for index in range(0, len(parts), 2):  # outside string literals
        parts[index] = parts[index].replace("%", "%%").replace("?", "%s")
    text = "".join(parts)
    if _INSERT_OR_IGNORE.match(text):
        text = _INSERT_OR_IGNORE.sub("INSERT INTO", text, count=1).rstrip().rstrip(";")
        text += " ON CONFLICT DO NOTHING"
    return text


def translate_schema(sql: str) -> str:
    """A SQLite schema script in PostgreSQL's dialect (types, identities, triggers)."""
    text = _DROP_TRIGGER.sub("", sql)
    text = _TRIGGER.sub(
        lambda match: (
            f"CREATE OR REPLACE TRIGGER {match[1]} BEFORE {match[2].upper()} ON {match[3]}"
            f" FOR EACH ROW EXECUTE FUNCTION meterline_refuse({match[4]});"
        ),
        text,
    )
    text = re.sub(
        r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", text
    )
    text = re.sub(r"\bINTEGER\b", "BIGINT", text)
    text = re.sub(r"\bBLOB\b", "BYTEA", text)
    return _REFUSE_FUNCTION + text


def _lock_key(schema: str, purpose: str) -> int:
    """A signed 64-bit advisory lock key for ``purpose`` in ``schema``."""
    digest = hashlib.sha256(f"meterline:{schema}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True, slots=True)
class WriteLock:
    """What a write transaction serializes with on PostgreSQL: every other transaction
    holding the same (``purpose``, ``key``) in the same schema. SQLite ignores it (one
    writer per file)."""

    purpose: str
    key: str = ""

    def name(self) -> str:
        return self.purpose if not self.key else f"{self.purpose}:{self.key}"


SCHEMA_WRITE = WriteLock("write")
"""The schema-wide write lock (``BEGIN IMMEDIATE`` on PostgreSQL): only for changes to the
whole ledger's shape (``set_partitions``); see the module docstring."""


class PostgresConnection:
    """One psycopg connection speaking the stores' SQLite dialect (autocommit; explicit
    transactions for writes: ``write_transaction``)."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        driver = psycopg_driver()
        self._idle = driver.pq.TransactionStatus.IDLE
        try:
            self.raw = driver.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except driver.OperationalError as error:
            raise StoreError(f"{describe(url)}: cannot connect to PostgreSQL: {error}") from None
        row = self.raw.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            raise StoreError(f"{describe(url)}: no schema on the search path")
        self.schema: str = row[0]
        self.write_lock_key = _lock_key(self.schema, SCHEMA_WRITE.name())
        self._statements: dict[str, str] = {}
        self._lock_keys: dict[str, int] = {}

    def lock_key(self, lock: WriteLock) -> int:
        """The advisory lock key of ``lock`` in this connection's schema."""
        name = lock.name()
        key = self._lock_keys.get(name)
        if key is None:
            if len(self._lock_keys) >= LOCK_KEYS_CACHED_MAX:
                self._lock_keys.clear()
            key = self._lock_keys[name] = _lock_key(self.schema, name)
        return key

    def take_locks(self, locks: Iterable[WriteLock]) -> None:
        """Take ``locks`` (exclusive transaction advisory locks) in key order, inside the
        open transaction; a lock named twice is taken once."""
        for key in sorted({self.lock_key(lock) for lock in locks}):
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

    def _translated(self, sql: str) -> str:
        text = self._statements.get(sql)
        if text is None:
            text = translate_statement(sql)
            self._statements[sql] = text
        return text

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        raw: psycopg.Connection[Any] = self.raw
        if sql == "BEGIN IMMEDIATE":  # SQLite's one writer: the schema-wide lock
            raw.execute("BEGIN")
            return raw.execute("SELECT pg_advisory_xact_lock(%s)", (self.write_lock_key,))
        return raw.execute(self._translated(sql), parameters or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(self._translated(sql), rows)

    def executescript(self, sql: str) -> None:
        """Create a schema (SQLite dialect) once, under the schema's migration lock.

        Each script that ran is remembered by its SHA-256 in ``meterline_scripts``, so
        opening an existing ledger runs no DDL: re-creating a trigger would wait for, and
        hold up, every append in flight on its table."""
        script = translate_schema(sql)
        digest = hashlib.sha256(script.encode()).hexdigest()
        if self._script_ran(digest):
            return
        with self.migration_lock():
            if self._script_ran(digest):
                return
            with self.raw.transaction():
                self.raw.execute(
                    "CREATE TABLE IF NOT EXISTS meterline_scripts (script_sha256 TEXT PRIMARY KEY)"
                )
                self.raw.execute(script.encode())
                self.raw.execute("INSERT INTO meterline_scripts VALUES (%s)", (digest,))

    def _script_ran(self, digest: str) -> bool:
        found = self.raw.execute("SELECT to_regclass('meterline_scripts') IS NOT NULL").fetchone()
        if not (found and found[0]):
            return False
        row = self.raw.execute(
            "SELECT 1 FROM meterline_scripts WHERE script_sha256 = %s", (digest,)
        ).fetchone()
        return row is not None

    def migration_lock(self) -> _SessionLock:
        return _SessionLock(self, _lock_key(self.schema, "migrate"))

    def stream(self, sql: str, parameters: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows of a large read without holding them all (a server-side cursor, in its own
        read-only transaction on this connection; nothing else may use it meanwhile)."""
        name = f"meterline_stream_{id(self)}"
        with self.raw.transaction(), self.raw.cursor(name=name) as cursor:
            cursor.itersize = STREAM_ROWS
            cursor.execute(self._translated(sql), parameters or None)
            yield from cursor

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.info.transaction_status != self._idle)

    def close(self) -> None:
        self.raw.close()


class _SessionLock:
    """A session advisory lock held for a ``with`` block."""

    def __init__(self, connection: PostgresConnection, key: int) -> None:
        self._connection = connection
        self._key = key

    def __enter__(self) -> None:
        self._connection.raw.execute("SELECT pg_advisory_lock(%s)", (self._key,))

    def __exit__(self, *_: object) -> None:
        self._connection.raw.execute("SELECT pg_advisory_unlock(%s)", (self._key,))


def open_connection(location: Location) -> Connection:
    """A connection to ``location`` with the ledger's durability settings."""
    if is_postgres(location):
        return PostgresConnection(str(location))
    return connect_sqlite(location)


def connect_sqlite(path: Location) -> sqlite3.Connection:
    """A connection with the ledger's durability settings (WAL, fsync on commit)."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # 16 KiB pages: ~6% faster appends of ~300-byte rows than the 4 KiB default (measured);
    # takes effect only when the file is created. A larger cache_size measured slower.
    connection.execute(f"PRAGMA page_size={SQLITE_PAGE_BYTES}")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return connection


def attached_buckets(connection: sqlite3.Connection) -> bool:
    """Whether ``connection`` has its ledger's bucket file attached."""
    rows = connection.execute("PRAGMA database_list").fetchall()
    return any(row[1] == BUCKET_SCHEMA for row in rows)


def attach_buckets(connection: sqlite3.Connection) -> bool:
    """Attach the bucket file of the ledger ``connection`` opened (as ``BUCKET_SCHEMA``,
    WAL, ``synchronous=NORMAL``: a projection, so a power loss may lose its last commits,
    never its consistency, and the folds spend no fsync on them) unless attached already;
    False when it cannot be now (inside a transaction)."""
    rows = connection.execute("PRAGMA database_list").fetchall()
    if any(row[1] == BUCKET_SCHEMA for row in rows):
        return True
    if connection.in_transaction:
        return False
    main = next((row[2] for row in rows if row[1] == "main"), "")
    connection.execute(f"ATTACH DATABASE ? AS {BUCKET_SCHEMA}", (bucket_file(main or ""),))
    connection.execute(f"PRAGMA {BUCKET_SCHEMA}.page_size={SQLITE_BUCKET_PAGE_BYTES}")
    connection.execute(f"PRAGMA {BUCKET_SCHEMA}.journal_mode=WAL")
    connection.execute(f"PRAGMA {BUCKET_SCHEMA}.synchronous=NORMAL")
    return True


def rows_of(
    connection: Any, select: str, order_by: str, customer: str | None, column: str = "customer"
) -> list[Any]:
    """The rows ``select`` reads (those whose ``column`` is ``customer`` when given), in
    ``order_by`` order: a record table's list, whole or one customer's (or one invoice's,
    with ``column="invoice_id"``)."""
    parameters: tuple[Any, ...] = ()
    if customer is not None:
        select += f" WHERE {column} = ?"
        parameters = (customer,)
    return list(connection.execute(f"{select} ORDER BY {order_by}", parameters).fetchall())


@contextmanager
def write_transaction(connection: Connection, *locks: WriteLock) -> Iterator[Connection]:
    """One write transaction on ``connection``: committed when the block ends, rolled back
    on any exception (which goes on). SQLite: ``BEGIN IMMEDIATE`` (the file's one writer,
    whatever ``locks`` say). PostgreSQL: ``BEGIN`` and ``locks`` (see ``WriteLock``), and
    nothing else: with none, only row locks and constraints order it."""
    if isinstance(connection, PostgresConnection):
        connection.raw.execute("BEGIN")
        try:
            connection.take_locks(locks)
        except BaseException:
            connection.raw.execute("ROLLBACK")
            raise
    else:
        connection.execute("BEGIN IMMEDIATE")
    with committed(connection):
        yield connection


@contextmanager
def committed(connection: Connection) -> Iterator[Connection]:
    """The transaction ``connection`` has begun, committed when the block ends and rolled
    back on any exception (which goes on): the end of every write transaction."""
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


@contextmanager
def read_snapshot(connection: Connection) -> Iterator[Connection]:
    """Several reads on ``connection`` seeing one state of the store, whatever commits
    meanwhile: SQLite a deferred transaction (in WAL mode, one snapshot from its first
    read), PostgreSQL a read-only REPEATABLE READ transaction. Nothing may be written in
    it; it is rolled back when the block ends. With a bucket file attached (SQLite), its
    snapshot starts first, then the ledger's (see the module)."""
    if isinstance(connection, PostgresConnection):
        connection.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    else:
        connection.execute("BEGIN")
        if attached_buckets(connection):  # the buckets' snapshot first (see the module)
            connection.execute(f"SELECT 1 FROM {BUCKET_SCHEMA}.sqlite_master LIMIT 1").fetchall()
            connection.execute("SELECT 1 FROM main.sqlite_master LIMIT 1").fetchall()
    try:
        yield connection
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")


def take_locks(connection: Connection, *locks: WriteLock) -> None:
    """More ``locks`` inside a transaction that ``write_transaction`` opened (PostgreSQL;
    on SQLite the file's writer lock already covers them). Taken in key order among
    themselves only: a transaction that takes locks twice must take them in an order
    every other one follows too (e.g. customers in ascending order)."""
    if isinstance(connection, PostgresConnection):
        connection.take_locks(locks)


def stream_rows(
    connection: Connection, sql: str, parameters: Sequence[Any] = ()
) -> Iterator[tuple[Any, ...]]:
    """Rows of a large read, in bounded memory, on either store."""
    if isinstance(connection, PostgresConnection):
        return connection.stream(sql, parameters)
    return iter(connection.execute(sql, parameters))


class ThreadConnections:
    """One reading connection per thread, all closed by ``close`` (psycopg connections
    serialize their statements, so threads must not share one)."""

    def __init__(self, location: Location) -> None:
        self._location = location
        self._local = threading.local()
        self._all: list[Connection] = []
        self._lock = threading.Lock()

    def get(self) -> Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = open_connection(self._location)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for connection in connections:
            connection.close()
        self._local = threading.local()
