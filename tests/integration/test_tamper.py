"""The tamper catalogue: a small real ledger (three customers' October, a pricing file,
finalized invoices) is altered behind meterline's back, one way per test, and ``verify``
or ``audit`` (the library and the command) must report it: the first bad item named,
exit 1 (3 for a file that cannot be read), never a traceback. Each case runs on every
store it applies to (a truncated file is SQLite's). The newest events removed together
with their batches, head and stored checkpoints are caught against an exported
checkpoint."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from meterline.billing.render import audit_lines
from meterline.billing.service import audit_ledger, open_billing
from meterline.cli import app
from meterline.core.chain import HeadState, verify_chains
from meterline.core.events import decode_exact, encode_canonical
from meterline.core.findings import Finding
from meterline.core.merkle import frontier_to_bytes
from meterline.ledger import billing_records as billing_store
from meterline.ledger.checkpoints import (
    export_notes,
    load_signer,
    make_checkpoint,
    split_notes,
    write_key_file,
)
from meterline.ledger.database import translate_schema
from meterline.ledger.event_ledger import open_store
from meterline.ledger.integrity import verify_ledger
from meterline.ledger.location import is_postgres
from tests.conftest import FIXED_NOW_US, Location
from tests.stores import drop_triggers, rows, tamper, write

NewDb = Callable[..., Location]

PRICING = """\
meters:
  - {key: input_tokens, event_type: llm.completion, aggregation: sum, property: input_tokens}
  - {key: output_tokens, event_type: llm.completion, aggregation: sum, property: output_tokens}
plans:
  - key: team
    name: Team
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees:
          - {key: platform, name: Platform fee, amount: "49.00", kind: recurring, timing: advance}
        prices:
          - {meter: input_tokens, model: per_unit, unit_amount: "0.000003"}
          - {meter: output_tokens, model: per_unit, unit_amount: "0.000012"}
contracts:
  - {customer: acme, plan: team, start: 2026-10-01}
  - {customer: globex, plan: team, start: 2026-10-01}
  - {customer: initech, plan: team, start: 2026-10-01}
"""
CUSTOMERS = ("acme", "globex", "initech")
TARGET_ID = "e-40"
"""The event each event case alters: globex's, with globex events before and after it
(e-40 to e-42 are globex's, e-43 to e-45 initech's...); ``located`` gives its partition
and sequence (each partition numbers its own events)."""
NEXT_ID = "e-41"
"""globex's next event (same customer, so same partition, next sequence)."""
INVOICE = "INV-000002"
"""globex's October invoice: a fee line (1) and two usage lines (2, 3)."""


def october() -> list[dict[str, Any]]:
    """Ten days of October, three events per customer per day, in customer blocks."""
    events: list[dict[str, Any]] = []
    for day in range(1, 11):
        for customer in CUSTOMERS:
            for minute in range(3):
                number = len(events) + 1
                events.append(
                    {
                        "id": f"e-{number}",
                        "customer": customer,
                        "type": "llm.completion",
                        "timestamp": f"2026-10-{day:02d}T10:{minute:02d}:00Z",
                        "properties": {
                            "model": "gpt-4o",
                            "input_tokens": 1000 + number,
                            "output_tokens": 200 + number,
                        },
                    }
                )
    return events


def build(db: Location) -> Location:
    """Ingest October, apply the pricing, close at the fixed clock: three invoices."""
    with open_billing(db, clock=lambda: FIXED_NOW_US) as billing:
        assert billing.ledger.ingest(october()).accepted == 90
        billing.apply(PRICING)
        finalized = billing.close(FIXED_NOW_US)
    assert [invoice.invoice_id for invoice in finalized] == [f"INV-00000{n}" for n in (1, 2, 3)]
    return db


def located(db: Location, event_id: str = TARGET_ID) -> tuple[int, int]:
    """The (partition, sequence) of event ``event_id`` (SQLite has one partition: 0)."""
    found = rows(
        db, "SELECT partition_number, sequence FROM events WHERE event_id = ?", (event_id,)
    )
    return int(found[0][0]), int(found[0][1])


def where(db: Location, event_id: str = TARGET_ID) -> str:
    """The SQL condition selecting event ``event_id``'s row by partition and sequence."""
    partition, sequence = located(db, event_id)
    return f"partition_number = {partition} AND sequence = {sequence}"


