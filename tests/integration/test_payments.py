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
    return stored.invoice_id, D(billing.document(stored.invoice_id).total)


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
    from meterline.core.payments import OverduePolicy

    block = OverduePolicy("overdue-30", "block", 30, features=("chat",))
    denied = billing.overdue_access("acme-copilot", block, date(2027, 1, 10), "chat")
    assert (denied["allowed"], denied["policy"]) == (False, "overdue-30")
    assert "38 days past due" in denied["reason"]
    assert billing.overdue_access("acme-copilot", block, date(2027, 1, 10), "search")["allowed"]
    assert billing.overdue_access("wayne-analytics", block, date(2027, 1, 10))["allowed"]
    alert = OverduePolicy("overdue-30", "alert", 30)
    alerted = billing.overdue_access("acme-copilot", alert, date(2027, 1, 10))
    assert alerted["allowed"] and [i["invoice"] for i in alerted["overdue"]] == [acme]


def test_payments_refunds_and_write_offs_in_the_journal_and_one_truth(billing: Billing) -> None:
    from meterline.core.journal import BAD_DEBT, CASH, CUSTOMER_CREDIT, RECEIVABLE
    from meterline.finance.books import build_books
    from meterline.finance.truth import one_truth

    acme, acme_total = invoice_of(billing, "acme-copilot")
    wayne, wayne_total = invoice_of(billing, "wayne-analytics")
    billing.record_payment(pay(acme, "p1", str(acme_total + 2), overpayment=True))
    billing.record_payment(PaymentRequest(acme, "r1", "refund", D(3)))
    billing.record_payment(pay(wayne, "p2", "4"))
    billing.record_payment(PaymentRequest(wayne, "", "write_off", reason="gone"))
    books = build_books(billing)
    balances = books.trial_balance()
    assert balances[(CASH, "USD")] == acme_total + 2 - 3 + 4
    assert (CUSTOMER_CREDIT, "USD") not in balances  # the refund took the credit first
    assert balances[(BAD_DEBT, "USD")] == wayne_total - 4
    for invoice, open_amount in ((acme, D(1)), (wayne, D(0))):
        owed = sum(
            p.amount
            for item in books.entries
            if f":{invoice}/" in item.cause
            for p in item.postings
            if p.account == RECEIVABLE
        )
        assert owed == open_amount
    payments = [item for item in books.entries if item.cause.startswith("payment:")]
    assert len(payments) == 4 and len({item.entry_id for item in payments}) == 4
    report = one_truth(billing)
    failed = [check for check in report.checks if not check.agrees]
    assert failed == []


def test_the_payments_commands(billing: Billing) -> None:
    import json

    from typer.testing import CliRunner

    from meterline.cli.app import app

    runner = CliRunner()
    db = str(billing.store.path)
    invoice, total = invoice_of(billing, "acme-copilot")

    def run(*arguments: str) -> object:
        result = runner.invoke(app, ["payments", *arguments, "--db", db])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout) if "--json" in arguments else result.stdout

    paid = run("record", invoice, "--id", "cli-1", "--amount", "10", "--method", "wire", "--json")
    assert paid["created"] and paid["standing"]["state"] == "partially_paid"  # type: ignore[index]
    again = runner.invoke(app, ["payments", "record", invoice, "--id", "cli-1", "--amount", "10.00",
                                "--method", "wire", "--db", db])  # fmt: skip
    assert again.exit_code == 0 and "already recorded" in again.output
    refused = runner.invoke(app, ["payments", "record", invoice, "--id", "cli-1", "--amount", "9",
                                  "--db", db])  # fmt: skip
    assert refused.exit_code == 1 and "another request" in refused.output
    run("refund", invoice, "--id", "cli-2", "--amount", "4", "--reason", "goodwill")
    off = run("write-off", invoice, "--reason", "gone", "--json")
    assert off["amount"] == str(total - 6)  # type: ignore[index]
    states = run("list", "--customer", "acme-copilot", "--json")
    assert [s["state"] for s in states] == ["uncollectible"]  # type: ignore[attr-defined]
    kinds = run("list", "--records", "--json")
    assert [r["kind"] for r in kinds] == ["payment", "refund", "write_off"]  # type: ignore[attr-defined]
    assert "Receivables" in run("list")  # type: ignore[operator]
    aging = run("aging", "--on", "2026-12-20", "--json")
    assert "acme-copilot" not in {row["customer"] for row in aging["rows"]}  # type: ignore[index]
    assert "1-30" in run("aging", "--on", "2026-12-20")  # type: ignore[operator]
    blocked = runner.invoke(app, ["payments", "access", "hooli-search", "--days", "30", "--on",
                                  "2027-01-10", "--db", db])  # fmt: skip
    assert json.loads(blocked.stdout)["allowed"] is (blocked.exit_code == 0)
    late = run("overdue", "--days", "30", "--on", "2027-01-10", "--json")
    assert late["overdue"] and "acme-copilot" not in {i["customer"] for i in late["overdue"]}  # type: ignore[index]


