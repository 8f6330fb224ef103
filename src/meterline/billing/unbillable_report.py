"""The unbillable usage report: every event that is usage but that no invoice can bill,
found by re-rating (finalized periods under their revision, open ones under the current
pricing) plus the events no period covers. Sits above the billing modules it reads
(``late``, ``context``, ``documents``); the records it gathers are ``billing.unbillable``'s.

``UnbillableTracker`` (the dashboard's page) keeps a report's ratings and extends them
with only the events past its cut while nothing else moved (finalized invoices, pricing
revision, periods): the same report, byte for byte, as the full re-rating
(tests/integration/test_unbillable_tracker.py).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from meterline.billing import late
from meterline.billing.context import BillingContext, billing_cycle
from meterline.billing.documents import currency_of
from meterline.billing.scan import BODY_DECODER, PARALLEL_SCAN_MIN_EVENTS, RatingJob, run_jobs
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
from meterline.core.model import Configuration, segments
from meterline.core.periods import BillingPeriod, periods_overlapping
from meterline.core.rating import billable_meters, unrated_problems
from meterline.ledger import event_reads


class _HasContext(Protocol):
    """The ``Billing`` facade, as this module needs it (its context), without importing
    the facade that imports this module."""

    @property
    def context(self) -> BillingContext: ...


__all__ = ["UnbillableTracker", "unbillable_report"]


def unbillable_report(
    billing: _HasContext | BillingContext, customer: str | None = None, at_us: int | None = None
) -> UnbillableReport:
    """Every unbillable event of the ledger (of ``customer`` only, when named), as of
    ``at_us`` (now): each finalized period re-rated under its revision, every other
    period of a contract up to the one containing ``at_us`` under the current pricing,
    both through the ledger's head, and the events no period covers (no contract, before
    the contract starts, after it ends)."""
    return UnbillableTracker().report(billing, customer, at_us)


@dataclass
class _Plan:
    """The ratings a report makes: its jobs (through the head), the customers that cannot
    be rated, the spans the periods cover, and what they depend on besides the events."""

    jobs: list[RatingJob]
    failed: dict[str, CustomerFailure]
    covered: dict[str, list[tuple[int, int]]]
    configuration: Configuration | None
    signature: tuple[Any, ...]


@dataclass
class _Rated:
    """A report's ratings, to extend with the events past ``through``."""

    signature: tuple[Any, ...]
    through: Cut
    jobs: list[RatingJob]
    uncovered: list[tuple[str, MeterProblem]]


class UnbillableTracker:
    """Unbillable reports of one billing, each extending the ratings of the one before it
    with only the events past its cut, when nothing else moved (the same finalized
    invoices, pricing revision, periods and customer): the same report as a full
    re-rating (``unbillable_report``), because a job rates its customer's events (one
    partition) in ledger order either way and the events no period covers are judged one
    by one. Anything else moved, or a backlog past ``PARALLEL_SCAN_MIN_EVENTS``: a full
    re-rating. The caller serializes calls (the dashboard holds a lock)."""

    def __init__(self) -> None:
        self._last: _Rated | None = None

    def report(
        self,
        billing: _HasContext | BillingContext,
        customer: str | None = None,
        at_us: int | None = None,
    ) -> UnbillableReport:
        """``unbillable_report(billing, customer, at_us)``, rating only what is new."""
        context = billing if isinstance(billing, BillingContext) else billing.context
        at = context.clock() if at_us is None else at_us
        head = context.ledger_cut()
        connection = context.connection
        plan = _plan(context, customer, at, head)
        last, self._last = self._last, None  # kept again only once this rating is done
        uncovered: list[tuple[str, MeterProblem]] = []
        after: Cut | None = None
        if last is not None and _extends(last, plan, head):
            for job, before in zip(plan.jobs, last.jobs, strict=True):
                job.after, job.rater = last.through, before.rater
            uncovered, after = list(last.uncovered), last.through
        run_jobs(connection, plan.jobs)
        if plan.configuration is not None:
            uncovered += _uncovered(
                connection, plan.configuration, plan.covered, head, customer, after
            )
        self._last = _Rated(plan.signature, head, plan.jobs, uncovered)
        found = job_problems(plan.jobs)
        failed = dict(plan.failed)
        for job in plan.jobs:
            try:
                job.rater.lines(currency_of(job.segments), job.configuration)
            except Exception as error:
                failed.setdefault(
                    job.customer, CustomerFailure(job.customer, failure_reason(error), job.period)
                )
        return UnbillableReport(
            at,
            head,
            usage_records(connection, head.partitions, [*found, *uncovered]),
            sorted(failed.values(), key=lambda failure: failure.customer),
        )


def _extends(last: _Rated, plan: _Plan, head: Cut) -> bool:
    """Whether ``plan`` is ``last``'s ratings with more events: the same signature, a head
    holding ``last``'s, and not so many new events that a full scan would be spread."""
    return (
        last.signature == plan.signature
        and last.through.partitions == head.partitions
        and head.includes(last.through)
        and head.events - last.through.events < PARALLEL_SCAN_MIN_EVENTS
    )


def _plan(context: BillingContext, customer: str | None, at: int, head: Cut) -> _Plan:
    """The jobs of a report as of ``at`` through ``head`` (see ``unbillable_report``)."""
    failed: dict[str, CustomerFailure] = {}
    covered: dict[str, list[tuple[int, int]]] = {}
    jobs: list[RatingJob] = []
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
    if loaded is not None:
        done = {(invoice.customer, invoice.period_start_us) for invoice in finalized}
        for contract in loaded.configuration.contracts:
            if customer is not None and contract.customer != customer:
                continue
            end = at + 1 if contract.end_us is None else min(at + 1, contract.end_us)
            if end <= contract.start_us:
                continue
            try:
                cycle = billing_cycle(loaded.configuration, contract)
                for period in periods_overlapping(cycle, contract.start_us, end):
                    covered.setdefault(contract.customer, []).append(
                        (period.start_us, period.end_us)
                    )
                    if (contract.customer, period.start_us) in done:
                        continue
                    spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
                    if spans:
                        jobs.append(
                            RatingJob(contract.customer, period, spans, head, loaded.configuration)
                        )
            except Exception as error:
                failed.setdefault(
                    contract.customer, CustomerFailure(contract.customer, failure_reason(error))
                )
    signature = (
        customer,
        None if loaded is None else (loaded.revision, loaded.content_sha256),
        tuple((invoice.invoice_id, invoice.revision) for invoice in finalized),
        tuple((job.customer, job.period.start_us, job.period.end_us) for job in jobs),
        tuple(sorted(failed)),
        tuple(sorted((name, tuple(spans)) for name, spans in covered.items())),
    )
    return _Plan(jobs, failed, covered, configuration, signature)


def _uncovered(
    connection: Any,
    configuration: Any,
    covered: dict[str, list[tuple[int, int]]],
    head: Cut,
    customer: str | None,
    after: Cut | None = None,
) -> list[tuple[str, MeterProblem]]:
    """The problems of the events inside ``head`` (and past ``after``, when given) that no
    rated period covers: usage of a customer with no contract, or outside its contract's
    span."""
    billable = billable_meters(configuration)
    if not billable:
        return []
    starts: dict[str, tuple[list[int], list[int]]] = {}
    for name, spans in covered.items():
        ordered = sorted(spans)
        starts[name] = ([s for s, _ in ordered], [e for _, e in ordered])
    candidates: list[tuple[int, int, str, str, int]] = []
    rows = event_reads.usage_candidates(connection, head, customer, after)
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
