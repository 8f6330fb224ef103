"""The unbillable usage report: every event that is usage but that no invoice can bill,
found by re-rating (finalized periods under their revision, open ones under the current
pricing) plus the events no period covers. Sits above the billing modules it reads
(``late``, ``context``, ``documents``); the records it gathers are ``billing.unbillable``'s.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Protocol

import msgspec

from meterline.billing import late
from meterline.billing.context import BillingContext, billing_cycle
from meterline.billing.documents import currency_of
from meterline.billing.scan import BODY_DECODER, RatingJob, run_jobs
from meterline.billing.unbillable import (
    LOOKUP_CHUNK,
    CustomerFailure,
    UnbillableReport,
    failure_reason,
    job_problems,
    usage_records,
)
from meterline.core.cuts import Cut
from meterline.core.meters import MeterProblem
from meterline.core.model import segments
from meterline.core.periods import BillingPeriod, periods_overlapping
from meterline.core.rating import billable_meters, unrated_problems
from meterline.ledger import event_reads


class _HasContext(Protocol):
    """The ``Billing`` facade, as this module needs it (its context), without importing
    the facade that imports this module."""

    @property
    def context(self) -> BillingContext: ...

__all__ = ["unbillable_report"]


def unbillable_report(
    billing: _HasContext | BillingContext, customer: str | None = None, at_us: int | None = None
) -> UnbillableReport:
    """Every unbillable event of the ledger (of ``customer`` only, when named), as of
    ``at_us`` (now): each finalized period re-rated under its revision, every other
    period of a contract up to the one containing ``at_us`` under the current pricing,
    both through the ledger's head, and the events no period covers (no contract, before
    the contract starts, after it ends)."""
    context = billing if isinstance(billing, BillingContext) else billing.context
    at = context.clock() if at_us is None else at_us
    head = context.ledger_cut()
    connection = context.connection
    jobs: list[RatingJob] = []
    failed: dict[str, CustomerFailure] = {}
    covered: dict[str, list[tuple[int, int]]] = {}
    finalized = context.period_invoices(customer)
    for stored in finalized:
        period = BillingPeriod(stored.period_start_us, stored.period_end_us)
        covered.setdefault(stored.customer, []).append((period.start_us, period.end_us))
        try:
            job, _ = late.rerate(context, stored, head)
        except Exception as error:
            failed.setdefault(
                stored.customer, CustomerFailure(stored.customer, failure_reason(error), period)
            )
            continue
        jobs.append(job)
    loaded = context.load()
    configuration = None if loaded is None else loaded.configuration
    if configuration is not None:
        done = {(invoice.customer, invoice.period_start_us) for invoice in finalized}
        for contract in configuration.contracts:
            if customer is not None and contract.customer != customer:
                continue
            end = at + 1 if contract.end_us is None else min(at + 1, contract.end_us)
            if end <= contract.start_us:
                continue
            try:
                cycle = billing_cycle(configuration, contract)
                for period in periods_overlapping(cycle, contract.start_us, end):
                    covered.setdefault(contract.customer, []).append(
                        (period.start_us, period.end_us)
                    )
                    if (contract.customer, period.start_us) in done:
                        continue
                    spans = segments(configuration, contract, period.start_us, period.end_us)
                    if spans:
                        jobs.append(
                            RatingJob(contract.customer, period, spans, head, configuration)
                        )
            except Exception as error:
                failed.setdefault(
                    contract.customer, CustomerFailure(contract.customer, failure_reason(error))
                )
    run_jobs(connection, jobs)
    found = job_problems(jobs)
    for job in jobs:
        try:
            job.rater.lines(currency_of(job.segments), job.configuration)
        except Exception as error:
            failed.setdefault(
                job.customer, CustomerFailure(job.customer, failure_reason(error), job.period)
            )
    if configuration is not None:
        found.extend(_uncovered(connection, configuration, covered, head, customer))
    return UnbillableReport(
        at,
        head,
        usage_records(connection, head.partitions, found),
        sorted(failed.values(), key=lambda failure: failure.customer),
    )


def _uncovered(
    connection: Any,
    configuration: Any,
    covered: dict[str, list[tuple[int, int]]],
    head: Cut,
    customer: str | None,
) -> list[tuple[str, MeterProblem]]:
    """The problems of the events inside ``head`` that no rated period covers: usage of
    a customer with no contract, or outside its contract's span."""
    billable = billable_meters(configuration)
    if not billable:
        return []
    starts: dict[str, tuple[list[int], list[int]]] = {}
    for name, spans in covered.items():
        ordered = sorted(spans)
        starts[name] = ([s for s, _ in ordered], [e for _, e in ordered])
    candidates: list[tuple[int, int, str, str, int]] = []
    rows = event_reads.usage_candidates(connection, head, customer)
    for partition, sequence, who, event_type, timestamp_us in rows:
        if event_type not in billable:
            continue
        bounds = starts.get(who)
        if bounds is not None:
            index = bisect_right(bounds[0], timestamp_us) - 1
            if index >= 0 and timestamp_us < bounds[1][index]:
                continue
        candidates.append((partition, sequence, who, event_type, timestamp_us))
    contracts = {contract.customer: contract for contract in configuration.contracts}
    found: list[tuple[str, MeterProblem]] = []
    for start in range(0, len(candidates), LOOKUP_CHUNK):
        chunk = candidates[start : start + LOOKUP_CHUNK]
        bodies = event_reads.event_bodies(
            connection,
            head.partitions,
            [(partition, sequence) for partition, sequence, *_ in chunk],
        )
        for partition, sequence, who, event_type, timestamp_us in chunk:
            try:
                properties = BODY_DECODER.decode(bodies[(partition, sequence)]).properties
            except (msgspec.MsgspecError, KeyError):
                properties = None
            problems = unrated_problems(
                billable, contracts.get(who), sequence, timestamp_us, event_type, properties
            )
            found.extend((who, problem) for problem in problems)
    return found
