"""``meterline export`` and ``meterline sql``: the ledger's events and everything billing
derived from them as Parquet files, or one read-only SQL query over the same tables.
Each is one call into ``meterline.finance.export``."""

from __future__ import annotations

import csv
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from meterline.cli.options import (
    DEFAULT_DB,
    AsOfOption,
    DbOption,
    console,
    errors,
    fail,
    instant,
)
from meterline.ledger.location import ledger_exists

SQL_FORMATS = ("table", "csv", "json")
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "DECIMAL", "DOUBLE", "FLOAT")


def _fail(message: str, code: int = 2) -> typer.Exit:
    """``fail`` with ``message`` printed as it is (DuckDB's messages hold brackets), lines
    (its caret under a syntax error stays in place: ``errors`` never wraps)."""
    return fail(escape(message), code, highlight=False)


@contextmanager
def _billing(db: str) -> Iterator[Any]:
    from meterline.billing.service import open_billing

    if not ledger_exists(db):
        raise _fail(f"--db: {db} does not exist")
    with open_billing(db) as billing:
        yield billing


def export_command(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the Parquet files in.")],
    db: DbOption = DEFAULT_DB,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", help="Only this table (repeat); default: every table."),
    ] = None,
    as_of: AsOfOption = None,
) -> None:
    """Write one Parquet file per table (events, invoices, invoice_lines, credit_notes,
    rated_usage, usage_buckets, journal, workspace_proposals, configuration_revisions),
    each atomically; prints each table's rows and file."""
    import duckdb

    from meterline.finance.export import ExportError, export_tables, table_names

    try:
        names = table_names(table or None)
    except ExportError as error:
        raise _fail(f"--table: {error}") from None
    at = instant(as_of, "--as-of")
    started = time.perf_counter()
    with _billing(db) as billing:
        try:
            results = export_tables(billing, out, at, names)
        except (ExportError, OSError, duckdb.Error) as error:
            raise _fail(
                f"--out: {error}" if isinstance(error, OSError) else str(error), 1
            ) from None
    for result in results.values():
        print(f"{result.table}\t{result.rows}\t{result.path}")
    errors.print(
        f"exported {len(results)} tables in {time.perf_counter() - started:.2f} s", highlight=False
    )


def sql_command(
    query: Annotated[str, typer.Argument(help="One SELECT over the exported tables.")],
    db: DbOption = DEFAULT_DB,
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    as_of: AsOfOption = None,
) -> None:
    """Run one read-only SQL query over the same tables `meterline export` writes."""
    from meterline.finance.export import QueryError, check_query, query_ledger

    if output_format not in SQL_FORMATS:
        raise _fail(f"--format: {output_format!r} is not one of {', '.join(SQL_FORMATS)}")
    at = instant(as_of, "--as-of")
    try:
        check_query(query)  # a refusal costs no table build
    except QueryError as error:
        raise _fail(str(error), 1) from None
    with _stoppable():
        try:
            with _billing(db) as billing:
                try:
                    result = query_ledger(billing, query, at)
                except QueryError as error:
                    raise _fail(str(error), 1) from None
            if output_format == "csv":
                _print_csv(result.columns, result.rows)
            elif output_format == "json":
                _print_json(result.columns, result.rows, result.types)
            else:
                _print_table(result.columns, result.rows, result.types)
        except KeyboardInterrupt:
            raise _fail("interrupted (Ctrl-C): the query was stopped", INTERRUPTED_EXIT) from None
        except _Terminated:
            raise _fail("terminated (SIGTERM): the query was stopped", TERMINATED_EXIT) from None


INTERRUPTED_EXIT = 128 + signal.SIGINT
"""``meterline sql`` stopped by Ctrl-C (SIGINT) exits 130, as a shell reports it."""
TERMINATED_EXIT = 128 + signal.SIGTERM
"""``meterline sql`` stopped by SIGTERM exits 143."""


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler ``_stoppable`` installs: a
    ``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` swallows it
    and every ``with`` on the way out runs (the temporary tables are removed)."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextmanager
def _stoppable() -> Iterator[None]:
    """While inside: Ctrl-C raises ``KeyboardInterrupt`` (even if the process was started
    with SIGINT ignored) and SIGTERM raises ``_Terminated``, instead of dying where it
    stands; the handlers before are restored after. Off the main thread (a test runner's
    worker), signals cannot be handled here and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _terminated),
    }
    try:
        yield
    finally:
        for number, handler in before.items():
            # None: the handler before was not Python's to name; the default stands in
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


def _text(value: object) -> str:
    """A value as text, exactly: a decimal without the trailing zeros of its column's
    scale beyond two places (500.0000000000 -> 500.00)."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, datetime) and value.utcoffset() == timedelta(0):
        return value.isoformat().replace("+00:00", "Z")  # as the ledger writes instants
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _decimal(value: Decimal) -> str:
    text = format(value, "f")
    if "." not in text:
        return text
    whole, scale = text.split(".")
    fraction = scale.rstrip("0")
    if len(fraction) < 2 <= len(scale):
        fraction = fraction.ljust(2, "0")
    return f"{whole}.{fraction}" if fraction else whole


def _print_csv(names: list[str], rows: list[tuple[Any, ...]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_text(value) for value in row])


def _print_json(names: list[str], rows: list[tuple[Any, ...]], types: list[str]) -> None:
    """One JSON array of objects; decimals as exact JSON numbers, JSON columns inline."""
    import msgspec

    def convert(value: object, kind: str) -> object:
        if isinstance(value, Decimal):
            return msgspec.Raw(_decimal(value).encode())
        if kind == "JSON" and isinstance(value, str):
            return msgspec.Raw(value.encode())
        return value

    documents = [
        {name: convert(value, kind) for name, value, kind in zip(names, row, types, strict=True)}
        for row in rows
    ]
    print(msgspec.json.encode(documents).decode())


def _print_table(names: list[str], rows: list[tuple[Any, ...]], types: list[str]) -> None:
    table = Table(caption=f"{len(rows):,} row{'' if len(rows) == 1 else 's'}")
    for name, kind in zip(names, types, strict=True):
        numeric = kind.startswith(_NUMERIC)
        table.add_column(escape(name), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(escape(_text(value)) for value in row))
    console.print(table)
