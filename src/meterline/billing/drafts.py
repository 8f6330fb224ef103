"""Drafts: the invoice for the period containing an instant, recomputed from the ledger.

Also the rated periods of a customer (finalized or drafted) and its events per day, for
reports.

Invariants: a finalized period's draft is its stored document, byte for byte; an open
period is rated through the current cut with the late adjustments so far. Nothing is stored.
"""

from __future__ import annotations

from typing import Any

from meterline.billing import balances, documents, late
from meterline.billing.context import BillingContext, billing_cycle, cost_meters
from meterline.billing.documents import credit_cuts, rating_of
from meterline.billing.errors import BillingError, NotFound
from meterline.billing.scan import RatingJob, run_jobs
from meterline.core.events import decode_exact
from meterline.core.model import segments
from meterline.core.periods import period_containing
from meterline.ledger import event_reads


def draft(context: BillingContext, customer: str, at_us: int | None = None) -> dict[str, Any]:
    """The invoice for the period containing ``at_us`` (now), recomputed from the
    ledger as it stands: usage, fees, and adjustments for late events so far."""
    loaded = context.current()
    contract = context.contract(loaded, customer)
    at = context.clock() if at_us is None else at_us
    period = period_containing(billing_cycle(loaded.configuration, contract), at)
    stored = context.finalized(customer, period.start_us)
    if stored is not None:
        document: dict[str, Any] = decode_exact(stored.document)
        return document
    spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
    if not spans:
        raise NotFound(f"customer {customer!r} has no contract in force in that period")
    through = context.ledger_cut()
    inputs = balances.credit_inputs(context, loaded.configuration, contract, period.end_us - 1)
    job = RatingJob(
        customer,
        period,
        spans,
        through,
        loaded.configuration,
        cuts=credit_cuts(inputs, period, contract.timezone),
    )
    pending = late.late_jobs(context, [job], through)
    run_jobs(context.connection, [job, *[j for _, _, j, _ in pending]])
    with rating_of(customer):
        adjustments = late.late_adjustments(context, pending).get(customer, [])
        credit = None
        if job.cuts is not None:
            prior = balances.prior_charges(context, loaded.configuration, contract, period, through)
            credit = balances.credit_part(context, job, loaded.configuration, inputs, prior)
        return documents.invoice_document(
            context,
            job,
            loaded.configuration,
            loaded.revision,
            loaded.content_sha256,
            None,
            None,
            adjustments,
            credit,
        )


def rated_periods(
    context: BillingContext, at_us: int | None = None, customer: str | None = None
) -> list[tuple[dict[str, Any], RatingJob]]:
    """Every finalized period invoice (as billed) and every customer's open period (its
    draft as of ``at_us``, now), each with a job that re-rated it keeping its events
    and measuring the cost-only meters too: what unit economics is computed from."""
    at = context.clock() if at_us is None else at_us
    head = context.ledger_cut()
    pairs: list[tuple[dict[str, Any], RatingJob]] = []
    for stored in context.period_invoices(customer):
        if stored.finalized_at_us > at:
            continue
        job, _ = late.rerate(
            context,
            stored,
            late.stored_invoice_cut(context, stored),
            keep_events=True,
            also_meters=cost_meters(context.load(stored.revision)),
        )
        pairs.append((decode_exact(stored.document), job))
    current = context.load()
    if current is not None:
        loaded = current
        for contract in loaded.configuration.contracts:
            if customer is not None and contract.customer != customer:
                continue
            if contract.start_us > at:
                continue
            period = period_containing(billing_cycle(loaded.configuration, contract), at)
            if context.finalized(contract.customer, period.start_us) is not None:
                continue
            spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
            if not spans:
                continue
            try:
                document = draft(context, contract.customer, at)
            except BillingError:
                continue
            job = RatingJob(
                contract.customer,
                period,
                spans,
                head,
                loaded.configuration,
                keep_events=True,
                also_meters=cost_meters(loaded),
            )
            pairs.append((document, job))
    run_jobs(context.connection, [job for _, job in pairs])
    return pairs


def event_days(
    context: BillingContext, customer: str, start_us: int, end_us: int
) -> dict[int, int]:
    """Each of the customer's events in [start, end): its sequence (within the
    customer's partition) and timestamp."""
    return event_reads.customer_event_times(context.connection, customer, start_us, end_us)
