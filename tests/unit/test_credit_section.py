"""An invoice's credits section as typed records: written as the plain data it always was,
read back typed, and the charges it keeps replay as the very charges billed."""

from __future__ import annotations

import json
from decimal import Decimal as D

from msgspec import UNSET

from meterline.billing.credits import charge_record, entry_record, stored_charges
from meterline.core.credits import Charge, Entry
from meterline.core.documents import (
    CreditGrantBalance,
    CreditsSection,
    Invoice,
    decimal_text,
    decode_invoice,
    document_bytes,
    record_data,
)

CHARGE = Charge(1_000, 2_000, "0/usage/tokens", "tokens", "credits", D("12.50"), 3, 9)
ENTRY = Entry(1_500, "consume", "credits", D("1E+2"), "usage", "grant:g1", "g1", "usage")
BALANCE = CreditGrantBalance(
    grant="g1",
    unit="credits",
    amount=decimal_text(D("1000")),
    paid=decimal_text(D("9.00")),
    priority=10,
    effective="2026-10-01T00:00:00Z",
    expires=None,
    scope=["tokens"],
    source="contract",
    opening=decimal_text(D("1000")),
    closing=decimal_text(D("900")),
)


def _invoice(credits: object) -> Invoice:
    return Invoice(
        number=None,
        status="draft",
        customer="acme",
        currency="USD",
        timezone="UTC",
        lines=[],
        total=decimal_text(D("0.00")),
        finalized_at=None,
        credits=credits,  # type: ignore[arg-type]
    )


def test_the_section_is_written_as_plain_data_in_the_shape_it_always_had() -> None:
    """Charges are arrays, amounts their exact text, entries keyed as before (``at``)."""
    section = CreditsSection(
        overage="bill",
        grants=[BALANCE],
        entries=[entry_record(ENTRY)],
        charges=[charge_record(CHARGE)],
    )
    data = record_data(section)
    assert data["charges"] == [[1_000, 2_000, "0/usage/tokens", "tokens", "credits", "12.50", 3, 9]]
    [entry] = data["entries"]
    assert list(entry)[-1] == "at" and "at_us" not in entry and entry["amount"] == "1E+2"
    assert data["grants"][0]["paid"] == "9.00" and data["grants"][0]["expires"] is None
    assert json.loads(json.dumps(data)) == data


def test_a_stored_section_reads_back_typed_and_replays_its_charges() -> None:
    """Bytes decode to the section's records; the kept charges are the charges billed."""
    section = CreditsSection(
        overage="bill",
        grants=[BALANCE],
        entries=[entry_record(ENTRY)],
        charges=[charge_record(CHARGE)],
    )
    stored = document_bytes(_invoice(record_data(section)))
    document = decode_invoice(stored)
    assert document_bytes(document) == stored
    assert document.credit_section() == section
    assert stored_charges(document) == [CHARGE]


def test_an_invoice_without_credits_has_no_section_and_no_charges() -> None:
    """No section (or an empty one) reads as none: nothing to replay."""
    for credits in (UNSET, {}):
        document = decode_invoice(document_bytes(_invoice(credits)))
        assert document.credit_section() is None and stored_charges(document) == []
