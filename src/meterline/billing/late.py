"""Late events: periods re-rated through a newer cut, and the adjustments they become.

Invariants: a finalized invoice is never edited; events inside a newer cut but outside
the cut a period was billed through become an ``adjustment`` line (or a credit note), its
lineage the late events alone; one customer's failure never stops another's.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.billing import documents
from meterline.billing.context import BillingContext, Loaded, invoice_cut
from meterline.billing.documents import customer_failure
from meterline.billing.errors import BillingError
from meterline.billing.scan import RatingJob
from meterline.billing.unbillable import CustomerFailure
from meterline.core.cuts import Cut
from meterline.core.documents import AdjustmentLine, CreditNote, CreditNoteLine, Invoice
from meterline.core.events import format_timestamp
from meterline.core.invoicing import Adjustment, charges_total
from meterline.core.lineage import MerkleBuilder
from meterline.core.model import segments
from meterline.core.money import MONEY_CONTEXT
from meterline.core.periods import BillingPeriod
from meterline.ledger import event_reads
from meterline.ledger.billing_records import StoredInvoice


def stored_invoice_cut(context: BillingContext, invoice: StoredInvoice) -> Cut:
    """The cut a stored invoice was rated through (its document's ``ledger.through``)."""
    return invoice_cut(invoice.record)


def accounted(context: BillingContext, invoice: StoredInvoice) -> tuple[Cut, Decimal]:
    """How far a finalized period has been billed: (through cut, total billed),
    following adjustments on later invoices and credit notes."""
    through = stored_invoice_cut(context, invoice)
    billed = charges_total(invoice.record)
    records: list[Invoice | CreditNote] = [
        i.record for i in context.store.invoices(invoice.customer)
    ]
    records += [n.record for n in context.store.credit_notes(invoice.invoice_id)]
    for document in records:
        for line in document.lines:
            adjusts = line.adjusts if isinstance(line, AdjustmentLine | CreditNoteLine) else None
            if not adjusts or adjusts.invoice != invoice.invoice_id:
                continue
            adjusted = Cut.from_json(adjusts.until(), "adjusts.through")
            if adjusted != through and adjusted.includes(through):
                through = adjusted
                billed = adjusts.rerated_total
    return through, billed


def late_jobs(
    context: BillingContext,
    jobs: list[RatingJob],
    head: Cut,
    failures: dict[str, CustomerFailure] | None = None,
    invoices: list[StoredInvoice] | None = None,
) -> list[tuple[StoredInvoice, Decimal, RatingJob, Cut]]:
    """For each customer in ``jobs``: finalized periods with events past what was billed:
    (invoice, billed total, re-rating job through ``head``, accounted through). With
    ``failures``, a customer whose finalized period cannot be re-rated is recorded
    there instead of raising. ``invoices``: those customers' period invoices when the
    caller read them already (else one customer's are read by its key, or all)."""
    customers = {job.customer for job in jobs}
    if invoices is None:
        only = next(iter(customers)) if len(customers) == 1 else None
        invoices = context.period_invoices(only)
    invoices = [i for i in invoices if i.customer in customers]
    if not invoices:
        return []
    # Only rows outside the cut every invoice includes and timed before the latest
    # finalized period's end can be late: the rest (the current period's usage) never
    # reaches Python, so a close does not copy a month of events to look for a few.
    lowest = head
    for invoice in invoices:
        lowest = lowest.intersection(stored_invoice_cut(context, invoice))
    latest_end = max(i.period_end_us for i in invoices)
    late = event_reads.late_candidates(context.connection, lowest, head, latest_end)
    pending = []
    for invoice in invoices:
        try:
            through, billed = accounted(context, invoice)
            partition = context.partition(invoice.customer)
            if not any(
                c == invoice.customer
                and invoice.period_start_us <= t < invoice.period_end_us
                and not through.covers(partition, s)
                for c, t, s in late
            ):
                continue
            job, _ = rerate(context, invoice, head)
        except Exception as error:
            if failures is None:
                raise
            period = BillingPeriod(invoice.period_start_us, invoice.period_end_us)
            failures.setdefault(invoice.customer, customer_failure(invoice.customer, error, period))
            continue
        pending.append((invoice, billed, job, through))
    return pending


def rerate(
    context: BillingContext,
    invoice: StoredInvoice,
    through: Cut,
    keep_events: bool = False,
    also_meters: frozenset[str] = frozenset(),
) -> tuple[RatingJob, Loaded]:
    """A job re-rating a finalized invoice's period under the revision it was rated with,
    with the events up to ``through``."""
    loaded = context.load(invoice.revision)
    if loaded is None:
        raise BillingError(f"invoice {invoice.invoice_id}: revision {invoice.revision} missing")
    contract = context.contract(loaded, invoice.customer)
    period = BillingPeriod(invoice.period_start_us, invoice.period_end_us)
    spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
    job = RatingJob(
        invoice.customer,
        period,
        spans,
        through,
        loaded.configuration,
        keep_events=keep_events,
        also_meters=also_meters,
    )
    return job, loaded


def late_adjustments(
    context: BillingContext,
    pending: list[tuple[StoredInvoice, Decimal, RatingJob, Cut]],
    failures: dict[str, CustomerFailure] | None = None,
) -> dict[str, list[Adjustment]]:
    """Per customer, the adjustment of each re-rated finalized period; with
    ``failures``, a customer whose re-rating cannot be priced is recorded there."""
    result: dict[str, list[Adjustment]] = {}
    for invoice, billed, job, through in pending:
        if failures is not None and invoice.customer in failures:
            continue
        loaded = context.load(invoice.revision)
        assert loaded is not None
        try:
            rerated = charges_total(
                documents.invoice_document(
                    context, job, loaded.configuration, 0, "", None, None, []
                )
            )
        except Exception as error:
            if failures is None:
                raise
            failures.setdefault(
                invoice.customer, customer_failure(invoice.customer, error, job.period)
            )
            continue
        events, first, last, root = late_lineage(context, invoice, through, job.through)
        with_context = MONEY_CONTEXT.subtract(rerated, billed)
        result.setdefault(invoice.customer, []).append(
            Adjustment(
                f"Late usage for {format_timestamp(invoice.period_start_us)[:10]}"
                f" (invoice {invoice.invoice_id}, {events} late events)",
                with_context,
                {
                    "invoice": invoice.invoice_id,
                    "from": through.to_json(),
                    "through": job.through.to_json(),
                    "billed_total": str(billed),
                    "rerated_total": str(rerated),
                },
                events,
                first,
                last,
                root,
            )
        )
    return result


def late_lineage(
    context: BillingContext, invoice: StoredInvoice, after: Cut, through: Cut
) -> tuple[int, int | None, int | None, bytes]:
    """The late events of ``invoice``'s period (inside ``through``, outside ``after``):
    how many, the first and last sequence (in the customer's partition), their root."""
    rows = event_reads.customer_event_hashes(
        context.connection,
        invoice.customer,
        after,
        through,
        invoice.period_start_us,
        invoice.period_end_us,
    )
    builder = MerkleBuilder()
    for _, event_hash in rows:
        builder.add(event_hash)
    first = rows[0][0] if rows else None
    last = rows[-1][0] if rows else None
    return len(rows), first, last, builder.root()
