"""Payments and receivables over a real ledger (a SQLite file and a PostgreSQL schema):
partial and full payments, idempotent retries and conflicts, overpayment, refunds,
write-offs, a void credit note, aging and the overdue list, all as of a date."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal as D
from importlib.resources import files

import pytest

from meterline.billing.payments import PaymentRequest
from meterline.billing.service import Billing, BillingError, InvalidRequest, NotFound, open_billing
from meterline.core.events import timestamp_to_us
from meterline.demo.workload import generate_month
from meterline.ledger.payment_records import PaymentConflict
from tests.conftest import Location

NewDb = Callable[..., Location]
PRICING = files("meterline.demo").joinpath("pricing.yaml").read_text()
CUSTOMERS = {"acme-copilot", "wayne-analytics"}


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        self.now_us += 1  # every record later than the one before
        return self.now_us


@pytest.fixture
def billing(new_db: NewDb) -> Iterator[Billing]:
    events = [e for e in generate_month(scale=0.1) if e["customer"] in CUSTOMERS]
    with open_billing(new_db(), clock=Clock(at(2026, 11, 3))) as service:
        assert service.ledger.ingest(events).accepted == len(events)
        service.apply(PRICING)
        service.close(at(2026, 11, 1))
        yield service


def invoice_of(billing: Billing, customer: str) -> tuple[str, D]:
    stored = next(i for i in billing.store.invoices(customer) if i.kind == "period")
    return stored.invoice_id, D(billing.document(stored.invoice_id)["total"])


def pay(invoice: str, payment_id: str, amount: str, **more: object) -> PaymentRequest:
    return PaymentRequest(invoice, payment_id, "payment", D(amount), **more)  # type: ignore[arg-type]


def test_partial_then_full_payment_and_idempotent_retries(billing: Billing) -> None:
    invoice, total = invoice_of(billing, "acme-copilot")
    assert total > 10
    standing, _ = billing.invoice_standing(invoice)
    assert (standing.state, standing.open) == ("open", total)
    first = billing.record_payment(pay(invoice, "pay-1", "10.00", method="wire"))
    assert first.created and first.standing.state == "partially_paid"
    again = billing.record_payment(pay(invoice, "pay-1", "10", method="wire"))
    assert not again.created and again.record.number == first.record.number
    with pytest.raises(PaymentConflict):
        billing.record_payment(pay(invoice, "pay-1", "11.00", method="wire"))
    with pytest.raises(BillingError, match="more than"):
        billing.record_payment(pay(invoice, "pay-2", str(total)))
    rest = billing.record_payment(pay(invoice, "pay-2", str(total - 10)))
    assert (rest.standing.state, rest.standing.open, rest.standing.paid) == ("paid", 0, total)
    assert [r.payment_id for r in billing.payment_records.payments("acme-copilot")] == [
        "pay-1",
        "pay-2",
    ]


def test_overpayment_refund_and_write_off(billing: Billing) -> None:
    invoice, total = invoice_of(billing, "wayne-analytics")
    over = billing.record_payment(pay(invoice, "p1", str(total + 5), overpayment=True))
    assert (over.standing.credit_balance, over.movement.credit_balance) == (5, 5)
    with pytest.raises(BillingError, match="more than"):
        billing.record_payment(PaymentRequest(invoice, "r1", "refund", total + 6))
    refund = billing.record_payment(PaymentRequest(invoice, "r1", "refund", D(8)))
    assert (refund.standing.state, refund.standing.open) == ("partially_paid", 3)
    off = billing.record_payment(PaymentRequest(invoice, "", "write_off", reason="bankrupt"))
    assert off.record.payment_id == f"write-off:{invoice}"
    assert (off.standing.state, off.standing.written_off, off.record.amount) == (
        "uncollectible",
        3,
        3,
    )
    with pytest.raises(BillingError, match="uncollectible"):
        billing.record_payment(pay(invoice, "p2", "1"))


def test_bad_requests_and_other_customers_invoices(billing: Billing) -> None:
    invoice, _ = invoice_of(billing, "acme-copilot")
    with pytest.raises(InvalidRequest, match="currency"):
        billing.record_payment(pay(invoice, "p1", "1", currency="EUR"))
    with pytest.raises(InvalidRequest, match="minor unit"):
        billing.record_payment(pay(invoice, "p1", "1.001"))
    with pytest.raises(NotFound):
        billing.record_payment(pay(invoice, "p1", "1"), customer="wayne-analytics")
    with pytest.raises(NotFound):
        billing.invoice_standing(invoice, customer="wayne-analytics")
    assert billing.payment_records.payments() == []


def test_a_void_note_makes_the_invoice_void_and_paid_money_credit(billing: Billing) -> None:
    invoice, _ = invoice_of(billing, "acme-copilot")
    billing.record_payment(pay(invoice, "p1", "5"))
    billing.credit_note(invoice, "cancelled", void=True)
    standing, movements = billing.invoice_standing(invoice)
    assert (standing.state, standing.credit_balance, standing.open) == ("void", 5, 0)
    assert movements[-1].kind == "reclassify"


def test_aging_and_overdue_as_of_a_date(billing: Billing) -> None:
    acme, acme_total = invoice_of(billing, "acme-copilot")
    wayne, wayne_total = invoice_of(billing, "wayne-analytics")
    billing.record_payment(pay(wayne, "p1", str(wayne_total)))
    rows = [r for r in billing.aging(date(2026, 12, 20)) if r.customer in CUSTOMERS]
    assert [(row.customer, row.buckets["1-30"], row.total) for row in rows] == [
        ("acme-copilot", acme_total, acme_total)
    ]
    mid = billing.aging(date(2026, 11, 20), customer="acme-copilot")
    assert mid[0].buckets["current"] == acme_total
    before = billing.aging(date(2026, 10, 31))  # before the invoices were finalized
    assert before == []
    late = billing.overdue(date(2027, 1, 10), days=30)
    assert [(i.invoice_id, i.days_past_due) for i in late if i.customer in CUSTOMERS] == [
        (acme, 38)
    ]
    assert billing.overdue(date(2027, 1, 10), days=30, net_days=45, customer="acme-copilot") == []
