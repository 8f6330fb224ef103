"""The contract workspace over HTTP (docs/workspace.md): propose, preview, approve,
reject, history, and the configuration in force as YAML.

Callers authenticate with a key (``Authorization: Bearer mlk_...``, its scope a role) or
as a workspace user (``Authorization: Basic``, name and password). Proposing and
previewing a change need the editor role; approving and rejecting the approver role,
and never one's own proposal (403); reading a proposal and the history need read. A
customer-bound caller sees and proposes only for its customer. A proposal the pricing
file's validation refuses is 422 ``invalid_proposal`` with ``errors``, each
``form field: pricing path: reason``; nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import msgspec
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from meterline.api.answers import HttpError, json_answer
from meterline.api.dependencies import BillingDependency, read, services_of, unbound, write
from meterline.api.openapi import Reason, json_body
from meterline.api.reading import JSON_BODY_BYTES_MAX
from meterline.api.reading import json_body as read_json_body
from meterline.billing import workspace, workspace_preview
from meterline.billing.service import Billing
from meterline.core.experiments import EXPERIMENT_SAMPLE_MAX, EXPERIMENT_SAMPLE_SIZE, PlanExperiment
from meterline.core.proposals import ContractChange, CreditPool
from meterline.keys import Principal, Scope, authenticate_user

router = APIRouter(tags=["workspace"])


class PoolBody(msgspec.Struct, forbid_unknown_fields=True):
    """A credit pool: ``paid`` above 0 is prepaid (invoiced), 0 is free."""

    amount: str
    credit_type: str
    paid: str = "0"
    priority: int = 50
    expires: str | None = None
    recurrence: str = "period"
    rollover_percent: Annotated[
        str | None, msgspec.Meta(description="Share of unused units rolled over (0 to 100)")
    ] = None
    key: str = ""
    description: str = "Credit pool (workspace)"


class ChangeBody(msgspec.Struct, forbid_unknown_fields=True):
    """A contract change for one customer from ``effective`` (a local date); absent
    fields leave the contract as it is."""

    customer: str
    effective: Annotated[str, msgspec.Meta(description="YYYY-MM-DD, the amendment date")]
    plan: str | None = None
    version: int | None = None
    fee_amount: str | None = None
    fee_key: str = "platform"
    fee_name: str | None = None
    discount_percent: str | None = None
    prices: Annotated[
        list[dict[str, Any]], msgspec.Meta(description="Price overrides, as in the pricing file")
    ] = []
    credit_pool: PoolBody | None = None
    threshold_levels: list[str] = []
    controls: Annotated[
        list[dict[str, Any]], msgspec.Meta(description="Controls, as in the pricing file")
    ] = []


class ExperimentBody(msgspec.Struct, forbid_unknown_fields=True):
    """A price experiment: a new version of ``plan`` from ``effective`` for the customers
    who join the plan from then on (those on it keep their version, pinned)."""

    plan: str
    effective: Annotated[str, msgspec.Meta(description="YYYY-MM-DD (UTC), the version's start")]
    fees: Annotated[
        list[dict[str, Any]],
        msgspec.Meta(description="Fees replacing the latest version's of the same key"),
    ] = []
    prices: Annotated[
        list[dict[str, Any]],
        msgspec.Meta(description="Prices replacing the latest version's of the same meter"),
    ] = []
    sample: Annotated[
        list[str],
        msgspec.Meta(
            description=f"Customers to preview over (at most {EXPERIMENT_SAMPLE_MAX}); empty:"
            f" the {EXPERIMENT_SAMPLE_SIZE} billed on the plan with the most usage last period"
        ),
    ] = []


class ExperimentProposalBody(msgspec.Struct, forbid_unknown_fields=True):
    """An experiment and why it is proposed."""

    experiment: ExperimentBody
    reason: Reason


class ProposalBody(msgspec.Struct, forbid_unknown_fields=True):
    """A change and why it is proposed."""

    change: ChangeBody
    reason: Reason


class DecisionBody(msgspec.Struct, forbid_unknown_fields=True):
    """Why the proposal is approved or rejected."""

    reason: str = ""


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A malformed parameter"},
    401: {"description": "No valid key or user"},
    403: {"description": "The caller's role does not allow it (or it is its own proposal)"},
    404: {"description": "No such proposal (or not this caller's customer)"},
}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"description": "Malformed JSON, or a wrong or unknown field"},
    413: {"description": f"Body over {JSON_BODY_BYTES_MAX // 1024} KiB"},
    415: {"description": "Not a JSON body"},
    422: {"description": "invalid_proposal: errors, each 'field: pricing path: reason'"},
}
_DECISIONS: dict[int | str, dict[str, Any]] = {
    **_REFUSALS,
    409: {"description": "The proposal was decided already"},
}


def change_of(body: ChangeBody) -> ContractChange:
    """The body as the core's ``ContractChange``."""
    pool = body.credit_pool
    return ContractChange(
        customer=body.customer,
        effective=body.effective,
        plan=body.plan,
        version=body.version,
        fee_amount=body.fee_amount,
        fee_key=body.fee_key,
        fee_name=body.fee_name,
        discount_percent=body.discount_percent,
        prices=tuple(body.prices),
        credit_pool=None if pool is None else CreditPool(**msgspec.structs.asdict(pool)),
        threshold_levels=tuple(body.threshold_levels),
        controls=tuple(body.controls),
    )


