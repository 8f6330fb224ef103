"""A proposal's preview: what it would bill, before anything is stored.

For the proposal's customer: its last closed period re-rated wholly under the proposed
terms (as ``revisions.simulate`` does: the terms in force on the effective date, usage
and fees) beside the finalized invoice's service lines (usage, fees, discounts: credits
aside, since the re-rating has none), and its current period drafted under the
proposed configuration (``drafts.draft`` itself over a ``ProposedContext``, whose
current revision is the proposal: usage, fees, credits, late adjustments) beside the
draft under the applied one; each line by line
(``core.proposals.line_comparison``), with the revenue impact. The margin impact equals
the revenue impact (what serving the usage costs does not depend on its price). The
credit balance path is each grant's opening and closing balance and the period's
entries under the proposed terms; the controls that would have fired are the controls
in force under the proposal read (``core.control_policies.read``) on the proposed
draft's figures. Reads only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from datetime import date
from decimal import Decimal
from typing import Any

import msgspec

from meterline.billing import documents, drafts, revisions
from meterline.billing.context import BillingContext, Loaded, billing_cycle
from meterline.billing.errors import BillingError
from meterline.billing.scan import RatingJob, run_jobs
from meterline.billing.workspace import Change, Proposed, floating_pins, propose_terms
from meterline.core.control_policies import ControlPolicy, Observation, read
from meterline.core.documents import Invoice, document_data
from meterline.core.events import decode_exact
from meterline.core.experiments import (
    Candidate,
    PlanExperiment,
    sample_by_usage,
    segments_on_version,
)
from meterline.core.invoicing import CHARGE_KINDS
from meterline.core.model import Contract, TermsError, segments
from meterline.core.money import to_decimal
from meterline.core.periods import BillingPeriod, local_midnight_us, period_containing
from meterline.core.proposals import line_comparison
from meterline.ledger.billing_records import StoredInvoice


def preview(context: BillingContext, change: Change) -> dict[str, Any]:
    """The preview of ``change`` (``ProposalRefused`` as a proposal would be)."""
    if isinstance(change, PlanExperiment):
        return experiment_preview(context, change)
    proposed = propose_terms(context, change)
    contract = proposed.configuration.contract(change.customer)
    if contract is None:  # the change always writes its contract
        raise BillingError(f"customer {change.customer!r} has no contract in the proposal")
    now_us = context.clock()
    current = period_containing(billing_cycle(proposed.configuration, contract), now_us)
    last = period_containing(billing_cycle(proposed.configuration, contract), current.start_us - 1)
    proposed_current = plain_document(
        drafts.draft(_proposed_context(context, proposed), change.customer, now_us)
    )
    actual_current = _actual_draft(context, proposed, now_us)
    periods = [_compared("current", current, actual_current, proposed_current)]
    closed = _closed(context, proposed, contract, last)
    if closed is not None:
        periods.insert(0, closed)
    impact = sum((to_decimal(p["difference"]) for p in periods), Decimal(0))
    return {
        "customer": change.customer,
        "change": change.as_data(),
        "periods": periods,
        "revenue_impact": str(impact),
        "margin_impact": str(impact),
        "credit_path": _credit_path(proposed_current),
        "controls": _controls(
            proposed.configuration.controls_for(contract, current.end_us - 1), proposed_current
        ),
    }


def experiment_preview(context: BillingContext, experiment: PlanExperiment) -> dict[str, Any]:
    """A sample of real customers' last closed period re-rated under the experiment's new
    version (each customer's own overrides kept) beside its finalized invoice's service
    lines, line by line, with each customer's and the total revenue impact (by currency).
    The sample is the experiment's, else the customers billed on the plan in their last
    closed period with the most usage on that invoice (``core.experiments.sample_by_usage``)."""
    proposed = propose_terms(context, experiment)
    base = proposed.base
    if base is None:  # the plan exists, so a revision is in force
        raise BillingError("no pricing applied yet")
    version = max(p.version for p in proposed.configuration.plans if p.plan == experiment.plan)
    last_closed = {customer: _last_invoice(context, customer) for customer in _customers(base)}
    sample = list(experiment.sample) or sample_by_usage(
        [
            Candidate(customer, _usage(invoice))
            for customer, invoice in last_closed.items()
            if invoice is not None and _on_plan(base, invoice, experiment.plan)
        ]
    )
    rows = []
    without = []
    impact: dict[str, Decimal] = {}
    for customer in sample:
        contract = base.configuration.contract(customer)
        stored = last_closed.get(customer) or _last_invoice(context, customer)
        compared = None
        if contract is not None and stored is not None:
            compared = _on_version(context, proposed, contract, experiment.plan, version, stored)
        if compared is None:
            without.append(customer)
            continue
        currency = compared["currency"]
        impact[currency] = impact.get(currency, Decimal(0)) + to_decimal(compared["difference"])
        rows.append({"customer": customer, **compared})
    return {
        "kind": experiment.kind,
        "plan": experiment.plan,
        "version": version,
        "effective": experiment.effective,
        "kept_by": sorted(floating_pins(base, experiment)),
        "sampled_by": "given" if experiment.sample else "usage",
        "sample": rows,
        "without_closed_period": without,
        "revenue_impact": {currency: str(amount) for currency, amount in sorted(impact.items())},
    }


def _customers(base: Loaded) -> list[str]:
    return [contract.customer for contract in base.configuration.contracts]


def _on_plan(base: Loaded, invoice: StoredInvoice, plan: str) -> bool:
    """Whether the invoice's period was billed (in part) on ``plan``."""
    contract = base.configuration.contract(invoice.customer)
    if contract is None:
        return False
    try:
        found = segments(
            base.configuration, contract, invoice.period_start_us, invoice.period_end_us
        )
    except (TermsError, ValueError):
        return False
    return any(segment.terms.plan.plan == plan for segment in found)


def _last_invoice(context: BillingContext, customer: str) -> StoredInvoice | None:
    invoices = context.period_invoices(customer)
    return max(invoices, key=lambda i: i.period_start_us) if invoices else None


def _usage(stored: StoredInvoice) -> Decimal:
    """What a finalized invoice charged for usage (how a default sample is ranked)."""
    lines = decode_exact(stored.document)["lines"]
    usage = (to_decimal(line["amount"]) for line in lines if line["kind"] == "usage")
    return sum(usage, Decimal(0))


def _on_version(
    context: BillingContext,
    proposed: Proposed,
    contract: Contract,
    plan: str,
    version: int,
    stored: StoredInvoice,
) -> dict[str, Any] | None:
    """The invoice's period re-rated with its segments on ``plan`` moved onto
    ``plan@version`` (``core.experiments.segments_on_version``), beside the invoice
    (None: the contract had no terms then)."""
    period = BillingPeriod(stored.period_start_us, stored.period_end_us)
    configuration = proposed.configuration
    new = configuration.plan_version(plan, version, period.start_us)
    try:
        base = (proposed.base or proposed).configuration
        found = segments(base, contract, period.start_us, period.end_us)
    except (TermsError, ValueError):
        return None
    if new is None or not found:
        return None
    moved, aliases = segments_on_version(found, new)
    job = RatingJob(contract.customer, period, moved, context.ledger_cut(), configuration)
    return rerated_beside(context, job, stored, aliases)


@dataclass
class ProposedContext(BillingContext):
    """Billing's context with the proposed configuration in force: the revision a draft
    reads as current (``load()``) is the proposal; every stored revision reads as it is."""

    proposed: Loaded | None = None

    def load(self, revision: int | None = None) -> Loaded | None:
        if revision is None and self.proposed is not None:
            return self.proposed
        return super().load(revision)


def _proposed_context(context: BillingContext, proposed: Proposed) -> ProposedContext:
    shared = {item.name: getattr(context, item.name) for item in fields(BillingContext)}
    digest = hashlib.sha256(proposed.text.encode()).hexdigest()
    return ProposedContext(**shared, proposed=Loaded(0, proposed.configuration, digest))


def plain_document(document: Any) -> dict[str, Any]:
    """An invoice document as plain JSON data (amounts as text), however it is held."""
    if isinstance(document, Invoice):
        typed: dict[str, Any] = document_data(document)
        return typed
    plain: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(document))
    return plain