def batch_first(db: Location, event_id: str = TARGET_ID) -> int:
    """The first sequence of the batch holding ``event_id``."""
    partition, sequence = located(db, event_id)
    found = rows(
        db,
        "SELECT first_sequence FROM batches WHERE partition_number = ? AND first_sequence <= ?"
        " AND last_sequence >= ?",
        (partition, sequence, sequence),
    )
    return int(found[0][0])


def blob(db: Location, data: bytes) -> str:
    """``data`` as a SQL literal of the store's binary type."""
    return f"'\\x{data.hex()}'::bytea" if is_postgres(db) else f"X'{data.hex()}'"


def stored(db: Location, statement: str) -> bytes:
    """The one binary value ``statement`` selects."""
    value = rows(db, statement)[0][0]
    return value if isinstance(value, bytes) else bytes(value)


# -- the tampers ----------------------------------------------------------------------------


def edit_payload(db: Location) -> None:
    body = stored(db, f"SELECT body FROM events WHERE {where(db)}")
    edited = body.replace(b'"input_tokens":1040', b'"input_tokens":9')
    assert edited != body
    tamper(db, f"UPDATE events SET body = {blob(db, edited)} WHERE {where(db)}")


def payload_not_json(db: Location) -> None:
    tamper(db, f"UPDATE events SET body = {blob(db, b'{not json')} WHERE {where(db)}")


def delete_event(db: Location) -> None:
    tamper(db, f"DELETE FROM events WHERE {where(db)}")


def swap_events(db: Location) -> None:
    partition, sequence = located(db)
    assert located(db, NEXT_ID) == (partition, sequence + 1)
    same = f"partition_number = {partition} AND sequence"
    tamper(
        db,
        f"UPDATE events SET sequence = -1 WHERE {same} = {sequence}",
        f"UPDATE events SET sequence = {sequence} WHERE {same} = {sequence + 1}",
        f"UPDATE events SET sequence = {sequence + 1} WHERE {same} = -1",
    )


def change_hash(db: Location) -> None:
    tamper(db, f"UPDATE events SET hash = {blob(db, bytes(32))} WHERE {where(db)}")


def edit_batch_root(db: Location) -> None:
    partition, _ = located(db)
    tamper(
        db,
        f"UPDATE batches SET root = {blob(db, bytes(32))} WHERE partition_number = {partition}"
        f" AND first_sequence = {batch_first(db)}",
    )


def _document(db: Location) -> bytes:
    return stored(db, f"SELECT document FROM invoices WHERE invoice_id = '{INVOICE}'")


def edit_invoice(db: Location) -> None:
    document = _document(db)
    edited = document.replace(
        b'"amount":"49.00","amount_exact":"49.00"', b'"amount":"4.90","amount_exact":"49.00"'
    )
    assert edited != document
    tamper(db, f"UPDATE invoices SET document = {blob(db, edited)} WHERE invoice_id = '{INVOICE}'")


def edit_lineage(db: Location) -> None:
    """Line 2's Merkle root replaced, and the document's hash recomputed to match."""
    document = decode_exact(_document(db))
    document["lines"][1]["lineage"]["merkle_root"] = "00" * 32
    edited = encode_canonical(document)
    digest = hashlib.sha256(edited).digest()
    tamper(
        db,
        f"UPDATE invoices SET document = {blob(db, edited)},"
        f" document_sha256 = {blob(db, digest)} WHERE invoice_id = '{INVOICE}'",
    )


def _content(db: Location) -> bytes:
    return stored(db, "SELECT content FROM configuration_revisions WHERE revision = 1")


def edit_revision(db: Location) -> None:
    content = _content(db)
    edited = content.replace(b'"unit_amount":"0.000003"', b'"unit_amount":"0.000004"')
    assert edited != content
    tamper(db, f"UPDATE configuration_revisions SET content = {blob(db, edited)}")


def revision_not_json(db: Location) -> None:
    tamper(db, f"UPDATE configuration_revisions SET content = {blob(db, b'{oops')}")


def edit_source(db: Location) -> None:
    tamper(
        db,
        "UPDATE configuration_revisions SET source_text ="
        " replace(source_text, '0.000003', '0.000004')",
    )


def truncate(db: Location) -> None:
    path = Path(db)
    for suffix in ("-wal", "-shm"):
        assert not Path(f"{path}{suffix}").exists() or os.path.getsize(f"{path}{suffix}") == 0
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)


