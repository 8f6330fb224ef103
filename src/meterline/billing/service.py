"""Billing: apply pricing, draft and finalize invoices, explain, prove and audit them.

The shell around the pure core: it reads the clock, the ledger and the stored revisions,
asks ``core`` (model, rating, invoicing, lineage) to decide, and stores what it decided.
Every finalized invoice records the configuration revision and the consistent cut of the
ledger it was rated through (``"ledger": {"through": [heads...]}``, ``core.cuts``), so
``audit`` can rebuild it byte for byte from the raw events.

Late events (time in a finalized period, inside a newer cut but outside the cut the
invoice was closed through, in the customer's partition) are never an edit: at the next
close each such period is re-rated through the new cut and
the difference becomes an ``adjustment`` line on the customer's next invoice, its
lineage the late events alone; or, on request, a credit note does the same at once.

Rating one customer never stops another's: ``close`` finalizes every customer it can and
reports each one it could not (``CloseReport.failed``, with the reason), and the events
its ratings could not bill (``CloseReport.unbillable``: see ``billing.unbillable``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from meterline.billing.credits import (
    CreditInputs,
    credit_book,
    credit_lines,
    credit_report,
    credits_section,
    grant_document,
    grant_errors,
    in_period,
    purchase_document,
    stored_charges,
    stored_grant,
    threshold_document,
    timeline_of,
    unbilled_usage,
)
from meterline.billing.scan import RatingJob, run_jobs
from meterline.billing.unbillable import (
    CustomerFailure,
    UnbillableReport,
    UnbillableUsage,
    failure_reason,
    job_problems,
    unbillable_report,
    usage_records,
)
from meterline.clock import Clock, system_clock_us
from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, RetireAllRefused, read_yaml
from meterline.core.credits import Charge, CreditBook, CreditError, Grant, cut_instants
from meterline.core.cuts import Cut
from meterline.core.events import decode_exact, encode_canonical, format_timestamp
from meterline.core.findings import Finding, describe_error
from meterline.core.grants import contract_grants
from meterline.core.invoicing import (
    Adjustment,
    ExtraLine,
    InvoiceHeader,
    build_invoice,
    charges_total,
    invoice_bytes,
)
from meterline.core.lineage import MerkleBuilder, inclusion_path, verify_proof
from meterline.core.model import (
    Configuration,
    Contract,
    Segment,
    TermsError,
    segments,
    terms_at,
)
from meterline.core.money import MINOR_UNITS, MONEY_CONTEXT
from meterline.core.partitions import partition_of
from meterline.core.periods import (
    BillingCycle,
    BillingPeriod,
    local_date,
    local_midnight_us,
    period_containing,
    periods_overlapping,
)
from meterline.core.rating import window_charges
from meterline.errors import MeterlineError
from meterline.ledger import event_reads
from meterline.ledger.billing import (
    BillingConflict,
    BillingStore,
    CreditAction,
    Revision,
    StoredCreditNote,
    StoredGrant,
    StoredInvoice,
    revision_problems,
)
from meterline.ledger.database import DatabaseErrors
from meterline.ledger.integrity import OpenErrors, inspect_store, ledger_findings, unreadable
from meterline.ledger.ledger import Ledger
from meterline.ledger.location import describe

CREDIT_NOTE_SCHEMA = "meterline.credit-note/1"
_UNNUMBERED = "INV-unnumbered"
"""A close builds each document under this number and numbers the ones it keeps."""

_log = logging.getLogger(__name__)


class BillingError(MeterlineError, ValueError):
    """A billing request that cannot be met (a line without events, nothing to settle...)."""

    code = "billing_conflict"
    http_status = 409


class NotFound(BillingError):
    """The customer, contract, invoice, line or event asked for does not exist."""

    code = "not_found"
    http_status = 404


class RatingFailed(BillingError):
    """One customer's usage could not be rated (an amount beyond exact arithmetic, a
    price that cannot apply): the customer and the reason. Other customers are unaffected."""

    code = "rating_failed"
    http_status = 409

    def __init__(self, customer: str, reason: str) -> None:
        super().__init__(f"customer {customer!r} cannot be rated: {reason}")
        self.customer = customer
        self.reason = reason


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


class InvalidRequest(BillingError):
    """A request with invalid fields (each problem names its field): nothing was done."""

    code = "invalid_input"
    http_status = 422

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Loaded:
    """A stored revision, parsed."""

    revision: int
    configuration: Configuration
    content_sha256: str


@dataclass
class Change:
    kind: str
    key: str
    change: str  # created | changed | retired


@dataclass
class ApplyReport:
    """What ``apply`` did or, with ``dry_run``, would do."""

    dry_run: bool
    revision: int | None
    changes: list[Change]
    customers_affected: list[str]
    simulation: list[dict[str, Any]] = field(default_factory=list)
    simulated_period: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "revision": self.revision,
            "changes": [c.__dict__ for c in self.changes],
            "customers_affected": self.customers_affected,
            "simulation": {"period": self.simulated_period, "customers": self.simulation},
        }


@dataclass
class AuditReport:
    """What ``Billing.audit`` found: nothing (passed), or findings, first bad item first."""

    invoices: int = 0
    credit_notes: int = 0
    revisions: int = 0
    chain_intact: bool = True
    findings: list[Finding] = field(default_factory=list)
    unhashed_revisions: list[int] = field(default_factory=list)
    """Revisions stored before ``revision_sha256`` existed: their content is checked, their
    source text is covered by no hash."""

    @property
    def mismatches(self) -> list[str]:
        """The findings as lines of text."""
        return [str(finding) for finding in self.findings]

    @property
    def passed(self) -> bool:
        return self.chain_intact and not self.findings

    @property
    def unreadable(self) -> bool:
        """The store could not be read (a damaged file, an unreachable server)."""
        return any(finding.check == "store" for finding in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "invoices": self.invoices,
            "credit_notes": self.credit_notes,
            "revisions": self.revisions,
            "chain_intact": self.chain_intact,
            "mismatches": self.mismatches,
            "findings": [finding.as_dict() for finding in self.findings],
            "unhashed_revisions": self.unhashed_revisions,
        }


def billing_cycle(configuration: Configuration, contract: Contract) -> BillingCycle:
    """The contract's cycle: its plan's (at the start), anchored on its local start date."""
    plan = configuration.plan_version(contract.plan, contract.version, contract.start_us)
    if plan is None:
        raise BillingError(f"contract {contract.customer}: plan {contract.plan} not in force")
    return BillingCycle(
        plan.billing.cycle,
        plan.billing.anchor,
        contract.timezone,
        local_date(contract.timezone, contract.start_us),
    )


def _same_credit_history(
    old: Configuration, was: Contract, new: Configuration, contract: Contract, through_us: int
) -> bool:
    """Whether a revision leaves a finalized period's credit terms as they were: the same
    grants effective by its end, and the same overage and minimum commit."""
    before, after = was.credits, contract.credits
    if (before.overage, before.overage_prices, before.minimum_commit) != (
        after.overage,
        after.overage_prices,
        after.minimum_commit,
    ):
        return False
    return contract_grants(old, was, billing_cycle(old, was), through_us) == contract_grants(
        new, contract, billing_cycle(new, contract), through_us
    )


def _cuts(
    inputs: CreditInputs, period: BillingPeriod, timezone: str, *more: int
) -> tuple[int, ...] | None:
    """Window edges for a period's credit burn-down: every instant the active grants may
    change, and each local midnight (so the credit ledger is at least daily); None when
    the customer has no credit terms and no grants (the invoice then needs no windows)."""
    if inputs.is_empty():
        return None
    instants = set(cut_instants(inputs.grants, inputs.voids, period.start_us, period.end_us))
    day = local_date(timezone, period.start_us)
    while True:
        day += timedelta(days=1)
        midnight = local_midnight_us(timezone, day)
        if midnight >= period.end_us:
            break
        instants.add(midnight)
    instants.update(t for t in more if period.start_us < t < period.end_us)
    return tuple(sorted(instants))


@dataclass
class CreditPart:
    """A period's credit ledger as it shows on the invoice."""

    lines: list[ExtraLine]
    section: dict[str, Any]
    charges: list[Charge]
    book: CreditBook


