"""Read-only SQL over the exported tables: one query (SELECT, WITH, EXPLAIN, ...) runs
on a DuckDB database file built for it, reopened read-only with external access disabled
and its configuration locked; only the tables the query names are built."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from meterline.billing.service import Billing
from meterline.finance.export_errors import QueryError
from meterline.finance.table_loading import TEMPORARY_PREFIXES, interruptible, load_tables
from meterline.finance.tables import TABLES

QUERY_STATEMENTS = ("SELECT", "EXPLAIN")
"""DuckDB statement types ``sql`` runs: SELECT covers WITH, FROM, VALUES, DESCRIBE, SHOW
and SUMMARIZE too."""


def check_query(query: str) -> None:
    """Refuse anything but one query: a statement that would write (INSERT, CREATE, COPY,
    ATTACH, SET, ...) is named; a syntax error is DuckDB's message."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as error:
        raise QueryError(str(error)) from None
    if not statements:
        raise QueryError("no query: give one SELECT statement")
    if len(statements) > 1:
        raise QueryError(f"one statement at a time: got {len(statements)}")
    kind = statements[0].type.name
    if kind not in QUERY_STATEMENTS:
        raise QueryError(
            f"the tables are read-only: {kind} statements are refused; only queries run"
            " (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)"
        )


def _lock(connection: duckdb.DuckDBPyConnection) -> None:
    """No file, network or extension access, no Python variables as tables, and no
    setting changed after this (DuckDB's "Securing DuckDB" settings)."""
    with suppress(duckdb.Error):  # an older DuckDB without the setting: nothing to turn off
        connection.execute("SET python_enable_replacements = false")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")


@contextmanager
def open_tables(
    billing: Billing, at_us: int | None = None, tables: Iterable[str] | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only DuckDB connection over ``tables`` (all by default) as of ``at_us``:
    built into a temporary database file, closed, reopened ``read_only``, external access
    disabled and configuration locked; the file is removed on exit."""
    with tempfile.TemporaryDirectory(prefix=TEMPORARY_PREFIXES[0]) as folder:
        path = str(Path(folder) / "tables.duckdb")
        writer = duckdb.connect(path)
        try:
            load_tables(writer, billing, at_us, tables)
        finally:
            writer.close()
        connection = duckdb.connect(path, read_only=True)
        try:
            connection.execute("SET TimeZone = 'UTC'")
            _lock(connection)
            yield connection
        finally:
            connection.close()


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    """DuckDB's type of each column (DECIMAL(38,10), TIMESTAMP WITH TIME ZONE, JSON, ...)."""
    rows: list[tuple[Any, ...]]


def _fetch(
    connection: duckdb.DuckDBPyConnection, query: str
) -> tuple[list[str], list[str], set[int], list[tuple[Any, ...]]]:
    """Run ``query``: its column names, types, the indexes of its instants, its rows."""
    relation = connection.sql(query)
    if relation is None:
        return [], [], set(), []
    names = list(relation.columns)
    types = [str(kind) for kind in relation.types]
    instants = {i for i, kind in enumerate(types) if kind == "TIMESTAMP WITH TIME ZONE"}
    zoned = {i for i, kind in enumerate(types) if "TIME ZONE" in kind} - instants
    if instants or zoned:
        # DuckDB needs pytz for Python values of zoned types: fetch them as UTC instead
        relation = relation.project(
            ", ".join(
                f"timezone('UTC', #{i + 1})"
                if i in instants
                else f"CAST(#{i + 1} AS VARCHAR)"
                if i in zoned
                else f"#{i + 1}"
                for i in range(len(names))
            )
        )
    return names, types, instants, relation.fetchall()


def query_tables(connection: duckdb.DuckDBPyConnection, query: str) -> QueryResult:
    """``query`` (checked by ``check_query``) on ``connection``: columns, types and rows.
    A TIMESTAMPTZ comes back as an aware UTC datetime; JSON as its text. A signal while it
    runs stops it (see ``interruptible``)."""
    check_query(query)
    try:
        names, types, instants, rows = interruptible(connection, lambda: _fetch(connection, query))
    except duckdb.PermissionException as error:
        raise QueryError(f"{error} (a query reads only the tables: {', '.join(TABLES)})") from None
    except duckdb.CatalogException as error:
        raise QueryError(str(error), unknown_name=True) from None
    except duckdb.Error as error:
        raise QueryError(str(error)) from None
    if instants:
        rows = [
            tuple(
                value.replace(tzinfo=UTC)
                if index in instants and isinstance(value, datetime)
                else value
                for index, value in enumerate(row)
            )
            for row in rows
        ]
    return QueryResult(names, types, rows)


def referenced_tables(query: str) -> list[str] | None:
    """The tables ``query`` reads, as DuckDB's parser tells on a locked connection (no
    file is touched); None (all of them) when it cannot tell or names none of them."""
    probe = duckdb.connect()
    try:
        _lock(probe)
        names = probe.get_table_names(query)
    except duckdb.Error:
        return None
    finally:
        probe.close()
    wanted = [name for name in TABLES if name in names]
    return wanted or None


def query_ledger(billing: Billing, query: str, at_us: int | None = None) -> QueryResult:
    """``query`` read-only over the tables as of ``at_us`` (now): only the tables it
    names are built (rated usage re-rates every period: the costly one); should DuckDB
    then miss a name, the query runs again over every table."""
    check_query(query)  # before building anything
    at = billing.clock() if at_us is None else at_us
    tables = referenced_tables(query)
    try:
        with open_tables(billing, at, tables) as connection:
            return query_tables(connection, query)
    except QueryError as error:
        if tables is None or not error.unknown_name:
            raise
    with open_tables(billing, at) as connection:
        return query_tables(connection, query)


def sql(
    billing: Billing, query: str, at_us: int | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``query`` read-only over the tables as of ``at_us``: its column names and rows.
    Raises ``QueryError`` for a query that would write or that DuckDB cannot run."""
    result = query_ledger(billing, query, at_us)
    return result.columns, result.rows
