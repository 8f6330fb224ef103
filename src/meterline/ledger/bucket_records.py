"""Rated-usage buckets beside the ledger (``core.buckets``), on both stores.

``usage_buckets`` holds one row per bucket (``core.buckets.bucket_row``), keyed by
(customer, revision, segment start, meter, group, hour); ``usage_bucket_days`` the same
buckets rolled up per UTC day (``hour_us`` is the day's first hour), what period reads
take (a month is 31 rows a line, not 744); ``bucket_revisions`` names the configuration
revisions whose buckets are kept, and ``bucket_watermarks`` each one's watermark: the
ledger cut (``core.cuts``) up to which its buckets hold the events, and the generation of
its build (a fresh token each time the revision's buckets are started over).

Which revisions are kept: the current one, whole; and every older revision a finalized
period invoice was rated under (the invoices' periods are read from the buckets of the
revision that billed them), only within those invoices' periods (``keep_periods``): a
closed period never changes (a late event becomes an adjustment), so an older revision's
rows are at most one copy of the periods it closed. Every other revision's rows go when
a newer one is started (``restart``).

Buckets are a projection of the ledger, never a source of truth, and are folded off the
append path: a catch-up folds the events past the watermark and writes their buckets and
the advanced watermark in one transaction (``advance``: only if the watermark is still
the one the fold started from), so buckets and watermark never disagree and a crash
mid-way re-folds from the old watermark, counting nothing twice. ``audit`` re-derives
everything from raw events regardless.

**Where they live.** On PostgreSQL, beside the ledger's tables in its schema (MVCC: a
fold's writes wait for no append). On SQLite, in a file of their own beside the ledger,
``LEDGER.db-buckets`` (``location.bucket_file``), attached to the connections that read
or fold them as schema ``buckets`` (``database.attach_buckets``, done by the first of
``ensure_bucket_tables``, ``built_revisions``, ``watermark``, ``bucket_transaction`` on
a connection): every write of buckets and watermarks is a ``bucket_transaction``, which
takes the bucket file's one writer and never the ledger's, so a fold's transaction
never holds up an append (SQLite has one writer per file). Buckets and their watermark
are in that one file and written in one transaction, so they never disagree; a read
that pairs them with ledger rows reads them in one ``database.read_snapshot`` (the
buckets' snapshot taken first: the ledger then holds every event their watermark names).

The bucket file names the ledger it belongs to (``bucket_ledger``: the ledger's
``ledger_id`` in its ``meta``, made once): a bucket file of another ledger (a ledger
file deleted and made again, or copied over another one) is started over, empty, when
a connection first attaches it. Copying a ledger with ``cp``: copy ``LEDGER.db-buckets``
with it and its buckets come along; leave it and they are rebuilt on first use. A
ledger made before the bucket file, holding its bucket tables in the ledger file, has
them dropped there on first use (one short write of the ledger) and rebuilt in the
bucket file.

Every statement is in SQLite's dialect, names its tables unqualified (SQLite resolves
them to the attached file, the ledger file holding none) and runs on either store's
connection (a ``PostgresConnection`` translates it), inside the caller's transaction.
"""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec

from meterline.core.buckets import BucketRow
from meterline.core.cuts import Cut
from meterline.ledger.database import (
    BUCKET_SCHEMA,
    Connection,
    PostgresConnection,
    attach_buckets,
    attached_buckets,
    committed,
    stream_rows,
    undefined_table_errors,
    write_transaction,
)

__all__ = [
    "BUCKETS_SCHEMA",
    "BUCKET_RANGES_PER_READ",
    "DAYS",
    "HOURS",
    "AppendedEvent",
    "BucketPlace",
    "Watermark",
    "advance",
    "bucket_transaction",
    "buckets_at",
    "built_revisions",
    "ensure_bucket_tables",
    "forget_revision",
    "keep_periods",
    "read_buckets",
    "read_span_buckets",
    "restart",
    "revision_buckets",
    "revision_customers",
    "start",
    "streamed_revision_buckets",
    "watermark",
    "write_buckets",
]

