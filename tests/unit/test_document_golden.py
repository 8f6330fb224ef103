"""Golden invoices: the canonical bytes of invoices of every shape are pinned by hash.

Stored ledgers hold invoice hashes (tamper evidence, ``audit``'s rebuild), so the bytes an
invoice encodes to must never change: these hashes were recorded from the documents as
they were built before invoices became typed records (``core.documents``), and each case
must still build to exactly those bytes.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import msgspec
import pytest

from meterline.core.coupons import Coupon
from meterline.core.cuts import Cut
from meterline.core.documents import (
    AdjustmentLine,
    CommitmentLine,
    MeterUsageLine,
    decode_invoice,
    document_bytes,
)
from meterline.core.events import timestamp_to_us
from meterline.core.invoicing import Adjustment, ExtraLine, InvoiceHeader, build_invoice
from meterline.core.invoicing import invoice_bytes as canonical_bytes
from meterline.core.model import segments
from meterline.core.periods import BillingPeriod
from meterline.core.rating import Rater
from meterline.core.tax import TaxRate
from meterline.core.trials import Trial
from tests.unit.test_invoice_coupons_tax import october_invoice, table
from tests.unit.test_invoicing import (
    DISCOUNTED,
    OCTOBER,
    STRIPE,
    _with_extra,
    configuration,
    invoice,
)
from tests.unit.test_trials import november, with_trial

APRIL = BillingPeriod(
    timestamp_to_us(datetime(2026, 4, 1, tzinfo=UTC)),
    timestamp_to_us(datetime(2026, 5, 1, tzinfo=UTC)),
)
DAY_US = 86_400_000_000

TINY = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: tiny
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees: [{key: seat, name: Seat, amount: "0.0000001", kind: one_off}]
        prices: [{meter: tokens, model: per_unit, unit_amount: "0.00000013"}]
contracts:
  - {customer: c, plan: tiny, start: 2026-10-01}
"""


def _tiny_with_commitment_and_adjustment() -> Any:
    """Amounts far below a cent (exact text without exponent), a commitment true-up, a
    late-usage adjustment and a credits section, finalized with a number."""
    config = configuration(TINY)
    contract = config.contract("c")
    assert contract is not None
    spans = segments(config, contract, OCTOBER.start_us, OCTOBER.end_us)
    rater = Rater(config, spans)
    rater.add(1, OCTOBER.start_us + DAY_US, "llm", {"tokens": 3}, hashlib.sha256(b"1").digest())
    header = InvoiceHeader(
        "c", "USD", "UTC", OCTOBER, 7, "ab", Cut((1, 5)), "INV-000042", OCTOBER.end_us + 1
    )
    adjusts = {
        "invoice": "INV-000001",
        "from": [3],
        "through": [9],
        "billed_total": "10.00",
        "rerated_total": "11.234",
    }
    adjustment = Adjustment("Late usage for 2026-09", D("1.234"), adjusts, 2, 8, 9, bytes(32))
    credits = {"grants": [{"grant": "g1", "remaining": "12.5"}], "unit": "credits"}
    return build_invoice(
        header,
        spans,
        rater.lines("USD", config),
        [adjustment],
        config,
        minimum_commit=D("50"),
        credits=credits,
    )


def _extras() -> Any:
    """Lines decided outside rating: credits, carried, overage, purchase, a capped prepaid."""
    return _with_extra(
        [
            ExtraLine(
                "credit",
                "Credits applied",
                D("-3.333"),
                0,
                {"grant": "g", "unit": "credits", "units": "333.3", "unit_value": "0.01"},
            ),
            ExtraLine("carried", "Carried", D("-0.5"), 0, {"unit": "credits", "units": "50"}),
            ExtraLine(
                "overage",
                "Overage",
                D("1.1"),
                0,
                {"unit": "credits", "units": "10", "unit_value": "0.01", "overage_price": "0.12"},
            ),
            ExtraLine("purchase", "Prepaid credit", D("20"), None, {"grant": "g2", "unit": "USD"}),
            ExtraLine(
                "prepaid",
                "Billed early",
                D("-99.00"),
                None,
                {"invoice": "INV-000003", "billed_early": "99.00", "from_period": "2026-09-01"},
            ),
        ]
    )


def _discounted() -> Any:
    day = OCTOBER.start_us + DAY_US
    events = [
        (1, day, "tool.call", {}),
        (2, day, "tool.call", {}),
        (3, day, "llm", {"model": "big", "tokens": 12}),
        (4, day, "llm", {"model": "small", "tokens": 7}),
    ]
    return invoice(configuration(DISCOUNTED), "c", OCTOBER, events)


def _coupon_and_tax() -> Any:
    quarter = Coupon("Q25", "Quarter off", percent_off=D(25), duration="forever")
    sales = TaxRate("Sales tax", D("7.25"), jurisdiction="US-CA")
    return october_invoice([quarter], table(sales))


