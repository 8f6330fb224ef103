"""Exports over a real ledger: the Parquet files read back with DuckDB say what the ledger
and the stored invoices say (totals, the journal, rated usage, every event and hash), and
``sql`` answers queries but refuses anything that writes or reads a file.

The ledger: two customers on a plan with a fee, per-model token prices and costs, tool
calls priced in credits; alpha holds a paid contract grant, beta buys credits by API (a
purchase invoice) and has its October invoice voided by a credit note; November is open.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from meterline.billing.service import Billing, open_billing
from meterline.cli import app
from meterline.core.events import decode_exact, timestamp_to_us
from meterline.finance.export import (
    TABLES,
    ExportError,
    QueryError,
    Table,
    connect_tables,
    export_tables,
    referenced_tables,
    sql,
)
from meterline.ledger.location import ledger_exists
from tests.conftest import Databases, Location

PRICING = """
credit_types:
  - {key: credits, name: Credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: input_tokens, event_type: llm.completion, aggregation: sum,
     property: input_tokens, group_by: [model]}
  - {key: output_tokens, event_type: llm.completion, aggregation: sum,
     property: output_tokens, group_by: [model]}
  - {key: tool_calls, event_type: agent.tool_call, aggregation: count}
costs:
  - {meter: input_tokens, where: {model: big}, per_unit: "0.000002"}
  - {meter: input_tokens, per_unit: "0.0000005"}
  - {meter: output_tokens, per_unit: "0.000004"}
  - {meter: tool_calls, per_unit: "0.003"}
plans:
  - key: team
    name: Team
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees:
          - {key: platform, name: Platform fee, amount: "100.00", timing: advance}
        prices:
          - meter: input_tokens
            model: matrix
            description: Input tokens
            matrix:
              - {values: {model: big}, unit_amount: "0.000005"}
            default: "0.000001"
          - {meter: output_tokens, model: per_unit, description: Output tokens,
             unit_amount: "0.00001"}
          - {meter: tool_calls, model: per_unit, description: Tool calls, unit_amount: "1",
             credit_type: credits}
contracts:
  - customer: alpha
    plan: team
    start: 2026-10-01
    credits:
      grants:
        - {key: pack, credit_type: credits, amount: 5000, paid: "45.00", priority: 10,
           scope: [tool_calls], description: Credit pack}
  - {customer: beta, plan: team, start: 2026-10-01, timezone: America/New_York}
