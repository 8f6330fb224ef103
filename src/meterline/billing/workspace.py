"""The contract workspace: propose, decide and apply contract changes (docs/workspace.md).

An editor proposes a ``ContractChange`` with a reason; it is written into the current
pricing data (``core.proposals``) and validated by the pricing file's own parser and
history check (``revisions.check_history``), so a refusal names the form field and the
pricing path, and nothing is stored. A different caller with the approver role approves
or rejects it (maker-checker); an approval is applied through ``buckets.apply_pricing``
(``revisions.apply``, then the new revision's buckets built), the very path ``meterline
apply`` takes, as a revision named ``workspace P-000001`` whose
source text opens with who proposed it, who approved it, why and when (that text is
covered by the revision's hash). The history is every revision (from YAML or from the
workspace) and every proposal with its decision; the export is the current revision's
source text, which ``meterline apply`` takes back as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import yaml

from meterline.billing import buckets, revisions
from meterline.billing.context import BillingContext, Loaded
from meterline.billing.errors import NotFound
from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, read_yaml
from meterline.core.events import decode_exact, format_timestamp
from meterline.core.experiments import (
    EXPERIMENT_KIND,
    PlanExperiment,
    experiment_configuration,
    experiment_from_data,
    experiment_problems,
)
from meterline.core.model import Configuration, TermsError, terms_at
from meterline.core.periods import local_date, local_midnight_us
from meterline.core.proposals import (
    PROPOSAL_REASON_LENGTH_MAX,
    Changed,
    ContractChange,
    change_from_data,
    change_problems,
    changed_configuration,
    decision_problem,
    field_errors,
)
from meterline.errors import ScopeError
from meterline.keys import Principal
from meterline.ledger.billing_records import Revision
from meterline.ledger.workspace_records import (
    StoredDecision,
    StoredProposal,
    WorkspaceConflict,
    WorkspaceStore,
)

SOURCE_PREFIX = "workspace "
"""A revision the workspace applied is named ``workspace <proposal id>``."""


class ProposalRefused(ConfigurationError):
    """A proposal the pricing file's validation refuses; ``fields`` are ``(form field,
    pricing path: reason)``, the same errors as ``errors``."""

    code = "invalid_proposal"
    http_status = 422

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        super().__init__([f"{name}: {message}" for name, message in fields])
        self.fields = fields


Change = ContractChange | PlanExperiment
"""What a proposal proposes: one customer's contract change, or a price experiment."""


@dataclass(frozen=True, slots=True)
class Proposed:
    """A change written into the current pricing data and validated."""

    change: Change
    changed: Changed
    base: Loaded | None
    configuration: Configuration
    text: str


class _ExactDumper(yaml.SafeDumper):  # type: ignore[misc]
    """SafeDumper writing a Decimal as the plain number it is (read back as Decimal)."""