def _amount_coupon_and_inclusive_vat() -> Any:
    five = Coupon("FIVE", "Five off", amount_off=D(5), currency="USD", duration="forever")
    vat = TaxRate("VAT", D(19), inclusive=True, jurisdiction="US-CA")
    return october_invoice([five], table(vat))


def _trial() -> Any:
    start = timestamp_to_us(datetime(2026, 11, 11, tzinfo=UTC))
    return november(with_trial(Trial(14)), [(start + DAY_US, 500), (start + 16 * DAY_US, 300)])


CASES = {
    "upgrade": (
        lambda: invoice(configuration(STRIPE), "c", APRIL, []),
        "7e8cc40fd3513c25d62ca4a4016974272f2eb90e0a34b48f8d5121f4f376bb7d",
    ),
    "tiers, credit types, discount": (
        _discounted,
        "455e1b0da1c98111116bbc12f2970d2e8df60f5a203cca2c1f809a071bf4366b",
    ),
    "coupon, exclusive tax": (
        _coupon_and_tax,
        "4cb8d55bdc7ad397b9b161d8feb21b0d5e91e5c5610c04cc249b4a09d08203cb",
    ),
    "amount coupon, inclusive tax": (
        _amount_coupon_and_inclusive_vat,
        "25089e86f9ccdf1b59c98bc5aa66fb9584631dfa5bb60fbab773ce891cf54451",
    ),
    "trial": (_trial, "cfd9f7ac254ca34876c863a2a7eb4867eb7ef03993d5397a9b8dc22459aa6891"),
    "credits, overage, carried, purchase, capped prepaid": (
        _extras,
        "d8f47c42fcbacadd02e7327f177f0bc03848c9f32ef1d8e3072ff78ab4771ff8",
    ),
    "tiny amounts, commitment, adjustment, credits section": (
        _tiny_with_commitment_and_adjustment,
        "3b2b1187f0b1cfb570af0abeda1cf7c51b6202246a80ca3034a4fb8b5b2b1682",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_invoice_bytes_are_those_recorded_before_typed_documents(name: str) -> None:
    """Each invoice shape still encodes to the very bytes recorded before the change."""
    build, recorded = CASES[name]
    assert hashlib.sha256(canonical_bytes(build())).hexdigest() == recorded


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_shape_decodes_typed_to_its_very_bytes(name: str) -> None:
    """Stored bytes decode to a typed record that encodes back to exactly those bytes."""
    data = canonical_bytes(CASES[name][0]())
    assert document_bytes(decode_invoice(data)) == data


def test_exact_amounts_keep_their_spelling_and_stay_decimal() -> None:
    """A sub-cent exact amount is written positionally, a price in exponent notation as it
    was; both read back as Decimals that do arithmetic and print as the document spells."""
    document = _tiny_with_commitment_and_adjustment()
    fee, usage, commitment, adjustment = document.lines
    assert isinstance(usage, MeterUsageLine) and isinstance(adjustment, AdjustmentLine)
    assert isinstance(commitment, CommitmentLine) and str(commitment.spent) == "0.00000039"
    assert str(fee.amount_exact) == "0.0000001" and fee.amount_exact * 10 == D("0.000001")
    assert usage.price["unit_amount"] == "1.3E-7"
    assert f"{usage.amount_exact}" == "0.00000039"
    assert adjustment.adjusts.rerated_total == D("11.234")
    assert document.total == D("51.23") and str(document.total) == "51.23"


def test_a_document_with_a_field_it_does_not_know_is_refused() -> None:
    """Decoding refuses an unknown field rather than dropping it from the bytes (a hash
    would silently change): a tampered or future document is named, not rewritten."""
    data = canonical_bytes(_coupon_and_tax())
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode_invoice(data.replace(b'"kind":"tax"', b'"kind":"tax","surprise":1'))


def test_a_document_written_before_cuts_reads_and_keeps_its_bytes() -> None:
    """Invoices written before ledger cuts record ``through_sequence`` (the ledger and a
    late-usage adjustment): they decode, read as single-partition cuts and keep their bytes."""
    current = canonical_bytes(_tiny_with_commitment_and_adjustment())
    older = (
        current.replace(b'"ledger":{"through":[1,5]}', b'"ledger":{"through_sequence":5}')
        .replace(b'"from":[3],', b'"from_sequence":3,')
        .replace(b'"through":[9]}', b'"through_sequence":9}')
    )
    assert older != current
    document = decode_invoice(older)
    assert document_bytes(document) == older
    adjustment = document.lines[-1]
    assert isinstance(adjustment, AdjustmentLine)
    assert (document.through(), adjustment.adjusts.after(), adjustment.adjusts.until()) == (5, 3, 9)
