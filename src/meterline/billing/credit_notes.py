"""Credit notes: settle an invoice's late events at once, or void it.

Invariants: a credit note cites the invoice it settles; late events are billed exactly
once (a later close finds them accounted for); the stored invoice is never edited.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.billing import late
from meterline.billing.context import BillingContext
from meterline.billing.errors import BillingError
from meterline.billing.scan import RatingJob, run_jobs
from meterline.core.events import decode_exact, encode_canonical, format_timestamp
from meterline.core.model import Configuration
from meterline.core.periods import BillingPeriod
from meterline.ledger.billing import StoredCreditNote

CREDIT_NOTE_SCHEMA = "meterline.credit-note/1"


def credit_note(
    context: BillingContext, invoice_id: str, reason: str, void: bool = False
) -> StoredCreditNote:
    """A credit note against a finalized invoice: ``void`` credits its whole total;
    otherwise it settles the invoice's late events now (re-rated difference), so the
    next invoice will not carry them again."""
    stored = context.invoice(invoice_id)
    document = context.document(invoice_id)
    now_us = context.clock()
    if not reason.strip():
        raise BillingError("reason: a credit note needs a reason")
    if void:
        if any(
            decode_exact(n.document).get("void") for n in context.store.credit_notes(invoice_id)
        ):
            raise BillingError(f"invoice {invoice_id} is already void")
        lines = [
            {
                "number": 1,
                "kind": "void",
                "description": f"Void of {invoice_id}",
                "amount": str(-Decimal(document["total"])),
            }
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
        lines = [
            {
                "number": 1,
                "kind": "adjustment",
                "description": adjustment.description,
                "amount": str(adjustment.amount),
                "adjusts": adjustment.adjusts,
                "lineage": adjustment.lineage(),
            }
        ]
    total = sum((Decimal(str(line["amount"])) for line in lines), Decimal(0))

    def make(note_id: str) -> bytes:
        return encode_canonical(
            {
                "schema": CREDIT_NOTE_SCHEMA,
                "number": note_id,
                "invoice": invoice_id,
                "customer": stored.customer,
                "currency": document["currency"],
                "reason": reason,
                "void": void,
                "lines": lines,
                "total": str(total),
                "created_at": format_timestamp(now_us),
            }
        )

    return context.store.add_credit_note(invoice_id, stored.customer, now_us, make)
