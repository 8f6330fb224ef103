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
from meterline.billing.scan import run_jobs
from meterline.billing.workspace import Proposed, propose_terms
from meterline.core.control_policies import ControlPolicy, Observation, read
from meterline.core.documents import Invoice, document_data
from meterline.core.events import decode_exact
from meterline.core.invoicing import CHARGE_KINDS
from meterline.core.model import Contract
from meterline.core.money import to_decimal
from meterline.core.periods import BillingPeriod, local_midnight_us, period_containing
from meterline.core.proposals import ContractChange, line_comparison


def preview(context: BillingContext, change: ContractChange) -> dict[str, Any]:
    """The preview of ``change`` (``ProposalRefused`` as a proposal would be)."""
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
    if job is None:
        return None
    run_jobs(context.connection, [job])
    rerated = plain_document(
        documents.invoice_document(context, job, proposed.configuration, 0, "", None, None, [])
    )
    return _compared("last_closed", last, _service(decode_exact(stored.document)), rerated)


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
        "lines": line_comparison(actual_lines, proposed["lines"]),
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
