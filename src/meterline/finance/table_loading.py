"""Loading the exported tables into DuckDB, the one place they are built
(``load_tables``): rows are staged chunk by chunk as newline-delimited JSON in a
temporary file and read by DuckDB's ``read_json`` with every column's type given (no
list of all rows is ever built). Money is cast from its exact decimal text (a value that
would not fit ``DECIMAL(38,10)`` exactly is an ``ExportError``, never a rounding);
instants are built from integer microseconds (UTC). A long DuckDB call runs on a helper
thread so a signal stops it (``interruptible``)."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec

from meterline.billing.service import Billing
from meterline.finance.export_errors import ExportError
from meterline.finance.tables import (
    MONEY,
    MONEY_INTEGER_DIGITS,
    MONEY_PLACES,
    TABLES,
    Column,
    Table,
    table_names,
)

CHUNK_ROWS = 10_000
"""Rows staged per write."""
EPOCH = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"

WAIT_POLL_S = 0.05
"""How often the thread waiting on a DuckDB call wakes, so a signal's handler runs."""
INTERRUPT_WAIT_S = 10.0
"""How long an interrupted DuckDB call has to stop before the waiting thread goes on."""
TEMPORARY_PREFIXES = ("meterline-sql-", "meterline-export-")
"""The temporary folders ``sql`` and the loader make (under ``tempfile.gettempdir()``);
each is removed when its ``with`` ends, by an exception (a signal's) too."""

T = TypeVar("T")

_STAGED_TYPE = {MONEY: "VARCHAR", "TIMESTAMPTZ": "BIGINT", "JSON": "VARCHAR"}
"""How a column travels in the staging file: decimals as exact text, instants as integer
microseconds since the epoch, JSON as its text."""
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_LIMIT = Decimal(10) ** MONEY_INTEGER_DIGITS
_EXACT = Context(prec=2 * (MONEY_INTEGER_DIGITS + MONEY_PLACES))
"""Room for any value under ``_LIMIT`` at any scale: quantizing only tells whether digits
beyond the tenth place exist (no trap, nothing kept)."""


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _money(value: object, table: str, column: str) -> str | None:
    """Exact fixed-point text of a decimal that fits ``DECIMAL(38,10)``; refuses one that
    would be rounded or overflow."""
    if value is None:
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ExportError(f"{table}.{column}: {value!r} is not a decimal") from None
    if (
        not number.is_finite()
        or number.copy_abs() >= _LIMIT
        or number != number.quantize(_QUANTUM, context=_EXACT)
    ):
        raise ExportError(
            f"{table}.{column}: {value} does not fit {MONEY} exactly"
            f" ({MONEY_INTEGER_DIGITS} digits before the point, {MONEY_PLACES} after)"
        )
    return format(number, "f")


def _chunks(table: Table, rows: Iterable[Sequence[Any]]) -> Iterator[list[dict[str, Any]]]:
    names = table.names
    money = [i for i, column in enumerate(table.columns) if column.type == MONEY]
    chunk: list[dict[str, Any]] = []
    for row in rows:
        if money:
            values = list(row)
            for index in money:
                values[index] = _money(values[index], table.name, names[index])
            row = values
        chunk.append(dict(zip(names, row, strict=True)))
        if len(chunk) >= CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _stage(table: Table, rows: Iterable[Sequence[Any]], path: Path) -> int:
    """Write ``rows`` to ``path`` as newline-delimited JSON, chunk by chunk; their count."""
    encoder = msgspec.json.Encoder()
    count = 0
    with path.open("wb") as staged:
        for chunk in _chunks(table, rows):
            staged.write(encoder.encode_lines(chunk))
            count += len(chunk)
    return count


def _select(column: Column) -> str:
    name = quote(column.name)
    if column.type == "TIMESTAMPTZ":
        return f"{EPOCH} + to_microseconds({name})"
    if column.type in (MONEY, "JSON"):
        return f"CAST({name} AS {column.type})"
    return name


def _create(connection: duckdb.DuckDBPyConnection, table: Table) -> None:
    columns = ", ".join(f"{quote(c.name)} {c.type}" for c in table.columns)
    connection.execute(f"CREATE TABLE {quote(table.name)} ({columns})")
    connection.execute(f"COMMENT ON TABLE {quote(table.name)} IS {literal(table.description)}")
    for column in table.columns:
        connection.execute(
            f"COMMENT ON COLUMN {quote(table.name)}.{quote(column.name)}"
            f" IS {literal(column.description)}"
        )


def interruptible(connection: duckdb.DuckDBPyConnection, work: Callable[[], T]) -> T:
    """``work()`` (DuckDB calls on ``connection``) run on a helper thread while this one
    waits in short, signal-aware waits. DuckDB computes without returning to Python, so a
    signal's handler (Ctrl-C's ``KeyboardInterrupt``, a SIGTERM handler's exception) could
    not run until the query ended; here it runs at once, ``connection.interrupt()`` stops
    the query, the helper is waited for, and the exception goes on (unwinding, so
    temporary files go). ``work``'s own result or exception comes back as if called here.

    The wait is on an event, not ``Thread.join``: a join interrupted by a signal may
    take the helper for finished while it runs (CPython 3.11's bpo-45274 handling)."""
    outcome: list[tuple[bool, Any]] = []
    finished = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as error:  # handed to the waiting thread, raised there
            outcome.append((False, error))
        finally:
            finished.set()

    threading.Thread(target=run, name="meterline-duckdb", daemon=True).start()
    try:
        while not finished.wait(WAIT_POLL_S):
            pass
    except BaseException:
        connection.interrupt()
        finished.wait(INTERRUPT_WAIT_S)
        raise
    done, value = outcome[0]
    if not done:
        raise value
    result: T = value
    return result


def _insert(connection: duckdb.DuckDBPyConnection, table: Table, staged: Path) -> None:
    types = ", ".join(
        f"{literal(c.name)}: {literal(_STAGED_TYPE.get(c.type, c.type))}" for c in table.columns
    )
    statement = (
        f"INSERT INTO {quote(table.name)}"
        f" SELECT {', '.join(_select(c) for c in table.columns)}"
        f" FROM read_json({literal(str(staged))}, format = 'newline_delimited',"
        f" columns = {{{types}}})"
    )
    interruptible(connection, lambda: connection.execute(statement))


def load_tables(
    connection: duckdb.DuckDBPyConnection,
    billing: Billing,
    at_us: int | None = None,
    tables: Iterable[str] | None = None,
) -> dict[str, int]:
    """Create and fill ``tables`` (all by default) in ``connection`` as of ``at_us`` (the
    billing clock's now); each table's row count. The one place tables are built."""
    names = table_names(tables)
    at = billing.clock() if at_us is None else at_us
    connection.execute("SET TimeZone = 'UTC'")
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=TEMPORARY_PREFIXES[1]) as folder:
        for name in names:
            table = TABLES[name]
            staged = Path(folder) / f"{name}.ndjson"
            _create(connection, table)
            counts[name] = _stage(table, table.rows(billing, at), staged)
            if counts[name]:
                _insert(connection, table, staged)
            staged.unlink()
    return counts


def connect_tables(
    billing: Billing, at_us: int | None = None, tables: Iterable[str] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection holding ``tables`` (all by default) as of ``at_us``;
    the caller closes it."""
    connection = duckdb.connect()
    try:
        load_tables(connection, billing, at_us, tables)
    except BaseException:
        connection.close()
        raise
    return connection
