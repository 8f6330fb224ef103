"""The finance view end to end, as real processes over the demo's ledger: the journal
exports pass ``bean-check``, the reports add up, unit economics flags negative margins,
and ``meterline reconcile`` proves events -> rated usage -> invoices -> journal ->
reports agree (and says which step differs when an invoice is tampered with)."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from meterline.billing.service import open_billing
from meterline.core.documents import document_bytes
from meterline.core.events import decode_exact
from meterline.core.money import display_amount, round_amount
from meterline.core.revenue_bridge import CREDIT_BOUGHT, CREDIT_CONSUMED, TAX, USAGE_BILLED
from meterline.ledger.billing_records import BillingStore, StoredInvoice
from meterline.ledger.location import is_postgres
from tests.conftest import DEMO_NOW, Databases, Location
from tests.integration.test_cli import meterline as run_meterline
from tests.stores import rows, tamper

pytestmark = pytest.mark.slow


def meterline(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``meterline`` on the demo's clock (its month is October 2026)."""
    return run_meterline(*args, cwd=cwd, now=DEMO_NOW)


@dataclass(frozen=True)
class Demo:
    """The demo's ledger and the beancount journal the demo wrote (beside a SQLite file,
    in the working directory for a PostgreSQL ledger)."""

    db: Location
    beancount: Path


