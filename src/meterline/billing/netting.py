"""Netting threshold invoices on period invoices: what each period invoice owes back as
``prepaid`` lines for amounts billed early.

A threshold invoice is netted first by its own period's invoice. That invoice nets no
more than it owes (``core.invoicing`` caps ``prepaid`` lines, so netting never makes an
invoice negative); a surplus carries to the customer's following period invoices, which
net it in turn until it is used up. Each ``prepaid`` line records ``billed_early``: what
was still to net when the invoice was made (the line's amount is that, capped), and, for
a surplus carried from an earlier period, ``from_period`` (that period's label; the
journal releases it from deferred revenue, ``core.books``).
"""

from __future__ import annotations

from decimal import Decimal, localcontext

from meterline.billing.context import BillingContext
from meterline.core.documents import PrepaidLine
from meterline.core.invoicing import ExtraLine
from meterline.core.money import MONEY_CONTEXT
from meterline.core.periods import BillingPeriod
from meterline.ledger.billing_records import StoredInvoice

ZERO = Decimal(0)


def billed_early(
    context: BillingContext, customer: str, period: BillingPeriod, known_at_us: int | None
) -> list[ExtraLine]:
    """A ``prepaid`` line per threshold invoice of the period, and per threshold invoice
    of an earlier period whose surplus is not netted yet (as known at ``known_at_us``)."""
    known = [
        invoice
        for invoice in context.store.invoices(customer)
        if known_at_us is None or invoice.finalized_at_us <= known_at_us
    ]
    early = [
        invoice
        for invoice in known
        if invoice.kind == "threshold" and invoice.period_start_us <= period.start_us
    ]
    if not early:
        return []
    netted = _netted_before(known, period)
    finalized_periods = {i.period_start_us for i in known if i.kind == "period"}
    lines = []
    for invoice in early:
        own = invoice.period_start_us == period.start_us
        if not own and invoice.period_start_us not in finalized_periods:
            continue  # its own period's invoice, still open, nets it first
        with localcontext(MONEY_CONTEXT):
            left = invoice.record.total - netted.get(
                invoice.invoice_id, ZERO
            )
        if left <= 0:
            continue
        detail = {"invoice": invoice.invoice_id, "billed_early": str(left)}
        text = f"Billed early on {invoice.invoice_id} (threshold reached)"
        if not own:
            text += ", surplus carried from an earlier period"
            detail["from_period"] = invoice.record.period_span().label
        lines.append(ExtraLine("prepaid", text, -left, None, detail))
    return lines


def _netted_before(known: list[StoredInvoice], period: BillingPeriod) -> dict[str, Decimal]:
    """Per threshold invoice, what the period invoices before ``period`` netted of it."""
    netted: dict[str, Decimal] = {}
    for invoice in known:
        if invoice.kind != "period" or invoice.period_start_us >= period.start_us:
            continue
        for line in invoice.record.lines:
            if isinstance(line, PrepaidLine) and line.invoice:
                with localcontext(MONEY_CONTEXT):
                    netted[line.invoice] = netted.get(line.invoice, ZERO) - line.amount
    return netted
