"""Credits over HTTP: a customer's credit ledger, grants, voids, manual adjustments, and
threshold checks.

Thin over ``Billing`` like ``billing_routes`` (the same dependency, lock, scope checks and
error shape): reading the ledger needs ``read``; granting, voiding and adjusting need
``admin``. A customer-bound key sees and changes only its own customer (anything else is
404, as if it did not exist); checking every customer's thresholds refuses a bound key.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from meterline.api.answers import json_answer
from meterline.api.billing_routes import InstantQuery
from meterline.api.dependencies import BillingDependency, caller, own, read, write
from meterline.api.openapi import Amount, Instant, Reason, json_body
from meterline.api.reading import JSON_BODY_BYTES_MAX, amount, instant
from meterline.api.reading import json_body as read_json_body
from meterline.billing.service import Billing
from meterline.core.events import decode_exact
from meterline.keys import Principal

CREDIT_BODY_BYTES_MAX = JSON_BODY_BYTES_MAX


class GrantRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Credit to grant: a credit type of the pricing file (or a currency code)."""

    credit_type: str
    amount: Annotated[Amount, msgspec.Meta(description="Above zero")]
    reason: Reason
    paid: Annotated[Amount, msgspec.Meta(description="What the customer pays; 0 if free")] = "0"
    priority: Annotated[
        int,
        msgspec.Meta(
            description="Lower burns first (0 to 1000)",
            extra_json_schema={"minimum": 0, "maximum": 1000},
        ),
    ] = 50
    effective: Instant | None = None
    expires: Instant | None = None
    scope: Annotated[list[str], msgspec.Meta(description="Meters it pays for; all if empty")] = []


class VoidRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Why the grant is voided."""

    reason: Reason


class AdjustmentRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A signed change to a grant's balance, not zero."""

    amount: Amount
    reason: Reason


router = APIRouter(tags=["credits"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "Key lacks the scope"},
    404: {"description": "No such customer or grant (or not this key's)"},
    409: {"description": "The request contradicts the ledger (e.g. already void)"},
}
_WRITES: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"description": "Malformed JSON, a wrong or unknown field, a bad amount"},
    413: {"description": f"Body over {CREDIT_BODY_BYTES_MAX // 1024} KiB"},
    415: {"description": "Not a JSON body"},
    422: {"description": "The request breaks a rule (the message names the field)"},
}


# -- work done in a worker thread ---------------------------------------------------------


def _credits(billing: Billing, principal: Principal, customer: str, as_of: int | None) -> Any:
    own(principal, customer)
    return billing.credits(customer, as_of)


def _grant(billing: Billing, principal: Principal, customer: str, body: GrantRequest) -> Any:
    own(principal, customer)
    effective = instant(body.effective, "effective")
    expires = instant(body.expires, "expires")
    stored, invoice = billing.grant(
        customer,
        body.credit_type,
        amount(body.amount, "amount"),
        body.reason,
        paid=amount(body.paid, "paid"),
        priority=body.priority,
        effective_us=effective,
        expires_us=expires,
        scope=tuple(body.scope),
    )
    return {
        "grant": stored.grant_id,
        "customer": customer,
        **{k: v for k, v in decode_exact(stored.document).items() if not k.endswith("_us")},
        "invoice": None if invoice is None else invoice.invoice_id,
    }


def _void(billing: Billing, principal: Principal, customer: str, grant_id: str, reason: str) -> Any:
    own(principal, customer)
    action = billing.void_grant(customer, grant_id, reason)
    return {"grant": grant_id, "voided_at_us": action.at_us, "reason": action.reason}


def _adjust(
    billing: Billing, principal: Principal, customer: str, grant_id: str, body: AdjustmentRequest
) -> Any:
    own(principal, customer)
    action = billing.adjust_grant(customer, grant_id, amount(body.amount, "amount"), body.reason)
    return {
        "grant": grant_id,
        "amount": action.amount,
        "at_us": action.at_us,
        "reason": action.reason,
    }


# -- routes -------------------------------------------------------------------------------


@router.get(
    "/v1/customers/{customer}/credits",
    summary="The customer's credit ledger: balances per grant and every entry",
    responses={
        200: {"description": "{grants, totals, entries, as_of}"},
        400: {"description": "`as_of` is not an RFC 3339 timestamp with a zone"},
        **_ERRORS,
    },
)
async def get_credits(
    request: Request, billing: BillingDependency, customer: str, as_of: InstantQuery = None
) -> Response:
    principal = await caller(request, "read", "GET credits")
    at_us = instant(as_of, "as_of")
    return json_answer(await read(billing, _credits, billing, principal, customer, at_us))


@router.post(
    "/v1/customers/{customer}/credits",
    summary="Grant credit (a paid grant is invoiced at once)",
    status_code=201,
    openapi_extra=json_body(GrantRequest, "The grant"),
    responses={201: {"description": "{grant, ..., invoice}"}, **_WRITES},
)
async def grant(request: Request, billing: BillingDependency, customer: str) -> Response:
    principal = await caller(request, "admin", "POST credits")
    body = await read_json_body(request, GrantRequest)
    return json_answer(await write(billing, _grant, billing, principal, customer, body), 201)


@router.post(
    "/v1/customers/{customer}/credits/{grant_id}/void",
    summary="Void a grant from now on (its balance leaves; nothing is deleted)",
    openapi_extra=json_body(VoidRequest, "Why"),
    responses={200: {"description": "{grant, voided_at_us, reason}"}, **_WRITES},
)
async def void(
    request: Request, billing: BillingDependency, customer: str, grant_id: str
) -> Response:
    principal = await caller(request, "admin", "POST void")
    body = await read_json_body(request, VoidRequest)
    return json_answer(
        await write(billing, _void, billing, principal, customer, grant_id, body.reason)
    )


@router.post(
    "/v1/customers/{customer}/credits/{grant_id}/adjustments",
    summary="Adjust a grant's balance by hand, with a reason",
    status_code=201,
    openapi_extra=json_body(AdjustmentRequest, "The adjustment"),
    responses={201: {"description": "{grant, amount, at_us, reason}"}, **_WRITES},
)
async def adjust(
    request: Request, billing: BillingDependency, customer: str, grant_id: str
) -> Response:
    principal = await caller(request, "admin", "POST adjustment")
    body = await read_json_body(request, AdjustmentRequest)
    return json_answer(
        await write(billing, _adjust, billing, principal, customer, grant_id, body), 201
    )


@router.post(
    "/v1/invoices/thresholds",
    summary="Bill now every customer whose unbilled usage reached its threshold",
    responses={
        200: {"description": "{finalized: [invoice ids]}"},
        403: {"description": "Key lacks the admin scope, or is bound to a customer"},
        409: {"description": "No pricing applied"},
    },
)
async def thresholds(request: Request, billing: BillingDependency) -> Response:
    await caller(request, "admin", "POST thresholds", every_customer=True)
    made = await write(billing, billing.check_thresholds)
    return json_answer({"finalized": [invoice.invoice_id for invoice in made]})