def _decimal(dumper: yaml.SafeDumper, value: Decimal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:float", format(value, "f"))


_ExactDumper.add_representer(Decimal, _decimal)


def pricing_yaml(data: Any) -> str:
    """Pricing data as YAML that reads back to the same data."""
    text: str = yaml.dump(data, Dumper=_ExactDumper, sort_keys=False, allow_unicode=True, width=100)
    return text


def closed_through(context: BillingContext, customer: str, timezone: str) -> date | None:
    """The local day after the customer's last finalized period (None: none closed)."""
    ends = [invoice.period_end_us for invoice in context.period_invoices(customer)]
    return local_date(timezone, max(ends)) if ends else None


def current_data(context: BillingContext) -> tuple[Loaded | None, Any]:
    """The applied revision and its pricing data (none applied: empty data)."""
    stored = context.store.revision(None)
    if stored is None:
        return None, {}
    return context.load(stored.revision), decode_exact(stored.content)


def floating_pins(base: Loaded | None, experiment: PlanExperiment) -> dict[str, int]:
    """Each customer whose terms from the experiment's effective date float on its plan,
    with the version it is on then (the version it keeps)."""
    if base is None:
        return {}
    try:
        effective_us = local_midnight_us("UTC", date.fromisoformat(experiment.effective))
    except (TypeError, ValueError):
        return {}
    configuration = base.configuration
    pins = {}
    for contract in configuration.contracts:
        last = contract.amendments[-1] if contract.amendments else None
        plan, version = (contract.plan, contract.version) if last is None else (
            last.plan, last.version
        )  # fmt: skip
        if plan != experiment.plan or version is not None:
            continue
        if contract.end_us is not None and contract.end_us <= effective_us:
            continue
        at_us = max(effective_us, contract.start_us, last.effective_us if last else 0)
        try:
            pins[contract.customer] = terms_at(configuration, contract, at_us, at_us).plan.version
        except TermsError:
            continue
    return pins


def _written(
    context: BillingContext, base: Loaded | None, data: Any, change: Change
) -> tuple[list[str], Changed]:
    """The checks the parser cannot make, and ``change`` written into ``data``."""
    if isinstance(change, PlanExperiment):
        problems = experiment_problems(change, data)
        problems += [
            f"sample: no contract for customer {customer!r}"
            for customer in change.sample
            if base is None or base.configuration.contract(customer) is None
        ]
        return problems, experiment_configuration(data, change, floating_pins(base, change))
    existing = base.configuration.contract(change.customer) if base is not None else None
    timezone = existing.timezone if existing is not None else "UTC"
    problems = change_problems(change, closed_through(context, change.customer, timezone))
    return problems, changed_configuration(data, change)


def propose_terms(context: BillingContext, change: Change) -> Proposed:
    """``change`` written into the current pricing data and validated as a pricing file
    would be (``ProposalRefused`` naming every bad field)."""
    base, data = current_data(context)
    problems, changed = _written(context, base, data, change)
    refused = [(field, reason) for field, _, reason in (p.partition(": ") for p in problems)]
    try:
        text = pricing_yaml(changed.data)
    except (yaml.YAMLError, UnicodeError) as error:  # e.g. a lone surrogate in a name
        raise ProposalRefused([("contract", f"cannot be written as YAML: {error}")]) from None
    try:
        parsed, positions = read_yaml(text, "proposal")
        configuration = parse_configuration(parsed, positions, "proposal")
        if not refused:
            old = base.configuration if base is not None else Configuration()
            revisions.check_history(context, old, configuration, parsed, positions, "proposal")
    except ConfigurationError as error:
        refused += field_errors(error.errors, changed)
    if refused:
        raise ProposalRefused(refused)
    return Proposed(change, changed, base, configuration, text)


EXPERIMENT_FIELDS = ("plan", "effective", "fees", "prices", "sample")
"""The fields of an experiment file (``meterline workspace experiment``)."""


def read_experiment(text: str, name: str) -> PlanExperiment:
    """An experiment written in YAML (``EXPERIMENT_FIELDS``; fees and prices as in the
    pricing file), refused with ``ConfigurationError`` naming each bad field."""
    data, _ = read_yaml(text, name)
    if not isinstance(data, dict):
        raise ConfigurationError([f"{name}: must be a mapping of {', '.join(EXPERIMENT_FIELDS)}"])
    problems = [f"{name}: {key}: unknown field" for key in data if key not in EXPERIMENT_FIELDS]
    problems += [f"{name}: {key}: is required" for key in ("plan", "effective") if key not in data]
    for key in ("fees", "prices", "sample"):
        if not isinstance(data.get(key) or [], list):
            problems.append(f"{name}: {key}: must be a list")
    if problems:
        raise ConfigurationError(problems)
    return experiment_from_data(data)


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > PROPOSAL_REASON_LENGTH_MAX:
        raise ProposalRefused(
            [("reason", f"a reason of 1 to {PROPOSAL_REASON_LENGTH_MAX} characters is required")]
        )
    return reason


def experiment_scope(principal: Principal, change: Change) -> None:
    """A price experiment concerns every customer: a customer-bound caller may not
    propose or preview one."""
    if isinstance(change, PlanExperiment) and principal.customer is not None:
        raise ScopeError(
            f"{principal.key_id} is bound to customer {principal.customer!r};"
            " a price experiment concerns every customer"
        )


def _visible(principal: Principal, customer: str) -> None:
    """A customer-bound caller sees only its customer (another is not found)."""
    if principal.customer not in (None, customer):
        raise NotFound(f"no proposal for customer {customer!r}")


def propose(
    context: BillingContext,
    store: WorkspaceStore,
    principal: Principal,
    change: Change,
    reason: str,
) -> dict[str, Any]:
    """Validate ``change`` and store it as a proposal by ``principal`` (an editor); an
    experiment is stored with no customer (a customer-bound caller may not propose one)."""
    principal.require("editor", "proposing a contract change")
    experiment_scope(principal, change)
    _visible(principal, change.customer)
    reason = _reason(reason)
    proposed = propose_terms(context, change)
    base = proposed.base.revision if proposed.base is not None else None
    content = json.dumps(change.as_data(), sort_keys=True, separators=(",", ":"))
    stored = store.add_proposal(
        change.customer, principal.key_id, reason, base, content, context.clock()
    )
    return proposal_document(stored, None)


def proposal(store: WorkspaceStore, principal: Principal, proposal_id: str) -> StoredProposal:
    """A stored proposal the caller may see (``NotFound`` otherwise)."""
    stored = store.proposal(proposal_id)
    if stored is None:
        raise NotFound(f"no proposal {proposal_id!r}")
    _visible(principal, stored.customer)
    return stored


def stored_change(stored: StoredProposal) -> Change:
    data = json.loads(stored.change)
    if data.get("kind") == EXPERIMENT_KIND:
        return experiment_from_data(data)
    return change_from_data(data)


def decide(
    context: BillingContext,
    store: WorkspaceStore,
    principal: Principal,
    proposal_id: str,
    approve: bool,
    reason: str = "",
) -> dict[str, Any]:
    """Approve (apply as a revision) or reject a proposal: by an approver who did not
    propose it, once. An approval is validated again against the revision in force."""
    principal.require("approver", "approving or rejecting a proposal")
    stored = proposal(store, principal, proposal_id)
    decided = proposal_id in store.decisions()
    problem = decision_problem(stored.proposer, principal.key_id, True, decided)
    if problem is not None:
        raise (WorkspaceConflict if decided else ScopeError)(f"{proposal_id}: {problem}")
    now_us = context.clock()
    revision = None
    if approve:
        change = stored_change(stored)
        proposed = propose_terms(context, change)
        subject = change.subject if isinstance(change, PlanExperiment) else stored.customer
        header = (
            f"# meterline workspace {proposal_id} for {subject}\n"
            f"# proposed by {stored.proposer} at {format_timestamp(stored.created_at_us)}:"
            f" {_one_line(stored.reason)}\n"
            f"# approved by {principal.key_id} at {format_timestamp(now_us)}:"
            f" {_one_line(reason)}\n"
        )
        text = header + proposed.text
        report = buckets.apply_pricing(context, text, f"{SOURCE_PREFIX}{proposal_id}")
        revision = report.revision
    decision = StoredDecision(
        proposal_id,
        "approved" if approve else "rejected",
        principal.key_id,
        reason.strip()[:PROPOSAL_REASON_LENGTH_MAX],
        revision,
        now_us,
    )
    return proposal_document(stored, store.add_decision(decision))


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "-"


def proposal_document(stored: StoredProposal, decision: StoredDecision | None) -> dict[str, Any]:
    """A proposal and its decision as the API and the dashboard show them."""
    return {
        "proposal_id": stored.proposal_id,
        "customer": stored.customer,
        "proposer": stored.proposer,
        "reason": stored.reason,
        "proposed_at": format_timestamp(stored.created_at_us),
        "base_revision": stored.base_revision,
        "change": json.loads(stored.change),
        "state": "pending" if decision is None else decision.decision,
        "decision": None
        if decision is None
        else {
            "decider": decision.decider,
            "reason": decision.reason,
            "decided_at": format_timestamp(decision.decided_at_us),
            "revision": decision.revision,
        },
    }


@dataclass(frozen=True, slots=True)
class RevisionOrigin:
    """A configuration revision and where it came from: ``via`` ``yaml`` (``meterline
    apply``) or ``workspace``, with the proposal and the approval it applied."""

    revision: Revision
    via: str
    proposal: StoredProposal | None
    decision: StoredDecision | None


def revision_origins(
    context: BillingContext, store: WorkspaceStore, at_us: int | None = None
) -> list[RevisionOrigin]:
    """Every configuration revision (applied by ``at_us`` when given) with its origin."""
    proposals = {stored.proposal_id: stored for stored in store.proposals()}
    approvals = {d.revision: d for d in store.decisions().values() if d.revision is not None}
    found = []
    for stored in context.store.revisions():
        if at_us is not None and stored.applied_at_us > at_us:
            continue
        decision = approvals.get(stored.revision)
        via = "workspace" if stored.source_name.startswith(SOURCE_PREFIX) else "yaml"
        proposal = None if decision is None else proposals.get(decision.proposal_id)
        found.append(RevisionOrigin(stored, via, proposal, decision))
    return found


def history(context: BillingContext, store: WorkspaceStore, principal: Principal) -> dict[str, Any]:
    """Every proposal the caller may see with its decision, and (for a caller bound to no
    customer) every configuration revision, from YAML or from the workspace."""
    decisions = store.decisions()
    proposals = [
        proposal_document(stored, decisions.get(stored.proposal_id))
        for stored in store.proposals(principal.customer)
    ]
    applied = []
    if principal.customer is None:
        for origin in revision_origins(context, store):
            stored, source, decision = origin.revision, origin.proposal, origin.decision
            applied.append(
                {
                    "revision": stored.revision,
                    "applied_at": format_timestamp(stored.applied_at_us),
                    "source": stored.source_name,
                    "via": origin.via,
                    "proposal_id": None if source is None else source.proposal_id,
                    "proposer": None if source is None else source.proposer,
                    "approver": None if decision is None else decision.decider,
                    "reason": None if source is None else source.reason,
                    "content_sha256": stored.content_sha256.hex(),
                }
            )
    return {"proposals": proposals, "revisions": applied}


def export_yaml(context: BillingContext) -> str:
    """The configuration in force as YAML: the current revision's source text (what
    ``meterline apply`` takes back as it is)."""
    stored = context.store.revision(None)
    if stored is None:
        raise NotFound("no pricing applied yet (apply a pricing file first)")
    return stored.source_text
