"""Rated-usage buckets beside the ledger (``core.buckets``), on both stores.

``usage_buckets`` holds one row per bucket (``core.buckets.bucket_row``), keyed by
(customer, revision, segment start, meter, group, hour); ``usage_bucket_days`` the same
buckets rolled up per UTC day (``hour_us`` is the day's first hour), what period reads
take (a month is 31 rows a line, not 744); ``bucket_revisions`` names the
configuration revisions whose buckets are complete (built from every event, then kept
current). Buckets are a projection of the ledger, never a source of truth: they are
written in the same transaction as the events they fold (a store's ``fold_batch`` hook,
run by ``append`` before its commit) or rebuilt whole, so a crash can never leave them
and the events disagreeing; ``audit`` re-derives everything from raw events regardless.

Every statement is in SQLite's dialect and runs on either store's connection (a
``PostgresConnection`` translates it), inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg.errors

from meterline.core.buckets import BucketRow
from meterline.ledger.database import Connection, PostgresConnection, write_transaction

__all__ = [
    "BUCKETS_SCHEMA",
    "DAYS",
    "HOURS",
    "AppendedEvent",
    "BatchFolder",
    "appended_events",
    "built_revisions",
    "ensure_bucket_tables",
    "forget_revision",
    "latest_revision",
    "lock_appends",
    "mark_built",
    "read_buckets",
    "rebuilt",
    "revision_buckets",
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
"""

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
"""An event an append is committing, as both stores stage its row: (sequence, customer,
event id, type, timestamp_us, ingested_at_us, body, hash, ...). Rows, not records: a
fold reads thousands per batch."""

BatchFolder = Callable[[Connection, Sequence[AppendedEvent]], None]
"""A store's ``fold_batch`` hook: called inside an append's transaction, before its
commit, with the events it accepted (in ledger order); whatever it writes on the
connection commits or rolls back with them."""


def appended_events(rows: Iterable[Sequence[Any]]) -> Sequence[AppendedEvent]:
    """A store's staged event rows, as the fold hook takes them."""
    return rows if isinstance(rows, list) else list(rows)


def ensure_bucket_tables(connection: Connection) -> None:
    """Create the bucket tables when missing (outside any transaction)."""
    if isinstance(connection, PostgresConnection):
        with connection.migration_lock():
            connection.executescript(BUCKETS_SCHEMA)
    else:
        connection.executescript(BUCKETS_SCHEMA)


def built_revisions(connection: Connection) -> set[int]:
    """The revisions whose buckets are complete (none before the tables are made)."""
    try:
        rows = connection.execute("SELECT revision FROM bucket_revisions").fetchall()
    except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
        return set()
    return {int(row[0]) for row in rows}


def latest_revision(connection: Connection) -> int | None:
    """The newest configuration revision applied (None before any)."""
    (row,) = connection.execute("SELECT MAX(revision) FROM configuration_revisions").fetchall()
    return None if row[0] is None else int(row[0])


def mark_built(connection: Connection, revision: int, built_at_us: int) -> None:
    connection.execute(
        "INSERT OR IGNORE INTO bucket_revisions (revision, built_at_us) VALUES (?, ?)",
        (revision, built_at_us),
    )


def forget_revision(connection: Connection, revision: int) -> None:
    """Drop a revision's buckets (before rebuilding them)."""
    for table in TABLES:
        connection.execute(f"DELETE FROM {table} WHERE revision = ?", (revision,))
    connection.execute("DELETE FROM bucket_revisions WHERE revision = ?", (revision,))


def lock_appends(connection: Connection) -> None:
    """Inside a write transaction: hold off every append until it ends (SQLite's
    ``BEGIN IMMEDIATE`` already does; on PostgreSQL, every partition's head row)."""
    if isinstance(connection, PostgresConnection):
        connection.execute("SELECT partition_number FROM partition_heads FOR UPDATE").fetchall()


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


def revision_buckets(
    connection: Connection, revision: int, table: str = HOURS
) -> list[tuple[Any, ...]]:
    """Every bucket of ``revision`` (the Parquet export, the fast reconcile)."""
    return list(
        connection.execute(
            f"SELECT {_COLUMNS} FROM {_table(table)} WHERE revision = ?" + _ORDER, (revision,)
        ).fetchall()
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


def rebuilt(
    connection: Connection, revision: int, built_at_us: int, build: Callable[[], None]
) -> None:
    """Rebuild a revision's buckets in one write transaction that holds appends off; the
    buckets of every other revision go (no longer kept current, they would only mislead)."""
    with write_transaction(connection):
        lock_appends(connection)
        for table in (*TABLES, "bucket_revisions"):
            connection.execute(f"DELETE FROM {table} WHERE revision <> ?", (revision,))
        forget_revision(connection, revision)
        build()
        mark_built(connection, revision, built_at_us)
