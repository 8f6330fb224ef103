"""Period close: finalize every contract period that ended and is not finalized yet.

Invariants: all invoices of one close are stored atomically (numbered in order, or none
when another close won the race); a customer that cannot be rated is left out whole and
reported, never stopping another's close; listeners are told the unbillable usage met,
and a listener's failure never undoes the close.
"""

from __future__ import annotations

import hashlib
import logging

from msgspec.structs import replace

from meterline.billing import balances, late
from meterline.billing.context import BillingContext, Loaded, billing_cycle
from meterline.billing.documents import (
    credit_cuts,
    customer_failure,
    invoice_document,
    ordered_failures,
)
from meterline.billing.errors import BillingError
from meterline.billing.scan import RatingJob, run_jobs
from meterline.billing.unbillable import (
    CustomerFailure,
    UnbillableReport,
    UnbillableUsage,
    job_problems,
    usage_records,
)
from meterline.billing.unbillable_report import unbillable_report
from meterline.core.credits import Charge
from meterline.core.cuts import Cut
from meterline.core.documents import Invoice
from meterline.core.invoicing import Adjustment, invoice_bytes
from meterline.core.model import Configuration, Contract, segments
from meterline.core.periods import periods_overlapping
from meterline.ledger.billing_records import BillingConflict, StoredInvoice

UNNUMBERED = "INV-unnumbered"
"""A close builds each document under this number and numbers the ones it keeps."""

_log = logging.getLogger("meterline.billing.service")
"""The logger billing has always written to (before its split into modules)."""


class CloseReport(list[StoredInvoice]):
    """What a close did: the invoices it finalized (the list itself, in number order), the
    customers it could not close (``failed``, each with the reason; none of their periods
    was finalized, so the next close tries again) and the unbillable usage its ratings met
    (``unbillable``)."""

    def __init__(
        self,
        finalized: list[StoredInvoice] | None = None,
        failed: list[CustomerFailure] | None = None,
        unbillable: list[UnbillableUsage] | None = None,
    ) -> None:
        super().__init__(finalized or [])
        self.failed: list[CustomerFailure] = failed or []
        self.unbillable: list[UnbillableUsage] = unbillable or []

    @property
    def finalized(self) -> list[StoredInvoice]:
        return list(self)


def close(context: BillingContext, through_us: int | None = None) -> CloseReport:
    """Finalize every contract period that ended by ``through_us`` (now) and is not yet
    finalized, oldest first; adjustments for late events ride on each customer's
    earliest newly closed invoice. All invoices of one close are stored atomically.

    One customer's rating never stops another's close: a customer that cannot be
    rated (its contract, a period, an amount) is left out whole, none of its periods
    finalized, and reported in ``failed`` with the reason; events a rating cannot
    bill are reported in ``unbillable`` (and told to ``unbillable_listeners``)."""
    loaded = context.current()
    configuration = loaded.configuration
    now_us = context.clock()
    through_instant = now_us if through_us is None else min(through_us, now_us)
    head = context.ledger_cut()
    done = {(i.customer, i.period_start_us) for i in context.period_invoices()}
    failed: dict[str, CustomerFailure] = {}
    jobs: list[RatingJob] = []
    for contract in configuration.contracts:
        try:
            jobs.extend(close_jobs(context, configuration, contract, through_instant, head, done))
        except Exception as error:
            failed[contract.customer] = customer_failure(contract.customer, error)
    if not jobs:
        return closed(context, CloseReport(failed=ordered_failures(failed)))
    pending = late.late_jobs(context, jobs, head, failed)
    run_jobs(context.connection, [*jobs, *[j for _, _, j, _ in pending]])
    adjustments = late.late_adjustments(context, pending, failed)
    jobs.sort(key=lambda job: (job.period.end_us, job.customer))
    built = close_documents(context, loaded, jobs, adjustments, failed, now_us)
    kept = [(job, document) for job, document in built if job.customer not in failed]
    stored = numbered_invoices(context, loaded, kept, head, now_us)
    if stored:
        try:
            context.store.add_invoices(stored)
        except BillingConflict as error:
            raise BillingError(f"{error}; another close won the race, nothing was stored") from None
    rated = [*jobs, *[job for _, _, job, _ in pending]]
    unbillable = usage_records(context.connection, head.partitions, job_problems(rated))
    return closed(context, CloseReport(stored, ordered_failures(failed), unbillable))


