"""The CLI's Rich tables (billing and finance renderers) show amounts as money: at the
currency's minor unit, credits exactly, never exponent notation; the documents they are
given stay exact.

Each table is printed to a wide in-memory console and read back as plain text.
"""

from __future__ import annotations

import io
import re
from decimal import Decimal as D
from typing import Any

from rich.console import Console
from rich.table import Table

from meterline.billing.render import (
    credit_totals_table,
    credits_table,
    invoice_table,
    simulation_table,
)
from meterline.billing.service import ApplyReport
from meterline.core.economics import Margin
from meterline.finance.render import margin_table, revenue_tables, truth_table
from meterline.finance.truth import TruthReport
from tests.support.documents import invoice_of

EXPONENT = re.compile(r"\d(\.\d+)?[eE][+-]\d")
BOX = re.compile("[\u2500-\u257f]")
"""Box-drawing characters (the table's lines)."""


def text(table: Table) -> str:
    """The table as the terminal shows it, whitespace collapsed."""
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(table)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert not EXPONENT.search(output), EXPONENT.search(output)
    return " ".join(BOX.sub(" ", output).split())


def test_an_invoice_table_shows_cents_quantities_and_credit_units() -> None:
    """Line amounts and the total at USD's two places; quantities and units plain."""
    document = invoice_of({
        "number": "INV-1",
        "period": {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
        "total": "30.4800000",
        "lines": [
            {"kind": "usage", "description": "tokens", "quantity": "1.2E+6",
             "amount": "15011.3476752"},
            {"kind": "credit", "description": "credits applied", "amount": "-0E-7",
             "unit": "credits", "units": "2000.000"},
            {"kind": "fee", "description": "platform fee", "amount": "-12.3"},
        ],
    })  # fmt: skip
    shown = text(invoice_table(document, lineage=False))
    assert "tokens 1,200,000 15,011.35" in shown
    assert "credits applied (2,000 credits) 0.00" in shown
    assert "platform fee -12.30" in shown
    assert "total 30.48" in shown
    assert str(document.total) == "30.4800000"  # the document itself is untouched


def test_a_simulation_shows_before_after_and_difference_in_cents() -> None:
    """Re-rated totals read in their currency; the difference keeps its sign."""
    report = ApplyReport(
        dry_run=True,
        revision=None,
        changes=[],
        customers_affected=["acme", "globex"],
        simulation=[
            {"customer": "acme", "currency": "USD", "before": "100", "after": "112.345",
             "difference": "12.345"},
            {"customer": "globex", "currency": "JPY", "before": "0E-7", "after": "0",
             "difference": "-0E-7"},
        ],
        simulated_period="2026-10",
    )  # fmt: skip
    shown = text(simulation_table(report))
    assert "acme 100.00 USD 112.35 USD 12.35" in shown
    assert "globex 0 JPY 0 JPY 0" in shown


def test_credit_tables_show_units_exactly_and_paid_in_the_plan_currency() -> None:
    """Credits read trimmed (19,999.5), paid in cents when the currency is known."""
    report = {
        "customer": "acme",
        "as_of": "2026-10-15T00:00:00Z",
        "overage": "bill",
        "grants": [
            {"grant": "pool@2026-10", "unit": "credits", "priority": 50, "amount": "20000.000",
             "paid": "180.5", "balance": "19999.500", "effective": "2026-10-01T00:00:00Z",
             "expires": None, "resets": "2026-11-01T00:00:00Z", "status": "active"},
            {"grant": "commit", "unit": "USD", "priority": 10, "amount": "20000",
             "paid": "18000", "balance": "0E-7", "effective": "2026-10-01T00:00:00Z",
             "expires": None, "resets": None, "status": "exhausted"},
        ],
        "totals": {
            "credits": {"granted": "20000.000", "consumed": "0.500", "expired": "0E-7",
                        "voided": "0", "remaining": "19999.500", "overage": "0",
                        "carried": "0"},
            "USD": {"granted": "20000", "consumed": "20000.0000000", "expired": "0",
                    "voided": "0", "remaining": "0E-7", "overage": "1.005", "carried": "0"},
        },
    }  # fmt: skip
    shown = text(credits_table(report, "USD"))
    assert "pool@2026-10 credits 50 20,000 180.50 19,999.5" in shown
    assert "commit USD 10 20,000.00 18,000.00 0.00" in shown
    assert "180.5 19,999.5" in text(credits_table(report))  # no currency: paid exactly
    totals = text(credit_totals_table(report))
    assert "credits 20,000 0.5 0 0 19,999.5 0 0" in totals
    assert "USD 20,000.00 20,000.00 0.00 0.00 0.00 1.01 0.00" in totals


def test_a_margin_table_shows_cents_and_percent_at_one_place() -> None:
    """Revenue, COGS and margin in the row's currency; margin % at one place."""
    rows = [
        Margin(("acme",), "USD", D("15011.3476752"), D("0E-7"), 3),
        Margin(("globex",), "USD", D("1.005"), D("2.0000000"), 1),
    ]
    shown = text(margin_table(rows, ["customer"], "margins"))
    assert "acme 15,011.35 USD 0.00 15,011.35 100.0%" in shown
    assert "globex 1.01 USD 2.00 -1.00 -99.0%" in shown  # -0.995 reads -1.00 (half-up)
    assert "negative margin" in shown


def test_an_open_or_live_margin_reads_at_list_price() -> None:
    """An open period is marked, not flagged, while its charges cover its cost; the live
    table shows charges, COGS and the margin on them (nothing is recognized live)."""
    covered = Margin(("acme",), "USD", D(0), D("4.00"), 3, D("10.00"), True)
    uncovered = Margin(("initech",), "USD", D(0), D("3.00"), 1, D("1.00"), True)
    shown = text(margin_table([covered], ["customer"], "margins"))
    assert "acme 0.00 USD 4.00 -4.00 10.00 open period" in shown
    assert "negative margin" not in shown
    live = text(margin_table([covered, uncovered], ["customer"], "live", live=True))
    assert "margin at list price" in live
    assert "acme 10.00 USD 4.00 6.00 60.0%" in live
    assert "initech 1.00 USD 3.00 -2.00 -200.0% negative margin" in live


def _reports(second_currency: str = "USD") -> dict[str, Any]:
    return {
        "as_of": "2026-10-31",
        "months": ["2026-10"],
        "waterfall": [
            {"account": "revenue:usage", "currency": "USD",
             "months": {"2026-10": "15011.3476752"}, "total": "15011.3476752"},
            {"account": "contra_revenue:discounts", "currency": second_currency,
             "months": {"2026-10": "-0E-7"}, "total": "-0E-7"},
        ],
        "waterfall_totals": {"2026-10": "15011.3476752"},
        "rollforward": [
            {"month": "2026-10", "account": "liabilities:deferred_revenue:credits",
             "currency": "USD", "opening": "0E-7", "billed": "30.4800000",
             "recognized": "0.0000001", "closing": "30.4799999"},
        ],
        "trial_balance": [
            {"account": "assets:accounts_receivable", "currency": "USD",
             "debit": "30.4800000", "credit": ""},
            {"account": "revenue:usage", "currency": second_currency, "debit": "",
             "credit": "30.4800000"},
        ],
        "trial_balance_totals": {"debit": "30.4800000", "credit": "30.4800000"},
    }  # fmt: skip


def test_revenue_tables_show_cents_and_exact_totals_over_several_currencies() -> None:
    """One currency: cents everywhere; a total over several currencies: exact, no exponent."""
    waterfall, rolled, trial = (text(table) for table in revenue_tables(_reports()))
    assert "revenue:usage (USD) 15,011.35 15,011.35" in waterfall
    assert "contra_revenue:discounts (USD) 0.00 0.00" in waterfall
    assert "total 15,011.35" in waterfall
    assert "(USD) 0.00 30.48 0.00 30.48" in rolled
    assert "assets:accounts_receivable (USD) 30.48" in trial and "total 30.48 30.48" in trial
    mixed = [text(table) for table in revenue_tables(_reports("EUR"))]
    assert "total 15,011.3476752" in mixed[0]
    assert "total 30.48 30.48" in mixed[2]  # trimmed, exact


def test_the_truth_table_shows_figures_exactly_without_exponents() -> None:
    """A proof's figures are exact (equal is the point), and 0E-7 reads 0."""
    truth = TruthReport()
    truth.add("journal", "unbalanced entries", D("0E-7"), 0, "")
    truth.add("reports", "waterfall total", D("15011.3476752"), D("15011.3476752"), "trial")
    shown = text(truth_table(truth))
    assert "unbalanced entries 0 0" in shown
    assert "waterfall total 15,011.3476752 15,011.3476752 trial ok" in shown
