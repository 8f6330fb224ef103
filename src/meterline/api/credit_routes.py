"""Credits over HTTP: a customer's credit ledger, grants, voids, manual adjustments, and
threshold checks.

Thin over ``Billing`` like ``billing_routes`` (whose gate, scope checks and error shape it
shares): reading the ledger needs ``read``; granting, voiding and adjusting need
``admin``. A customer-bound key sees and changes only its own customer (anything else is
404, as if it did not exist); checking every customer's thresholds refuses a bound key.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from meterline.api.billing_routes import (
    BillingRoutes,
    HttpError,
    InstantQuery,
    _instant,
    _json,
    _media_type,
    _no_contract,
    _read_body,
)
from meterline.api.bodies import check_nesting, nul_field
from meterline.api.openapi import (
    DECIMAL,
    Amount,
    Instant,
    Reason,
    json_body,
)
from meterline.core.events import decode_exact
from meterline.core.money import (
    AMOUNT_FRACTION_DIGITS_MAX,
    AMOUNT_INTEGER_DIGITS_MAX,
    to_decimal,
)
from meterline.keys import Principal

CREDIT_BODY_BYTES_MAX = 64 * 1024
_JSON = "application/json"


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


def _amount(value: str, name: str) -> Any:
    if not DECIMAL.fullmatch(value):
        raise HttpError(
            400,
            "invalid_input",
            f"{name}: {value[:64]!r} is not an amount like 12.50 (a decimal string, at most"
            f" {AMOUNT_INTEGER_DIGITS_MAX} digits before the point and"
            f" {AMOUNT_FRACTION_DIGITS_MAX} after)",
            field=name,
        )
    try:
        return to_decimal(value, name)
    except (ValueError, TypeError) as error:
        raise HttpError(400, "invalid_input", str(error), field=name) from None


def _decode(body: bytes, kind: type[Any]) -> Any:
    check_nesting(body)
    refuse_nul(body)
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise HttpError(400, "invalid_input", f"body: {error}") from None
    except msgspec.DecodeError as error:
        raise HttpError(400, "malformed_json", f"body: {error}") from None


def refuse_nul(body: bytes) -> None:
    """400 naming the first field of a JSON body whose text holds NUL (U+0000)."""
    field = nul_field(body)
    if field is not None:
        raise HttpError(
            400, "invalid_input", f"{field}: must not contain NUL (U+0000)", field=field
        )


async def _json_body(request: Request, kind: type[Any]) -> Any:
    media = _media_type(request)
    if media != _JSON and not media.endswith("+json"):
        raise HttpError(415, "unsupported_content_type", "send application/json", accepted=[_JSON])
    return _decode(await _read_body(request, CREDIT_BODY_BYTES_MAX), kind)


class CreditRoutes:
    """The credit endpoints, sharing ``billing_routes``' gate and principal checks."""

    def __init__(self, routes: BillingRoutes) -> None:
        self.routes = routes
        self.billing = routes.billing
        self.router = APIRouter(tags=["credits"])
        self._add_routes()

    @staticmethod
    def _own(principal: Principal, customer: str) -> None:
        if principal.customer not in (None, customer):
            raise _no_contract(customer)

    def _credits(self, principal: Principal, customer: str, as_of: int | None) -> Any:
        self._own(principal, customer)
        return self.billing.credits(customer, as_of)

    def _grant(self, principal: Principal, customer: str, body: GrantRequest) -> Any:
        self._own(principal, customer)
        effective = _instant(body.effective, "effective")
        expires = _instant(body.expires, "expires")
        stored, invoice = self.billing.grant(
            customer,
            body.credit_type,
            _amount(body.amount, "amount"),
            body.reason,
            paid=_amount(body.paid, "paid"),
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

    def _void(self, principal: Principal, customer: str, grant_id: str, reason: str) -> Any:
        self._own(principal, customer)
        action = self.billing.void_grant(customer, grant_id, reason)
        return {"grant": grant_id, "voided_at_us": action.at_us, "reason": action.reason}

    def _adjust(
        self, principal: Principal, customer: str, grant_id: str, body: AdjustmentRequest
    ) -> Any:
        self._own(principal, customer)
        action = self.billing.adjust_grant(
            customer, grant_id, _amount(body.amount, "amount"), body.reason
        )
        return {
            "grant": grant_id,
            "amount": action.amount,
            "at_us": action.at_us,
            "reason": action.reason,
        }

    def _add_routes(self) -> None:
        router, routes = self.router, self.routes
        errors: dict[int | str, dict[str, Any]] = {
            403: {"description": "Key lacks the scope"},
            404: {"description": "No such customer or grant (or not this key's)"},
            409: {"description": "The request contradicts the ledger (e.g. already void)"},
        }
        writes: dict[int | str, dict[str, Any]] = {
            **errors,
            400: {"description": "Malformed JSON, a wrong or unknown field, a bad amount"},
            413: {"description": f"Body over {CREDIT_BODY_BYTES_MAX // 1024} KiB"},
            415: {"description": "Not a JSON body"},
            422: {"description": "The request breaks a rule (the message names the field)"},
        }

        @router.get(
            "/v1/customers/{customer}/credits",
            summary="The customer's credit ledger: balances per grant and every entry",
            responses={
                200: {"description": "{grants, totals, entries, as_of}"},
                400: {"description": "`as_of` is not an RFC 3339 timestamp with a zone"},
                **errors,
            },
        )
        async def get_credits(
            request: Request,
            customer: str,
            as_of: InstantQuery = None,
        ) -> Response:
            principal = await routes._caller(request, "read", "GET credits")
            at_us = _instant(as_of, "as_of")
            return _json(await routes._read(self._credits, principal, customer, at_us))

        @router.post(
            "/v1/customers/{customer}/credits",
            summary="Grant credit (a paid grant is invoiced at once)",
            status_code=201,
            openapi_extra=json_body(GrantRequest, "The grant"),
            responses={201: {"description": "{grant, ..., invoice}"}, **writes},
        )
        async def grant(request: Request, customer: str) -> Response:
            principal = await routes._caller(request, "admin", "POST credits")
            body = await _json_body(request, GrantRequest)
            return _json(await routes._write(self._grant, principal, customer, body), 201)

        @router.post(
            "/v1/customers/{customer}/credits/{grant_id}/void",
            summary="Void a grant from now on (its balance leaves; nothing is deleted)",
            openapi_extra=json_body(VoidRequest, "Why"),
            responses={200: {"description": "{grant, voided_at_us, reason}"}, **writes},
        )
        async def void(request: Request, customer: str, grant_id: str) -> Response:
            principal = await routes._caller(request, "admin", "POST void")
            body = await _json_body(request, VoidRequest)
            return _json(
                await routes._write(self._void, principal, customer, grant_id, body.reason)
            )

        @router.post(
            "/v1/customers/{customer}/credits/{grant_id}/adjustments",
            summary="Adjust a grant's balance by hand, with a reason",
            status_code=201,
            openapi_extra=json_body(AdjustmentRequest, "The adjustment"),
            responses={201: {"description": "{grant, amount, at_us, reason}"}, **writes},
        )
        async def adjust(request: Request, customer: str, grant_id: str) -> Response:
            principal = await routes._caller(request, "admin", "POST adjustment")
            body = await _json_body(request, AdjustmentRequest)
            return _json(
                await routes._write(self._adjust, principal, customer, grant_id, body), 201
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
        async def thresholds(request: Request) -> Response:
            await routes._caller(request, "admin", "POST thresholds", unbound=True)
            made = await routes._write(self.billing.check_thresholds)
            return _json({"finalized": [invoice.invoice_id for invoice in made]})
