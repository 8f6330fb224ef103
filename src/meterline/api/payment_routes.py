"""Payments and receivables over HTTP: record payments, refunds and write-offs against an
invoice; read an invoice's standing, every receivable, the aging and the overdue list.

A module-level router: each handler reads the billing service and the ledger (for keys)
from ``request.app.state`` (``create_app`` sets them). Recording needs the ``admin`` scope,
reading ``read``. A customer-bound key sees and pays only its own customer's invoices
(another's is 404, as if it did not exist) and reads only its own receivables.
Recording is idempotent by the body's ``payment_id``: 201 when recorded now, 200 with the
same record when the same request was recorded before, 409 for another request under
that id (``PaymentConflict``, rendered by the app's handler for ``BillingConflict``).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import msgspec
from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from meterline.api.answers import HttpError
from meterline.api.dependencies import read, write
from meterline.api.openapi import DECIMAL, Amount, Reason, json_body
from meterline.api.reading import decode_json
from meterline.billing.payments import (
    PaymentRequest,
    Recorded,
    aging_document,
    overdue_document,
    record_document,
    recorded_document,
    standing_document,
)
from meterline.billing.service import Billing
from meterline.core.money import MoneyError, to_bounded_amount
from meterline.core.payments import OverduePolicy
from meterline.keys import Principal, authenticate

PAYMENT_BODY_BYTES_MAX = 16 * 1024
_JSON = "application/json"
_ENCODER = msgspec.json.Encoder()

router = APIRouter(tags=["payments"])


class PaymentBody(msgspec.Struct, forbid_unknown_fields=True):
    """A payment received: your id for it (retries with the same body are one payment)."""

    payment_id: str
    amount: Amount
    currency: str | None = None
    overpayment: Annotated[
        bool, msgspec.Meta(description="Hold what exceeds the open amount as credit balance")
    ] = False
    method: str = ""
    reference: str = ""


class RefundBody(msgspec.Struct, forbid_unknown_fields=True):
    """Money returned: never more than was paid net of earlier refunds."""

    payment_id: str
    amount: Amount
    reason: str = ""
    reference: str = ""


class WriteOffBody(msgspec.Struct, forbid_unknown_fields=True):
    """Write off what is open: the invoice becomes uncollectible."""

    reason: Reason
    payment_id: str = ""


def _json(payload: Any, status_code: int = 200) -> Response:
    return Response(_ENCODER.encode(payload), status_code, media_type=_JSON)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def _caller(request: Request, scope: str, action: str) -> Principal:
    ledger = request.app.state.ledger
    principal: Principal = await to_thread.run_sync(authenticate, ledger.store, _bearer(request))
    principal.require(scope, action)  # type: ignore[arg-type]
    return principal


def _billing(request: Request) -> Billing:
    billing: Billing = request.app.state.billing
    return billing


async def _body(request: Request, kind: type[Any]) -> Any:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != _JSON and not media.endswith("+json"):
        raise HttpError(415, "unsupported_content_type", "send application/json", accepted=[_JSON])
    body = await request.body()
    if len(body) > PAYMENT_BODY_BYTES_MAX:
        raise HttpError(413, "payload_too_large", f"body over {PAYMENT_BODY_BYTES_MAX} bytes")
    return decode_json(body, kind)


def _amount(value: str) -> Any:
    if not DECIMAL.fullmatch(value):
        raise HttpError(400, "invalid_input", f"amount: {value[:64]!r} is not an amount")
    try:
        return to_bounded_amount(value, "amount")
    except MoneyError as error:
        raise HttpError(400, "invalid_input", str(error), field="amount") from None


def _recorded(done: Recorded) -> Response:
    return _json(recorded_document(done), 201 if done.created else 200)


async def _record(request: Request, principal: Principal, payment: PaymentRequest) -> Response:
    billing = _billing(request)
    done = await write(billing, billing.record_payment, payment, principal.customer)
    return _recorded(done)


_READS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A parameter is invalid (`field` names it)"},
    403: {"description": "Key lacks the read scope, or is bound to another customer"},
}
_WRITES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The same request was recorded before: that record"},
    201: {"description": "Recorded: {payment_id, kind, amount, created, standing}"},
    400: {"description": "Malformed JSON, a wrong or unknown field, a bad amount"},
    403: {"description": "Key lacks the admin scope"},
    404: {"description": "No such invoice (or not this key's)"},
    409: {"description": "Refused by the invoice's state, or the id holds another request"},
    415: {"description": "Not a JSON body"},
    422: {"description": "A field breaks a rule (currency, minor unit, amount above zero)"},
}


@router.post(
    "/v1/invoices/{invoice_id}/payments",
    summary="Record a full or partial payment of an invoice",
    status_code=201,
    openapi_extra=json_body(PaymentBody, "The payment"),
    responses=_WRITES,
)
async def record_payment(request: Request, invoice_id: str) -> Response:
    principal = await _caller(request, "admin", "POST payments")
    body: PaymentBody = await _body(request, PaymentBody)
    payment = PaymentRequest(
        invoice_id,
        body.payment_id,
        "payment",
        _amount(body.amount),
        body.currency,
        body.overpayment,
        body.method,
        body.reference,
    )
    return await _record(request, principal, payment)


@router.post(
    "/v1/invoices/{invoice_id}/refunds",
    summary="Refund money paid on an invoice",
    status_code=201,
    openapi_extra=json_body(RefundBody, "The refund"),
    responses=_WRITES,
)
async def record_refund(request: Request, invoice_id: str) -> Response:
    principal = await _caller(request, "admin", "POST refunds")
    body: RefundBody = await _body(request, RefundBody)
    refund = PaymentRequest(
        invoice_id,
        body.payment_id,
        "refund",
        _amount(body.amount),
        reference=body.reference,
        reason=body.reason,
    )
    return await _record(request, principal, refund)


@router.post(
    "/v1/invoices/{invoice_id}/write-off",
    summary="Write off what is open on an invoice (uncollectible)",
    status_code=201,
    openapi_extra=json_body(WriteOffBody, "Why"),
    responses=_WRITES,
)
async def write_off(request: Request, invoice_id: str) -> Response:
    principal = await _caller(request, "admin", "POST write-off")
    body: WriteOffBody = await _body(request, WriteOffBody)
    request_ = PaymentRequest(invoice_id, body.payment_id, "write_off", reason=body.reason)
    return await _record(request, principal, request_)


@router.get(
    "/v1/invoices/{invoice_id}/payments",
    summary="An invoice's state, figures and payment records",
    responses={
        200: {"description": "{standing, records}"},
        **_READS,
        404: {"description": "No such invoice (or not this key's)"},
    },
)
async def invoice_payments(request: Request, invoice_id: str) -> Response:
    principal = await _caller(request, "read", "GET payments")
    billing = _billing(request)
    standing, _ = await read(billing, billing.invoice_standing, invoice_id, principal.customer)
    stored = await read(billing, billing.payment_records.of_invoice, invoice_id)
    records = [record_document(item) for item in stored]
    return _json({"standing": standing_document(standing), "records": records})


def _date(value: str | None, today: date) -> date:
    if value is None:
        return today
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HttpError(
            400, "invalid_parameter", f"on: {value[:32]!r} is not a date", field="on"
        ) from None


def _today(billing: Billing) -> date:
    from meterline.core.periods import local_date

    return local_date("UTC", billing.clock())


def _scoped(principal: Principal, customer: str | None) -> str | None:
    if principal.customer is None:
        return customer
    if customer not in (None, principal.customer):
        raise HttpError(403, "forbidden", f"this key may only read {principal.customer!r}")
    return principal.customer


NetDays = Annotated[int, Query(ge=0, le=3650, description="Days after issue an invoice is due")]
DATE_PATTERN = r"^(19[7-9][0-9]|[2-8][0-9]{3})-[0-9]{2}-[0-9]{2}$"
"""A date as the API takes it: YYYY-MM-DD, from 1970 to 8999 (as instants are bounded)."""
OnDate = Annotated[
    str | None,
    Query(
        pattern=DATE_PATTERN,
        description="The date (YYYY-MM-DD, 1970 to 8999; read through its end, UTC)",
        json_schema_extra={"format": "date"},
    ),
]


@router.get(
    "/v1/receivables",
    summary="Every invoice's state and figures (a bound key: its own)",
    responses={200: {"description": "{receivables: [...]}"}, **_READS},
)
async def receivables(request: Request, customer: str | None = None) -> Response:
    principal = await _caller(request, "read", "GET receivables")
    billing = _billing(request)
    found = await read(billing, billing.receivables, _scoped(principal, customer))
    return _json({"receivables": [standing_document(item) for item, _ in found]})


@router.get(
    "/v1/receivables/aging",
    summary="Open receivables by customer and days past due (current, 1-30 ... 90+)",
    responses={200: {"description": "{on, net_days, rows}"}, **_READS},
)
async def aging(
    request: Request, customer: str | None = None, on: OnDate = None, net_days: NetDays = 30
) -> Response:
    principal = await _caller(request, "read", "GET aging")
    billing = _billing(request)
    day = _date(on, _today(billing))
    rows = await read(billing, billing.aging, day, net_days, _scoped(principal, customer))
    body = [aging_document(row) for row in rows]
    return _json({"on": day.isoformat(), "net_days": net_days, "rows": body})


@router.get(
    "/v1/receivables/overdue",
    summary="Invoices open more than `days` past due (the overdue policy's input)",
    responses={200: {"description": "{on, days, overdue}"}, **_READS},
)
async def overdue(
    request: Request,
    days: Annotated[int, Query(ge=0, le=3650)],
    customer: str | None = None,
    on: OnDate = None,
    net_days: NetDays = 30,
) -> Response:
    principal = await _caller(request, "read", "GET overdue")
    billing = _billing(request)
    day = _date(on, _today(billing))
    found = await read(billing, billing.overdue, day, days, net_days, _scoped(principal, customer))
    body = [overdue_document(item) for item in found]
    return _json({"on": day.isoformat(), "days": days, "overdue": body})


@router.get(
    "/v1/receivables/access/{customer}",
    summary="The overdue policy's access answer: block (or alert) past `days` overdue",
    responses={
        200: {"description": "{customer, feature, allowed, reason, policy, action, overdue}"},
        **_READS,
    },
)
async def overdue_access(
    request: Request,
    customer: str,
    days: Annotated[int, Query(ge=0, le=3650)],
    action: Annotated[str, Query(pattern="^(alert|block)$")] = "block",
    feature: str | None = None,
    on: OnDate = None,
    net_days: NetDays = 30,
) -> Response:
    principal = await _caller(request, "read", "GET overdue access")
    billing = _billing(request)
    scoped = _scoped(principal, customer) or customer
    policy = OverduePolicy(f"overdue-{days}-days", action, days, net_days)  # type: ignore[arg-type]
    day = _date(on, _today(billing))
    answer = await read(billing, billing.overdue_access, scoped, policy, day, feature)
    return _json(answer)
