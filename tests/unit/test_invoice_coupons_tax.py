"""Coupons and tax on a built invoice, and their journal: Stripe's examples end to end."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal as D

from meterline.core.books import document_entries
from meterline.core.coupons import Coupon, Redemption, coupons_in_force
from meterline.core.cuts import Cut
from meterline.core.documents import Invoice, TaxLine
from meterline.core.invoicing import InvoiceHeader, build_invoice, line_sum
from meterline.core.journal import CONTRA_COUPONS, CONTRA_TAX_INCLUDED, RECEIVABLE, TAX_PAYABLE
from meterline.core.model import segments
from meterline.core.periods import BillingCycle, periods_overlapping
from meterline.core.tax import TaxAsk, TaxRate
from tests.unit.test_invoicing import OCTOBER, configuration

PLAN = """\
plans:
  - key: pro
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         fees: [{key: subscription, name: Pro, amount: 100}]}
contracts:
  - {customer: c, plan: pro, start: 2026-01-01}
"""


def october_invoice(coupons: list[Coupon], tax: TaxAsk | None) -> Invoice:
    config = configuration(PLAN)
    contract = config.contract("c")
    assert contract is not None
    spans = segments(config, contract, OCTOBER.start_us, OCTOBER.end_us)
    header = InvoiceHeader("c", "USD", "UTC", OCTOBER, 1, "00", Cut((1,)))
    return build_invoice(header, spans, [], [], config, coupons=coupons, tax=tax)


def table(*rates: TaxRate) -> TaxAsk:
    config = replace(configuration(PLAN), tax_rates=rates)
    return TaxAsk(config.tax_provider(), "US-CA")


def by_kind(document: Invoice) -> dict[str, str]:
    return {line.kind: str(line.amount) for line in document.lines}


def test_a_coupon_then_exclusive_tax_on_the_discounted_amount() -> None:
    """$100 subscription, 25% coupon, 7.25% sales tax on $75: 5.44, total 80.44."""
    quarter = Coupon("Q25", "Quarter off", percent_off=D(25), duration="forever")
    sales = TaxRate("Sales tax", D("7.25"), jurisdiction="US-CA")
    document = october_invoice([quarter], table(sales))
    assert by_kind(document) == {"fee": "100.00", "coupon": "-25.00", "tax": "5.44"}
    assert str(document.total) == "80.44" and line_sum(document) == D("80.44")
    entries = document_entries(document, date(2026, 11, 1), "invoice:1")
    moved: dict[str, D] = {}
    for item in entries:
        for posting in item.postings:
            moved[posting.account] = moved.get(posting.account, D(0)) + posting.amount
    assert moved[TAX_PAYABLE] == D("-5.44")
    assert moved[CONTRA_COUPONS] == D("25.00")
    assert moved[RECEIVABLE] == D("80.44")


def test_inclusive_vat_leaves_the_total_and_moves_revenue_to_tax_payable() -> None:
    vat = TaxRate("VAT", D(20), inclusive=True, jurisdiction="US-CA")
    document = october_invoice([], table(vat))
    tax = next(line for line in document.lines if isinstance(line, TaxLine))
    assert (str(tax.amount), str(tax.included), str(document.total)) == (
        "0.00",
        "16.67",
        "100.00",
    )
    entries = document_entries(document, date(2026, 11, 1), "invoice:1")
    postings = [p for item in entries for p in item.postings]
    assert {
        (p.account, p.amount) for p in postings if p.account in (CONTRA_TAX_INCLUDED, TAX_PAYABLE)
    } == {
        (CONTRA_TAX_INCLUDED, D("16.67")),
        (TAX_PAYABLE, D("-16.67")),
    }


def test_no_coupon_and_no_tax_gives_the_same_invoice_as_before() -> None:
    plain = october_invoice([], None)
    assert [line.kind for line in plain.lines] == ["fee"]


def test_a_repeating_coupon_lasts_its_periods_from_its_redemption() -> None:
    """Redeemed on October 6th for 3 periods: October, November, December; not January."""
    coupon = Coupon(
        "THREE", "Three months", percent_off=D(10), duration="repeating", duration_periods=3
    )
    cycle = BillingCycle()
    redeemed = Redemption("THREE", OCTOBER.start_us + 5 * 86_400_000_000)
    months = periods_overlapping(
        cycle, OCTOBER.start_us - 1, OCTOBER.start_us + 100 * 86_400_000_000
    )
    assert len(months) == 5  # September to January
    applies = [bool(coupons_in_force({"THREE": coupon}, [redeemed], cycle, p)) for p in months]
    assert applies == [False, True, True, True, False]