def drop_event_triggers(db: Location) -> None:
    drop_triggers(db, "events")
    write(db, f"UPDATE events SET customer = 'mallory' WHERE {where(db)}")


def drop_invoice_triggers(db: Location) -> None:
    drop_triggers(db, "invoices")
    edited = _document(db).replace(b'"total":"', b'"total":"1')
    write(db, f"UPDATE invoices SET document = {blob(db, edited)} WHERE invoice_id = '{INVOICE}'")


def disarm_event_trigger(db: Location) -> None:
    """The UPDATE trigger kept by name but disarmed: disabled (PostgreSQL), or re-created
    with a condition that never holds (SQLite, which cannot disable a trigger)."""
    if is_postgres(db):
        write(db, "ALTER TABLE events DISABLE TRIGGER events_append_only_update")
    else:
        write(db, "DROP TRIGGER events_append_only_update")
        write(
            db,
            "CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events WHEN 0"
            " BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END",
        )
    write(db, f"UPDATE events SET customer = 'mallory' WHERE {where(db)}")


def edit_partition_head(db: Location) -> None:
    write(
        db,
        "UPDATE partition_heads SET sequence = sequence - 1 WHERE partition_number = ?",
        (located(db)[0],),
    )


# -- the catalogue --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    tamper: Callable[[Location], None]
    first: Callable[[Location], dict[str, Any]]
    """The first finding's check and locating fields (as ``Finding.as_dict``)."""
    problem: str | Callable[[Location], str]
    """Words the first finding's problem holds (or, per store, what gives them)."""
    tools: tuple[str, ...] = ("verify", "audit")
    """The tools that must report it (first); the others must pass."""
    stores: tuple[str, ...] = ("sqlite", "postgresql")
    also: Callable[[Location], list[dict[str, Any]]] = lambda db: []
    """Further findings the reports must hold (after the first)."""
    exit_code: int = 1


def _event(db: Location) -> dict[str, Any]:
    partition, sequence = located(db)
    return {"check": "chain", "partition": partition, "sequence": sequence}


def _removed(db: Location) -> dict[str, Any]:
    # the removed row's partition is its customer's, which the next event shares
    partition, sequence = located(db, NEXT_ID)
    return {"check": "chain", "partition": partition, "sequence": sequence - 1}


def _batch(db: Location) -> dict[str, Any]:
    # rows swapped within a batch are each intact: the batch's Merkle root breaks
    return {"check": "chain", "partition": located(db)[0], "sequence": batch_first(db)}


CASES = [
    Case("event-payload-changed", edit_payload, _event, "hash does not match"),
    Case("event-payload-not-json", payload_not_json, _event, "hash does not match"),
    Case("event-row-deleted", delete_event, _removed, "events removed or reordered"),
    Case("event-rows-swapped", swap_events, _batch, "root does not match its events"),
    Case("event-hash-changed", change_hash, _event, "hash does not match"),
    Case("batch-root-edited", edit_batch_root, _batch, "root does not match its events"),
    Case(
        "invoice-document-edited",
        edit_invoice,
        lambda db: {"check": "invoice", "invoice": INVOICE, "line": 1},
        "document does not match its stored hash; differs from the ledger's re-derivation"
        " (amount: stored '4.90' vs ledger '49.00')",
        tools=("audit",),
    ),
    Case(
        "invoice-lineage-edited",
        edit_lineage,
        lambda db: {"check": "invoice", "invoice": INVOICE, "line": 2},
        "differs from the ledger's re-derivation (lineage:",
        tools=("audit",),
    ),
    Case(
        "revision-content-edited",
        edit_revision,
        lambda db: {"check": "revision", "revision": 1},
        "content does not match its hash",
        tools=("audit",),
        also=lambda db: [{"check": "invoice", "invoice": INVOICE}],
    ),
    Case(
        "revision-content-not-json",
        revision_not_json,
        lambda db: {"check": "revision", "revision": 1},
        "content does not match its hash; content is not valid JSON",
        tools=("audit",),
        also=lambda db: [{"check": "invoice", "invoice": INVOICE}],
    ),
    Case(
        "revision-source-edited",
        edit_source,
        lambda db: {"check": "revision", "revision": 1},
        "the revision hash does not match its source text",
        tools=("audit",),
    ),
    Case(
        "sqlite-file-truncated",
        truncate,
        lambda db: {"check": "store", "store": str(db)},
        "the SQLite file is damaged (database disk image is malformed)",
        stores=("sqlite",),
        exit_code=3,
    ),
    Case(
        "event-triggers-dropped-then-row-edited",
        drop_event_triggers,
        lambda db: {"check": "trigger", "table": "events"},
        "append-only trigger events_append_only_update (BEFORE UPDATE) is missing",
        also=lambda db: [
            {"check": "trigger", "table": "events"},
            {"check": "chain", "partition": located(db)[0], "sequence": located(db)[1]},
        ],
    ),
    Case(
        "invoice-triggers-dropped-then-invoice-edited",
        drop_invoice_triggers,
        lambda db: {"check": "trigger", "table": "invoices"},
        "append-only trigger invoices_append_only_update (BEFORE UPDATE) is missing",
        also=lambda db: [
            {"check": "trigger", "table": "invoices"},
            {"check": "invoice", "invoice": INVOICE},
        ],
    ),
    Case(
        "event-trigger-disarmed-then-row-edited",
        disarm_event_trigger,
        lambda db: {"check": "trigger", "table": "events"},
        lambda db: (
            "append-only trigger events_append_only_update (BEFORE UPDATE) "
            + ("is disabled" if is_postgres(db) else "was altered")
        ),
        also=lambda db: [
            {"check": "chain", "partition": located(db)[0], "sequence": located(db)[1]}
        ],
    ),
    Case(
        "partition-head-edited",
        edit_partition_head,
        lambda db: {"check": "partition head", "partition": located(db)[0]},
        "stored head",
    ),
]