_BUCKET_COLUMNS = """
    customer TEXT NOT NULL,
    revision INTEGER NOT NULL,
    segment_start_us INTEGER NOT NULL,
    meter TEXT NOT NULL,
    group_values TEXT NOT NULL,
    hour_us INTEGER NOT NULL,
    events INTEGER NOT NULL,
    quantity TEXT NOT NULL,
    fees TEXT NOT NULL,
    cost TEXT NOT NULL,
    digest TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (customer, revision, segment_start_us, meter, group_values, hour_us)
"""
"""The columns of an hour bucket and of a day's roll-up (the same shape)."""

BUCKETS_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS usage_buckets ({_BUCKET_COLUMNS});
CREATE TABLE IF NOT EXISTS usage_bucket_days ({_BUCKET_COLUMNS});
CREATE TABLE IF NOT EXISTS bucket_revisions (
    revision INTEGER PRIMARY KEY,
    built_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bucket_watermarks (
    revision INTEGER PRIMARY KEY,
    generation TEXT NOT NULL,
    heads TEXT NOT NULL
);
"""

_TABLE_NAMES = ("usage_buckets", "usage_bucket_days", "bucket_revisions", "bucket_watermarks")
_CREATE = "CREATE TABLE IF NOT EXISTS "
_SQLITE_SCHEMA = (
    BUCKETS_SCHEMA.replace(_CREATE, _CREATE + BUCKET_SCHEMA + ".")
    + f"{_CREATE}{BUCKET_SCHEMA}.bucket_ledger (ledger_id TEXT NOT NULL);"
)
"""The bucket file's tables (SQLite): the bucket tables as in the ledger file before
(rowid tables: clustered on their key, WITHOUT ROWID, a fold took 1.6-1.8x the CPU with
4 KiB pages and 1.1x with 16 KiB; BENCHMARKS.md), and the ledger it holds the buckets
of."""
_LEDGER_ID = "ledger_id"
"""The ledger's identity in its ``meta`` (``checkpoints.origin_of`` makes the same)."""
_TAKE_BUCKET_WRITER = f"UPDATE {BUCKET_SCHEMA}.bucket_ledger SET ledger_id = ledger_id WHERE 0"
"""A write to the bucket file that changes nothing: it takes the file's writer (waiting
for it as ``BEGIN IMMEDIATE`` would), and only that file's."""

_COLUMNS = (
    "customer, revision, segment_start_us, meter, group_values, hour_us,"
    " events, quantity, fees, cost, digest, state"
)
HOURS = "usage_buckets"
DAYS = "usage_bucket_days"
TABLES = (HOURS, DAYS)
"""The bucket tables: by hour, and the same rolled up by UTC day."""
_UPSERT = (
    "INSERT INTO {table} (" + _COLUMNS + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (customer, revision, segment_start_us, meter, group_values, hour_us)"
    " DO UPDATE SET events = excluded.events, quantity = excluded.quantity,"
    " fees = excluded.fees, cost = excluded.cost, digest = excluded.digest,"
    " state = excluded.state"
)
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
_ORDER = " ORDER BY customer, segment_start_us, meter, group_values, hour_us"


AppendedEvent = Sequence[Any]
"""A ledger event as a fold takes it: (sequence, customer, event id, type, timestamp_us,
ingested_at_us, body, hash, ...). Rows, not records: a fold reads thousands per batch."""


@dataclass(frozen=True, slots=True)
class Watermark:
    """Where a revision's buckets stand: the cut of the events they hold, and the
    generation of their build (a catch-up folded from another generation's buckets must
    not write into this one's)."""

    through: Cut
    generation: str


_encode_heads = msgspec.json.Encoder().encode


def _heads_text(cut: Cut) -> str:
    return _encode_heads(cut.to_json()).decode()


def ensure_bucket_tables(connection: Connection) -> None:
    """Create the bucket tables when missing (outside any transaction); on SQLite, in the
    bucket file, attached (see the module)."""
    if isinstance(connection, PostgresConnection):
        with connection.migration_lock():
            connection.executescript(BUCKETS_SCHEMA)
    else:
        _reachable(connection)


def _reachable(connection: Connection) -> bool:
    """Whether ``connection`` reaches the buckets: always on PostgreSQL; on SQLite once the
    bucket file is attached, attached and settled now (``_settle``) when it is not yet,
    unless inside a transaction (False: it cannot attach there)."""
    if isinstance(connection, PostgresConnection) or attached_buckets(connection):
        return True
    if not attach_buckets(connection):
        return False
    _settle(connection)
    return True


def _settle(connection: sqlite3.Connection) -> None:
    """A bucket file just attached made ready: bucket tables left in the ledger file by a
    ledger made before the bucket file dropped there (they are rebuilt here); a bucket
    file of another ledger (or none yet) started over empty, naming this ledger."""
    old = connection.execute(
        "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name IN (?, ?, ?, ?)",
        _TABLE_NAMES,
    ).fetchall()
    if old:
        with write_transaction(connection):  # BEGIN IMMEDIATE: the ledger's writer, once
            for (name,) in old:
                connection.execute(f"DROP TABLE IF EXISTS main.{name}")
    ledger = _ledger_id(connection)
    if _bucket_file_ledger(connection) == ledger:
        return
    connection.executescript(_SQLITE_SCHEMA)
    with bucket_transaction(connection):
        if _bucket_file_ledger(connection) == ledger:
            return  # another connection settled it meanwhile
        for name in _TABLE_NAMES:
            connection.execute(f"DELETE FROM {BUCKET_SCHEMA}.{name}")
        connection.execute(f"DELETE FROM {BUCKET_SCHEMA}.bucket_ledger")
        connection.execute(f"INSERT INTO {BUCKET_SCHEMA}.bucket_ledger VALUES (?)", (ledger,))


def _ledger_id(connection: sqlite3.Connection) -> str:
    """The ledger's ``ledger_id`` (made now when it has none); "" in a file without
    ``meta`` (not a store's ledger)."""
    query = "SELECT value FROM main.meta WHERE name = ?"
    try:
        row = connection.execute(query, (_LEDGER_ID,)).fetchone()
    except sqlite3.OperationalError:
        return ""
    if row is None:
        with write_transaction(connection):  # the ledger's writer, once per ledger
            connection.execute(
                "INSERT OR IGNORE INTO main.meta VALUES (?, ?)", (_LEDGER_ID, secrets.token_hex(8))
            )
        row = connection.execute(query, (_LEDGER_ID,)).fetchone()
    return str(row[0])


def _bucket_file_ledger(connection: sqlite3.Connection) -> str | None:
    """The ledger the attached bucket file names (None: none, or no tables yet)."""
    try:
        row = connection.execute(f"SELECT ledger_id FROM {BUCKET_SCHEMA}.bucket_ledger").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


@contextmanager
def bucket_transaction(connection: Connection) -> Iterator[Connection]:
    """One write transaction of buckets and watermarks: committed when the block ends,
    rolled back on any exception (which goes on). PostgreSQL: ``write_transaction``
    (row locks only). SQLite: the bucket file's writer only (attached first: outside any
    transaction), never the ledger's, so appends go on meanwhile (see the module)."""
    if isinstance(connection, PostgresConnection):
        with write_transaction(connection):
            yield connection
        return
    _reachable(connection)
    connection.execute("BEGIN")
    with committed(connection):
        connection.execute(_TAKE_BUCKET_WRITER)
        yield connection


def built_revisions(connection: Connection) -> set[int]:
    """The revisions whose buckets are kept (built from the first event and carrying a
    watermark; none before the tables are made)."""
    _reachable(connection)
    try:
        rows = connection.execute(
            "SELECT revision FROM bucket_revisions"
            " WHERE revision IN (SELECT revision FROM bucket_watermarks)"
        ).fetchall()
    except undefined_table_errors():
        return set()
    return {int(row[0]) for row in rows}


def watermark(connection: Connection, revision: int) -> Watermark | None:
    """``revision``'s watermark (None when its buckets are not kept)."""
    _reachable(connection)
    try:
        rows = connection.execute(
            "SELECT heads, generation FROM bucket_watermarks WHERE revision = ?", (revision,)
        ).fetchall()
    except undefined_table_errors():
        return None
    if not rows:
        return None
    heads, generation = rows[0]
    return Watermark(Cut.from_json(msgspec.json.decode(heads), "bucket watermark"), generation)


def advance(connection: Connection, revision: int, since: Watermark, through: Cut) -> bool:
    """Inside a write transaction, before the batch's buckets are written: move
    ``revision``'s watermark from ``since`` to ``through``. False (nothing changed) when
    the watermark is no longer ``since``: another catch-up folded these events first, or
    the buckets were started over; the caller rolls back. The update is conditional, so
    on PostgreSQL a concurrent one waits for this row and then finds it moved."""
    cursor = connection.execute(
        "UPDATE bucket_watermarks SET heads = ?"
        " WHERE revision = ? AND generation = ? AND heads = ?",
        (_heads_text(through), revision, since.generation, _heads_text(since.through)),
    )
    return bool(cursor.rowcount == 1)


def forget_revision(connection: Connection, revision: int) -> None:
    """Drop a revision's buckets and watermark (before rebuilding them)."""
    for table in (*TABLES, "bucket_revisions", "bucket_watermarks"):
        connection.execute(f"DELETE FROM {table} WHERE revision = ?", (revision,))


def read_buckets(
    connection: Connection,
    customer: str,
    revision: int,
    start_us: int,
    end_us: int,
    meters: Iterable[str] | None = None,
    hours: Iterable[int] | None = None,
    table: str = HOURS,
) -> list[tuple[Any, ...]]:
    """A customer's buckets of ``revision`` in ``table`` whose hour (day) starts in
    [start_us, end_us) (the one ``start_us`` falls in included), only of ``meters`` and
    ``hours`` (bucket starts) when given."""
    condition = "customer = ? AND revision = ? AND hour_us >= ? AND hour_us < ?"
    span = DAY_US if table == DAYS else HOUR_US
    parameters: list[Any] = [customer, revision, start_us - start_us % span, end_us]
    named: tuple[tuple[str, Iterable[Any] | None], ...] = (("meter", meters), ("hour_us", hours))
    for column, values in named:
        if values is not None:
            chosen = sorted(set(values))
            if not chosen:
                return []
            condition += f" AND {column} IN ({', '.join('?' * len(chosen))})"
            parameters += chosen
    return list(
        connection.execute(
            f"SELECT {_COLUMNS} FROM {_table(table)} WHERE {condition}" + _ORDER, parameters
        ).fetchall()
    )


def read_span_buckets(
    connection: Connection,
    revision: int,
    start_us: int,
    end_us: int,
    table: str = DAYS,
    customer: str | None = None,
) -> list[tuple[Any, ...]]:
    """Every customer's (or only ``customer``'s) buckets of ``revision`` in ``table`` whose
    hour (day) starts in [start_us, end_us) (the one ``start_us`` falls in included), in
    one statement: what ``read_buckets`` reads customer by customer, for many customers'
    periods at once (the caller keeps each one's own rows). Same order as
    ``read_buckets``."""
    span = DAY_US if table == DAYS else HOUR_US
    condition = "revision = ? AND hour_us >= ? AND hour_us < ?"
    parameters: list[Any] = [revision, start_us - start_us % span, end_us]
    if customer is not None:
        condition = "customer = ? AND " + condition  # the primary key's first column
        parameters.insert(0, customer)
    return list(
        connection.execute(
            f"SELECT {_COLUMNS} FROM {_table(table)} WHERE {condition}" + _ORDER, parameters
        ).fetchall()
    )


def revision_buckets(
    connection: Connection,
    revision: int,
    table: str = HOURS,
    customers: Sequence[str] | None = None,
) -> list[tuple[Any, ...]]:
    """Every bucket of ``revision`` (the Parquet export, the fast reconcile), of
    ``customers`` only when given."""
    query = f"SELECT {_COLUMNS} FROM {_table(table)} WHERE revision = ?"
    parameters: list[Any] = [revision]
    if customers is not None:
        query += f" AND customer IN ({','.join('?' * len(customers))})"
        parameters.extend(customers)
    return list(connection.execute(query + _ORDER, parameters).fetchall())


def streamed_revision_buckets(
    connection: Connection, revision: int, table: str = HOURS
) -> Iterator[tuple[Any, ...]]:
    """``revision_buckets`` of the whole revision in bounded memory (the export)."""
    query = f"SELECT {_COLUMNS} FROM {_table(table)} WHERE revision = ?" + _ORDER
    return stream_rows(connection, query, (revision,))


def revision_customers(connection: Connection, revision: int) -> set[str]:
    """The customers ``revision`` holds a bucket of, in either table."""
    found: set[str] = set()
    for table in (HOURS, DAYS):
        rows = connection.execute(
            f"SELECT DISTINCT customer FROM {_table(table)} WHERE revision = ?", (revision,)
        ).fetchall()
        found.update(row[0] for row in rows)
    return found


BUCKET_RANGES_PER_READ = 512
"""Ranges one statement of ``buckets_at`` reads (six parameters each, far below SQLite's
32,766). A shorter list is padded to a power of two with its last range, so a handful of
statement shapes serve every batch (each store keeps them prepared)."""

READ_GAP_SPANS_MAX = 4
"""A line's places at most this many hours (days) apart are read as one range: the
stored rows between them, at most this many less one per gap, are read for nothing."""

BucketPlace = tuple[str, int, str, str, int]
"""Where a bucket is stored within a revision: customer, segment start, meter, group
(JSON), hour (a day's first hour in the days table)."""


def buckets_at(
    connection: Connection, revision: int, places: Iterable[BucketPlace], table: str = HOURS
) -> list[tuple[Any, ...]]:
    """``revision``'s stored buckets in ``table`` at ``places`` (a place stored nowhere has
    no row), and maybe others of the same lines between them: each line's places cut into
    ranges (``READ_GAP_SPANS_MAX``), each range read through the primary key,
    ``BUCKET_RANGES_PER_READ`` a statement. A fold reads the rows it will merge with,
    never a customer's whole revision."""
    span = DAY_US if table == DAYS else HOUR_US
    ranges: list[tuple[str, int, str, str, int, int]] = []
    line: tuple[Any, ...] = ()
    low = high = 0
    for place in sorted(places):
        if place[:4] != line or place[4] - high > span * READ_GAP_SPANS_MAX:
            if line:
                ranges.append((*line, low, high))
            line, low = place[:4], place[4]
        high = place[4]
    if line:
        ranges.append((*line, low, high))
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # the padding reads a range twice
    for first in range(0, len(ranges), BUCKET_RANGES_PER_READ):
        part = ranges[first : first + BUCKET_RANGES_PER_READ]
        padding = (1 << (len(part) - 1).bit_length()) - len(part)
        parameters: list[Any] = [value for item in part for value in item]
        parameters += [*part[-1]] * padding
        parameters.append(revision)
        values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * (len(part) + padding))
        found = connection.execute(_AT.format(values=values, table=_table(table)), parameters)
        for row in found.fetchall():
            rows[tuple(row[:6])] = tuple(row)
    return list(rows.values())


