"""A month's bridges (core.revenue_bridge) over hand-made invoices and grants: billed to
recognized names each reason with its amount and causes and closes to the cent;
list-price charges to billed likewise; a billed figure the journal does not bill fails."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D
from typing import Any

import pytest

from meterline.core.books import credit_note_entries, document_entries
from meterline.core.documents import Invoice
from meterline.core.journal import UNBILLED, JournalEntry
from meterline.core.revenue_bridge import (
    BREAKAGE,
    CREDIT_BOUGHT,
    CREDIT_CONSUMED,
    CREDIT_NOTES,
    CREDITS_APPLIED,
    FEES_BILLED_AHEAD,
    FEES_RECOGNIZED,
    NOT_BILLED_YET,
    PURCHASED_ON_INVOICE,
    TAX,
    USAGE_BILLED,
    USAGE_EARNED,
    Bridge,
    BridgeError,
    charges_bridge,
    revenue_bridge,
)
from meterline.core.revrec import CreditTerms, Movement, credit_entries
from tests.support.documents import credit_note_of, invoice_of

OCTOBER = {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
NOVEMBER = {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
OCTOBER_DAYS = (date(2026, 10, 1), date(2026, 10, 31))
NOVEMBER_DAYS = (date(2026, 11, 1), date(2026, 11, 30))


def _invoice(number: str, period: dict[str, str], lines: list[dict[str, Any]]) -> Invoice:
    return invoice_of({"number": number, "period": period, "lines": lines})


def _kinds(*documents: Invoice) -> dict[str, str]:
    return {
        f"invoice:{d.number}/line:{line.number}": line.kind for d in documents for line in d.lines
    }


def _lines(bridge: Bridge) -> dict[str, tuple[D, tuple[str, ...]]]:
    return {line.reason: (line.amount, line.causes) for line in bridge.lines}


def _books() -> tuple[list[JournalEntry], Invoice, Invoice]:
    """October: a 30.00 fee billed in advance on October 1st; its usage (100.00), tax
    (7.25) and a 54.00 credit pack billed on November 2nd. The pack's 60 credits: 20
    consumed in October, 10 in November, the rest expire (breakage) on November 30th."""
    fee = _invoice(
        "INV-000001",
        OCTOBER,
        [{"kind": "fee", "amount": "31.00", "service": OCTOBER}],
    )
    usage = _invoice(
        "INV-000002",
        OCTOBER,
        [
            {"kind": "usage", "amount": "100.00", "service": OCTOBER},
            {"kind": "tax", "amount": "7.25"},
            {"kind": "purchase", "amount": "54.00", "grant": "pack"},
            {"kind": "credit", "amount": "-20.00", "unit": "credits", "grant": "pack"},
        ],
    )
    entries = document_entries(fee, date(2026, 10, 1), "invoice:INV-000001")
    entries += document_entries(usage, date(2026, 11, 2), "invoice:INV-000002")
    pack = CreditTerms("acme/pack", "acme", "credits", D(60), D(54), "USD", date(2026, 10, 1))
    movements = [
        Movement(date(2026, 10, 20), "acme/pack", "consume", D(20), cause="grant:acme/pack/usage"),
        Movement(date(2026, 11, 10), "acme/pack", "consume", D(10), cause="grant:acme/pack/usage"),
        Movement(date(2026, 11, 30), "acme/pack", "expire", D(30), cause="grant:acme/pack/expire"),
    ]
    credit, _ = credit_entries([pack], movements, purchase_account=UNBILLED)
    return sorted(entries + credit, key=lambda e: (e.day, e.entry_id)), fee, usage


def test_october_bills_the_fee_and_recognizes_fee_usage_and_credits() -> None:
    entries, fee, usage = _books()
    (bridge,) = revenue_bridge(entries, _kinds(fee, usage), {"USD": D("31.00")}, *OCTOBER_DAYS)
    # the fee is billed and recognized in October (nets to nothing); the usage is
    # delivered in October and billed in November; 20 credits at 0.90 earn 18.00 while
    # the credit line takes their usage revenue (20.00) back
    assert (bridge.start, bridge.end) == (D("31.00"), D("31.00") + D("80.00") + D("18.00"))
    assert _lines(bridge) == {
        USAGE_EARNED: (D("100.00"), ("invoice:INV-000002/line:1",)),
        CREDITS_APPLIED: (D("-20.00"), ("invoice:INV-000002/line:4",)),
        CREDIT_CONSUMED: (D("18.00"), ("grant:acme/pack",)),
    }


def test_november_bills_tax_and_the_pack_and_recognizes_consumption_and_breakage() -> None:
    entries, fee, usage = _books()
    billed = {"USD": D("100.00") + D("7.25") + D("54.00") - D("20.00")}
    (bridge,) = revenue_bridge(entries, _kinds(fee, usage), billed, *NOVEMBER_DAYS)
    lines = _lines(bridge)
    assert lines[TAX] == (D("-7.25"), ("invoice:INV-000002/line:2",))
    assert lines[CREDIT_BOUGHT] == (D("-54.00"), ("invoice:INV-000002/line:3",))
    assert lines[USAGE_BILLED] == (D("-100.00"), ("invoice:INV-000002/line:1",))
    assert lines[CREDITS_APPLIED] == (D("20.00"), ("invoice:INV-000002/line:4",))
    assert lines[CREDIT_CONSUMED] == (D("9.00"), ("grant:acme/pack",))
    assert lines[BREAKAGE] == (D("27.00"), ("grant:acme/pack",))
    assert bridge.end == D("36.00")  # 10 credits consumed and 30 expired, at 0.90
    assert bridge.start + sum(line.amount for line in bridge.lines) == bridge.end


def test_on_the_period_basis_october_bills_its_invoices_whenever_finalized() -> None:
    entries, fee, usage = _books()
    billed = {"USD": D("31.00") + D("141.25")}
    documents = {"invoice:INV-000001", "invoice:INV-000002"}
    (bridge,) = revenue_bridge(
        entries, _kinds(fee, usage), billed, *OCTOBER_DAYS, documents=documents
    )
    lines = _lines(bridge)
    assert set(lines) == {TAX, CREDIT_BOUGHT, CREDIT_CONSUMED}  # usage nets: no timing
    assert lines[CREDIT_CONSUMED][0] - D("54.00") - D("7.25") == bridge.end - bridge.start


def test_a_fee_billed_ahead_is_deferred_and_recognized_in_the_next_month() -> None:
    fee = _invoice(
        "INV-000003", NOVEMBER, [{"kind": "fee", "amount": "30.00", "service": NOVEMBER}]
    )
    entries = document_entries(fee, date(2026, 10, 25), "invoice:INV-000003")
    (october,) = revenue_bridge(entries, _kinds(fee), {"USD": D("30.00")}, *OCTOBER_DAYS)
    assert _lines(october) == {FEES_BILLED_AHEAD: (D("-30.00"), ("invoice:INV-000003/line:1",))}
    assert october.end == 0
    (november,) = revenue_bridge(entries, _kinds(fee), {}, *NOVEMBER_DAYS)
    assert _lines(november) == {FEES_RECOGNIZED: (D("30.00"), ("invoice:INV-000003/line:1",))}


def test_a_credit_note_reverses_billing_on_its_day() -> None:
    entries, fee, usage = _books()
    note = credit_note_of(
        {"number": "CN-000001", "void": False, "lines": [{"number": 1, "kind": "adjustment",
                                                          "amount": "-10.00"}]}
    )  # fmt: skip
    entries += credit_note_entries(note, usage, date(2026, 11, 20))
    billed = {"USD": D("141.25") - D("10.00")}
    (bridge,) = revenue_bridge(entries, _kinds(fee, usage), billed, *NOVEMBER_DAYS)
    # billed and recognized on the note's day alike: no difference to explain
    assert CREDIT_NOTES not in _lines(bridge)
    assert bridge.end == D("36.00") - D("10.00")


def test_a_billed_figure_the_journal_does_not_bill_does_not_close() -> None:
    entries, fee, usage = _books()
    with pytest.raises(BridgeError, match="not recognized"):
        revenue_bridge(entries, _kinds(fee, usage), {"USD": D("31.01")}, *OCTOBER_DAYS)


def test_list_price_charges_bridge_to_billed_by_line_kind() -> None:
    charges = {
        "invoice:INV-000002/line:1": D("100.00"),
        "draft:acme/2026-10-01": D("12.50"),
    }
    billed_lines = {
        "invoice:INV-000002/line:1": ("usage", D("100.00")),
        "invoice:INV-000002/line:2": ("tax", D("7.25")),
        "invoice:INV-000002/line:3": ("purchase", D("54.00")),
        "invoice:INV-000002/line:4": ("credit", D("-20.00")),
    }
    bridge = charges_bridge(charges, billed_lines, D("141.25"), "USD", *OCTOBER_DAYS)
    assert (bridge.start_name, bridge.start, bridge.end_name) == (
        "list-price charges",
        D("112.50"),
        "billed",
    )
    assert _lines(bridge) == {
        TAX: (D("7.25"), ("invoice:INV-000002/line:2",)),
        CREDITS_APPLIED: (D("-20.00"), ("invoice:INV-000002/line:4",)),
        NOT_BILLED_YET: (D("-12.50"), ("draft:acme/2026-10-01",)),
        PURCHASED_ON_INVOICE: (D("54.00"), ("invoice:INV-000002/line:3",)),
    }
    with pytest.raises(BridgeError, match="not billed"):
        charges_bridge(charges, billed_lines, D("141.26"), "USD", *OCTOBER_DAYS)