def close_documents(
    context: BillingContext,
    loaded: Loaded,
    jobs: list[RatingJob],
    adjustments: dict[str, list[Adjustment]],
    failed: dict[str, CustomerFailure],
    now_us: int,
) -> list[tuple[RatingJob, Invoice]]:
    """Each rated job's unnumbered document, in ``jobs`` order; the late adjustments ride
    on each customer's first; a customer whose document cannot be built joins ``failed``."""
    configuration = loaded.configuration
    documents: list[tuple[RatingJob, Invoice]] = []
    seen: set[str] = set()
    closed_charges: dict[str, list[Charge]] = {}
    for job in jobs:
        if job.customer in failed:
            continue
        extra = adjustments.get(job.customer, []) if job.customer not in seen else []
        seen.add(job.customer)
        try:
            credit = None
            if job.cuts is not None:
                holder = configuration.contract(job.customer)
                assert holder is not None
                inputs = balances.credit_inputs(
                    context, configuration, holder, job.period.end_us - 1
                )
                if job.customer not in closed_charges:
                    closed_charges[job.customer] = balances.charges_stored(
                        context, job.customer, job.period.start_us
                    )
                prior = closed_charges[job.customer]
                credit = balances.credit_part(context, job, configuration, inputs, prior)
                prior.extend(inputs.relevant(credit.charges))
            document = invoice_document(
                context,
                job,
                configuration,
                loaded.revision,
                loaded.content_sha256,
                UNNUMBERED,
                now_us,
                extra,
                credit,
            )
        except Exception as error:
            failed[job.customer] = customer_failure(job.customer, error, job.period)
            continue
        documents.append((job, document))
    return documents


def numbered_invoices(
    context: BillingContext,
    loaded: Loaded,
    kept: list[tuple[RatingJob, Invoice]],
    head: Cut,
    now_us: int,
) -> list[StoredInvoice]:
    """The kept documents numbered in order from the store's next invoice number, as the
    invoices to store."""
    first_number = int(context.store.next_invoice_id().split("-")[1])
    stored = []
    for offset, (job, document) in enumerate(kept):
        number = f"INV-{first_number + offset:06d}"
        content = invoice_bytes(replace(document, number=number))
        stored.append(
            StoredInvoice(
                number,
                job.customer,
                job.period.start_us,
                job.period.end_us,
                loaded.revision,
                head.head(job.partition),
                now_us,
                content,
                hashlib.sha256(content).digest(),
            )
        )
    return stored


def unbillable(
    context: BillingContext, customer: str | None = None, at_us: int | None = None
) -> UnbillableReport:
    """Every event no invoice can bill, per customer and reason, and the customers that
    cannot be rated (``billing.unbillable_report``)."""
    return unbillable_report(context, customer, at_us)


def close_jobs(
    context: BillingContext,
    configuration: Configuration,
    contract: Contract,
    through_instant: int,
    head: Cut,
    done: set[tuple[str, int]],
) -> list[RatingJob]:
    """The jobs rating ``contract``'s periods that ended by ``through_instant`` and are
    not finalized yet."""
    cycle = billing_cycle(configuration, contract)
    end = through_instant if contract.end_us is None else min(through_instant, contract.end_us + 1)
    if end <= contract.start_us:
        return []
    jobs = []
    for period in periods_overlapping(cycle, contract.start_us, end):
        if period.end_us > through_instant or (contract.customer, period.start_us) in done:
            continue
        spans = segments(configuration, contract, period.start_us, period.end_us)
        if spans:
            inputs = balances.credit_inputs(context, configuration, contract, period.end_us - 1)
            cuts = credit_cuts(inputs, period, contract.timezone)
            jobs.append(RatingJob(contract.customer, period, spans, head, configuration, cuts=cuts))
    return jobs


def closed(context: BillingContext, report: CloseReport) -> CloseReport:
    """Tell the listeners the unbillable usage a close met (a listener's failure is
    logged: it never undoes or stops the close), and billing's listeners each customer
    invoiced (what a lifetime threshold counts, and what the overdue controls read,
    changed)."""
    for customer in sorted({invoice.customer for invoice in report}):
        context.changed(customer)
    if report.unbillable:
        for listener in list(context.unbillable_listeners):
            try:
                listener(report.unbillable)
            except Exception:
                _log.exception("unbillable usage listener failed")
    return report