def _actual_draft(
    context: BillingContext, proposed: Proposed, now_us: int
) -> dict[str, Any] | None:
    """The current period's draft under the applied configuration (None: no contract)."""
    base = proposed.base
    if base is None or base.configuration.contract(proposed.change.customer) is None:
        return None
    try:
        return plain_document(drafts.draft(context, proposed.change.customer, now_us))
    except BillingError:
        return None


def _closed(
    context: BillingContext, proposed: Proposed, contract: Contract, last: BillingPeriod
) -> dict[str, Any] | None:
    """The last closed period: its invoice beside a re-rating under the proposed terms."""
    stored = context.finalized(contract.customer, last.start_us)
    if stored is None:
        return None
    effective_us = local_midnight_us(
        contract.timezone, date.fromisoformat(proposed.change.effective)
    )
    job = revisions.forward_job(
        proposed.configuration, contract, effective_us, last, context.ledger_cut()
    )
    return None if job is None else rerated_beside(context, job, stored)


def rerated_beside(
    context: BillingContext,
    job: RatingJob,
    stored: StoredInvoice,
    aliases: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``job`` (a re-rating of ``stored``'s period) run and set beside the service lines
    of the finalized invoice ``stored``, line by line (``aliases``: as
    ``core.proposals.line_comparison`` takes them)."""
    run_jobs(context.connection, [job])
    rerated = plain_document(
        documents.invoice_document(context, job, job.configuration, 0, "", None, None, [])
    )
    actual = _service(decode_exact(stored.document))
    return _compared("last_closed", job.period, actual, rerated, aliases)


def _service(document: dict[str, Any]) -> dict[str, Any]:
    """The invoice's service lines (what the period's service costs) and their total: the
    closed period is re-rated without its credits, so it is compared without them."""
    lines = [line for line in document["lines"] if line["kind"] in CHARGE_KINDS]
    total = sum((to_decimal(line["amount"]) for line in lines), Decimal(0))
    return {**document, "lines": lines, "total": str(total)}


def _compared(
    name: str,
    period: BillingPeriod,
    actual: dict[str, Any] | None,
    proposed: dict[str, Any],
    aliases: dict[str, str] | None = None,
) -> dict[str, Any]:
    actual_lines = [] if actual is None else actual["lines"]
    actual_total = Decimal(0) if actual is None else to_decimal(actual["total"])
    proposed_total = to_decimal(proposed["total"])
    return {
        "period": name,
        "label": proposed["period"]["label"],
        "start": proposed["period"]["start"],
        "end": proposed["period"]["end"],
        "invoice": None if actual is None else actual.get("number"),
        "currency": proposed["currency"],
        "lines": line_comparison(actual_lines, proposed["lines"], aliases),
        "actual_total": str(actual_total),
        "proposed_total": str(proposed_total),
        "difference": str(proposed_total - actual_total),
    }


def _credit_path(document: dict[str, Any]) -> dict[str, Any]:
    section = document.get("credits") or {}
    return {
        "grants": [
            {key: grant[key] for key in ("grant", "unit", "amount", "paid", "opening", "closing")}
            for grant in section.get("grants", [])
        ],
        "entries": section.get("entries", []),
    }


def _controls(
    policies: tuple[ControlPolicy, ...], document: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each level of the controls in force under the proposal (the plan's and the
    contract's; usage spikes aside: they read a rate, not a period) read on the proposed
    draft's total and closing balances."""
    remaining: dict[str, Decimal] = {}
    prepaid = Decimal(0)
    for grant in (document.get("credits") or {}).get("grants", []):
        unit = str(grant["unit"])
        remaining[unit] = remaining.get(unit, Decimal(0)) + to_decimal(grant["closing"])
        prepaid += to_decimal(grant["paid"])
    observation = Observation(
        spend=to_decimal(document["total"]),
        prepaid=prepaid,
        remaining=remaining,
        currency=document["currency"],
    )
    found = []
    for policy in policies:
        if policy.kind == "usage_spike":
            continue
        for reading in read(policy, observation):
            found.append(
                {
                    "control": policy.key,
                    "kind": policy.kind,
                    "level": reading.level,
                    "would_fire": reading.crossed,
                    "observed": reading.observed,
                }
            )
    return found