_AT = (
    "WITH wanted (customer, segment_start_us, meter, group_values, low, high)"
    " AS (VALUES {values}) SELECT "
    + ", ".join(f"stored.{column.strip()}" for column in _COLUMNS.split(","))
    + " FROM wanted JOIN {table} AS stored ON stored.customer = wanted.customer"
    " AND stored.revision = ? AND stored.segment_start_us = wanted.segment_start_us"
    " AND stored.meter = wanted.meter AND stored.group_values = wanted.group_values"
    " AND stored.hour_us >= wanted.low AND stored.hour_us <= wanted.high"
)


def write_buckets(connection: Connection, rows: Iterable[BucketRow], table: str = HOURS) -> None:
    """Insert or replace buckets (inside the caller's transaction)."""
    rows = list(rows)
    if rows:
        connection.executemany(_UPSERT.format(table=_table(table)), rows)


def _table(name: str) -> str:
    if name not in TABLES:
        raise ValueError(f"no bucket table {name!r}")
    return name


def restart(
    connection: Connection,
    revision: int,
    built_at_us: int,
    partitions: int,
    keep: Iterable[int] = (),
) -> None:
    """Start a revision's buckets over, empty, at the watermark before any event (a
    catch-up then folds every event), in one short write transaction; the buckets of
    every other revision go (no longer kept current, they would only mislead), but those
    of the revisions in ``keep`` (the revisions finalized invoices were rated under)."""
    kept = sorted({int(number) for number in keep} | {revision})
    others = f"revision NOT IN ({', '.join('?' * len(kept))})"
    with bucket_transaction(connection):
        for table in (*TABLES, "bucket_revisions", "bucket_watermarks"):
            connection.execute(f"DELETE FROM {table} WHERE {others}", kept)
        _started(connection, revision, built_at_us, partitions)


