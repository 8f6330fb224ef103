"""A customer's credit: its inputs, the charges before a period, the credit part of an
invoice, and the credit book as of an instant.

Invariants: finalized periods count as billed (their stored charges), open ones are rated
now through the ledger's cut; an audit passes ``known_at_us`` so only what the store held
at finalization is used. Nothing here writes.
"""

from __future__ import annotations

from typing import Any

from meterline.billing import buckets
from meterline.billing.context import BillingContext, billing_cycle
from meterline.billing.credits import (
    CreditInputs,
    credit_book,
    credit_lines,
    credit_report,
    credits_section,
    in_period,
    stored_charges,
    stored_grant,
    timeline_of,
)
from meterline.billing.documents import CreditPart, credit_cuts, currency_of, rating_of
from meterline.billing.errors import BillingError
from meterline.billing.netting import billed_early
from meterline.billing.scan import RatingJob, run_jobs
from meterline.core.credits import Charge, CreditBook, CreditError
from meterline.core.cuts import Cut
from meterline.core.grants import contract_grants
from meterline.core.model import Configuration, Contract, segments
from meterline.core.periods import BillingPeriod, period_containing, periods_overlapping
from meterline.core.rating import window_charges


def credit_inputs(
    context: BillingContext,
    configuration: Configuration,
    contract: Contract,
    through_us: int,
    known_at_us: int | None = None,
) -> CreditInputs:
    """The customer's grants effective by ``through_us``, and the voids and manual
    adjustments made by then; only what the store held at ``known_at_us`` when set
    (an audit rebuilds an invoice from what was known when it was finalized)."""
    cycle = billing_cycle(configuration, contract)
    grants = contract_grants(configuration, contract, cycle, through_us)
    for row in context.store.grants(contract.customer):
        if known_at_us is not None and row.created_at_us > known_at_us:
            continue
        grant = stored_grant(row)
        if grant.effective_us <= through_us:
            grants.append(grant)
    actions = [
        a
        for a in context.store.actions(contract.customer)
        if a.at_us <= through_us + 1 and (known_at_us is None or a.at_us <= known_at_us)
    ]
    voids, adjustments = timeline_of(actions)
    return CreditInputs(grants, voids, adjustments, contract.credits)


def charges_stored(context: BillingContext, customer: str, before_us: int) -> list[Charge]:
    """The charges finalized invoices of ``customer`` kept, for periods before
    ``before_us``, in period order."""
    charges: list[Charge] = []
    for invoice in sorted(context.period_invoices(customer), key=lambda i: i.period_start_us):
        if invoice.period_start_us < before_us:
            charges.extend(stored_charges(invoice.record))
    return charges


def rate_jobs(context: BillingContext, jobs: list[RatingJob]) -> None:
    """Give each job (a period under the current revision) its rater: from the rated-usage
    buckets when they are built (the same window charges, ``billing.buckets``), else by
    one ledger scan."""
    loaded = context.load()
    unrated = []
    for job in jobs:
        current = loaded is not None and job.configuration is loaded.configuration
        rater = buckets.job_rater(context, job, loaded) if current and loaded else None
        if rater is None:
            unrated.append(job)
        else:
            job.rater = rater
    run_jobs(context.connection, unrated)


def prior_charges(
    context: BillingContext,
    configuration: Configuration,
    contract: Contract,
    period: BillingPeriod,
    through: Cut,
) -> list[Charge]:
    """Charges of every period before ``period``: kept by its invoice when finalized,
    else rated now (a period that ended but was not closed yet)."""
    finalized = {i.period_start_us for i in context.period_invoices(contract.customer)}
    charges = charges_stored(context, contract.customer, period.start_us)
    cycle = billing_cycle(configuration, contract)
    open_jobs = []
    earlier_periods = (
        periods_overlapping(cycle, contract.start_us, period.start_us)
        if contract.start_us < period.start_us
        else []
    )
    for earlier in earlier_periods:
        if earlier.start_us in finalized or earlier.end_us > period.start_us:
            continue
        spans = segments(configuration, contract, earlier.start_us, earlier.end_us)
        if not spans:
            continue
        inputs = credit_inputs(context, configuration, contract, earlier.end_us - 1)
        cuts = credit_cuts(inputs, earlier, contract.timezone) or ()
        job = RatingJob(contract.customer, earlier, spans, through, configuration, cuts=cuts)
        open_jobs.append(job)
    rate_jobs(context, open_jobs)
    for job in open_jobs:
        charges.extend(window_charges(job.rater, currency_of(job.segments), configuration))
    return sorted(charges, key=lambda charge: charge.end_us)


def credit_part(
    context: BillingContext,
    job: RatingJob,
    configuration: Configuration,
    inputs: CreditInputs,
    prior: list[Charge],
    known_at_us: int | None = None,
) -> CreditPart:
    """The period's credit ledger as invoice lines and the ``credits`` section."""
    currency = currency_of(job.segments)
    charges = window_charges(job.rater, currency, configuration)
    try:
        book = credit_book(inputs, [*prior, *charges], until_us=job.period.end_us)
    except CreditError as error:
        raise BillingError(f"credits of {job.customer}: {error}") from None
    entries = [entry for entry in book.entries if in_period(entry, job.period)]
    lines = credit_lines(book, entries, job.segments, configuration, inputs, job.period, currency)
    lines += billed_early(context, job.customer, job.period, known_at_us)
    section = credits_section(book, entries, inputs.relevant(charges), job.period, inputs.overage)
    return CreditPart(lines, section, charges, book)


def credits(context: BillingContext, customer: str, as_of_us: int | None = None) -> dict[str, Any]:
    """The customer's credit ledger as of ``as_of_us`` (now): every grant with its
    balance (the sum of its entries) and status, per-unit totals, and the entries."""
    at = context.clock() if as_of_us is None else as_of_us
    book, inputs = credit_history(context, customer, at)
    made = [stored_grant(row) for row in context.store.grants(customer)]
    pending = [g for g in made if g.created <= at and g.effective_us > at]
    return credit_report(customer, at, book, inputs, pending)


def credit_history(
    context: BillingContext, customer: str, at: int
) -> tuple[CreditBook, CreditInputs]:
    """The customer's credit book run up to ``at`` (finalized periods as billed, the
    open period rated now) and the inputs it ran on."""
    loaded = context.current()
    configuration = loaded.configuration
    contract = context.contract(loaded, customer)
    cycle = billing_cycle(configuration, contract)
    period = period_containing(cycle, at)
    inputs = credit_inputs(context, configuration, contract, at)
    through = context.ledger_cut()
    with rating_of(customer):
        charges = prior_charges(context, configuration, contract, period, through)
    stored = context.finalized(customer, period.start_us)
    if stored is not None:
        charges.extend(stored_charges(stored.record))
    else:
        spans = segments(configuration, contract, period.start_us, period.end_us)
        if spans and not inputs.is_empty():
            cuts = credit_cuts(inputs, period, contract.timezone, at)
            job = RatingJob(customer, period, spans, through, configuration, cuts=cuts)
            rate_jobs(context, [job])
            with rating_of(customer):
                charges.extend(window_charges(job.rater, currency_of(spans), configuration))
    try:
        book = credit_book(inputs, charges, until_us=at)
    except CreditError as error:
        raise BillingError(f"credits of {customer}: {error}") from None
    return book, inputs