def _holds(finding: Finding, expected: dict[str, Any]) -> bool:
    found = finding.as_dict()
    return all(found.get(key) == value for key, value in expected.items())


def _located(findings: list[Finding]) -> list[dict[str, Any]]:
    return [finding.as_dict() for finding in findings]


@pytest.mark.parametrize(
    ("store_kind", "case"),
    [
        pytest.param(store, case, id=f"{case.name}-{store}")
        for case in CASES
        for store in case.stores
    ],
    indirect=["store_kind"],
)
def test_tampering_is_reported(store_kind: str, case: Case, new_db: NewDb) -> None:
    """verify or audit (library and command) names the first bad item, exits non-zero,
    prints no traceback."""
    db = build(new_db("tamper"))
    case.tamper(db)
    expected = case.first(db)
    also = case.also(db)
    problem = case.problem if isinstance(case.problem, str) else case.problem(db)
    reports = {"verify": verify_ledger(db).findings, "audit": audit_ledger(db).findings}
    for tool, findings in reports.items():
        if tool not in case.tools:
            assert findings == [], (tool, _located(findings))
            continue
        assert findings, tool
        assert _holds(findings[0], expected), (tool, _located(findings))
        assert problem in findings[0].problem, (tool, str(findings[0]))
        for wanted in also:
            if tool == "audit" or wanted["check"] not in ("invoice", "revision"):
                assert any(_holds(f, wanted) for f in findings[1:]), (wanted, _located(findings))
    runner = CliRunner()
    for tool in ("verify", "audit"):
        result = runner.invoke(app, [tool, "--db", str(db)])
        assert "Traceback" not in result.output
        if tool not in case.tools:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == case.exit_code, result.output
        assert isinstance(result.exception, SystemExit), result.exception
        first = reports[tool][0]
        reported = [line for line in result.stderr.splitlines() if first.where in line]
        assert reported, (first.where, result.stderr)
        assert problem in reported[0]


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
@pytest.mark.parametrize("tool", ["verify", "audit"])
def test_a_truncated_file_is_one_line_in_a_real_process(
    store_kind: str, tool: str, new_db: NewDb
) -> None:
    """`meterline verify|audit` on a truncated file: exit 3, one stderr line naming the
    file as damaged, nothing on stdout."""
    db = build(new_db("truncated"))
    truncate(db)
    finished = subprocess.run(
        [sys.executable, "-m", "meterline", tool, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 3
    assert finished.stdout == ""
    assert finished.stderr.splitlines() == [
        f"error: {db}: the SQLite file is damaged (database disk image is malformed)"
    ]


@pytest.mark.parametrize(
    "tamper_with", [payload_not_json, revision_not_json], ids=["event", "revision"]
)
def test_bytes_that_are_not_json_are_reported_in_a_real_process(
    tamper_with: Callable[[Location], None], new_db: NewDb
) -> None:
    """`meterline audit` on an event or a revision that is not JSON: exit 1, findings,
    no traceback (it used to end in msgspec's DecodeError)."""
    db = build(new_db("notjson"))
    tamper_with(db)
    finished = subprocess.run(
        [sys.executable, "-m", "meterline", "audit", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 1, finished.stderr
    assert "Traceback" not in finished.stderr and "DecodeError" not in finished.stderr
    assert "audit FAILED" in finished.stderr
    assert "  mismatch " in finished.stderr


# -- revisions stored before revision hashes ----------------------------------------------


def _old_billing_schema() -> str:
    """The billing tables and triggers as ledgers made before revision hashes have them."""
    old = billing_store._SCHEMA.replace(",\n    revision_sha256 BLOB\n", "\n")
    assert "revision_sha256" not in old
    return old + billing_store._TRIGGERS


def _revision_columns(db: Location) -> list[str]:
    if is_postgres(db):
        found = rows(
            db,
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'configuration_revisions'",
        )
        return [row[0] for row in found]
    return [row[1] for row in rows(db, "PRAGMA table_info(configuration_revisions)")]


def _old_ledger(db: Location, scratch: Path) -> None:
    """A ledger made before revision hashes, its one revision stored then."""
    with open_billing(scratch, clock=lambda: FIXED_NOW_US) as billing:
        billing.apply(PRICING)
        revision = billing.store.revision()
        assert revision is not None
    open_store(db).close()
    if is_postgres(db):
        with psycopg.connect(str(db), autocommit=True) as connection:
            connection.execute(translate_schema(_old_billing_schema()).encode())
    else:
        connection = sqlite3.connect(db)
        connection.executescript(_old_billing_schema())
        connection.close()
    write(
        db,
        "INSERT INTO configuration_revisions VALUES (1, ?, 'pricing.yaml', ?, ?, ?)",
        (
            FIXED_NOW_US - 86_400_000_000,
            revision.source_text,
            revision.content,
            hashlib.sha256(revision.content).digest(),
        ),
    )


def test_revisions_stored_before_revision_hashes_still_audit(new_db: NewDb, tmp_path: Path) -> None:
    """An old ledger audits as it is (no column added by the audit); opened for work it
    gains the revision hash column; its old revision (no hash) keeps the content check and
    is listed as such; a later revision's source text is covered."""
    db = new_db("old")
    _old_ledger(db, tmp_path / "scratch.db")
    before = audit_ledger(db)
    assert before.passed, before.mismatches
    assert (before.revisions, before.unhashed_revisions) == (1, [1])
    assert "revision_sha256" not in _revision_columns(db)
    with open_billing(db, clock=lambda: FIXED_NOW_US) as billing:
        assert "revision_sha256" in _revision_columns(db)
        assert billing.ledger.ingest(october()).accepted == 90
        assert len(billing.close(FIXED_NOW_US)) == 3
        newer = PRICING + "  - {customer: umbrella, plan: team, start: 2026-12-01}\n"
        assert billing.apply(newer, name="pricing.yaml").revision == 2
        report = billing.audit()
        assert report.passed, report.mismatches
        assert report.unhashed_revisions == [1]
        assert any("revision(s) 1 predate revision hashes" in line for line in audit_lines(report))
    hashes = rows(db, "SELECT revision, revision_sha256 FROM configuration_revisions")
    assert [(number, digest is not None) for number, digest in sorted(hashes)] == [
        (1, False),
        (2, True),
    ]
    tamper(
        db,
        "UPDATE configuration_revisions SET source_text = source_text || '# edited'"
        " WHERE revision = 2",
    )
    findings = audit_ledger(db).findings
    assert [(f.check, f.revision) for f in findings] == [("revision", 2)], _located(findings)


def test_an_unreachable_database_is_one_line_and_exit_3() -> None:
    """verify and audit on a PostgreSQL URL nothing answers: exit 3, one line, no
    traceback."""
    url = "postgresql://postgres@127.0.0.1:1/test"
    runner = CliRunner()
    for tool in ("verify", "audit"):
        result = runner.invoke(app, [tool, "--db", url])
        assert result.exit_code == 3, result.output
        assert isinstance(result.exception, SystemExit)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: postgresql://"), lines
        assert "cannot connect to PostgreSQL" in lines[0]


# -- the newest events removed, with everything that names them ---------------------------


def _remove_newest_batch(db: Location) -> None:
    """Delete one partition's last batch: its events, its batch row and every stored
    checkpoint, and rewrite the partition's head to the batch before, triggers as they
    were: the ledger alone is consistent again."""
    partition, _ = located(db)
    head = rows(
        db,
        "SELECT batch_number, first_sequence FROM batches WHERE partition_number = ?"
        " ORDER BY batch_number DESC LIMIT 1",
        (partition,),
    )
    number, first = int(head[0][0]), int(head[0][1])
    assert number >= 2, "the case needs a batch before the newest"
    store = open_store(db)
    try:
        previous = verify_chains_through(store, partition, number - 1)
    finally:
        store.close()
    tamper(
        db,
        f"DELETE FROM events WHERE partition_number = {partition} AND sequence >= {first}",
        f"DELETE FROM batches WHERE partition_number = {partition} AND batch_number = {number}",
        "DELETE FROM checkpoints",
        f"UPDATE partition_heads SET sequence = {previous.sequence}, batches ="
        f" {previous.batches}, chain_hash = {blob(db, previous.chain_hash)}, frontier ="
        f" {blob(db, frontier_to_bytes(previous.frontier))}"
        f" WHERE partition_number = {partition}",
    )


def verify_chains_through(store: Any, partition: int, batches: int) -> HeadState:
    """The head ``partition`` had after its first ``batches`` batches."""
    kept = [batch for batch in store.batches([partition]) if batch.number <= batches]
    last = kept[-1].last_sequence
    records = [r for r in store.records(partitions=[partition]) if r.sequence <= last]
    report = verify_chains(store.partitions, records, kept)
    assert report.intact, report.problem
    return report.heads[partition]


def test_removing_the_newest_events_is_caught_against_an_exported_checkpoint(
    new_db: NewDb, tmp_path: Path
) -> None:
    """Without a checkpoint kept outside, deleting the newest events with their batch,
    head and stored checkpoints leaves a consistent ledger; `verify --checkpoints` with
    the exported file names the partition and the removal; a forged signature fails."""
    db = build(new_db("truncate"))
    key_file = tmp_path / "checkpoint.key"
    public = write_key_file(key_file)
    with open_billing(db, clock=lambda: FIXED_NOW_US) as billing:
        # a second batch for globex, so its partition has a batch before the newest
        more = [dict(e, id=f"more-{n}") for n, e in enumerate(october()[3:6])]
        assert billing.ledger.ingest(more).accepted == 3
    store = open_store(db)
    try:
        signer = load_signer(key_file)
        assert signer is not None
        made = make_checkpoint(store, signer, FIXED_NOW_US)
        assert made is not None
        exported = tmp_path / "checkpoints.txt"
        exported.write_text(export_notes(store))
    finally:
        store.close()
    public_text = base64.b64encode(public).decode()
    runner = CliRunner()
    before = runner.invoke(
        app,
        ["verify", "--db", str(db), "--checkpoints", str(exported), "--public-key", public_text],
    )
    assert before.exit_code == 0, before.output
    _remove_newest_batch(db)
    alone = runner.invoke(app, ["verify", "--db", str(db)])
    assert alone.exit_code == 0, alone.output  # the ledger alone cannot tell
    caught = runner.invoke(
        app,
        ["verify", "--db", str(db), "--checkpoints", str(exported), "--public-key", public_text],
    )
    assert caught.exit_code == 1, caught.output
    assert "events were removed" in caught.stderr and "checkpoints.txt note 1" in caught.stderr
    (note,) = split_notes(exported.read_text())
    report = verify_ledger(db, [("exported", note)], public)
    assert report.findings[0].check == "checkpoint"
    assert report.findings[0].partition == located(db, NEXT_ID)[0]
    lines = note.splitlines(keepends=True)
    signature = next(i for i, line in enumerate(lines) if line.startswith("\u2014"))
    name, value = lines[signature].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(value))
    raw[10] ^= 1
    lines[signature] = f"{name} {base64.b64encode(bytes(raw)).decode()}\n"
    bad = verify_ledger(db, [("forged", "".join(lines))], public)
    assert any("signature" in finding.problem for finding in bad.findings), bad.findings