def test_the_payment_routes_with_scoped_keys(billing: Billing) -> None:
    from fastapi.testclient import TestClient

    from meterline.api import create_app
    from meterline.keys import create_key

    store = billing.ledger.store
    now = billing.clock()
    admin = create_key(store, "admin", now)[1]
    reader = create_key(store, "read", now)[1]
    acme_reader = create_key(store, "read", now, customer="acme-copilot")[1]
    acme_admin = create_key(store, "admin", now, customer="acme-copilot")[1]
    acme, total = invoice_of(billing, "acme-copilot")
    wayne, _ = invoice_of(billing, "wayne-analytics")
    app = create_app(billing.ledger, billing=billing, live=False)
    with TestClient(app) as client:

        def call(method: str, path: str, key: str, **more: object) -> object:
            headers = {"Authorization": f"Bearer {key}"}
            return client.request(method, path, headers=headers, **more)  # type: ignore[arg-type]

        body = {"payment_id": "h1", "amount": "10.00", "method": "card"}
        first = call("POST", f"/v1/invoices/{acme}/payments", admin, json=body)
        assert first.status_code == 201, first.text  # type: ignore[attr-defined]
        assert first.json()["standing"]["state"] == "partially_paid"  # type: ignore[attr-defined]
        again = call("POST", f"/v1/invoices/{acme}/payments", admin, json=body)
        assert again.status_code == 200 and not again.json()["created"]  # type: ignore[attr-defined]
        other = call("POST", f"/v1/invoices/{acme}/payments", admin, json={**body, "amount": "9"})
        assert other.status_code == 409  # type: ignore[attr-defined]
        too_much = {"payment_id": "h2", "amount": str(total)}
        refused = call("POST", f"/v1/invoices/{acme}/payments", admin, json=too_much)
        assert refused.status_code == 409, refused.text  # type: ignore[attr-defined]
        euro = {"payment_id": "h3", "amount": "1", "currency": "EUR"}
        assert call("POST", f"/v1/invoices/{acme}/payments", admin, json=euro).status_code == 422  # type: ignore[attr-defined]
        bad = {"payment_id": "h4", "amount": "1e3"}
        assert call("POST", f"/v1/invoices/{acme}/payments", admin, json=bad).status_code == 400  # type: ignore[attr-defined]
        assert call("POST", f"/v1/invoices/{acme}/payments", reader, json=body).status_code == 403  # type: ignore[attr-defined]
        # a bound key pays and reads only its own customer's invoices
        own = {"payment_id": "h5", "amount": "1"}
        assert (
            call("POST", f"/v1/invoices/{wayne}/payments", acme_admin, json=own).status_code == 404
        )  # type: ignore[attr-defined]
        assert call("GET", f"/v1/invoices/{wayne}/payments", acme_reader).status_code == 404  # type: ignore[attr-defined]
        refund = {"payment_id": "h6", "amount": "4", "reason": "goodwill"}
        assert (
            call("POST", f"/v1/invoices/{acme}/refunds", acme_admin, json=refund).status_code == 201
        )  # type: ignore[attr-defined]
        seen = call("GET", f"/v1/invoices/{acme}/payments", acme_reader).json()  # type: ignore[attr-defined]
        assert [r["kind"] for r in seen["records"]] == ["payment", "refund"]
        assert seen["standing"]["paid"] == "6.00"
        mine = call("GET", "/v1/receivables", acme_reader).json()["receivables"]  # type: ignore[attr-defined]
        assert {item["customer"] for item in mine} == {"acme-copilot"}
        assert (
            call("GET", "/v1/receivables?customer=wayne-analytics", acme_reader).status_code == 403
        )  # type: ignore[attr-defined]
        off = call("POST", f"/v1/invoices/{wayne}/write-off", admin, json={"reason": "gone"})
        assert off.json()["standing"]["state"] == "uncollectible"  # type: ignore[attr-defined]
        aging = call("GET", "/v1/receivables/aging?on=2026-12-20", reader).json()  # type: ignore[attr-defined]
        rows = {row["customer"]: row for row in aging["rows"]}
        assert rows["acme-copilot"]["buckets"]["1-30"] == str(total - 6)
        assert "wayne-analytics" not in rows
        late = call("GET", "/v1/receivables/overdue?days=30&on=2027-01-10", acme_reader).json()  # type: ignore[attr-defined]
        assert [(i["invoice"], i["days_past_due"]) for i in late["overdue"]] == [(acme, 38)]
        assert call("GET", "/v1/receivables/aging?on=someday", reader).status_code == 400  # type: ignore[attr-defined]
        path = "/v1/receivables/access/acme-copilot?days=30&on=2027-01-10"
        answer = call("GET", path, acme_reader).json()  # type: ignore[attr-defined]
        assert (answer["allowed"], answer["action"]) == (False, "block")
        assert call("GET", path + "&action=alert", reader).json()["allowed"]  # type: ignore[attr-defined]
        wayne_path = "/v1/receivables/access/wayne-analytics?days=30"
        assert call("GET", wayne_path, acme_reader).status_code == 403  # type: ignore[attr-defined]