def start(connection: Connection, revision: int, built_at_us: int, partitions: int) -> None:
    """Start one revision's buckets over, empty (as ``restart``), leaving every other
    revision's as they are: an older revision a finalized invoice reads, built on first
    use."""
    with bucket_transaction(connection):
        _started(connection, revision, built_at_us, partitions)


def _started(connection: Connection, revision: int, built_at_us: int, partitions: int) -> None:
    forget_revision(connection, revision)
    connection.execute(
        "INSERT INTO bucket_revisions (revision, built_at_us) VALUES (?, ?)",
        (revision, built_at_us),
    )
    connection.execute(
        "INSERT INTO bucket_watermarks (revision, generation, heads) VALUES (?, ?, ?)",
        (revision, uuid.uuid4().hex, _heads_text(Cut.empty(partitions))),
    )


def keep_periods(
    connection: Connection, revision: int, periods: Mapping[str, Iterable[tuple[int, int]]]
) -> int:
    """Drop ``revision``'s bucket rows (both tables) outside ``periods`` (per customer,
    [start_us, end_us) spans; a span keeps the whole UTC day its start falls in, as
    ``read_buckets`` reads it), in one write transaction; the rows dropped. What stays is
    exact for those periods: a later fold merges into the rows kept."""
    chosen = {customer: sorted(set(spans)) for customer, spans in periods.items()}
    customers = sorted(customer for customer, spans in chosen.items() if spans)
    dropped = 0
    with bucket_transaction(connection):
        for table in TABLES:
            outside = f"customer NOT IN ({', '.join('?' * len(customers))})" if customers else ""
            cursor = connection.execute(
                f"DELETE FROM {table} WHERE revision = ?" + (f" AND {outside}" if outside else ""),
                [revision, *customers],
            )
            dropped += max(cursor.rowcount, 0)
            for customer in customers:
                spans = sorted({(start - start % DAY_US, end) for start, end in chosen[customer]})
                inside = " OR ".join(["(hour_us >= ? AND hour_us < ?)"] * len(spans))
                cursor = connection.execute(
                    f"DELETE FROM {table} WHERE revision = ? AND customer = ? AND NOT ({inside})",
                    [revision, customer, *(bound for span in spans for bound in span)],
                )
                dropped += max(cursor.rowcount, 0)
    return dropped