@pytest.fixture(scope="module")
def demo_db(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    folder = tmp_path_factory.mktemp("finance")
    db = databases.new(folder, "demo")
    result = meterline("demo", "--db", str(db), "--no-serve", "--scale", "0.1", cwd=folder)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    phrases = (
        "The finance view",
        "list-price charges to billed",
        "billed to recognized",
        "Margin by customer",
        "Revenue waterfall",
        "one truth",
    )
    for phrase in phrases:
        assert phrase in text, phrase
    files = folder / "meterline-demo" if is_postgres(db) else Path(db)
    return Demo(db, files.with_suffix(".beancount"))


def _bean_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beancount.scripts.check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _invoices(demo: Demo) -> list[StoredInvoice]:
    store = BillingStore(demo.db)
    try:
        return store.invoices()
    finally:
        store.close()


def _invoice_totals(demo: Demo) -> D:
    return sum((D(decode_exact(i.document)["total"]) for i in _invoices(demo)), D(0))


def _set_invoice(db: Location, document: bytes) -> None:
    literal = f"decode('{document.hex()}', 'hex')" if is_postgres(db) else f"X'{document.hex()}'"
    tamper(db, f"UPDATE invoices SET document = {literal} WHERE invoice_id = 'INV-000001'")


@contextmanager
def _tampered_invoice(demo: Demo, folder: Path, document: bytes) -> Iterator[Location]:
    """A ledger like the demo's whose INV-000001 holds ``document``: a copy of the SQLite
    file; on PostgreSQL the demo's own schema, its stored bytes restored afterwards (the
    demo is too slow to build twice, and a schema has no cheap copy)."""
    if not is_postgres(demo.db):
        tampered = folder / "tampered.db"
        source = sqlite3.connect(demo.db)
        source.backup(target := sqlite3.connect(tampered))
        source.close()
        target.close()
        _set_invoice(tampered, document)
        yield tampered
        return
    [(original,)] = rows(demo.db, "SELECT document FROM invoices WHERE invoice_id = 'INV-000001'")
    _set_invoice(demo.db, document)
    try:
        yield demo.db
    finally:
        _set_invoice(demo.db, bytes(original))
        [(restored,)] = rows(
            demo.db, "SELECT document FROM invoices WHERE invoice_id = 'INV-000001'"
        )
        assert bytes(restored) == bytes(original)


def test_every_stored_document_decodes_typed_to_its_very_bytes(demo_db: Demo) -> None:
    """The demo's invoices (period, threshold, purchase) and credit notes decode once to
    typed records that encode back to exactly the stored bytes: reading never moves a hash."""
    store = BillingStore(demo_db.db)
    try:
        invoices, notes = store.invoices(), store.credit_notes()
    finally:
        store.close()
    assert {invoice.kind for invoice in invoices} == {"period", "threshold", "purchase"}
    assert notes
    for stored in [*invoices, *notes]:
        assert document_bytes(stored.record) == stored.document


def test_bean_check_accepts_the_demo_journal(demo_db: Demo, tmp_path: Path) -> None:
    written_by_demo = demo_db.beancount
    checked = _bean_check(written_by_demo)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    exported = tmp_path / "journal.beancount"
    result = meterline(
        "journal", "--db", str(demo_db.db), "--format", "beancount", "--out", str(exported)
    )
    assert result.returncode == 0, result.stderr
    checked = _bean_check(exported)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = exported.read_text()
    assert "Income:Breakage" in text and "Liabilities:DeferredRevenue:Credits" in text
    # bean-check really checks: a wrong balance assertion fails it
    broken = tmp_path / "broken.beancount"
    broken.write_text(
        text.replace(
            " balance Assets:AccountsReceivable  ", " balance Assets:AccountsReceivable  1"
        )
    )
    assert _bean_check(broken).returncode != 0


def test_the_general_ledger_csv_bills_what_the_invoices_say(demo_db: Demo) -> None:
    result = meterline("journal", "--db", str(demo_db.db), "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sum(D(r["debit"]) for r in rows) == sum(D(r["credit"]) for r in rows)
    # what was billed is still owed, was collected, or is held as the customer's credit
    # (the demo records payments and a partial credit note after the close)
    collected = ("assets:accounts_receivable", "assets:cash", "liabilities:customer_credit")
    billed = sum(D(r["debit"]) - D(r["credit"]) for r in rows if r["account"] in collected)
    with open_billing(demo_db.db) as billing:
        notes = sum(
            (D(decode_exact(n.document)["total"]) for n in billing.store.credit_notes()), D(0)
        )
    assert billed == _invoice_totals(demo_db) + notes
    causes = {r["cause"].split("/")[0] for r in rows}
    assert any(c.startswith("invoice:INV-") for c in causes)
    assert any(c.startswith("grant:stark-agents") for c in causes)
    breakage = [r for r in rows if r["account"] == "revenue:breakage"]
    assert breakage, "the demo's proportional and expiry breakage are in the journal"


def test_the_monthly_summary_journal_sums_the_daily_one(demo_db: Demo) -> None:
    monthly = meterline("journal", "--db", str(demo_db.db), "--format", "csv", "--monthly")
    daily = meterline("journal", "--db", str(demo_db.db), "--format", "csv")
    assert monthly.returncode == 0 and daily.returncode == 0, monthly.stderr
    summary = list(csv.DictReader(io.StringIO(monthly.stdout)))
    rows = list(csv.DictReader(io.StringIO(daily.stdout)))
    assert summary and len(summary) < len(rows)
    assert all(r["entry_id"].startswith("summary:") for r in summary)
    for account in {r["account"] for r in rows}:
        net = sum(D(r["debit"]) - D(r["credit"]) for r in rows if r["account"] == account)
        summed = sum(D(r["debit"]) - D(r["credit"]) for r in summary if r["account"] == account)
        assert net == summed, account


def test_revenue_reports_roll_forward_and_add_up(demo_db: Demo) -> None:
    result = meterline("revenue", "--db", str(demo_db.db), "--json")
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert reports["rollforward"], "prepaid credit is deferred"
    for row in reports["rollforward"]:
        assert D(row["opening"]) + D(row["billed"]) - D(row["recognized"]) == D(row["closing"])
    totals = reports["trial_balance_totals"]
    assert totals["debit"] == totals["credit"]
    revenue = sum(D(row["total"]) for row in reports["waterfall"])
    months = sum(D(value) for value in reports["waterfall_totals"].values())
    assert revenue == months > 0
    october = meterline("revenue", "--db", str(demo_db.db), "--month", "2026-10", "--json")
    assert {row["month"] for row in json.loads(october.stdout)["rollforward"]} == {"2026-10"}
    wrong = meterline("revenue", "--db", str(demo_db.db), "--month", "October")
    assert wrong.returncode == 2 and "--month" in wrong.stderr


def _closes(bridge: dict[str, Any]) -> bool:
    lines = sum((D(line["amount"]) for line in bridge["lines"]), D(0))
    return D(bridge["from"]["amount"]) + lines == D(bridge["to"]["amount"])


def _month_revenue(demo: Demo, month: str) -> D:
    reports = json.loads(meterline("revenue", "--db", str(demo.db), "--json").stdout)
    return sum((D(row["months"].get(month, "0")) for row in reports["waterfall"]), D(0))


def test_the_october_bridges_close_to_the_cent(demo_db: Demo) -> None:
    """October's three figures: list-price charges (economics) -> billed for its periods
    -> recognized (the waterfall), each bridge line by line, closing to the cent."""
    db = str(demo_db.db)
    result = meterline(
        "revenue", "--db", db, "--bridge", "2026-10", "--billed", "period", "--charges", "--json"
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    (to_recognized,) = answer["bridges"]
    (to_billed,) = answer["charges_bridges"]
    assert _closes(to_recognized) and _closes(to_billed)
    assert D(to_recognized["to"]["amount"]) == _month_revenue(demo_db, "2026-10") > 0
    assert to_billed["to"] == {"figure": "billed", "amount": to_recognized["from"]["amount"]}
    economics = json.loads(
        meterline("economics", "--db", db, "--period", "2026-10-01", "--json").stdout
    )
    charged = sum((D(row["list_price_charges"]) for row in economics), D(0))
    assert D(to_billed["from"]["amount"]) == charged
    reasons = {line["reason"] for line in to_recognized["lines"]}
    assert {TAX, CREDIT_BOUGHT, CREDIT_CONSUMED} <= reasons
    for line in to_recognized["lines"] + to_billed["lines"]:
        assert line["causes"] and D(line["amount"]) != 0, line
    table = " ".join(meterline("revenue", "--db", db, "--bridge", "2026-10").stdout.split())
    assert "billed (invoiced in it) to recognized" in table and "= recognized" in table


def test_what_was_invoiced_in_november_bridges_to_its_revenue(demo_db: Demo) -> None:
    """Billed = the invoices finalized and credit notes issued in November (all of them on
    the demo's clock), bridged to November's revenue."""
    db = str(demo_db.db)
    result = meterline("revenue", "--db", db, "--bridge", "2026-11", "--json")
    assert result.returncode == 0, result.stderr
    (bridge,) = json.loads(result.stdout)["bridges"]
    store = BillingStore(demo_db.db)
    try:
        notes = sum((D(n.record.total) for n in store.credit_notes()), D(0))
    finally:
        store.close()
    assert D(bridge["from"]["amount"]) == _invoice_totals(demo_db) + notes
    assert D(bridge["to"]["amount"]) == _month_revenue(demo_db, "2026-11")
    assert _closes(bridge)
    assert USAGE_BILLED in {line["reason"] for line in bridge["lines"]}
    wrong = meterline("revenue", "--db", db, "--bridge", "2026-11", "--billed", "weekly")
    assert wrong.returncode == 2 and "--billed" in wrong.stderr
    bad_month = meterline("revenue", "--db", db, "--bridge", "November")
    assert bad_month.returncode == 2 and "--bridge" in bad_month.stderr


EXPONENT = re.compile(r"\d(\.\d+)?[eE][+-]\d")
DECIMALS = re.compile(r"(?<![\w.:-])-?\d[\d,]*\.(\d+)(?![\w.])")
"""A number with a fractional part, capturing its digits after the point."""


def test_tables_show_usd_amounts_in_cents_while_json_stays_exact(demo_db: Demo) -> None:
    """revenue/economics/journal tables: cents, no exponent, the --json figures rounded."""
    db = str(demo_db.db)
    exact = json.loads(meterline("revenue", "--db", db, "--json").stdout)
    tables = {
        "revenue": meterline("revenue", "--db", db).stdout,
        "economics": meterline("economics", "--db", db, "--by", "model").stdout,
        "journal": meterline("journal", "--db", db).stdout,
    }
    for name, table in tables.items():
        assert not EXPONENT.search(table), (name, EXPONENT.search(table))
        fractions = [match.group(1) for match in DECIMALS.finditer(table)]
        assert fractions, name
        if name == "economics":  # margin % is the one figure at one place
            fractions = [digits for digits in fractions if len(digits) != 1]
        assert all(len(digits) == 2 for digits in fractions), (name, fractions)
    revenue = " ".join(tables["revenue"].split())
    for row in exact["waterfall"]:
        assert display_amount(row["total"], row["currency"]) in revenue, row
    for row in exact["rollforward"]:
        assert display_amount(row["closing"], row["currency"]) in revenue, row


def test_unit_economics_flags_negative_margins(demo_db: Demo) -> None:
    result = meterline(
        "economics", "--db", str(demo_db.db), "--by", "customer", "--period", "2026-10-01", "--json"
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 10
    for row in rows:
        assert D(row["revenue"]) - D(row["cost"]) == D(row["margin"])
        assert row["negative"] == (D(row["margin"]) < 0)
    billed = {
        i.customer: D(decode_exact(i.document)["total"])
        for i in _invoices(demo_db)
        if i.kind == "period" and decode_exact(i.document)["period"]["label"] == "2026-10-01"
    }
    assert any(row["negative"] for row in rows)
    assert sum(D(r["cost"]) for r in rows) > 0 and set(billed) <= {r["customer"] for r in rows}
    # margin is on recognized revenue: October's rows sum to what the journal recognized
    # in October, and the list-price charges (which credits paid part of) stand beside it
    reports = json.loads(
        meterline("revenue", "--db", str(demo_db.db), "--month", "2026-10", "--json").stdout
    )
    october = sum((D(row["months"].get("2026-10", "0")) for row in reports["waterfall"]), D(0))
    assert sum(D(row["revenue"]) for row in rows) == october
    assert sum(D(row["list_price_charges"]) for row in rows) > october
    by_model = json.loads(
        meterline("economics", "--db", str(demo_db.db), "--by", "product,model", "--json").stdout
    )
    assert {"chat", "fine-tuning", "agents"} <= {row["product"] for row in by_model}
    bad = meterline("economics", "--db", str(demo_db.db), "--by", "colour")
    assert bad.returncode == 2 and "--by" in bad.stderr


def test_reconcile_proves_one_truth_and_names_a_tampered_step(
    demo_db: Demo, tmp_path: Path
) -> None:
    result = meterline("reconcile", "--db", str(demo_db.db), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    chain = json.loads(result.stdout)["chain"]
    assert chain["agrees"]
    assert {c["step"] for c in chain["checks"]} == {
        "events",
        "rated usage",
        "invoices",
        "journal",
        "reports",
    }
    [unbilled] = [c for c in chain["checks"] if "unbilled receivable at period ends" in c["figure"]]
    assert unbilled["agrees"] and unbilled["value"] == "equal", unbilled
    [(stored,)] = rows(demo_db.db, "SELECT document FROM invoices WHERE invoice_id = 'INV-000001'")
    document = decode_exact(stored)
    usage = next(
        line for line in document["lines"] if line["kind"] == "usage" and line["amount"] != "0.00"
    )
    usage["amount"] = str(D(usage["amount"]) + D("1.00"))
    with _tampered_invoice(demo_db, tmp_path, json.dumps(document).encode()) as tampered:
        failed = meterline("reconcile", "--db", str(tampered), "--json")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    checks = json.loads(failed.stdout)["chain"]["checks"]
    differing = {c["figure"] for c in checks if not c["agrees"]}
    assert "invoices whose usage lines differ from a re-rating" in differing
    assert any("sum of lines" in figure for figure in differing)


def test_live_unit_economics_come_from_the_projection(demo_db: Demo) -> None:
    result = meterline("economics", "--db", str(demo_db.db), "--live", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["customer"]: row for row in json.loads(result.stdout)}
    hooli = rows["hooli-search"]  # the rogue agent's November usage, live
    # live: charges at list price so far; nothing is recognized before the invoice
    assert D(hooli["list_price_charges"]) > 0 and D(hooli["cost"]) > 0
    assert D(hooli["revenue"]) == 0
    assert D(hooli["revenue"]) - D(hooli["cost"]) == D(hooli["margin"])
    live_show = json.loads(
        meterline("live", "show", "hooli-search", "--db", str(demo_db.db), "--json").stdout
    )
    assert D(hooli["list_price_charges"]) == round_amount(D(live_show["spend"]), "USD")
    refused = meterline("economics", "--db", str(demo_db.db), "--live", "--by", "model")
    assert refused.returncode == 2 and "--by" in refused.stderr
