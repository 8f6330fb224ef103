"""Payments and receivables over the stored invoices (the shell of ``core.payments``).

Records payments, refunds and write-offs against finalized invoices
(``ledger.payment_records``), idempotently by the caller's payment id, each decided by
``core.payments.decide`` over the invoice, its credit notes and its earlier records, read
under the invoice's lock; and reads what is owed: each invoice's standing (state, paid,
open, written off, credit balance), the aging of what is open at a date, and the
customers overdue past a policy's days.

Invariants: a record is decided and stored in one transaction, or not at all (a refused
request stores nothing); an invoice's figures are re-derived from the records every time,
never stored; "as of" a date reads only invoices finalized, notes created and records
made by its end (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from meterline.billing.context import BillingContext
from meterline.billing.errors import BillingError, InvalidRequest, NotFound
from meterline.core.control_policies import decide as decide_access
from meterline.core.documents import Invoice
from meterline.core.events import decode_exact, encode_canonical
from meterline.core.payments import (
    NET_DAYS_DEFAULT,
    AgingRow,
    Movement,
    NoteChange,
    Overdue,
    OverduePolicy,
    PaymentError,
    PaymentRecord,
    Receivable,
    RecordKind,
    Standing,
    aging,
    decide,
    overdue,
    overdue_blocks,
    settle,
)
from meterline.core.periods import local_date
from meterline.ledger.billing_records import StoredInvoice
from meterline.ledger.payment_records import PaymentStore, StoredPayment

PAYMENT_ID_LENGTH_MAX = 256
WRITE_OFF_ID_FORMAT = "write-off:{}"
"""The payment id of a write-off recorded without one (an invoice is written off once)."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """A payment, refund or write-off to record against ``invoice_id``. ``amount`` is
    ignored for a write-off (the whole open amount); ``currency`` defaults to the
    invoice's and must be it."""

    invoice_id: str
    payment_id: str
    kind: RecordKind
    amount: Decimal | None = None
    currency: str | None = None
    overpayment: bool = False
    method: str = ""
    reference: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording did: the stored record, whether it was new (False: the same
    request was recorded before), its movement and the invoice's standing after it."""

    record: StoredPayment
    created: bool
    movement: Movement
    standing: Standing



def end_of_day_us(day: date) -> int:
    """The last microsecond of ``day`` (UTC): "as of" a date reads through its end."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return (start - EPOCH) // timedelta(microseconds=1) - 1


def receivable(stored: StoredInvoice, document: Invoice) -> Receivable:
    """What a finalized invoice bills, issued on its day in its time zone."""
    timezone = document.timezone or "UTC"
    return Receivable(
        stored.invoice_id,
        stored.customer,
        document.currency,
        Decimal(document.total),
        local_date(timezone, stored.finalized_at_us),
        stored.finalized_at_us,
        timezone,
    )


def note_changes(context: BillingContext, invoice_id: str) -> list[NoteChange]:
    """The invoice's credit notes as changes to what it bills."""
    changes = []
    for note in context.store.credit_notes(invoice_id):
        document = note.record
        changes.append(
            NoteChange(note.note_id, note.created_at_us, Decimal(document.total), document.void)
        )
    return changes


def as_record(stored: StoredPayment, overpayment: bool = False) -> PaymentRecord:
    return PaymentRecord(
        stored.number,
        stored.payment_id,
        stored.kind,  # type: ignore[arg-type]
        stored.amount,
        stored.at_us,
        overpayment or bool(decode_exact(stored.request.encode()).get("overpayment")),
    )


def _checked(request: PaymentRequest, invoice: Receivable) -> tuple[str, str]:
    """The payment id and currency of a well-formed request (``InvalidRequest``)."""
    payment_id = request.payment_id
    if request.kind == "write_off" and not payment_id:
        payment_id = WRITE_OFF_ID_FORMAT.format(invoice.invoice_id)
    problems = []
    if not payment_id or len(payment_id) > PAYMENT_ID_LENGTH_MAX:
        problems.append(f"payment_id: 1 to {PAYMENT_ID_LENGTH_MAX} characters")
    elif any(ord(character) < 32 for character in payment_id):
        problems.append("payment_id: must not contain control characters")
    currency = request.currency or invoice.currency
    if currency != invoice.currency:
        problems.append(
            f"currency: {currency!r} is not the invoice's currency ({invoice.currency})"
        )
    if request.kind != "write_off" and request.amount is None:
        problems.append("amount: required")
    if request.kind == "write_off" and not request.reason.strip():
        problems.append("reason: a write-off needs a reason")
    if problems:
        raise InvalidRequest(problems)
    return payment_id, currency


