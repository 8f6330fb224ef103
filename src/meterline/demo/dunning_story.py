"""The commerce chapter's overdue customer, blocked by its declared control and released by
a payment.

The demo's pricing file declares ``{key: dunning, policy: invoice_overdue, days: 10}`` on
the one customer the chapter leaves unpaid (hooli-search). Its invoice is issued at the
close, so it is overdue only weeks later: this step runs a live engine on a clock moved to
that day (``on``), keeping that customer only, so that no other customer's controls,
trials or thresholds are evaluated at a date that has not come. The access answer the
product asks is denied with ``policy: dunning`` and an ``invoice.overdue`` alert is
queued; the customer then pays (recorded on the demo's real clock, through the billing
service whose listeners the engine hears), and the block lifts. A rerun finds the invoice
paid: nothing fires twice (firings are recorded once per crossing; the payment id is the
idempotency key).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from decimal import Decimal

from rich.console import Console

from meterline.billing.payments import PaymentRequest
from meterline.billing.service import Billing
from meterline.core.events import timestamp_to_us
from meterline.core.live_documents import AccessAnswer
from meterline.live.service import LiveEngine
from meterline.live.stack import live_stack

DUNNING_POLICY = "dunning"
"""The declared ``invoice_overdue`` control's key (src/meterline/demo/pricing.yaml)."""
ANSWER_WAIT_S = 5.0


def _moved_clock(billing: Billing, on: date) -> Billing:
    """A billing service over the same ledger and records, its clock moved to noon (UTC)
    of ``on`` and running on from there."""
    noon_us = timestamp_to_us(datetime(on.year, on.month, on.day, 12, tzinfo=UTC))
    shift_us = noon_us - billing.clock()
    base = billing.clock
    return Billing(billing.ledger, billing.store, lambda: base() + shift_us)


def _wait_access(engine: LiveEngine, customer: str, policy: str | None) -> AccessAnswer:
    """The access answer once it is denied by ``policy`` (None: once it is allowed), or
    the last one after the wait."""
    deadline = time.monotonic() + ANSWER_WAIT_S
    answer = engine.controls.access(customer)
    while answer.policy != policy and time.monotonic() < deadline:
        time.sleep(0.01)
        answer = engine.controls.access(customer)
    return answer


def tell_dunning(billing: Billing, console: Console, customer: str, on: date) -> None:
    """``customer``'s declared overdue control on ``on``: denied, then a payment lifts it."""
    moved = _moved_clock(billing, on)
    try:
        if _open_invoices(moved, customer):
            _tell_blocked_then_paid(billing, moved, console, customer)
        else:
            console.print(
                f"  {customer} has nothing open: its invoice was paid on an earlier run of"
                " the demo, so the control has nothing to block."
            )
    finally:
        moved.close_payments()


def _tell_blocked_then_paid(
    billing: Billing, moved: Billing, console: Console, customer: str
) -> None:
    """A live engine on ``moved``'s clock keeping ``customer`` only: denied, then paid
    (through ``billing``, on the real clock) and allowed."""
    stack = live_stack(moved)
    engine = stack.engine()
    engine.projection.owns = lambda name: name == customer
    billing.listeners.append(engine.on_billing_change)
    try:
        engine.start()
        before = _wait_access(engine, customer, DUNNING_POLICY)
        console.print(
            f"  GET /v1/access/{customer} -> allowed={before.allowed},"
            f" policy={before.policy}: {before.reason}"
        )
        _tell_alert(engine, console, customer)
        paid = _pay_open(billing, customer)
        after = _wait_access(engine, customer, None)
        console.print(
            f"{customer} pays the {paid} USD open; the engine re-reads its receivables and"
            f" GET /v1/access/{customer} -> allowed={after.allowed} (the block lifts,"
            " the control re-arms)."
        )
    finally:
        billing.listeners.remove(engine.on_billing_change)
        engine.controls.drain()
        engine.stop()
        stack.close()


def _tell_alert(engine: LiveEngine, console: Console, customer: str) -> None:
    """The firing the declared control recorded, and its alert."""
    deadline = time.monotonic() + ANSWER_WAIT_S
    while time.monotonic() < deadline:
        firings = [
            firing
            for firing in engine.store.firings()
            if firing.customer == customer and firing.policy == DUNNING_POLICY
        ]
        results = engine.store.results()
        if firings and (firings[-1].number, "alert") in results:
            firing = firings[-1]
            observed = ", ".join(f"{key} {value}" for key, value in firing.observed.items())
            console.print(
                f"  firing {firing.firing_id} ({observed}): block, and an invoice.overdue"
                " webhook (the alert) to every subscribed endpoint."
            )
            return
        time.sleep(0.01)


def _open_invoices(billing: Billing, customer: str) -> list[tuple[str, Decimal]]:
    """(invoice id, amount open) of ``customer``'s invoices with an amount to collect, as
    ``billing`` knows them now (its clock)."""
    return [
        (standing.receivable.invoice_id, standing.open)
        for standing, _ in billing.receivables(customer)
        if standing.open > 0 and standing.state not in ("void", "uncollectible")
    ]


def _pay_open(billing: Billing, customer: str) -> Decimal:
    """Pay what ``customer`` has open, invoice by invoice; the amount paid."""
    paid = Decimal(0)
    for invoice_id, amount in _open_invoices(billing, customer):
        request = PaymentRequest(
            invoice_id, f"demo-late-{invoice_id}", "payment", amount, method="wire"
        )
        billing.record_payment(request)
        paid += amount
    return paid
