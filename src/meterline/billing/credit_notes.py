"""Credit notes: settle an invoice's late events at once, void it, or credit chosen
lines or an amount of it (``core.credit_note_lines``).

Invariants: a credit note cites the invoice it settles; late events are billed exactly
once (a later close finds them accounted for); the stored invoice is never edited.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TypedDict, Unpack

from msgspec import UNSET

from meterline.billing import late
from meterline.billing.context import BillingContext
from meterline.billing.errors import BillingError
from meterline.billing.scan import RatingJob, run_jobs
from meterline.core.credit_note_lines import CreditNoteError, partial_lines
from meterline.core.documents import (
    Adjusts,
    CreditNote,
    CreditNoteLine,
    Invoice,
    Lineage,
    decimal_text,
    document_bytes,
    record_of,
)
from meterline.core.events import format_timestamp
from meterline.core.model import Configuration
from meterline.core.periods import BillingPeriod
from meterline.ledger.billing_records import StoredCreditNote


class CreditNoteScope(TypedDict, total=False):
    """What a credit note credits, by name: the whole invoice (``void``), some of its
    lines in full (``lines``, by number) or a pre-tax ``amount``; none: its late events."""

    void: bool
    lines: Sequence[int]
    amount: Decimal | None


def credit_note(
    context: BillingContext, invoice_id: str, reason: str, **scope: Unpack[CreditNoteScope]
) -> StoredCreditNote:
    """A credit note against a finalized invoice: ``void`` credits its whole total;
    ``lines`` credits those lines in full and ``amount`` a pre-tax amount spread over its
    charges, each with the tax it carried; otherwise it settles the invoice's late events
    now (re-rated difference), so the next invoice will not carry them again."""
    void, lines, amount = scope.get("void", False), scope.get("lines", ()), scope.get("amount")
    stored = context.invoice(invoice_id)
    document = context.document(invoice_id)
    now_us = context.clock()
    if not reason.strip():
        raise BillingError("reason: a credit note needs a reason")
    if void and (lines or amount is not None):
        raise BillingError("void: a void credits the whole invoice; give no lines or amount")
    if lines or amount is not None:
        notes = [n.record for n in context.store.credit_notes(invoice_id)]
        try:
            note_lines = partial_lines(document, notes, lines, amount)
        except CreditNoteError as error:
            raise BillingError(str(error)) from None
        return _store(context, invoice_id, stored.customer, document, reason, note_lines, now_us)
    if void:
        if any(n.record.void for n in context.store.credit_notes(invoice_id)):
            raise BillingError(f"invoice {invoice_id} is already void")
        if any(
            line.credits_line is not UNSET
            for n in context.store.credit_notes(invoice_id)
            for line in n.record.lines
        ):
            raise BillingError(
                f"invoice {invoice_id} has partial credit notes; credit what is left by amount"
            )
        note_lines = [
            CreditNoteLine(
                number=1,
                kind="void",
                description=f"Void of {invoice_id}",
                amount=decimal_text(-document.total),
            )
        ]
    else:
        head = context.ledger_cut()
        placeholder = RatingJob(stored.customer, BillingPeriod(0, 1), [], head, Configuration())
        pending = [
            p for p in late.late_jobs(context, [placeholder], head) if p[0].invoice_id == invoice_id
        ]
        if not pending:
            raise BillingError(f"invoice {invoice_id} has no late events to settle")
        run_jobs(context.connection, [job for _, _, job, _ in pending])
        adjustment = late.late_adjustments(context, pending)[stored.customer][0]
        note_lines = [
            CreditNoteLine(
                number=1,
                kind="adjustment",
                description=adjustment.description,
                amount=decimal_text(adjustment.amount),
                adjusts=record_of(adjustment.adjusts, Adjusts),
                lineage=record_of(adjustment.lineage(), Lineage),
            )
        ]
    return _store(context, invoice_id, stored.customer, document, reason, note_lines, now_us, void)


def _store(
    context: BillingContext,
    invoice_id: str,
    customer: str,
    document: Invoice,
    reason: str,
    lines: list[CreditNoteLine],
    now_us: int,
    void: bool = False,
) -> StoredCreditNote:
    """Number, hash and store the note of ``lines``."""
    total = sum((line.amount for line in lines), Decimal(0))

    def make(note_id: str) -> bytes:
        return document_bytes(
            CreditNote(
                number=note_id,
                invoice=invoice_id,
                customer=customer,
                currency=document.currency,
                reason=reason,
                void=void,
                lines=lines,
                total=decimal_text(total),
                created_at=format_timestamp(now_us),
            )
        )

    note = context.store.add_credit_note(invoice_id, customer, now_us, make)
    context.changed(customer)  # what the customer owes changed (the overdue controls)
    return note
