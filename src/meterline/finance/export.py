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
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec

from meterline.billing.service import Billing
from meterline.core.books import instant_us
from meterline.core.economics import model_of
from meterline.core.events import decode_exact
from meterline.core.money import MONEY_CONTEXT
from meterline.errors import MeterlineError
from meterline.finance.books import build_books, journal_rows
from meterline.finance.economics import usage_slices
from meterline.ledger import event_reads
from meterline.ledger.billing import StoredInvoice
from meterline.ledger.database import open_connection

MONEY = "DECIMAL(38,10)"
"""Money and quantities: 28 digits before the point, 10 after (exact, never a float)."""
MONEY_PLACES = 10
MONEY_INTEGER_DIGITS = 28
CHUNK_ROWS = 10_000
"""Rows staged per write."""
EPOCH = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"
QUERY_STATEMENTS = ("SELECT", "EXPLAIN")
"""DuckDB statement types ``sql`` runs: SELECT covers WITH, FROM, VALUES, DESCRIBE, SHOW
and SUMMARIZE too."""

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


class ExportError(MeterlineError, ValueError):
    """An export that cannot be made as asked (an unknown table, a value that does not fit)."""

    code = "export_failed"
    http_status = 400


class QueryError(MeterlineError, ValueError):
    """A query ``sql`` refuses (it would write, or it is several statements) or that
    DuckDB could not run (its message)."""

    code = "invalid_query"
    http_status = 400

    def __init__(self, message: str, unknown_name: bool = False) -> None:
        super().__init__(message)
        self.unknown_name = unknown_name
        """DuckDB did not find a table or function the query names (a catalog error)."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    """A DuckDB type: BIGINT, INTEGER, VARCHAR, BOOLEAN, DATE, TIMESTAMPTZ, JSON or MONEY."""
    description: str


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    rows: Callable[[Billing, int], Iterable[Sequence[Any]]]
    """The table's rows as of an instant, each a tuple in column order: instants as
    integer microseconds, money as ``Decimal`` or its exact text."""
    order_by: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


@dataclass(frozen=True, slots=True)
class ExportResult:
    table: str
    rows: int
    path: Path


# -- rows ------------------------------------------------------------------------------------


class _Body(msgspec.Struct):
    """The one part of a canonical event body the export needs decoded: ``properties``,
    kept as the exact bytes that were hashed (no re-encoding, no float)."""

    properties: msgspec.Raw = msgspec.Raw(b"{}")


_BODY = msgspec.json.Decoder(_Body)


def _ledger_path(billing: Billing) -> str:
    path = getattr(billing.ledger.store, "path", None)
    if path is None:
        raise ExportError("events: the export reads the events of a SQLite or PostgreSQL ledger")
    return str(path)


def _event_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    """Every event received by ``at_us``, in ledger order (partition, then sequence),
    with its hash (``SHA-256(0x00 || body)``, its leaf in its batch's Merkle tree) and its
    partition (a SQLite ledger has one, partition 0)."""
    location = _ledger_path(billing)
    connection = open_connection(location)
    try:
        rows = event_reads.chained_rows(connection, billing.ledger.store.partitions)
        decode = _BODY.decode
        for sequence, event_id, customer, kind, timestamp, received, body, digest, part in rows:
            digest = bytes(digest)
            if received <= at_us:
                properties = bytes(decode(body).properties).decode()
                yield (
                    sequence,
                    event_id,
                    customer,
                    kind,
                    timestamp,
                    received,
                    properties,
                    digest.hex(),
                    part,
                )
    finally:
        connection.close()


def _invoices(billing: Billing, at_us: int) -> Iterator[tuple[StoredInvoice, dict[str, Any]]]:
    for stored in billing.store.invoices():
        if stored.finalized_at_us <= at_us:
            yield stored, decode_exact(stored.document)


def _optional_us(text: object) -> int | None:
    return None if text is None else instant_us(str(text))


def _ledger_through(document: dict[str, Any]) -> str | None:
    """The document's ``ledger.through`` cut as JSON text (None when it records none)."""
    through = (document.get("ledger") or {}).get("through")
    return None if through is None else json.dumps(through, separators=(",", ":"))


def _invoice_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for stored, document in _invoices(billing, at_us):
        period = document.get("period") or {}
        yield (
            stored.invoice_id,
            stored.kind,
            stored.customer,
            document["currency"],
            period.get("label"),
            _optional_us(period.get("start")),
            _optional_us(period.get("end")),
            stored.finalized_at_us,
            document["total"],
            stored.document_sha256.hex(),
            document.get("timezone") or "UTC",
            _ledger_through(document),
        )


def _line_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for stored, document in _invoices(billing, at_us):
        for line in document["lines"]:
            group = line.get("group")
            service = line.get("service") or {}
            lineage = line.get("lineage") or {}
            yield (
                stored.invoice_id,
                stored.customer,
                document["currency"],
                line["number"],
                line["kind"],
                line.get("description"),
                line.get("meter"),
                model_of(group) if isinstance(group, dict) else None,
                line.get("quantity"),
                line["amount"],
                line.get("unit"),
                line.get("units"),
                line.get("grant"),
                _optional_us(service.get("start")),
                _optional_us(service.get("end")),
                lineage.get("events"),
                lineage.get("first_sequence"),
                lineage.get("last_sequence"),
                lineage.get("merkle_root"),
            )


def _credit_note_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for note in billing.store.credit_notes():
        if note.created_at_us > at_us:
            continue
        document = decode_exact(note.document)
        yield (
            note.note_id,
            note.invoice_id,
            note.customer,
            document.get("currency"),
            note.created_at_us,
            document["total"],
            bool(document.get("void")),
            document.get("reason"),
        )


def _usage_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    with localcontext(MONEY_CONTEXT):
        for item in usage_slices(billing, at_us, recognized=False):
            yield (
                item.customer,
                item.period,
                item.day,
                item.meter,
                item.model,
                item.product,
                item.plan,
                item.currency,
                item.events,
                item.quantity,
                item.list_price_charges,
                item.cost,
                item.list_price_charges - item.cost,
                item.invoice,
                item.line,
            )


_JOURNAL_FIELDS = (
    "entry_id",
    "date",
    "account",
    "account_kind",
    "debit",
    "credit",
    "currency",
    "customer",
    "cause",
    "description",
)


def _journal_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for row in journal_rows(build_books(billing, at_us)):
        yield tuple(row[name] for name in _JOURNAL_FIELDS)


# -- the tables ------------------------------------------------------------------------------


def _columns(*specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, kind, description) for name, kind, description in specs)


TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        Table(
            "events",
            "One row per ledger event, in (partition, sequence) order, exactly as stored and"
            " hashed.",
            _columns(
                (
                    "sequence",
                    "BIGINT",
                    "Position in its partition (1, 2, ...); (partition, sequence) is unique.",
                ),
                ("event_id", "VARCHAR", "The producer's id; (customer, event_id) is unique."),
                ("customer", "VARCHAR", "The customer the event is metered for."),
                ("type", "VARCHAR", "The event type (llm.completion, ...)."),
                ("timestamp", "TIMESTAMPTZ", "When it happened (UTC, microseconds)."),
                ("received_at", "TIMESTAMPTZ", "When the ledger stored it (UTC)."),
                ("properties", "JSON", "The properties, the exact JSON text that was hashed."),
                (
                    "hash",
                    "VARCHAR",
                    "SHA-256(0x00 || canonical bytes), hex: its leaf in its batch's Merkle tree.",
                ),
                (
                    "partition",
                    "INTEGER",
                    "The customer's partition (0 on a SQLite ledger), which numbers its events.",
                ),
            ),
            _event_rows,
            "partition, sequence",
        ),
        Table(
            "invoices",
            "One row per finalized invoice (period, threshold and purchase invoices).",
            _columns(
                ("invoice_id", "VARCHAR", "INV-000001, ..."),
                ("kind", "VARCHAR", "period, threshold or purchase."),
                ("customer", "VARCHAR", "The invoiced customer."),
                ("currency", "VARCHAR", "ISO 4217 currency of every amount on it."),
                ("period_label", "VARCHAR", "The billing period (its first day); NULL if none."),
                ("period_start", "TIMESTAMPTZ", "Start of the billing period (inclusive)."),
                ("period_end", "TIMESTAMPTZ", "End of the billing period (exclusive)."),
                ("finalized_at", "TIMESTAMPTZ", "When it was finalized (immutable since)."),
                ("total", MONEY, "The invoice total: the sum of its lines' amounts."),
                ("document_sha256", "VARCHAR", "SHA-256 of the stored document bytes, hex."),
                ("timezone", "VARCHAR", "The contract's time zone its days are read in."),
                (
                    "ledger_through",
                    "VARCHAR",
                    "The ledger cut it was rated through: each partition's last sequence,"
                    " as a JSON list (NULL if none).",
                ),
            ),
            _invoice_rows,
            "invoice_id",
        ),
        Table(
            "invoice_lines",
            "One row per line of a finalized invoice; usage lines carry their lineage.",
            _columns(
                ("invoice_id", "VARCHAR", "The invoice (invoices.invoice_id)."),
                ("customer", "VARCHAR", "The invoiced customer."),
                ("currency", "VARCHAR", "Currency of amount."),
                ("line", "INTEGER", "Line number on the invoice (1, 2, ...)."),
                (
                    "kind",
                    "VARCHAR",
                    "usage, fee, discount, commitment, credit, purchase, overage, threshold,"
                    " adjustment.",
                ),
                ("description", "VARCHAR", "The line's text as printed."),
                ("meter", "VARCHAR", "The meter of a usage line; NULL otherwise."),
                ("model", "VARCHAR", "The usage line's group values joined by '/'."),
                ("quantity", MONEY, "The metered quantity of a usage line."),
                ("amount", MONEY, "The line's amount in currency (rounded once)."),
                ("unit", "VARCHAR", "The credit type of a credit, purchase or overage line."),
                ("units", MONEY, "How many of unit the line applies, buys or charges."),
                ("grant_id", "VARCHAR", "The grant a credit or purchase line is about."),
                ("service_start", "TIMESTAMPTZ", "Start of the service the line bills."),
                ("service_end", "TIMESTAMPTZ", "End of the service the line bills (exclusive)."),
                ("events", "BIGINT", "Events behind the line (lineage)."),
                ("first_sequence", "BIGINT", "First ledger sequence behind the line."),
                ("last_sequence", "BIGINT", "Last ledger sequence behind the line."),
                ("merkle_root", "VARCHAR", "RFC 6962 Merkle root of the line's events, hex."),
            ),
            _line_rows,
            "invoice_id, line",
        ),
        Table(
            "credit_notes",
            "One row per credit note against a finalized invoice.",
            _columns(
                ("note_id", "VARCHAR", "CN-000001, ..."),
                ("invoice_id", "VARCHAR", "The invoice it credits."),
                ("customer", "VARCHAR", "The invoice's customer."),
                ("currency", "VARCHAR", "Currency of total."),
                ("created_at", "TIMESTAMPTZ", "When it was issued."),
                ("total", MONEY, "The note's total (negative credits the customer)."),
                ("void", "BOOLEAN", "True when it voids the whole invoice."),
                ("reason", "VARCHAR", "Why it was issued."),
            ),
            _credit_note_rows,
            "note_id",
        ),
        Table(
            "rated_usage",
            "Unit economics: each invoice line's usage per day, with revenue and cost"
            " (finalized periods as billed, open periods as their draft).",
            _columns(
                ("customer", "VARCHAR", "The customer."),
                ("period", "VARCHAR", "The billing period's label (its first day)."),
                ("day", "DATE", "The day, in the contract's time zone."),
                ("meter", "VARCHAR", "The meter; (fee), (commitment), (discount) otherwise."),
                ("model", "VARCHAR", "The line's group values joined by '/'."),
                ("product", "VARCHAR", "The meter's product (the meter itself by default)."),
                ("plan", "VARCHAR", "The plan version (team@1)."),
                ("currency", "VARCHAR", "Currency of revenue, cost and margin."),
                ("events", "BIGINT", "Events of the line on that day."),
                ("quantity", MONEY, "The line's quantity, on its first day only."),
                ("revenue", MONEY, "The line's amount, spread over its days by events."),
                ("cost", MONEY, "Quantity times the cost rate, spread likewise."),
                ("margin", MONEY, "revenue - cost."),
                ("invoice", "VARCHAR", "The invoice (draft for an open period)."),
                ("line", "INTEGER", "The invoice line number (0 for a cost-only meter)."),
            ),
            _usage_rows,
            "customer, period, day, meter, model",
        ),
        Table(
            "journal",
            "The general journal derived from invoices, credit notes and credit books: one"
            " row per posting.",
            _columns(
                ("entry_id", "VARCHAR", "The journal entry (its postings balance)."),
                ("date", "DATE", "The entry's day."),
                ("account", "VARCHAR", "Account (assets:accounts_receivable, ...)."),
                ("account_kind", "VARCHAR", "asset, liability, revenue or contra_revenue."),
                ("debit", MONEY, "Debit amount (0 when a credit)."),
                ("credit", MONEY, "Credit amount (0 when a debit)."),
                ("currency", "VARCHAR", "Currency of the posting."),
                ("customer", "VARCHAR", "The customer."),
                ("cause", "VARCHAR", "What caused it: invoice:INV-.../line:N, credit:..."),
                ("description", "VARCHAR", "The entry's text."),
            ),
            _journal_rows,
            "date, entry_id, account",
        ),
    )
}
"""Every table the export writes, in order: its documented columns and its rows."""