def experiment_of(body: ExperimentBody) -> PlanExperiment:
    """The body as the core's ``PlanExperiment``."""
    return PlanExperiment(
        plan=body.plan,
        effective=body.effective,
        fees=tuple(body.fees),
        prices=tuple(body.prices),
        sample=tuple(body.sample),
    )


def _authenticate(request: Request) -> Principal:
    services = services_of(request)
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return services.authenticate(credentials.strip() if scheme.lower() == "bearer" else None)
    try:
        name, _, password = base64.b64decode(credentials.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise HttpError(401, "unauthorized", "malformed Basic credentials") from None
    return authenticate_user(services.billing.workspace_records, name, password)


async def workspace_caller(request: Request, needed: Scope, action: str) -> Principal:
    """The caller (a key or a user), which must hold ``needed``."""
    principal: Principal = await to_thread.run_sync(_authenticate, request)
    principal.require(needed, action)
    return principal


def _propose(billing: Billing, principal: Principal, body: ProposalBody) -> dict[str, Any]:
    return workspace.propose(
        billing.context, billing.workspace_records, principal, change_of(body.change), body.reason
    )


def _propose_experiment(
    billing: Billing, principal: Principal, body: ExperimentProposalBody
) -> dict[str, Any]:
    experiment = experiment_of(body.experiment)
    store = billing.workspace_records
    return workspace.propose(billing.context, store, principal, experiment, body.reason)


def _decide(
    billing: Billing, principal: Principal, proposal_id: str, approve: bool, reason: str
) -> dict[str, Any]:
    return workspace.decide(
        billing.context, billing.workspace_records, principal, proposal_id, approve, reason
    )


def _proposal_preview(billing: Billing, principal: Principal, proposal_id: str) -> Any:
    stored = workspace.proposal(billing.workspace_records, principal, proposal_id)
    return workspace_preview.preview(billing.context, workspace.stored_change(stored))


def _proposal(billing: Billing, principal: Principal, proposal_id: str) -> Any:
    store = billing.workspace_records
    stored = workspace.proposal(store, principal, proposal_id)
    return workspace.proposal_document(stored, store.decisions().get(proposal_id))


@router.post(
    "/v1/workspace/preview",
    summary="Preview a contract change: last closed and current period under its terms",
    openapi_extra=json_body(ChangeBody, "The change"),
    responses={200: {"description": "{periods: [{lines, totals}], impact, ...}"}, **_REFUSALS},
)
async def preview(request: Request, billing: BillingDependency) -> Response:
    principal = await workspace_caller(request, "editor", "previewing a contract change")
    body = await read_json_body(request, ChangeBody)
    if principal.customer not in (None, body.customer):
        raise HttpError(404, "not_found", f"customer {body.customer!r} has no contract")
    change = change_of(body)
    return json_answer(await read(billing, workspace_preview.preview, billing.context, change))


@router.post(
    "/v1/workspace/proposals",
    summary="Propose a contract change with a reason (stored only when valid)",
    status_code=201,
    openapi_extra=json_body(ProposalBody, "The change and its reason"),
    responses={201: {"description": "The proposal, pending"}, **_REFUSALS},
)
async def propose(request: Request, billing: BillingDependency) -> Response:
    principal = await workspace_caller(request, "editor", "proposing a contract change")
    body = await read_json_body(request, ProposalBody)
    return json_answer(await write(billing, _propose, billing, principal, body), 201)


@router.post(
    "/v1/workspace/experiments/preview",
    summary="Preview a price experiment: a sample's last closed period under the new version",
    openapi_extra=json_body(ExperimentBody, "The experiment"),
    responses={
        200: {"description": "{version, kept_by, sample: [{customer, lines, totals}], ...}"},
        **_REFUSALS,
    },
)
async def experiment_preview(request: Request, billing: BillingDependency) -> Response:
    principal = await workspace_caller(request, "editor", "previewing a price experiment")
    body = await read_json_body(request, ExperimentBody)
    experiment = experiment_of(body)
    workspace.experiment_scope(principal, experiment)
    return json_answer(await read(billing, workspace_preview.preview, billing.context, experiment))


@router.post(
    "/v1/workspace/experiments",
    summary="Propose a price experiment with a reason (stored only when valid)",
    status_code=201,
    openapi_extra=json_body(ExperimentProposalBody, "The experiment and its reason"),
    responses={201: {"description": "The proposal, pending"}, **_REFUSALS},
)
async def propose_experiment(request: Request, billing: BillingDependency) -> Response:
    principal = await workspace_caller(request, "editor", "proposing a price experiment")
    body = await read_json_body(request, ExperimentProposalBody)
    return json_answer(await write(billing, _propose_experiment, billing, principal, body), 201)


@router.get(
    "/v1/workspace/proposals/{proposal_id}",
    summary="A proposal and its decision",
    responses={200: {"description": "The proposal"}, **_ERRORS},
)
async def get_proposal(request: Request, billing: BillingDependency, proposal_id: str) -> Response:
    principal = await workspace_caller(request, "read", "reading a proposal")
    return json_answer(await read(billing, _proposal, billing, principal, proposal_id))


@router.get(
    "/v1/workspace/proposals/{proposal_id}/preview",
    summary="A stored proposal's preview against the ledger as it stands",
    responses={200: {"description": "As POST /v1/workspace/preview"}, **_REFUSALS},
)
async def proposal_preview(
    request: Request, billing: BillingDependency, proposal_id: str
) -> Response:
    principal = await workspace_caller(request, "read", "previewing a proposal")
    return json_answer(await read(billing, _proposal_preview, billing, principal, proposal_id))


async def _decision(
    request: Request, billing: Billing, proposal_id: str, approve: bool
) -> Response:
    action = "approving a proposal" if approve else "rejecting a proposal"
    principal = await workspace_caller(request, "approver", action)
    body = await read_json_body(request, DecisionBody)
    return json_answer(
        await write(billing, _decide, billing, principal, proposal_id, approve, body.reason)
    )


@router.post(
    "/v1/workspace/proposals/{proposal_id}/approve",
    summary="Approve a proposal (not one's own): applied as a configuration revision",
    openapi_extra=json_body(DecisionBody, "Why"),
    responses={200: {"description": "The proposal, approved, with its revision"}, **_DECISIONS},
)
async def approve(request: Request, billing: BillingDependency, proposal_id: str) -> Response:
    return await _decision(request, billing, proposal_id, True)


@router.post(
    "/v1/workspace/proposals/{proposal_id}/reject",
    summary="Reject a proposal (not one's own)",
    openapi_extra=json_body(DecisionBody, "Why"),
    responses={200: {"description": "The proposal, rejected"}, **_DECISIONS},
)
async def reject(request: Request, billing: BillingDependency, proposal_id: str) -> Response:
    return await _decision(request, billing, proposal_id, False)


@router.get(
    "/v1/workspace/history",
    summary="Every proposal with its decision, and every configuration revision",
    responses={200: {"description": "{proposals, revisions}"}, **_ERRORS},
)
async def history(request: Request, billing: BillingDependency) -> Response:
    principal = await workspace_caller(request, "read", "reading the workspace history")
    store = billing.workspace_records
    return json_answer(await read(billing, workspace.history, billing.context, store, principal))


@router.get(
    "/v1/workspace/configuration.yaml",
    summary="The configuration in force as YAML (what `meterline apply` takes back)",
    responses={200: {"content": {"application/yaml": {}}}, **_ERRORS},
)
async def configuration_yaml(request: Request, billing: BillingDependency) -> Response:
    principal = await workspace_caller(request, "read", "exporting the configuration")
    unbound(principal, "exporting the configuration")
    text = await read(billing, workspace.export_yaml, billing.context)
    return Response(text, media_type="application/yaml")