def _currency(segment_list: list[Segment]) -> str:
    return segment_list[0].terms.plan.currency if segment_list else "USD"


@contextmanager
def _rating(customer: str) -> Iterator[None]:
    """Turn a failure to rate ``customer`` (arithmetic beyond exact, a price that cannot
    apply) into ``RatingFailed``, naming the customer; billing errors pass as they are."""
    try:
        yield
    except BillingError:
        raise
    except (ArithmeticError, ValueError) as error:
        raise RatingFailed(customer, failure_reason(error)) from error


def _failure(
    customer: str, error: Exception, period: BillingPeriod | None = None
) -> CustomerFailure:
    """A customer a close could not close, and why (an unexpected error is logged whole)."""
    if not isinstance(error, (BillingError, ArithmeticError, ValueError)):
        _log.exception("closing %s failed", customer, exc_info=error)
    reason = error.reason if isinstance(error, RatingFailed) else failure_reason(error)
    return CustomerFailure(customer, reason, period)


def _ordered(failed: dict[str, CustomerFailure]) -> list[CustomerFailure]:
    return sorted(failed.values(), key=lambda failure: failure.customer)


class Billing:
    """Pricing configuration and invoices over one ledger."""

    def __init__(self, ledger: Ledger, store: BillingStore, clock: Clock = system_clock_us):
        self.ledger = ledger
        self.store = store
        self.clock = clock
        self._loaded: dict[int, Loaded] = {}
        self.listeners: list[Callable[[str | None], None]] = []
        """Told the customer (None: everyone) whose credit or terms just changed."""
        self.unbillable_listeners: list[Callable[[list[UnbillableUsage]], object]] = []
        """Told the unbillable usage each close met (the server publishes webhooks)."""

    def _changed(self, customer: str | None) -> None:
        for listener in self.listeners:
            listener(customer)

    @property
    def _connection(self) -> Any:
        return self.ledger.store._reader()  # type: ignore[attr-defined]

    def ledger_cut(self) -> Cut:
        """The ledger's current consistent cut: what a close, draft or report reads through."""
        return self.ledger.store.cut()

    def _partition(self, customer: str) -> int:
        return partition_of(customer, self.ledger.store.partitions)

    # -- configuration ----------------------------------------------------------------------

    def load(self, revision: int | None = None) -> Loaded | None:
        stored = self.store.revision(revision)
        if stored is None:
            return None
        cached = self._loaded.get(stored.revision)
        if cached is not None and cached.content_sha256 == stored.content_sha256.hex():
            return cached
        loaded = self._parse_stored(stored)
        self._loaded[stored.revision] = loaded
        return loaded

    @staticmethod
    def _parse_stored(stored: Revision) -> Loaded:
        configuration = parse_configuration(
            decode_exact(stored.content), name=f"revision {stored.revision}"
        )
        return Loaded(stored.revision, configuration, stored.content_sha256.hex())

    def current(self) -> Loaded:
        loaded = self.load()
        if loaded is None:
            raise NotFound("no pricing applied yet (apply a pricing file first)")
        return loaded

    def apply(
        self,
        text: str,
        name: str = "pricing.yaml",
        dry_run: bool = False,
        allow_retire_all: bool = False,
    ) -> ApplyReport:
        """Validate ``text``, plan the changes, simulate the last closed period; store the
        new revision unless ``dry_run``. Raises ``ConfigurationError`` naming paths, and
        ``RetireAllRefused`` (dry run or not) for a file that defines no meters, plans or
        contracts or keeps none of those in force, unless ``allow_retire_all``."""
        data, positions = read_yaml(text, name)
        new = parse_configuration(data, positions, name)
        previous = self.load()
        content = encode_canonical(data if data is not None else {})
        if previous is not None and hashlib.sha256(content).hexdigest() == previous.content_sha256:
            # nothing changed: nothing to store, and a dry run names no revision
            return ApplyReport(dry_run, None if dry_run else previous.revision, [], [])
        old = previous.configuration if previous is not None else Configuration()
        if not allow_retire_all:
            # an empty or wrong file would otherwise retire every meter, plan and contract
            def objects(configuration: Configuration) -> dict[str, set[str]]:
                return {
                    "meter": {m.key for m in configuration.meters},
                    "plan version": {p.label for p in configuration.plans},
                    "contract": {c.customer for c in configuration.contracts},
                }

            before, after = objects(old), objects(new)
            counts = [
                f"{len(keys)} {kind}{'' if len(keys) == 1 else 's'}"
                for kind, keys in before.items()
                if keys
            ]
            in_force = " and ".join([", ".join(counts[:-1]), counts[-1]] if counts[1:] else counts)
            if not any(after.values()):
                retires = f"; applying it would retire all {in_force} in force" if in_force else ""
                raise RetireAllRefused([f"{name}: defines no meters, plans or contracts{retires}"])
            if in_force and not any(before[kind] & after[kind] for kind in before):
                raise RetireAllRefused(
                    [
                        f"{name}: keeps none of the {in_force} in force; applying it would"
                        " retire every one of them (is it the right file?)"
                    ]
                )
        now_us = self.clock()
        self._check_history(old, new, data, positions, name)
        changes = diff(old, new)
        affected = self._affected(old, new, now_us, changes)
        period_label, simulation = self._simulate(old, new, now_us)
        revision = None
        if not dry_run:
            revision = self.store.add_revision(now_us, name, text, content).revision
            self._changed(None)
        return ApplyReport(dry_run, revision, changes, affected, simulation, period_label)

    def _check_history(
        self,
        old: Configuration,
        new: Configuration,
        data: Any,
        positions: dict[str, int],
        name: str,
    ) -> None:
        errors = []
        old_versions = {p.label: p for p in old.plans}
        for plan_index, plan in enumerate((data or {}).get("plans") or []):
            for version_index, _ in enumerate(plan.get("versions") or []):
                path = f"plans[{plan_index}].versions[{version_index}]"
                match = [p for p in new.plans if p.plan == plan.get("key")]
                for candidate in match:
                    if candidate.version != (plan["versions"][version_index] or {}).get("version"):
                        continue
                    before = old_versions.get(candidate.label)
                    if before is not None and before != candidate:
                        errors.append(
                            f"{name}:{positions.get(path, '?')}: {path}: plan version"
                            f" {candidate.label} is immutable once applied; add version"
                            f" {candidate.version + 1} with an effective_from instead"
                        )
        for invoice in self._period_invoices():
            contract = new.contract(invoice.customer)
            loaded = self.load(invoice.revision)
            if loaded is None:
                continue
            was = loaded.configuration.contract(invoice.customer)
            if contract is None or was is None:
                continue
            try:
                same = segments(
                    loaded.configuration, was, invoice.period_start_us, invoice.period_end_us
                ) == segments(
                    new, contract, invoice.period_start_us, invoice.period_end_us
                ) and _same_credit_history(
                    loaded.configuration, was, new, contract, invoice.period_end_us - 1
                )
            except (ValueError, BillingError):
                same = False
            if not same:
                index = next(
                    i for i, c in enumerate(new.contracts) if c.customer == invoice.customer
                )
                path = f"contracts[{index}]"
                errors.append(
                    f"{name}:{positions.get(path, '?')}: {path}: changes the terms of finalized"
                    f" invoice {invoice.invoice_id} ({invoice.customer},"
                    f" {format_timestamp(invoice.period_start_us)[:10]}); history is not"
                    " rewritten: amend from a later date, or issue a credit note"
                )
        if errors:
            raise ConfigurationError(errors)

    def _affected(
        self, old: Configuration, new: Configuration, now_us: int, changes: list[Change]
    ) -> list[str]:
        affected = {c.key for c in changes if c.kind == "contract"}
        for contract in new.contracts:
            was = old.contract(contract.customer)
            if was is None:
                continue
            cycle = billing_cycle(new, contract)
            current = period_containing(cycle, now_us)
            upcoming = BillingPeriod(current.end_us, current.end_us + 1)
            for period in (current, upcoming):
                try:
                    if segments(old, was, period.start_us, period.end_us) != segments(
                        new, contract, period.start_us, period.end_us
                    ):
                        affected.add(contract.customer)
                except ValueError:
                    affected.add(contract.customer)
        return sorted(affected)

    def _simulate(
        self, old: Configuration, new: Configuration, now_us: int
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """Each contract's last closed period re-rated under the terms it will be on at its
        next period start, by the old configuration (before) and the new one (after), so
        the difference is the change alone, on real usage."""
        through = self.ledger_cut()
        jobs: list[tuple[str, RatingJob, RatingJob | None]] = []
        label = None
        for contract in new.contracts:
            cycle = billing_cycle(new, contract)
            current = period_containing(cycle, now_us)
            last = period_containing(cycle, current.start_us - 1)
            if contract.start_us >= last.end_us:
                continue
            label = label or str(local_date(contract.timezone, last.start_us))
            upcoming = current.end_us
            after_job = self._forward_job(new, contract, upcoming, last, through)
            if after_job is None:
                continue
            was = old.contract(contract.customer)
            before_job = (
                None if was is None else self._forward_job(old, was, upcoming, last, through)
            )
            jobs.append((contract.customer, after_job, before_job))
        run_jobs(
            self._connection,
            [job for _, after, before in jobs for job in (after, before) if job is not None],
        )
        result = []
        for customer, after_job, before_job in jobs:
            after_total = self._total(after_job, new)
            before_total = self._total(before_job, old) if before_job is not None else Decimal(0)
            result.append(
                {
                    "customer": customer,
                    "currency": _currency(after_job.segments),
                    "before": str(before_total),
                    "after": str(after_total),
                    "difference": str(after_total - before_total),
                }
            )
        return label, result

    @staticmethod
    def _forward_job(
        configuration: Configuration,
        contract: Contract,
        at_us: int,
        period: BillingPeriod,
        through: Cut,
    ) -> RatingJob | None:
        """A job rating ``period`` wholly under the terms in force at ``at_us``."""
        if not contract.active_at(at_us):
            return None
        try:
            terms = terms_at(configuration, contract, at_us, at_us)
        except TermsError:
            return None
        whole = [Segment(period.start_us, period.end_us, terms, False)]
        return RatingJob(contract.customer, period, whole, through, configuration)

    def _total(self, job: RatingJob, configuration: Configuration) -> Decimal:
        if not job.segments:
            return Decimal(0)
        document = self._document(job, configuration, 0, "", None, None, [])
        return Decimal(document["total"])

    # -- invoices ---------------------------------------------------------------------------

    def _document(
        self,
        job: RatingJob,
        configuration: Configuration,
        revision: int,
        configuration_hash: str,
        number: str | None,
        finalized_at_us: int | None,
        adjustments: list[Adjustment],
        credit: CreditPart | None = None,
    ) -> dict[str, Any]:
        contract = configuration.contract(job.customer)
        assert contract is not None
        currency = _currency(job.segments)
        rated = job.rater.lines(currency, configuration)
        header = InvoiceHeader(
            job.customer,
            currency,
            contract.timezone,
            job.period,
            revision,
            configuration_hash,
            job.through,
            number,
            finalized_at_us,
        )
        return build_invoice(
            header,
            job.segments,
            rated,
            adjustments,
            configuration,
            contract.credits.minimum_commit,
            [] if credit is None else credit.lines,
            None if credit is None else credit.section,
        )

    def _contract(self, loaded: Loaded, customer: str) -> Contract:
        contract = loaded.configuration.contract(customer)
        if contract is None:
            raise NotFound(f"customer {customer!r} has no contract")
        return contract

    def draft(self, customer: str, at_us: int | None = None) -> dict[str, Any]:
        """The invoice for the period containing ``at_us`` (now), recomputed from the
        ledger as it stands: usage, fees, and adjustments for late events so far."""
        loaded = self.current()
        contract = self._contract(loaded, customer)
        at = self.clock() if at_us is None else at_us
        period = period_containing(billing_cycle(loaded.configuration, contract), at)
        stored = self._finalized(customer, period.start_us)
        if stored is not None:
            document: dict[str, Any] = decode_exact(stored.document)
            return document
        spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
        if not spans:
            raise NotFound(f"customer {customer!r} has no contract in force in that period")
        through = self.ledger_cut()
        inputs = self._credit_inputs(loaded.configuration, contract, period.end_us - 1)
        job = RatingJob(
            customer,
            period,
            spans,
            through,
            loaded.configuration,
            cuts=_cuts(inputs, period, contract.timezone),
        )
        pending = self._late_jobs([job], through)
        run_jobs(self._connection, [job, *[j for _, _, j, _ in pending]])
        with _rating(customer):
            adjustments = self._adjustments(pending).get(customer, [])
            credit = None
            if job.cuts is not None:
                prior = self._prior_charges(loaded.configuration, contract, period, through)
                credit = self._credit_part(job, loaded.configuration, inputs, prior)
            return self._document(
                job,
                loaded.configuration,
                loaded.revision,
                loaded.content_sha256,
                None,
                None,
                adjustments,
                credit,
            )

    def _finalized(self, customer: str, period_start_us: int) -> StoredInvoice | None:
        for invoice in self._period_invoices(customer):
            if invoice.period_start_us == period_start_us:
                return invoice
        return None

    def close(self, through_us: int | None = None) -> CloseReport:
        """Finalize every contract period that ended by ``through_us`` (now) and is not yet
        finalized, oldest first; adjustments for late events ride on each customer's
        earliest newly closed invoice. All invoices of one close are stored atomically.

        One customer's rating never stops another's close: a customer that cannot be
        rated (its contract, a period, an amount) is left out whole, none of its periods
        finalized, and reported in ``failed`` with the reason; events a rating cannot
        bill are reported in ``unbillable`` (and told to ``unbillable_listeners``)."""
        loaded = self.current()
        configuration = loaded.configuration
        now_us = self.clock()
        through_instant = now_us if through_us is None else min(through_us, now_us)
        head = self.ledger_cut()
        done = {(i.customer, i.period_start_us) for i in self._period_invoices()}
        failed: dict[str, CustomerFailure] = {}
        jobs: list[RatingJob] = []
        for contract in configuration.contracts:
            try:
                jobs.extend(self._close_jobs(configuration, contract, through_instant, head, done))
            except Exception as error:
                failed[contract.customer] = _failure(contract.customer, error)
        if not jobs:
            return self._closed(CloseReport(failed=_ordered(failed)))
        pending = self._late_jobs(jobs, head, failed)
        run_jobs(self._connection, [*jobs, *[j for _, _, j, _ in pending]])
        adjustments = self._adjustments(pending, failed)
        jobs.sort(key=lambda job: (job.period.end_us, job.customer))
        documents: list[tuple[RatingJob, dict[str, Any]]] = []
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
                    inputs = self._credit_inputs(configuration, holder, job.period.end_us - 1)
                    if job.customer not in closed_charges:
                        closed_charges[job.customer] = self._stored_charges(
                            job.customer, job.period.start_us
                        )
                    prior = closed_charges[job.customer]
                    credit = self._credit_part(job, configuration, inputs, prior)
                    prior.extend(inputs.relevant(credit.charges))
                document = self._document(
                    job,
                    configuration,
                    loaded.revision,
                    loaded.content_sha256,
                    _UNNUMBERED,
                    now_us,
                    extra,
                    credit,
                )
            except Exception as error:
                failed[job.customer] = _failure(job.customer, error, job.period)
                continue
            documents.append((job, document))
        first_number = int(self.store.next_invoice_id().split("-")[1])
        stored = []
        kept = [(job, document) for job, document in documents if job.customer not in failed]
        for offset, (job, document) in enumerate(kept):
            number = f"INV-{first_number + offset:06d}"
            document["number"] = number
            content = invoice_bytes(document)
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
        if stored:
            try:
                self.store.add_invoices(stored)
            except BillingConflict as error:
                raise BillingError(
                    f"{error}; another close won the race, nothing was stored"
                ) from None
        rated = [*jobs, *[job for _, _, job, _ in pending]]
        unbillable = usage_records(self._connection, head.partitions, job_problems(rated))
        return self._closed(CloseReport(stored, _ordered(failed), unbillable))

    def unbillable(self, customer: str | None = None, at_us: int | None = None) -> UnbillableReport:
        """Every event no invoice can bill, per customer and reason, and the customers that
        cannot be rated (``billing.unbillable.unbillable_report``)."""
        return unbillable_report(self, customer, at_us)

    def _close_jobs(
        self,
        configuration: Configuration,
        contract: Contract,
        through_instant: int,
        head: Cut,
        done: set[tuple[str, int]],
    ) -> list[RatingJob]:
        """The jobs rating ``contract``'s periods that ended by ``through_instant`` and are
        not finalized yet."""
        cycle = billing_cycle(configuration, contract)
        end = (
            through_instant
            if contract.end_us is None
            else min(through_instant, contract.end_us + 1)
        )
        if end <= contract.start_us:
            return []
        jobs = []
        for period in periods_overlapping(cycle, contract.start_us, end):
            if period.end_us > through_instant or (contract.customer, period.start_us) in done:
                continue
            spans = segments(configuration, contract, period.start_us, period.end_us)
            if spans:
                inputs = self._credit_inputs(configuration, contract, period.end_us - 1)
                cuts = _cuts(inputs, period, contract.timezone)
                jobs.append(
                    RatingJob(contract.customer, period, spans, head, configuration, cuts=cuts)
                )
        return jobs

    def _closed(self, report: CloseReport) -> CloseReport:
        """Tell the listeners the unbillable usage a close met (a listener's failure is
        logged: it never undoes or stops the close)."""
        if report.unbillable:
            for listener in list(self.unbillable_listeners):
                try:
                    listener(report.unbillable)
                except Exception:
                    _log.exception("unbillable usage listener failed")
        return report

    # -- credits ----------------------------------------------------------------------------

    def _period_invoices(self, customer: str | None = None) -> list[StoredInvoice]:
        return [i for i in self.store.invoices(customer) if i.kind == "period"]

    def _credit_inputs(
        self,
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
        for row in self.store.grants(contract.customer):
            if known_at_us is not None and row.created_at_us > known_at_us:
                continue
            grant = stored_grant(row)
            if grant.effective_us <= through_us:
                grants.append(grant)
        actions = [
            a
            for a in self.store.actions(contract.customer)
            if a.at_us <= through_us + 1 and (known_at_us is None or a.at_us <= known_at_us)
        ]
        voids, adjustments = timeline_of(actions)
        return CreditInputs(grants, voids, adjustments, contract.credits)

    def _stored_charges(self, customer: str, before_us: int) -> list[Charge]:
        """The charges finalized invoices of ``customer`` kept, for periods before
        ``before_us``, in period order."""
        charges: list[Charge] = []
        for invoice in sorted(self._period_invoices(customer), key=lambda i: i.period_start_us):
            if invoice.period_start_us < before_us:
                charges.extend(stored_charges(decode_exact(invoice.document)))
        return charges

    def _prior_charges(
        self,
        configuration: Configuration,
        contract: Contract,
        period: BillingPeriod,
        through: Cut,
    ) -> list[Charge]:
        """Charges of every period before ``period``: kept by its invoice when finalized,
        else rated now (a period that ended but was not closed yet)."""
        finalized = {i.period_start_us for i in self._period_invoices(contract.customer)}
        charges = self._stored_charges(contract.customer, period.start_us)
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
            inputs = self._credit_inputs(configuration, contract, earlier.end_us - 1)
            cuts = _cuts(inputs, earlier, contract.timezone) or ()
            job = RatingJob(contract.customer, earlier, spans, through, configuration, cuts=cuts)
            open_jobs.append(job)
        run_jobs(self._connection, open_jobs)
        for job in open_jobs:
            charges.extend(window_charges(job.rater, _currency(job.segments), configuration))
        return sorted(charges, key=lambda charge: charge.end_us)

    def _credit_part(
        self,
        job: RatingJob,
        configuration: Configuration,
        inputs: CreditInputs,
        prior: list[Charge],
        known_at_us: int | None = None,
    ) -> CreditPart:
        """The period's credit ledger as invoice lines and the ``credits`` section."""
        currency = _currency(job.segments)
        charges = window_charges(job.rater, currency, configuration)
        try:
            book = credit_book(inputs, [*prior, *charges], until_us=job.period.end_us)
        except CreditError as error:
            raise BillingError(f"credits of {job.customer}: {error}") from None
        entries = [entry for entry in book.entries if in_period(entry, job.period)]
        lines = credit_lines(
            book, entries, job.segments, configuration, inputs, job.period, currency
        )
        lines += self._billed_early(job.customer, job.period, known_at_us)
        section = credits_section(
            book, entries, inputs.relevant(charges), job.period, inputs.overage
        )
        return CreditPart(lines, section, charges, book)

    def _billed_early(
        self, customer: str, period: BillingPeriod, known_at_us: int | None
    ) -> list[ExtraLine]:
        """A ``prepaid`` line per threshold invoice of the period: billed already."""
        lines = []
        for invoice in self.store.invoices(customer):
            if invoice.kind != "threshold" or invoice.period_start_us != period.start_us:
                continue
            if known_at_us is not None and invoice.finalized_at_us > known_at_us:
                continue
            billed = Decimal(decode_exact(invoice.document)["total"])
            lines.append(
                ExtraLine(
                    "prepaid",
                    f"Billed early on {invoice.invoice_id} (threshold reached)",
                    -billed,
                    None,
                    {"invoice": invoice.invoice_id},
                )
            )
        return lines

    # -- credit operations: balances, grants, voids, adjustments, thresholds ---------------

    def credits(self, customer: str, as_of_us: int | None = None) -> dict[str, Any]:
        """The customer's credit ledger as of ``as_of_us`` (now): every grant with its
        balance (the sum of its entries) and status, per-unit totals, and the entries."""
        at = self.clock() if as_of_us is None else as_of_us
        book, inputs = self.credit_history(customer, at)
        made = [stored_grant(row) for row in self.store.grants(customer)]
        pending = [g for g in made if g.created <= at and g.effective_us > at]
        return credit_report(customer, at, book, inputs, pending)

    def credit_history(self, customer: str, at: int) -> tuple[CreditBook, CreditInputs]:
        """The customer's credit book run up to ``at`` (finalized periods as billed, the
        open period rated now) and the inputs it ran on."""
        loaded = self.current()
        configuration = loaded.configuration
        contract = self._contract(loaded, customer)
        cycle = billing_cycle(configuration, contract)
        period = period_containing(cycle, at)
        inputs = self._credit_inputs(configuration, contract, at)
        through = self.ledger_cut()
        with _rating(customer):
            charges = self._prior_charges(configuration, contract, period, through)
        stored = self._finalized(customer, period.start_us)
        if stored is not None:
            charges.extend(stored_charges(decode_exact(stored.document)))
        else:
            spans = segments(configuration, contract, period.start_us, period.end_us)
            if spans and not inputs.is_empty():
                cuts = _cuts(inputs, period, contract.timezone, at)
                job = RatingJob(customer, period, spans, through, configuration, cuts=cuts)
                run_jobs(self._connection, [job])
                with _rating(customer):
                    charges.extend(window_charges(job.rater, _currency(spans), configuration))
        try:
            book = credit_book(inputs, charges, until_us=at)
        except CreditError as error:
            raise BillingError(f"credits of {customer}: {error}") from None
        return book, inputs

    def _grant_ids(self, configuration: Configuration, contract: Contract) -> set[str]:
        """Every grant of the customer effective by now, and those made to start later."""
        now_us = self.clock()
        inputs = self._credit_inputs(configuration, contract, max(now_us, contract.start_us))
        ids = {grant.grant_id for grant in inputs.grants}
        ids.update(row.grant_id for row in self.store.grants(contract.customer))
        return ids

    def grant(
        self,
        customer: str,
        unit: str,
        amount: Decimal,
        reason: str,
        paid: Decimal = Decimal(0),
        priority: int = 50,
        effective_us: int | None = None,
        expires_us: int | None = None,
        scope: tuple[str, ...] = (),
        source: str = "api",
    ) -> tuple[StoredGrant, StoredInvoice | None]:
        """Grant credit to ``customer`` now (or from ``effective_us``, never in the past);
        a paid grant is invoiced at once, atomically with it (a ``purchase`` invoice)."""
        loaded = self.current()
        configuration = loaded.configuration
        contract = self._contract(loaded, customer)
        now_us = self.clock()
        effective = now_us if effective_us is None else effective_us
        errors = grant_errors(
            configuration, unit, amount, paid, priority, scope, reason, effective, expires_us
        )
        if effective < now_us:
            errors.append("effective: must not be in the past (history is not rewritten)")
        if contract.end_us is not None and effective >= contract.end_us:
            errors.append("effective: the contract has ended by then")
        try:
            plan = terms_at(configuration, contract, max(effective, contract.start_us), effective)
        except TermsError:
            errors.append("effective: no plan is in force for the contract then")
            raise InvalidRequest(errors) from None
        currency = plan.plan.currency
        if unit in MINOR_UNITS and unit != currency:
            errors.append(f"credit_type: {unit} is not this contract's currency ({currency})")
        if errors:
            raise InvalidRequest(errors)
        credit_type = configuration.credit_type(unit)
        if credit_type is not None and credit_type.currency != currency:
            raise BillingError(f"unit: {unit} is valued in {credit_type.currency}, not {currency}")
        grant = Grant(
            grant_id="",
            unit=unit,
            amount=amount,
            effective_us=effective,
            expires_us=expires_us,
            priority=priority,
            paid=paid,
            paid_currency=currency,
            scope=scope,
            created_us=now_us,
            source=source,
            reason=reason,
        )
        make_invoice = None
        if paid > 0:

            def make_invoice(grant_id: str, invoice_id: str) -> StoredInvoice:
                document = purchase_document(
                    invoice_id, customer, currency, contract.timezone, grant, grant_id, now_us
                )
                content = invoice_bytes(document)
                return StoredInvoice(
                    invoice_id,
                    customer,
                    now_us,
                    now_us,
                    loaded.revision,
                    self.ledger_cut().head(self._partition(customer)),
                    now_us,
                    content,
                    hashlib.sha256(content).digest(),
                    "purchase",
                )

        made = self.store.add_grant(
            customer, now_us, lambda grant_id: grant_document(grant), make_invoice
        )
        self._changed(customer)
        return made

    def _own_grant(self, customer: str, grant_id: str) -> None:
        loaded = self.current()
        contract = self._contract(loaded, customer)
        if grant_id not in self._grant_ids(loaded.configuration, contract):
            raise NotFound(f"customer {customer!r} has no grant {grant_id!r}")

    def _grant_status(self, customer: str, grant_id: str) -> str:
        report = self.credits(customer)
        return next((g["status"] for g in report["grants"] if g["grant"] == grant_id), "pending")

    def void_grant(self, customer: str, grant_id: str, reason: str) -> CreditAction:
        """Void a grant from now on: its balance leaves to ``voided`` (never deleted)."""
        if not reason.strip():
            raise InvalidRequest(["reason: a void needs a reason"])
        self._own_grant(customer, grant_id)
        if any(a.kind == "void" and a.grant_id == grant_id for a in self.store.actions(customer)):
            raise BillingError(f"grant {grant_id} is already void")
        status = self._grant_status(customer, grant_id)
        if status in ("expired", "reset"):
            raise BillingError(f"grant {grant_id} has {status}; nothing is left to void")
        action = CreditAction(grant_id, customer, self.clock(), "void", None, reason)
        self.store.add_action(action)
        self._changed(customer)
        return action

    def adjust_grant(
        self, customer: str, grant_id: str, amount: Decimal, reason: str
    ) -> CreditAction:
        """Add to (positive) or take from (negative) a grant's balance by hand, now."""
        if not reason.strip():
            raise InvalidRequest(["reason: an adjustment needs a reason"])
        if amount == 0:
            raise InvalidRequest(["amount: an adjustment must not be zero"])
        self._own_grant(customer, grant_id)
        status = self._grant_status(customer, grant_id)
        if status not in ("active", "exhausted"):
            raise BillingError(
                f"grant {grant_id} is {status}; only a grant in force can be adjusted"
            )
        action = CreditAction(grant_id, customer, self.clock(), "adjust", str(amount), reason)
        self.store.add_action(action)
        self._changed(customer)
        return action

    def check_thresholds(self, customer: str | None = None) -> list[StoredInvoice]:
        """Bill now every contract whose unbilled usage this period reached its threshold:
        fires when ``previous < threshold <= current`` (``previous`` is zero after each
        threshold invoice, which bills everything unbilled), once per crossing: the store
        refuses a second invoice computed from the same state (a concurrent check)."""
        loaded = self.current()
        result = []
        for contract in loaded.configuration.contracts:
            threshold = contract.credits.threshold
            if threshold is None or (customer is not None and contract.customer != customer):
                continue
            try:
                document = self.draft(contract.customer)
            except NotFound:
                continue
            except RatingFailed:
                _log.warning("threshold of %s not checked: cannot be rated", contract.customer)
                continue
            if document["status"] != "draft":
                continue
            unbilled = unbilled_usage(document)
            if unbilled < threshold:
                continue
            invoice = self._threshold_invoice(loaded, contract, document, unbilled, threshold)
            if invoice is not None:
                result.append(invoice)
        return result

    def true_up(self, customer: str, reason: str, control: str) -> StoredInvoice | None:
        """Bill ``customer``'s unbilled usage of the period now, because ``control`` (a
        control firing's id) said so; the period invoice nets it like a threshold invoice.
        Idempotent by ``control``: a second call returns the invoice the first made. None
        when nothing is unbilled."""
        for invoice in self.store.invoices(customer):
            if invoice.kind == "threshold" and (
                decode_exact(invoice.document).get("control") == control
            ):
                return invoice
        loaded = self.current()
        contract = self._contract(loaded, customer)
        document = self.draft(customer)
        if document["status"] != "draft":
            return None
        unbilled = unbilled_usage(document)
        if unbilled <= 0:
            return None
        return self._threshold_invoice(
            loaded, contract, document, unbilled, None, reason=reason, control=control
        )

    def _threshold_invoice(
        self,
        loaded: Loaded,
        contract: Contract,
        draft: dict[str, Any],
        unbilled: Decimal,
        threshold: Decimal | None,
        reason: str | None = None,
        control: str | None = None,
    ) -> StoredInvoice | None:
        cycle = billing_cycle(loaded.configuration, contract)
        now_us = self.clock()
        period = period_containing(cycle, now_us)
        seen = len(
            [
                i
                for i in self.store.invoices(contract.customer)
                if i.kind == "threshold" and i.period_start_us == period.start_us
            ]
        )
        head = Cut.from_json(draft["ledger"]["through"], "ledger.through")
        invoice_id = self.store.next_invoice_id()
        document = threshold_document(
            invoice_id, draft, unbilled, threshold, head.to_json(), now_us, reason, control
        )
        content = invoice_bytes(document)
        stored = StoredInvoice(
            invoice_id,
            contract.customer,
            period.start_us,
            period.end_us,
            loaded.revision,
            head.head(self._partition(contract.customer)),
            now_us,
            content,
            hashlib.sha256(content).digest(),
            "threshold",
        )

        def guard(connection: Any) -> None:
            count = connection.execute(
                "SELECT COUNT(*) FROM invoices WHERE customer = ? AND kind = 'threshold'"
                " AND period_start_us = ?",
                (contract.customer, period.start_us),
            ).fetchone()[0]
            if count != seen:
                raise BillingConflict("a threshold invoice was made meanwhile")

        try:
            self.store.add_invoices([stored], guard)
        except BillingConflict:
            return None
        return stored

    # -- late events ------------------------------------------------------------------------

    def invoice_cut(self, invoice: StoredInvoice) -> Cut:
        """The cut a stored invoice was rated through (its document's ``ledger.through``)."""
        return invoice_cut(decode_exact(invoice.document))

    def _accounted(self, invoice: StoredInvoice) -> tuple[Cut, Decimal]:
        """How far a finalized period has been billed: (through cut, total billed),
        following adjustments on later invoices and credit notes."""
        through = self.invoice_cut(invoice)
        billed = charges_total(decode_exact(invoice.document))
        records = [decode_exact(i.document) for i in self.store.invoices(invoice.customer)]
        records += [decode_exact(n.document) for n in self.store.credit_notes(invoice.invoice_id)]
        for document in records:
            for line in document.get("lines", []):
                adjusts = line.get("adjusts")
                if not adjusts or adjusts.get("invoice") != invoice.invoice_id:
                    continue
                adjusted = Cut.from_json(adjusts["through"], "adjusts.through")
                if adjusted != through and adjusted.includes(through):
                    through = adjusted
                    billed = Decimal(adjusts["rerated_total"])
        return through, billed

    def _late_jobs(
        self,
        jobs: list[RatingJob],
        head: Cut,
        failures: dict[str, CustomerFailure] | None = None,
    ) -> list[tuple[StoredInvoice, Decimal, RatingJob, Cut]]:
        """For each customer in ``jobs``: finalized periods with events past what was billed:
        (invoice, billed total, re-rating job through ``head``, accounted through). With
        ``failures``, a customer whose finalized period cannot be re-rated is recorded
        there instead of raising."""
        customers = {job.customer for job in jobs}
        invoices = [i for i in self._period_invoices() if i.customer in customers]
        if not invoices:
            return []
        # Only rows outside the cut every invoice includes and timed before the latest
        # finalized period's end can be late: the rest (the current period's usage) never
        # reaches Python, so a close does not copy a month of events to look for a few.
        lowest = head
        for invoice in invoices:
            lowest = lowest.intersection(self.invoice_cut(invoice))
        latest_end = max(i.period_end_us for i in invoices)
        late = event_reads.late_candidates(self._connection, lowest, head, latest_end)
        pending = []
        for invoice in invoices:
            try:
                through, billed = self._accounted(invoice)
                partition = self._partition(invoice.customer)
                if not any(
                    c == invoice.customer
                    and invoice.period_start_us <= t < invoice.period_end_us
                    and not through.covers(partition, s)
                    for c, t, s in late
                ):
                    continue
                job, _ = self._rerate(invoice, head)
            except Exception as error:
                if failures is None:
                    raise
                period = BillingPeriod(invoice.period_start_us, invoice.period_end_us)
                failures.setdefault(invoice.customer, _failure(invoice.customer, error, period))
                continue
            pending.append((invoice, billed, job, through))
        return pending

    def rated_periods(
        self, at_us: int | None = None, customer: str | None = None
    ) -> list[tuple[dict[str, Any], RatingJob]]:
        """Every finalized period invoice (as billed) and every customer's open period (its
        draft as of ``at_us``, now), each with a job that re-rated it keeping its events
        and measuring the cost-only meters too: what unit economics is computed from."""
        at = self.clock() if at_us is None else at_us
        head = self.ledger_cut()
        pairs: list[tuple[dict[str, Any], RatingJob]] = []
        for stored in self._period_invoices(customer):
            if stored.finalized_at_us > at:
                continue
            job, _ = self._rerate(
                stored,
                self.invoice_cut(stored),
                keep_events=True,
                also_meters=_cost_meters(self.load(stored.revision)),
            )
            pairs.append((decode_exact(stored.document), job))
        current = self.load()
        if current is not None:
            loaded = current
            for contract in loaded.configuration.contracts:
                if customer is not None and contract.customer != customer:
                    continue
                if contract.start_us > at:
                    continue
                period = period_containing(billing_cycle(loaded.configuration, contract), at)
                if self._finalized(contract.customer, period.start_us) is not None:
                    continue
                spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
                if not spans:
                    continue
                try:
                    document = self.draft(contract.customer, at)
                except BillingError:
                    continue
                job = RatingJob(
                    contract.customer,
                    period,
                    spans,
                    head,
                    loaded.configuration,
                    keep_events=True,
                    also_meters=_cost_meters(loaded),
                )
                pairs.append((document, job))
        run_jobs(self._connection, [job for _, job in pairs])
        return pairs

    def event_days(self, customer: str, start_us: int, end_us: int) -> dict[int, int]:
        """Each of the customer's events in [start, end): its sequence (within the
        customer's partition) and timestamp."""
        return event_reads.customer_event_times(self._connection, customer, start_us, end_us)

    def _rerate(
        self,
        invoice: StoredInvoice,
        through: Cut,
        keep_events: bool = False,
        also_meters: frozenset[str] = frozenset(),
    ) -> tuple[RatingJob, Loaded]:
        """A job re-rating a finalized invoice's period under the revision it was rated with,
        with the events up to ``through``."""
        loaded = self.load(invoice.revision)
        if loaded is None:
            raise BillingError(f"invoice {invoice.invoice_id}: revision {invoice.revision} missing")
        contract = self._contract(loaded, invoice.customer)
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

    def _adjustments(
        self,
        pending: list[tuple[StoredInvoice, Decimal, RatingJob, Cut]],
        failures: dict[str, CustomerFailure] | None = None,
    ) -> dict[str, list[Adjustment]]:
        """Per customer, the adjustment of each re-rated finalized period; with
        ``failures``, a customer whose re-rating cannot be priced is recorded there."""
        result: dict[str, list[Adjustment]] = {}
        for invoice, billed, job, through in pending:
            if failures is not None and invoice.customer in failures:
                continue
            loaded = self.load(invoice.revision)
            assert loaded is not None
            try:
                rerated = charges_total(
                    self._document(job, loaded.configuration, 0, "", None, None, [])
                )
            except Exception as error:
                if failures is None:
                    raise
                failures.setdefault(invoice.customer, _failure(invoice.customer, error, job.period))
                continue
            events, first, last, root = self._late_lineage(invoice, through, job.through)
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

    def _late_lineage(
        self, invoice: StoredInvoice, after: Cut, through: Cut
    ) -> tuple[int, int | None, int | None, bytes]:
        """The late events of ``invoice``'s period (inside ``through``, outside ``after``):
        how many, the first and last sequence (in the customer's partition), their root."""
        rows = event_reads.customer_event_hashes(
            self._connection,
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

    # -- reading invoices -------------------------------------------------------------------

    def invoice(self, invoice_id: str) -> StoredInvoice:
        stored = self.store.invoice(invoice_id)
        if stored is None:
            raise NotFound(f"no invoice {invoice_id!r}")
        return stored

    def document(self, invoice_id: str) -> dict[str, Any]:
        document: dict[str, Any] = decode_exact(self.invoice(invoice_id).document)
        return document

    def _ledger_proof(self, customer: str, event_id: str) -> dict[str, Any] | None:
        """The event's standalone proof against the newest signed checkpoint holding it
        (``meterline.proofs``: event -> batch -> partition -> checkpoint), None when no
        checkpoint holds it yet."""
        from meterline.errors import StoreError
        from meterline.ledger.event_proofs import prove_event

        try:
            proof = prove_event(self.ledger.store, customer, event_id)
        except StoreError:
            return None
        document: dict[str, Any] = json.loads(proof.to_json())
        return document

    def _line(self, document: dict[str, Any], line_number: int) -> dict[str, Any]:
        lines = document["lines"]
        if not 1 <= line_number <= len(lines):
            raise NotFound(f"line: invoice {document['number']} has lines 1 to {len(lines)}")
        line: dict[str, Any] = lines[line_number - 1]
        return line

    def line_events(self, invoice_id: str, line_number: int) -> list[tuple[int, bytes]]:
        """(sequence, ledger hash) of every event behind a usage or adjustment line: all of
        one customer, so all in its partition."""
        stored = self.invoice(invoice_id)
        document = self.document(invoice_id)
        line = self._line(document, line_number)
        if line["kind"] == "adjustment":
            adjusts = line["adjusts"]
            previous = self.invoice(adjusts["invoice"])
            return event_reads.customer_event_hashes(
                self._connection,
                previous.customer,
                Cut.from_json(adjusts["from"], "adjusts.from"),
                Cut.from_json(adjusts["through"], "adjusts.through"),
                previous.period_start_us,
                previous.period_end_us,
            )
        if line["kind"] != "usage":
            raise BillingError(f"line {line_number}: a {line['kind']} line has no events")
        job, loaded = self._rerate(stored, invoice_cut(document), keep_events=True)
        run_jobs(self._connection, [job])
        segment_index = next(
            i
            for i, s in enumerate(job.segments)
            if format_timestamp(s.start_us) == line["service"]["start"]
        )
        meter = loaded.configuration.meter(line["meter"])
        assert meter is not None
        group = tuple(line["group"].get(name) for name in meter.group_by)
        return job.rater.members(segment_index, meter.key, group)

    def explain(self, invoice_id: str, line_number: int) -> list[dict[str, Any]]:
        """The events behind a line, as the ledger holds them."""
        members = self.line_events(invoice_id, line_number)
        customer = self.invoice(invoice_id).customer
        return self.customer_records(customer, [sequence for sequence, _ in members])

    def customer_records(self, customer: str, sequences: list[int]) -> list[dict[str, Any]]:
        """``customer``'s events at ``sequences`` (within its partition), as the ledger holds
        them, in sequence order."""
        partition = self._partition(customer)
        return self._records([(partition, sequence) for sequence in sequences])

    def _records(self, events: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """The named (partition, sequence) events as the ledger holds them, in ledger order."""
        rows = event_reads.records_at(self._connection, self.ledger.store.partitions, events)
        return [
            {
                "partition": partition,
                "sequence": sequence,
                "id": event_id,
                "type": event_type,
                "timestamp": format_timestamp(timestamp_us),
                "properties": decode_exact(body).get("properties", {}),
                "hash": event_hash.hex(),
            }
            for partition, sequence, event_id, event_type, timestamp_us, body, event_hash in rows
        ]

    def proof(self, invoice_id: str, line_number: int, event_id: str) -> dict[str, Any]:
        """An inclusion proof that event ``event_id`` is behind line ``line_number``,
        checkable by ``meterline.core.lineage.verify_proof`` alone."""
        stored = self.invoice(invoice_id)
        document = self.document(invoice_id)
        line = self._line(document, line_number)
        members = self.line_events(invoice_id, line_number)
        found = event_reads.event_by_id(
            self._connection, self.ledger.store.partitions, stored.customer, event_id
        )
        if found is None:
            raise NotFound(f"event {event_id!r}: no such event for {stored.customer}")
        partition, sequence, body, event_hash = found
        hashes = [h for _, h in members]
        positions = [i for i, (s, _) in enumerate(members) if s == sequence]
        if not positions:
            raise NotFound(f"event {event_id!r} is not behind line {line_number}")
        index = positions[0]
        return {
            "event": {
                "partition": partition,
                "sequence": sequence,
                "body": bytes(body).decode(),
                "hash": bytes(event_hash).hex(),
            },
            "ledger_proof": self._ledger_proof(stored.customer, event_id),
            "leaf_index": index,
            "tree_size": len(hashes),
            "path": [h.hex() for h in inclusion_path(hashes, index)],
            "line_root": line["lineage"]["merkle_root"],
            "line_number": line_number,
            "invoice": {
                "id": invoice_id,
                "hash": stored.document_sha256.hex(),
                "document": bytes(stored.document).decode(),
            },
        }

    # -- credit notes -----------------------------------------------------------------------

    def credit_note(self, invoice_id: str, reason: str, void: bool = False) -> StoredCreditNote:
        """A credit note against a finalized invoice: ``void`` credits its whole total;
        otherwise it settles the invoice's late events now (re-rated difference), so the
        next invoice will not carry them again."""
        stored = self.invoice(invoice_id)
        document = self.document(invoice_id)
        now_us = self.clock()
        if not reason.strip():
            raise BillingError("reason: a credit note needs a reason")
        if void:
            if any(
                decode_exact(n.document).get("void") for n in self.store.credit_notes(invoice_id)
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
            head = self.ledger_cut()
            placeholder = RatingJob(stored.customer, BillingPeriod(0, 1), [], head, Configuration())
            pending = [
                p for p in self._late_jobs([placeholder], head) if p[0].invoice_id == invoice_id
            ]
            if not pending:
                raise BillingError(f"invoice {invoice_id} has no late events to settle")
            run_jobs(self._connection, [job for _, _, job, _ in pending])
            adjustment = self._adjustments(pending)[stored.customer][0]
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

        return self.store.add_credit_note(invoice_id, stored.customer, now_us, make)

    # -- audit --------------------------------------------------------------------------------

    def audit(self, triggers: bool = True) -> AuditReport:
        """Re-derive every finalized invoice from the raw ledger and its stored revision;
        check the chain (and PostgreSQL's chain heads), the append-only triggers, every
        revision's hashes, every invoice's bytes and hash, every credit note's hash.

        Never raises on what it reads: each problem is a ``Finding`` naming the first bad
        item. ``triggers=False`` leaves the triggers out, for a caller that looked before
        opening the ledger (``audit_ledger``: opening a SQLite file re-creates them)."""
        report = AuditReport()
        try:
            self._audit_into(report, triggers)
        except DatabaseErrors as error:
            report.findings.append(
                Finding(
                    "store",
                    f"cannot be read ({describe_error(error)})",
                    store=describe(self.store.path),
                )
            )
        return report

    def _audit_into(self, report: AuditReport, triggers: bool) -> None:
        chain = self.ledger.verify()
        report.chain_intact = chain.intact
        report.findings += ledger_findings(self.ledger.store, chain, triggers)
        first_hashed: int | None = None
        for revision in self.store.revisions():
            report.revisions += 1
            problems = revision_problems(revision)
            if revision.revision_sha256 is not None:
                first_hashed = first_hashed or revision.revision
            elif first_hashed is not None:
                problems.append(
                    f"has no revision hash, though revision {first_hashed} before it has one"
                )
            else:
                report.unhashed_revisions.append(revision.revision)
            try:
                decode_exact(revision.content)
            except ValueError as error:
                problems.append(f"content is not valid JSON ({describe_error(error)})")
            if problems:
                report.findings.append(
                    Finding("revision", "; ".join(problems), revision=revision.revision)
                )
        for stored in self.store.invoices():
            report.invoices += 1
            report.findings.extend(self._audit_invoice(stored))
        for note in self.store.credit_notes():
            report.credit_notes += 1
            if hashlib.sha256(note.document).digest() != note.document_sha256:
                report.findings.append(
                    Finding(
                        "credit note", "document does not match its hash", credit_note=note.note_id
                    )
                )

    def _audit_invoice(self, stored: StoredInvoice) -> list[Finding]:
        """One invoice's finding (or none): its hash, and its re-derivation from the ledger
        (naming the first line that differs)."""
        hashed = hashlib.sha256(stored.document).digest() == stored.document_sha256
        line: int | None = None
        try:
            document = decode_exact(stored.document)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            difference: str | None = f"document is not valid JSON ({describe_error(error)})"
        else:
            try:
                if stored.kind != "period":
                    line, difference = self._audit_off_cycle(stored, document)
                else:
                    line, difference = self._rederive(stored, document)
            except DatabaseErrors:
                raise
            except Exception as error:  # a proof tool reports what it cannot re-derive
                difference = f"cannot be re-derived from the ledger ({describe_error(error)})"
        if hashed and difference is None:
            return []
        problems = ([] if hashed else ["document does not match its stored hash"]) + (
            [] if difference is None else [difference]
        )
        return [Finding("invoice", "; ".join(problems), invoice=stored.invoice_id, line=line)]

    def _rederive(
        self, stored: StoredInvoice, document: dict[str, Any]
    ) -> tuple[int | None, str | None]:
        """Rebuild a period invoice from the events and its revision: the first line that
        differs (or None) and how (None when the bytes agree)."""
        revision = self.store.revision(stored.revision)
        if revision is None:
            return None, f"configuration revision {stored.revision} is missing"
        try:
            loaded = self._parse_stored(revision)
        except ConfigurationError as error:
            return None, f"revision {stored.revision} no longer parses: {error.errors[0]}"
        except ValueError as error:
            return None, f"revision {stored.revision} no longer decodes ({describe_error(error)})"
        if document["configuration"]["hash"] != revision.content_sha256.hex():
            return None, "rated under a configuration whose content has since changed"
        contract = loaded.configuration.contract(stored.customer)
        if contract is None:
            return None, f"no contract for {stored.customer} in revision {stored.revision}"
        period = BillingPeriod(stored.period_start_us, stored.period_end_us)
        spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
        inputs = self._credit_inputs(
            loaded.configuration, contract, period.end_us - 1, stored.finalized_at_us
        )
        job = RatingJob(
            stored.customer,
            period,
            spans,
            invoice_cut(document),
            loaded.configuration,
            cuts=_cuts(inputs, period, contract.timezone),
        )
        adjustment_jobs = []
        for line in document["lines"]:
            if line["kind"] != "adjustment":
                continue
            adjusts = line["adjusts"]
            previous = self.store.invoice(adjusts["invoice"])
            if previous is None:
                return line["number"], f"adjusts unknown invoice {adjusts['invoice']}"
            rerate, _ = self._rerate(previous, Cut.from_json(adjusts["through"], "adjusts.through"))
            adjustment_jobs.append((previous, adjusts, rerate))
        run_jobs(self._connection, [job, *[j for _, _, j in adjustment_jobs]])
        adjustments = []
        for previous, adjusts, rerate in adjustment_jobs:
            after = Cut.from_json(adjusts["from"], "adjusts.from")
            pending = [(previous, Decimal(adjusts["billed_total"]), rerate, after)]
            adjustments.extend(self._adjustments(pending).get(previous.customer, []))
        finalized_at = stored.finalized_at_us
        credit = None
        if job.cuts is not None:
            prior = self._stored_charges(stored.customer, period.start_us)
            credit = self._credit_part(job, loaded.configuration, inputs, prior, finalized_at)
        rebuilt = self._document(
            job,
            loaded.configuration,
            stored.revision,
            revision.content_sha256.hex(),
            stored.invoice_id,
            finalized_at,
            adjustments,
            credit,
        )
        if invoice_bytes(rebuilt) == bytes(stored.document):
            return None, None
        return _first_difference(document, rebuilt)

    def _audit_off_cycle(
        self, stored: StoredInvoice, document: dict[str, Any]
    ) -> tuple[int | None, str | None]:
        """A purchase invoice must bill its stored grant's price; a threshold invoice must
        be netted by its period's invoice once that is finalized."""
        if stored.kind == "purchase":
            grant_id = document["lines"][0]["grant"]
            rows = [g for g in self.store.grants(stored.customer) if g.grant_id == grant_id]
            if not rows:
                return 1, f"bills grant {grant_id}, which is not stored"
            paid = stored_grant(rows[0]).paid
            if Decimal(document["lines"][0]["amount_exact"]) != paid:
                return 1, f"bills {document['total']} for grant {grant_id}, paid {paid}"
            return None, None
        period = self._finalized(stored.customer, stored.period_start_us)
        if period is None:
            return None, None
        cited = [
            line
            for line in decode_exact(period.document)["lines"]
            if line["kind"] == "prepaid" and line.get("invoice") == stored.invoice_id
        ]
        if len(cited) != 1 or Decimal(cited[0]["amount"]) != -Decimal(document["total"]):
            return None, f"not netted exactly once by period invoice {period.invoice_id}"
        return None, None


def _first_difference(stored: dict[str, Any], rebuilt: dict[str, Any]) -> tuple[int | None, str]:
    """Where a stored invoice and its re-derivation first disagree: the line (None for the
    document's other fields) and how, in words."""
    stored_lines, rebuilt_lines = stored.get("lines", []), rebuilt.get("lines", [])
    for index in range(max(len(stored_lines), len(rebuilt_lines))):
        before = stored_lines[index] if index < len(stored_lines) else None
        after = rebuilt_lines[index] if index < len(rebuilt_lines) else None
        if before != after:
            if before is None or after is None:
                side = "the stored invoice" if after is None else "the ledger's re-derivation"
                return index + 1, f"present only in {side}"
            if not isinstance(before, dict):
                return index + 1, "differs from the ledger's re-derivation (not an object)"
            keys = sorted(set(before) | set(after))
            fields = [k for k in keys if before.get(k) != after.get(k)]
            detail = ", ".join(
                f"{k}: stored {before.get(k)!r} vs ledger {after.get(k)!r}" for k in fields[:3]
            )
            return index + 1, f"differs from the ledger's re-derivation ({detail})"
    for key in sorted(set(stored) | set(rebuilt)):
        if stored.get(key) != rebuilt.get(key):
            return None, f"{key} differs: stored {stored.get(key)!r} vs ledger {rebuilt.get(key)!r}"
    return None, "bytes differ"


def _cost_meters(loaded: Loaded | None) -> frozenset[str]:
    if loaded is None:
        return frozenset()
    return frozenset(rate.meter for rate in loaded.configuration.costs)


def diff(old: Configuration, new: Configuration) -> list[Change]:
    """Created, changed and retired objects between two configurations."""
    changes: list[Change] = []

    def compare(kind: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        for key in sorted(after):
            if key not in before:
                changes.append(Change(kind, key, "created"))
            elif before[key] != after[key]:
                changes.append(Change(kind, key, "changed"))
        for key in sorted(before):
            if key not in after:
                changes.append(Change(kind, key, "retired"))

    compare("meter", {m.key: m for m in old.meters}, {m.key: m for m in new.meters})
    compare(
        "credit type", {c.key: c for c in old.credit_types}, {c.key: c for c in new.credit_types}
    )
    compare("plan version", {p.label: p for p in old.plans}, {p.label: p for p in new.plans})
    compare(
        "contract", {c.customer: c for c in old.contracts}, {c.customer: c for c in new.contracts}
    )
    return changes


Verifier = Callable[[dict[str, Any]], list[str]]
standalone_verifier: Verifier = verify_proof


@contextmanager
def open_billing(
    path: str | Path, clock: Clock = system_clock_us, create: bool = True
) -> Iterator[Billing]:
    """Billing over the ledger file at ``path`` (created if missing); closes both stores.
    ``create=False`` (the proof tools) leaves an existing schema as found."""
    from meterline.ledger.ledger import open_ledger

    ledger = open_ledger(path, clock=clock, create=create)
    store = BillingStore(path, create=create)
    try:
        yield Billing(ledger, store, clock)
    finally:
        store.close()
        ledger.close()


def audit_ledger(location: str | Path, clock: Clock = system_clock_us) -> AuditReport:
    """Audit the ledger at ``location`` (``Billing.audit``) without raising on what it
    finds. The store and its append-only triggers are looked at first, and the stores are
    opened without touching the schema (``create=False``: a dropped trigger stays dropped
    for the next look); a store that cannot be read is a ``store`` finding and nothing
    else is checked."""
    found = inspect_store(location)
    if any(finding.check == "store" for finding in found):
        return AuditReport(chain_intact=False, findings=found)
    try:
        with open_billing(location, clock, create=False) as billing:
            report = billing.audit(triggers=False)
    except OpenErrors as error:
        return AuditReport(chain_intact=False, findings=[*found, unreadable(location, error)])
    report.findings[:0] = found
    return report


def invoice_cut(document: dict[str, Any]) -> Cut:
    """The cut an invoice document was rated through (``ledger.through``)."""
    return Cut.from_json(document["ledger"]["through"], "ledger.through")