def test_payment_records_are_append_only(billing: Billing) -> None:
    from meterline.ledger.database import database_errors, open_connection
    from meterline.ledger.integrity import APPEND_ONLY_TABLES

    assert "payment_records" in APPEND_ONLY_TABLES  # verify and audit check its triggers
    invoice, _ = invoice_of(billing, "acme-copilot")
    billing.record_payment(pay(invoice, "p1", "1"))
    connection = open_connection(billing.store.path)
    try:
        for statement in (
            "UPDATE payment_records SET amount = '100'",
            "DELETE FROM payment_records",
        ):
            with pytest.raises(database_errors(), match="append-only"):
                connection.execute(statement)
            if getattr(connection, "in_transaction", False):
                connection.execute("ROLLBACK")
    finally:
        connection.close()
    assert [r.amount for r in billing.payment_records.payments()] == [1]


def test_two_payments_racing_for_the_last_open_amount(billing: Billing) -> None:
    """Two processes' worth of billing (own connections) pay the whole open amount at once:
    one is recorded, the other refused, never both (the invoice's lock)."""
    import threading

    invoice, total = invoice_of(billing, "acme-copilot")
    location = billing.store.path
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def pay_all(payment_id: str) -> None:
        with open_billing(location, clock=Clock(at(2026, 11, 4))) as other:
            start.wait()
            try:
                other.record_payment(pay(invoice, payment_id, str(total)))
                outcomes.append("recorded")
            except BillingError:
                outcomes.append("refused")

    threads = [threading.Thread(target=pay_all, args=(f"race-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["recorded", "refused"]
    standing, _ = billing.invoice_standing(invoice)
    assert (standing.state, standing.paid) == ("paid", total)
