"""Exports: the ledger's events and everything billing derived from them, as the same
tables for finance and for engineering: Parquet files (``export_tables``) or read-only
SQL over them (``sql``).

One loader builds every table (``load_tables``), from the sources of truth and nothing
else:

- ``events`` straight from the ledger's ``events`` table (SQLite or PostgreSQL), streamed
  in sequence order (``properties`` is the exact JSON text inside the hashed canonical bytes);
- ``invoices``, ``invoice_lines`` and ``credit_notes`` from the stored, hashed documents;
- ``rated_usage`` from ``finance.economics.usage_slices`` (revenue and cost per day);
- ``journal`` from ``finance.books`` (one row per posting).

Rows are staged chunk by chunk as newline-delimited JSON in a temporary file and read by
DuckDB's ``read_json`` with every column's type given (measured on the demo ledger:
~130k events staged and loaded in about a second; no list of all rows is ever built).
Money and quantities are ``DECIMAL(38,10)`` cast from the exact decimal text, never
from a float; a value that would not fit exactly is an ``ExportError``, not a rounding.
Instants are ``TIMESTAMPTZ`` built from integer microseconds (UTC).

As of an instant (``at_us``, default the billing clock's now) a table holds what was
known then: events received by then, invoices finalized and credit notes issued by then,
rated usage and the journal as ``usage_slices`` and ``build_books`` compute them then.

This module writes the Parquet files and is the one name callers import from; the parts
live beside it: ``finance.tables`` (the tables and their columns), ``finance.table_rows``
(each table's rows), ``finance.table_loading`` (staging and loading into DuckDB),
``finance.queries`` (read-only SQL), ``finance.export_errors``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from meterline.billing.service import Billing
from meterline.finance.export_errors import ExportError, QueryError
from meterline.finance.queries import (
    QUERY_STATEMENTS,
    QueryResult,
    check_query,
    open_tables,
    query_ledger,
    query_tables,
    referenced_tables,
    sql,
)
from meterline.finance.table_loading import (
    CHUNK_ROWS,
    EPOCH,
    INTERRUPT_WAIT_S,
    TEMPORARY_PREFIXES,
    WAIT_POLL_S,
    connect_tables,
    interruptible,
    literal,
    load_tables,
    quote,
)
from meterline.finance.tables import TABLES, Table, table_names

__all__ = [
    "CHUNK_ROWS",
    "EPOCH",
    "INTERRUPT_WAIT_S",
    "QUERY_STATEMENTS",
    "TABLES",
    "TEMPORARY_PREFIXES",
    "WAIT_POLL_S",
    "ExportError",
    "ExportResult",
    "QueryError",
    "QueryResult",
    "Table",
    "check_query",
    "connect_tables",
    "export_tables",
    "interruptible",
    "load_tables",
    "open_tables",
    "query_ledger",
    "query_tables",
    "referenced_tables",
    "sql",
    "table_names",
]


@dataclass(frozen=True, slots=True)
class ExportResult:
    table: str
    rows: int
    path: Path


def _fsync(path: Path, directory: bool = False) -> None:
    descriptor = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse to sync a directory
        if not directory:
            raise
    finally:
        os.close(descriptor)


def export_tables(
    billing: Billing,
    directory: str | Path,
    at_us: int | None = None,
    tables: Iterable[str] | None = None,
) -> dict[str, ExportResult]:
    """Write ``<directory>/<table>.parquet`` for each of ``tables`` (all by default) as of
    ``at_us``. Each file appears whole or not at all: written under a temporary name in
    the same directory, synced, then renamed over the old one."""
    names = table_names(tables)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, ExportResult] = {}
    with connect_tables(billing, at_us, names) as connection:
        for name in names:
            target = folder / f"{name}.parquet"
            partial = folder / f".{name}.parquet.{uuid.uuid4().hex}.tmp"
            try:
                connection.execute(
                    f"COPY (SELECT * FROM {quote(name)} ORDER BY {TABLES[name].order_by})"
                    f" TO {literal(str(partial))} (FORMAT parquet, COMPRESSION zstd)"
                )
                _fsync(partial)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            rows = connection.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()
            results[name] = ExportResult(name, int(rows[0]) if rows else 0, target)
    _fsync(folder, directory=True)
    return results
