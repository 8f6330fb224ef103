"""Pricing revisions: validate, diff, simulate and store a configuration.

Invariants: plan versions are immutable once applied and a revision never changes the
terms of a finalized invoice (history is not rewritten); a dry run stores nothing; a
file that would retire everything is refused unless asked for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from meterline.billing import documents
from meterline.billing.context import BillingContext, billing_cycle
from meterline.billing.documents import currency_of
from meterline.billing.errors import BillingError
from meterline.billing.scan import RatingJob, run_jobs
from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, RetireAllRefused, read_yaml
from meterline.core.cuts import Cut
from meterline.core.events import encode_canonical, format_timestamp
from meterline.core.grants import contract_grants
from meterline.core.model import (
    Configuration,
    Contract,
    CreditTerms,
    Segment,
    TermsError,
    segments,
    terms_at,
)
from meterline.core.periods import BillingPeriod, local_date, period_containing


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


def same_credit_history(
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


def apply(
    context: BillingContext,
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
    previous = context.load()
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
    now_us = context.clock()
    check_history(context, old, new, data, positions, name)
    check_breakage_estimates(old, new, now_us, positions, name)
    changes = diff(old, new)
    affected = affected_customers(context, old, new, now_us, changes)
    period_label, simulation = simulate(context, old, new, now_us)
    revision = None
    if not dry_run:
        revision = context.store.add_revision(now_us, name, text, content).revision
        context.changed(None)
    return ApplyReport(dry_run, revision, changes, affected, simulation, period_label)


def check_history(
    context: BillingContext,
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
    for invoice in context.period_invoices():
        contract = new.contract(invoice.customer)
        loaded = context.load(invoice.revision)
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
            ) and same_credit_history(
                loaded.configuration, was, new, contract, invoice.period_end_us - 1
            )
        except (ValueError, BillingError):
            same = False
        if not same:
            index = next(i for i, c in enumerate(new.contracts) if c.customer == invoice.customer)
            path = f"contracts[{index}]"
            errors.append(
                f"{name}:{positions.get(path, '?')}: {path}: changes the terms of finalized"
                f" invoice {invoice.invoice_id} ({invoice.customer},"
                f" {format_timestamp(invoice.period_start_us)[:10]}); history is not"
                " rewritten: amend from a later date, or issue a credit note"
            )
    if errors:
        raise ConfigurationError(errors)


def _rate_changes(credits: CreditTerms) -> set[tuple[str, int, Decimal]]:
    """Every declared change of an expected breakage rate: (grant key or "" for the
    contract's own rate, effective instant, rate)."""
    found = {("", at, rate) for at, rate in credits.breakage_rate_changes}
    for spec in credits.grants:
        found |= {(spec.key, at, rate) for at, rate in spec.breakage_rate_changes}
    return found


def check_breakage_estimates(
    old: Configuration, new: Configuration, now_us: int, positions: dict[str, int], name: str
) -> None:
    """A change of an expected breakage rate is booked as a catch-up on its effective
    day, so a revision may add or drop changes only from now on: one effective before
    now would restate journal entries already booked."""
    errors = []
    for index, contract in enumerate(new.contracts):
        was = old.contract(contract.customer)
        before = set() if was is None else _rate_changes(was.credits)
        moved = before ^ _rate_changes(contract.credits)
        for key, at, rate in sorted(moved):
            if at < now_us:
                path = f"contracts[{index}]"
                errors.append(
                    f"{name}:{positions.get(path, '?')}: {path}.credits: the breakage rate"
                    f" change to {rate} {'of grant ' + key + ' ' if key else ''}effective"
                    f" {format_timestamp(at)} is before now ({format_timestamp(now_us)}):"
                    " a change of estimate takes effect from a later date; history is not"
                    " rewritten"
                )
    if errors:
        raise ConfigurationError(errors)


def affected_customers(
    context: BillingContext,
    old: Configuration,
    new: Configuration,
    now_us: int,
    changes: list[Change],
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


def simulate(
    context: BillingContext, old: Configuration, new: Configuration, now_us: int
) -> tuple[str | None, list[dict[str, Any]]]:
    """Each contract's last closed period re-rated under the terms it will be on at its
    next period start, by the old configuration (before) and the new one (after), so
    the difference is the change alone, on real usage."""
    through = context.ledger_cut()
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
        after_job = forward_job(new, contract, upcoming, last, through)
        if after_job is None:
            continue
        was = old.contract(contract.customer)
        before_job = None if was is None else forward_job(old, was, upcoming, last, through)
        jobs.append((contract.customer, after_job, before_job))
    run_jobs(
        context.connection,
        [job for _, after, before in jobs for job in (after, before) if job is not None],
    )
    result = []
    for customer, after_job, before_job in jobs:
        after_total = total(context, after_job, new)
        before_total = total(context, before_job, old) if before_job is not None else Decimal(0)
        result.append(
            {
                "customer": customer,
                "currency": currency_of(after_job.segments),
                "before": str(before_total),
                "after": str(after_total),
                "difference": str(after_total - before_total),
            }
        )
    return label, result


def forward_job(
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


def total(context: BillingContext, job: RatingJob, configuration: Configuration) -> Decimal:
    if not job.segments:
        return Decimal(0)
    document = documents.invoice_document(context, job, configuration, 0, "", None, None, [])
    return Decimal(document.total)