"""
CUSTOMERS = ("alpha", "beta")


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def usage(month: int, days: range) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for day in days:
        for index, customer in enumerate(CUSTOMERS):
            for number, model in enumerate(("big", "small", "small")):
                events.append(
                    {
                        "id": f"{customer}-{month}-{day}-llm-{number}",
                        "customer": customer,
                        "type": "llm.completion",
                        "timestamp": f"2026-{month:02d}-{day:02d}T{10 + number}:00:00Z",
                        "properties": {
                            "model": model,
                            "input_tokens": 10_000 * (day + index + number),
                            "output_tokens": 1_000 * (day + number),
                            "latency_s": D("0.10"),  # exact digits, kept as sent
                        },
                    }
                )
            for number in range(2 + index):
                events.append(
                    {
                        "id": f"{customer}-{month}-{day}-tool-{number}",
                        "customer": customer,
                        "type": "agent.tool_call",
                        "timestamp": f"2026-{month:02d}-{day:02d}T15:0{number}:00Z",
                        "properties": {"tool": "search"},
                    }
                )
    return events


AS_OF = at(2026, 11, 6)
AS_OF_TEXT = "2026-11-06T00:00:00Z"


@pytest.fixture(scope="module")
def ledger(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Location:
    db = databases.new(tmp_path_factory.mktemp("export"), "export")
    clock = Clock(at(2026, 11, 2))
    with open_billing(db, clock=clock) as billing:
        october = usage(10, range(1, 29))
        assert billing.ledger.ingest(october).accepted == len(october)
        billing.apply(PRICING)
        assert len(billing.close(at(2026, 11, 2))) == 2
        clock.now_us = at(2026, 11, 4)
        _, purchase = billing.grant(
            "beta", "credits", D(3000), "top-up", paid=D("27.00"), scope=("tool_calls",)
        )
        assert purchase is not None
        november = usage(11, range(1, 4))
        assert billing.ledger.ingest(november).accepted == len(november)
        clock.now_us = at(2026, 11, 5)
        (beta_october,) = [i for i in billing.store.invoices("beta") if i.kind == "period"]
        billing.credit_note(beta_october.invoice_id, "billed in error", void=True)
    return db


@pytest.fixture(scope="module")
def billing(ledger: Location) -> Iterator[Billing]:
    with open_billing(ledger, clock=Clock(AS_OF)) as service:
        yield service


@pytest.fixture(scope="module")
def exported(billing: Billing, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parquet")
    results = export_tables(billing, folder)
    assert list(results) == list(TABLES)
    for name, result in results.items():
        assert result.path == folder / f"{name}.parquet" and result.path.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{t}.parquet" for t in TABLES)
    return folder


def read(folder: Path) -> duckdb.DuckDBPyConnection:
    """The Parquet files as DuckDB views (as another tool would read them)."""
    connection = duckdb.connect()
    for name in TABLES:
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM '{folder / name}.parquet'")
    return connection


def rows(connection: duckdb.DuckDBPyConnection, query: str) -> list[tuple[Any, ...]]:
    return connection.execute(query).fetchall()


def documents(billing: Billing) -> dict[str, dict[str, Any]]:
    return {i.invoice_id: decode_exact(i.document) for i in billing.store.invoices()}


# -- the files say what the ledger says --------------------------------------------------------


def test_columns_are_typed_as_documented(exported: Path) -> None:
    connection = read(exported)
    for name, table in TABLES.items():
        described = rows(connection, f"DESCRIBE {name}")
        assert [(row[0], row[1]) for row in described] == [
            (column.name, column.type.replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"))
            for column in table.columns
        ], name


def test_invoice_lines_add_up_to_invoice_totals_and_stored_documents(
    exported: Path, billing: Billing
) -> None:
    connection = read(exported)
    stored = documents(billing)
    assert {kind for (kind,) in rows(connection, "SELECT DISTINCT kind FROM invoices")} == {
        "period",
        "purchase",
    }
    totals = dict(rows(connection, "SELECT invoice_id, total FROM invoices"))
    assert totals == {number: D(document["total"]) for number, document in stored.items()}
    sums = dict(
        rows(connection, "SELECT invoice_id, sum(amount) FROM invoice_lines GROUP BY invoice_id")
    )
    assert sums == totals
    hashes = dict(rows(connection, "SELECT invoice_id, document_sha256 FROM invoices"))
    assert hashes == {i.invoice_id: i.document_sha256.hex() for i in billing.store.invoices()}
    # every stored line is there, amounts exact, usage lines with their lineage
    lines = rows(
        connection,
        "SELECT invoice_id, line, kind, amount, quantity, model, events, merkle_root"
        " FROM invoice_lines ORDER BY invoice_id, line",
    )
    expected = []
    for number, document in sorted(stored.items()):
        for line in document["lines"]:
            lineage = line.get("lineage") or {}
            group = line.get("group")
            expected.append(
                (
                    number,
                    line["number"],
                    line["kind"],
                    D(line["amount"]),
                    D(line["quantity"]) if "quantity" in line else None,
                    "/".join(group.values()) if group is not None else None,
                    lineage.get("events"),
                    lineage.get("merkle_root"),
                )
            )
    assert lines == expected
    assert {"usage", "fee", "credit", "purchase"} <= {row[2] for row in lines}


def test_the_journal_balances_and_bills_what_the_invoices_total(exported: Path) -> None:
    connection = read(exported)
    balances = rows(
        connection, "SELECT currency, sum(debit), sum(credit) FROM journal GROUP BY currency"
    )
    assert balances and all(debit == credit > 0 for _, debit, credit in balances)
    for (entry,) in rows(
        connection,
        "SELECT entry_id FROM journal GROUP BY entry_id, currency HAVING sum(debit - credit) <> 0",
    ):
        pytest.fail(f"entry {entry} does not balance")
    [(receivable,)] = rows(
        connection,
        "SELECT sum(debit - credit) FROM journal WHERE account = 'assets:accounts_receivable'",
    )
    [(invoiced,)] = rows(connection, "SELECT sum(total) FROM invoices")
    [(credited,)] = rows(connection, "SELECT sum(total) FROM credit_notes")
    assert credited < 0  # the void of beta's October
    assert receivable == invoiced + credited


def test_rated_usage_earns_what_the_usage_lines_bill(exported: Path) -> None:
    connection = read(exported)
    billed = dict(
        rows(
            connection,
            "SELECT invoice_id || '/' || line, amount FROM invoice_lines WHERE kind = 'usage'",
        )
    )
    rated = dict(
        rows(
            connection,
            "SELECT invoice || '/' || line, sum(revenue) FROM rated_usage"
            " WHERE invoice <> 'draft' AND meter NOT LIKE '(%' AND line > 0 GROUP BY ALL",
        )
    )
    assert rated == {key: amount for key, amount in billed.items() if amount != 0}
    [(unmatched,)] = rows(
        connection,
        "SELECT count(*) FROM rated_usage WHERE invoice <> 'draft' AND revenue <> 0"
        " AND meter NOT LIKE '(%' AND line = 0",
    )
    assert unmatched == 0
    [(margins, costs, drafts)] = rows(
        connection,
        "SELECT count(*) FILTER (WHERE margin <> revenue - cost),"
        " sum(cost), count(*) FILTER (WHERE invoice = 'draft') FROM rated_usage",
    )
    assert margins == 0 and costs > 0 and drafts > 0  # November is open: its draft
    fees = rows(connection, "SELECT sum(revenue) FROM rated_usage WHERE meter = '(fee)'")
    assert fees[0][0] > 0


def test_events_are_the_ledgers_with_their_hashes(exported: Path, billing: Billing) -> None:
    connection = read(exported)
    records = list(billing.ledger.store.records())
    exported_rows = rows(
        connection,
        "SELECT sequence, event_id, customer, type, epoch_us(timestamp), hash, partition,"
        " properties::VARCHAR FROM events ORDER BY partition, sequence",
    )
    assert len(exported_rows) == len(records) == billing.ledger.head()[0]
    for row, record in zip(exported_rows, records, strict=True):
        body = decode_exact(record.body)
        assert row[:5] == (
            record.sequence,
            record.id,
            record.customer,
            record.type,
            record.timestamp_us,
        )
        assert (row[5], row[6]) == (record.hash.hex(), record.partition)
        assert hashlib.sha256(b"\x00" + record.body).hexdigest() == row[5]
        assert decode_exact(row[7].encode()) == body["properties"]
    # properties are the hashed text itself: 0.10 stays 0.10
    first = records[0]
    [(text,)] = rows(
        connection,
        "SELECT properties::VARCHAR FROM events"
        f" WHERE partition = {first.partition} AND sequence = {first.sequence}",
    )
    assert '"latency_s":0.10' in text and text in records[0].body.decode()
    [(received,)] = rows(connection, "SELECT max(epoch_us(received_at)) FROM events")
    assert received <= AS_OF


# -- as of, a subset, atomic files ---------------------------------------------------------------


def test_as_of_leaves_out_what_came_later(billing: Billing, tmp_path: Path) -> None:
    before = at(2026, 11, 3)
    results = export_tables(billing, tmp_path, at_us=before, tables=["invoices", "events"])
    assert list(results) == ["events", "invoices"]  # export order, only those asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.parquet", "invoices.parquet"]
    connection = duckdb.connect()
    kinds = connection.execute(
        f"SELECT kind, count(*) FROM '{tmp_path / 'invoices.parquet'}' GROUP BY kind"
    ).fetchall()
    assert kinds == [("period", 2)]  # the purchase came on November 4
    [(events, latest)] = connection.execute(
        f"SELECT count(*), max(epoch_us(timestamp)) FROM '{tmp_path / 'events.parquet'}'"
    ).fetchall()
    assert events == len(usage(10, range(1, 29))) and latest < at(2026, 11, 1)
    assert results["events"].rows == events


def test_files_are_replaced_whole_and_unknown_tables_refused(
    billing: Billing, tmp_path: Path
) -> None:
    target = tmp_path / "credit_notes.parquet"
    target.write_bytes(b"old")
    export_tables(billing, tmp_path, tables=["credit_notes"])
    assert target.read_bytes().startswith(b"PAR1")
    assert [p.name for p in tmp_path.iterdir()] == ["credit_notes.parquet"]  # no temp left
    with pytest.raises(ExportError, match="no table 'ledger'"):
        export_tables(billing, tmp_path / "new", tables=["events", "ledger"])
    assert not (tmp_path / "new").exists()


def test_money_is_exact_or_refused(
    billing: Billing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def notes(total: str) -> Table:
        row = ("CN-1", "INV-1", "alpha", "USD", AS_OF, total, True, "test")
        return replace(TABLES["credit_notes"], rows=lambda _billing, _at: [row])

    widest = "-9999999999999999999999999999.9999999999"
    monkeypatch.setitem(TABLES, "credit_notes", notes(widest))
    export_tables(billing, tmp_path, tables=["credit_notes"])
    [(total,)] = duckdb.sql(
        f"SELECT total::VARCHAR FROM '{tmp_path / 'credit_notes.parquet'}'"
    ).fetchall()
    assert total == widest
    for value in ("0.12345678901", "10000000000000000000000000000"):
        monkeypatch.setitem(TABLES, "credit_notes", notes(value))
        with pytest.raises(ExportError, match=f"credit_notes.total: {value} does not fit"):
            export_tables(billing, tmp_path / "refused", tables=["credit_notes"])
        assert not list((tmp_path / "refused").glob("*.parquet"))


def test_connect_tables_gives_every_table_in_memory(billing: Billing) -> None:
    with connect_tables(billing, tables=["invoices", "journal"]) as connection:
        names = {row[0] for row in connection.execute("SHOW TABLES").fetchall()}
        assert names == {"invoices", "journal"}
        [(comment,)] = connection.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'invoices'"
            " AND column_name = 'total'"
        ).fetchall()
        assert "sum of its lines" in comment


# -- read-only SQL -------------------------------------------------------------------------------


def test_sql_answers_a_group_by(billing: Billing) -> None:
    columns, result = sql(
        billing, "SELECT customer, count(*) AS n FROM events GROUP BY customer ORDER BY customer"
    )
    everything = usage(10, range(1, 29)) + usage(11, range(1, 4))
    assert columns == ["customer", "n"]
    assert result == [
        (customer, sum(1 for e in everything if e["customer"] == customer))
        for customer in CUSTOMERS
    ]
    columns, result = sql(
        billing,
        "SELECT strftime(day, '%Y-%m') AS month, model, sum(revenue) AS revenue"
        " FROM rated_usage WHERE meter = 'input_tokens' GROUP BY ALL ORDER BY ALL",
    )
    assert columns == ["month", "model", "revenue"]
    assert {(month, model) for month, model, _ in result} == {
        (month, model) for month in ("2026-10", "2026-11") for model in ("big", "small")
    }
    _, [(instant,)] = sql(billing, "SELECT min(timestamp) FROM events")
    assert instant == datetime(2026, 10, 1, 10, tzinfo=UTC)


def test_sql_builds_the_tables_a_query_names(billing: Billing) -> None:
    joined = "SELECT * FROM invoice_lines l JOIN invoices i ON i.invoice_id = l.invoice_id"
    assert referenced_tables(joined) == ["invoices", "invoice_lines"]  # in export order
    assert referenced_tables("SHOW TABLES") is None
    assert referenced_tables("SELECT * FROM read_csv('/etc/passwd')") is None
    _, shown = sql(billing, "SHOW TABLES")
    assert sorted(name for (name,) in shown) == sorted(TABLES)
    _, [(count,)] = sql(billing, "SELECT count(*) FROM main.credit_notes")
    assert count == 1


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("CREATE TABLE t AS SELECT 1", "CREATE statements are refused"),
        ("CREATE TEMP TABLE t AS SELECT 1", "CREATE statements are refused"),
        ("INSERT INTO invoices (invoice_id) VALUES ('x')", "INSERT statements are refused"),
        ("COPY (SELECT * FROM events) TO '{path}'", "COPY statements are refused"),
        ("ATTACH '{path}' AS other", "ATTACH statements are refused"),
        ("SET enable_external_access = true", "SET statements are refused"),
        ("SELECT 1; DROP TABLE events", "one statement at a time"),
        ("SELECT * FROM read_csv('{path}')", "file system operations are disabled"),
        ("SELECT * FROM read_parquet('{parquet}')", "file system operations are disabled"),
        ("SELECT * FROM '{path}'", "file system operations are disabled"),
        ("SELEC 1", "syntax error"),
        ("SELECT nothing FROM events", "nothing"),
    ],
)
def test_sql_refuses_writes_and_files(
    billing: Billing, exported: Path, tmp_path: Path, query: str, reason: str
) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    text = query.format(path=secret, parquet=exported / "events.parquet")
    with pytest.raises(QueryError) as raised:
        sql(billing, text)
    assert reason in str(raised.value), str(raised.value)
    assert secret.read_text() == "a,b\n1,2\n"


# -- the commands ---------------------------------------------------------------------------------

runner = CliRunner(env={"METERLINE_DB": None})


def test_cli_exports_and_queries(ledger: Location, billing: Billing, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["export", "--db", str(ledger), "--out", str(out), "--as-of", AS_OF_TEXT]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    printed = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in printed] == list(TABLES)
    for name, count, path in printed:
        assert Path(path) == out / f"{name}.parquet" and Path(path).exists()
        [(rows_in_file,)] = duckdb.sql(f"SELECT count(*) FROM '{path}'").fetchall()
        assert int(count) == rows_in_file
    assert f"exported {len(TABLES)} tables" in result.stderr

    one = runner.invoke(
        app,
        ["export", "--db", str(ledger), "--out", str(tmp_path / "one"), "--table", "invoices"],
    )
    assert one.exit_code == 0 and [p.name for p in (tmp_path / "one").iterdir()] == [
        "invoices.parquet"
    ]

    query = "SELECT invoice_id, total FROM invoices ORDER BY invoice_id"
    expected = {
        i.invoice_id: D(decode_exact(i.document)["total"]) for i in billing.store.invoices()
    }
    as_csv = runner.invoke(
        app, ["sql", query, "--db", str(ledger), "--format", "csv", "--as-of", AS_OF_TEXT]
    )
    assert as_csv.exit_code == 0, as_csv.stderr
    lines = as_csv.stdout.splitlines()
    assert lines[0] == "invoice_id,total"
    assert {k: D(v) for k, v in (line.split(",") for line in lines[1:])} == expected
    as_json = runner.invoke(
        app, ["sql", query, "--db", str(ledger), "--format", "json", "--as-of", AS_OF_TEXT]
    )
    assert as_json.exit_code == 0, as_json.stderr
    parsed = json.loads(as_json.stdout, parse_float=D)
    assert {row["invoice_id"]: D(row["total"]) for row in parsed} == expected
    as_table = runner.invoke(app, ["sql", query, "--db", str(ledger), "--as-of", AS_OF_TEXT])
    assert as_table.exit_code == 0, as_table.stderr
    for number, total in expected.items():
        assert number in as_table.stdout and f"{total:.2f}" in as_table.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["sql", "SELEC 1"], 1, "syntax error"),
        (["sql", "DELETE FROM events"], 1, "read-only"),
        (["sql", "SELECT * FROM nowhere"], 1, "nowhere"),
        (["sql", "SELECT 1", "--format", "xml"], 2, "--format"),
        (["export", "--out", "{tmp}", "--table", "ledger"], 2, "--table"),
        (["export", "--out", "{tmp}/file"], 1, "--out"),
        (["sql", "SELECT 1", "--as-of", "yesterday"], 2, "--as-of"),
    ],
)
def test_cli_refuses_with_a_message(
    ledger: Location, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "file").write_text("not a directory")
    filled = [arg.format(tmp=tmp_path) for arg in args]
    result = runner.invoke(app, [*filled, "--db", str(ledger)])
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "error:" in result.stderr and message in result.stderr, result.stderr


def test_cli_names_a_missing_ledger(new_db: Callable[..., Location]) -> None:
    """A ledger that does not exist (no file, an empty schema) is named, not created."""
    missing = new_db("none")
    result = runner.invoke(app, ["sql", "SELECT 1", "--db", str(missing)])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not ledger_exists(missing)


def test_the_docs_list_every_table_and_column() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "exports.md").read_text()
    for name, table in TABLES.items():
        assert f"### `{name}`" in docs, name
        for column in table.columns:
            assert f"| `{column.name}` | {column.type} |" in docs, f"{name}.{column.name}"