def _request_text(request: PaymentRequest, payment_id: str, currency: str) -> str:
    """The request as stored and compared on a retry (amounts by value: 10 == 10.00)."""
    amount = None
    if request.kind != "write_off" and request.amount is not None:
        amount = format(request.amount.normalize(), "f")
    body = {
        "kind": request.kind,
        "invoice": request.invoice_id,
        "payment_id": payment_id,
        "amount": amount,
        "currency": currency,
        "overpayment": request.overpayment,
        "method": request.method,
        "reference": request.reference,
        "reason": request.reason,
    }
    return encode_canonical(body).decode()


def _refused(error: PaymentError) -> BillingError:
    return InvalidRequest([str(error)]) if error.invalid else BillingError(str(error))


def visible_invoice(
    context: BillingContext, invoice_id: str, customer: str | None
) -> StoredInvoice:
    """The invoice, if ``customer`` (a bound caller; None: anyone) may see it."""
    stored = context.invoice(invoice_id)
    if customer is not None and stored.customer != customer:
        raise NotFound(f"no invoice {invoice_id!r}")
    return stored


def record(
    context: BillingContext,
    records: PaymentStore,
    request: PaymentRequest,
    customer: str | None = None,
) -> Recorded:
    """Record ``request`` (see ``PaymentRequest``) now; the same payment id again with
    the same request answers the stored record (``created`` False)."""
    stored = visible_invoice(context, request.invoice_id, customer)
    invoice = receivable(stored, context.document(request.invoice_id))
    payment_id, currency = _checked(request, invoice)
    notes = note_changes(context, request.invoice_id)
    now_us = context.clock()
    amount = request.amount if request.amount is not None else Decimal(0)

    def decision(earlier: list[StoredPayment]) -> tuple[str, Decimal, str]:
        history = [as_record(item) for item in earlier]
        number = max((item.number for item in earlier), default=0) + 1
        new = PaymentRecord(number, payment_id, request.kind, amount, now_us, request.overpayment)
        try:
            _, movement = decide(invoice, notes, history, new)
        except PaymentError as error:
            raise _refused(error) from None
        decided = movement.bad_debt if request.kind == "write_off" else amount
        return request.kind, decided, currency

    text = _request_text(request, payment_id, currency)
    saved, created = records.record(
        stored.customer, payment_id, request.invoice_id, now_us, text, decision
    )
    if created:  # what the customer owes changed: the live engine's overdue controls
        context.changed(stored.customer)
    standing, movements = settle(
        invoice, notes, [as_record(r) for r in records.of_invoice(stored.invoice_id)]
    )
    mine = (saved.payment_id, saved.kind)
    movement = next(m for m in reversed(movements) if (m.cause, m.kind) == mine)
    return Recorded(saved, created, movement, standing)


def standing(
    context: BillingContext,
    records: PaymentStore,
    invoice_id: str,
    customer: str | None = None,
    at_us: int | None = None,
) -> tuple[Standing, list[Movement]]:
    """The invoice's standing and movements (as of ``at_us``; now when None)."""
    stored = visible_invoice(context, invoice_id, customer)
    invoice = receivable(stored, context.document(invoice_id))
    history = [as_record(item) for item in records.of_invoice(invoice_id)]
    return settle(invoice, note_changes(context, invoice_id), history, at_us)


def standings(
    context: BillingContext,
    records: PaymentStore,
    customer: str | None = None,
    at_us: int | None = None,
) -> list[tuple[Standing, list[Movement]]]:
    """Every finalized invoice's standing (or one customer's), as of ``at_us`` (now when
    None; invoices finalized after it are left out), in invoice order."""
    at = context.clock() if at_us is None else at_us
    by_invoice: dict[str, list[PaymentRecord]] = {}
    for item in records.payments(customer):
        by_invoice.setdefault(item.invoice_id, []).append(as_record(item))
    found = []
    for stored in context.store.invoices(customer):
        if stored.finalized_at_us > at:
            continue
        invoice = receivable(stored, stored.record)
        notes = note_changes(context, stored.invoice_id)
        found.append(settle(invoice, notes, by_invoice.get(stored.invoice_id, []), at))
    return found