# -- loading ---------------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
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
    name = _quote(column.name)
    if column.type == "TIMESTAMPTZ":
        return f"{EPOCH} + to_microseconds({name})"
    if column.type in (MONEY, "JSON"):
        return f"CAST({name} AS {column.type})"
    return name


def _create(connection: duckdb.DuckDBPyConnection, table: Table) -> None:
    columns = ", ".join(f"{_quote(c.name)} {c.type}" for c in table.columns)
    connection.execute(f"CREATE TABLE {_quote(table.name)} ({columns})")
    connection.execute(f"COMMENT ON TABLE {_quote(table.name)} IS {_literal(table.description)}")
    for column in table.columns:
        connection.execute(
            f"COMMENT ON COLUMN {_quote(table.name)}.{_quote(column.name)}"
            f" IS {_literal(column.description)}"
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
        f"{_literal(c.name)}: {_literal(_STAGED_TYPE.get(c.type, c.type))}" for c in table.columns
    )
    statement = (
        f"INSERT INTO {_quote(table.name)}"
        f" SELECT {', '.join(_select(c) for c in table.columns)}"
        f" FROM read_json({_literal(str(staged))}, format = 'newline_delimited',"
        f" columns = {{{types}}})"
    )
    interruptible(connection, lambda: connection.execute(statement))


def table_names(tables: Iterable[str] | None = None) -> list[str]:
    """``tables`` checked against ``TABLES`` (all of them when None), in export order."""
    if tables is None:
        return list(TABLES)
    wanted = list(dict.fromkeys(tables))
    unknown = [name for name in wanted if name not in TABLES]
    if unknown:
        raise ExportError(
            f"no table {', '.join(map(repr, unknown))}; the tables are {', '.join(TABLES)}"
        )
    return [name for name in TABLES if name in wanted]


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


# -- export ----------------------------------------------------------------------------------


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
                    f"COPY (SELECT * FROM {_quote(name)} ORDER BY {TABLES[name].order_by})"
                    f" TO {_literal(str(partial))} (FORMAT parquet, COMPRESSION zstd)"
                )
                _fsync(partial)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            rows = connection.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()
            results[name] = ExportResult(name, int(rows[0]) if rows else 0, target)
    _fsync(folder, directory=True)
    return results


# -- read-only SQL ---------------------------------------------------------------------------


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