def aging_report(
    context: BillingContext,
    records: PaymentStore,
    on: date,
    net_days: int = NET_DAYS_DEFAULT,
    customer: str | None = None,
) -> list[AgingRow]:
    """Open receivables at the end of ``on`` (UTC) by customer, currency and bucket."""
    found = standings(context, records, customer, end_of_day_us(on))
    return aging([item for item, _ in found], on, net_days)


def overdue_report(
    context: BillingContext,
    records: PaymentStore,
    on: date,
    days: int,
    net_days: int = NET_DAYS_DEFAULT,
    customer: str | None = None,
) -> list[Overdue]:
    """Invoices open more than ``days`` past due at the end of ``on`` (UTC)."""
    found = standings(context, records, customer, end_of_day_us(on))
    return overdue([item for item, _ in found], on, days, net_days)


def overdue_access(
    context: BillingContext,
    records: PaymentStore,
    customer: str,
    policy: OverduePolicy,
    on: date,
    feature: str | None = None,
) -> dict[str, Any]:
    """The overdue policy's access answer for ``customer`` at the end of ``on``, in the
    shape of the live access answer (``customer, feature, allowed, reason, policy``) plus
    the policy's ``action`` and the ``overdue`` invoices: a ``block`` policy denies while
    an invoice is open more than its days past due (``core.control_policies.decide`` over
    ``core.payments.overdue_blocks``, as the live engine decides over its own blocks); an
    ``alert`` policy allows and lists them."""
    found = overdue_report(context, records, on, policy.days, policy.net_days, customer)
    blocks = overdue_blocks(policy, found, end_of_day_us(on))
    answer = decide_access(tuple(blocks.values()), feature)
    return {
        "customer": customer,
        "feature": feature,
        "allowed": answer.allowed,
        "reason": answer.reason or ("overdue" if found else "nothing overdue"),
        "policy": answer.policy or (policy.name if found else None),
        "action": policy.action,
        "overdue": [overdue_document(item) for item in found],
    }


# -- as JSON (the CLI's --json and the API answer the same keys) ------------------------------

STANDING_FIGURES = (
    "billed",
    "paid",
    "open",
    "written_off",
    "credit_balance",
    "received",
    "refunded",
)


def standing_document(standing: Standing) -> dict[str, Any]:
    """An invoice's state and figures (exact decimals as strings)."""
    invoice = standing.receivable
    return {
        "invoice": invoice.invoice_id,
        "customer": invoice.customer,
        "currency": invoice.currency,
        "issued": invoice.issued.isoformat(),
        "state": standing.state,
        **{name: str(getattr(standing, name)) for name in STANDING_FIGURES},
    }


def aging_document(row: AgingRow) -> dict[str, Any]:
    """One aging row: a customer's open amounts in a currency by bucket."""
    return {
        "customer": row.customer,
        "currency": row.currency,
        "buckets": {name: str(amount) for name, amount in row.buckets.items()},
        "total": str(row.total),
        "invoices": list(row.invoices),
    }


def overdue_document(item: Overdue) -> dict[str, Any]:
    """One overdue invoice."""
    return {
        "customer": item.customer,
        "invoice": item.invoice_id,
        "currency": item.currency,
        "open": str(item.open),
        "due": item.due.isoformat(),
        "days_past_due": item.days_past_due,
    }


def record_document(item: StoredPayment) -> dict[str, Any]:
    """A stored payment, refund or write-off with the request that made it."""
    return {
        "payment_id": item.payment_id,
        "customer": item.customer,
        "invoice": item.invoice_id,
        "kind": item.kind,
        "amount": str(item.amount),
        "currency": item.currency,
        "recorded_at_us": item.at_us,
        "request": decode_exact(item.request.encode()),
    }


def recorded_document(done: Recorded) -> dict[str, Any]:
    """What recording answers: the record, whether it is new, the invoice's standing."""
    return {
        **record_document(done.record),
        "created": done.created,
        "standing": standing_document(done.standing),
    }
