"""Outgoing webhooks over HTTP: endpoints, the delivery log, and manual redelivery.

Thin over ``meterline.live.webhook_service.Webhooks`` (``app.state.services``' webhooks, a
dependency; the routes are mounted only when there is one). Every route needs the
``admin`` scope and refuses a customer-bound key (403): endpoints receive every
customer's events. Errors are raised as ``HttpError`` (rendered as ``{"error": {"code",
"message", "field"}}``): bad input is 422 naming the field, an unknown id 404, a
delivery whose endpoint is disabled 409. The signing secret appears in one answer only,
the one that creates the endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from meterline.api.answers import HttpError, json_answer
from meterline.api.dependencies import WebhooksDependency, caller
from meterline.api.openapi import NO_NUL
from meterline.api.reading import json_body
from meterline.core.live_documents import WebhookDelivery
from meterline.ledger.webhook_records import DELIVERIES_PAGE_MAX, DELIVERY_STATUSES
from meterline.live.webhook_documents import delivery_document, endpoint_document
from meterline.live.webhook_inputs import (
    ALL_KINDS,
    DESCRIPTION_LENGTH_MAX,
    URL_LENGTH_MAX,
    WEBHOOK_KINDS,
    EndpointDisabled,
    WebhookError,
    WebhookNotFound,
)

T = TypeVar("T")

_SUBSCRIBE_FIELDS = ("url", "kinds", "description")
_SUBSCRIBE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["url", "kinds"],
                "additionalProperties": False,
                "properties": {
                    "url": {
                        "type": "string",
                        "maxLength": URL_LENGTH_MAX,
                        "pattern": "^[hH][tT][tT][pP][sS]?://[^\\u0000]*$",
                        "description": "http:// or https://, with a host and no credentials",
                    },
                    "kinds": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"enum": [*WEBHOOK_KINDS, ALL_KINDS]},
                        "description": "The kinds to receive; `*` for every kind",
                    },
                    "description": {
                        "type": "string",
                        "maxLength": DESCRIPTION_LENGTH_MAX,
                        "pattern": NO_NUL,
                    },
                },
            }
        }
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "Key lacks the admin scope, or is bound to a customer"},
}


def _invalid(field: str, message: str) -> HttpError:
    return HttpError(422, "invalid_input", f"{field}: {message}", field=field)


async def _subscribe_body(request: Request) -> dict[str, Any]:
    """The body's fields, each named in the error if it is unknown or missing."""
    try:
        body: dict[str, Any] = await json_body(request, dict[str, Any])
    except HttpError as error:
        if error.code == "invalid_input":
            error.extra.setdefault("field", "body")
        raise
    for name in body:
        if name not in _SUBSCRIBE_FIELDS:
            raise _invalid(name, f"unknown field; expected {', '.join(_SUBSCRIBE_FIELDS)}")
    for name in ("url", "kinds"):
        if name not in body:
            raise _invalid(name, "required")
    return body


router = APIRouter(tags=["webhooks"])


async def _call(function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` in a worker thread (SQLite waits for fsync), mapping the
    service's errors to HTTP ones."""
    try:
        return await to_thread.run_sync(function, *args)
    except WebhookError as error:
        raise _invalid(error.field, str(error).partition(": ")[2]) from None
    except WebhookNotFound as error:
        raise HttpError(404, "not_found", str(error)) from None
    except EndpointDisabled as error:
        raise HttpError(409, "endpoint_disabled", str(error)) from None


async def _admin(request: Request, action: str) -> None:
    await caller(request, "admin", action, every_customer=True)


@router.post(
    "/v1/webhooks",
    summary="Add a webhook endpoint; the answer shows its signing secret, once",
    status_code=201,
    openapi_extra={"requestBody": _SUBSCRIBE_BODY},
    responses={
        201: {"description": "{endpoint: {...}, secret: whsec_...}"},
        400: {"description": "Malformed JSON, or not an object"},
        **_ERRORS,
        413: {"description": "Body over 64 KiB"},
        415: {"description": "Not a JSON body"},
        422: {"description": "A field is invalid (`field` names it)"},
    },
)
async def subscribe(request: Request, webhooks: WebhooksDependency) -> Response:
    await _admin(request, "POST /v1/webhooks")
    body = await _subscribe_body(request)
    endpoint, secret = await _call(
        webhooks.subscribe, body["url"], body["kinds"], body.get("description", "")
    )
    return json_answer({"endpoint": endpoint_document(endpoint), "secret": secret}, 201)


@router.get(
    "/v1/webhooks",
    summary="Webhook endpoints, disabled ones too (never their secrets)",
    responses={200: {"description": "{endpoints: [...]}"}, **_ERRORS},
)
async def list_endpoints(request: Request, webhooks: WebhooksDependency) -> Response:
    await _admin(request, "GET /v1/webhooks")
    endpoints = await _call(webhooks.endpoints)
    return json_answer({"endpoints": [endpoint_document(endpoint) for endpoint in endpoints]})


@router.get(
    "/v1/webhooks/deliveries",
    summary="The delivery log, newest first, each delivery with its attempts",
    responses={
        200: {"description": "{deliveries: [{..., attempts: [...], event: {...}}]}"},
        **_ERRORS,
        400: {"description": "`limit` is not an integer"},
        404: {"description": "No such endpoint"},
        422: {"description": "A bad `status` or `limit` (`field` names it)"},
    },
)
async def list_deliveries(
    request: Request,
    webhooks: WebhooksDependency,
    endpoint: Annotated[str | None, Query(description="only this endpoint's")] = None,
    status: Annotated[
        str | None,
        Query(
            description="pending, delivered or failed",
            json_schema_extra={"enum": list(DELIVERY_STATUSES)},
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(
            description=f"1 to {DELIVERIES_PAGE_MAX}",
            json_schema_extra={"minimum": 1, "maximum": DELIVERIES_PAGE_MAX},
        ),
    ] = 100,
) -> Response:
    await _admin(request, "GET /v1/webhooks/deliveries")

    def deliveries() -> list[WebhookDelivery]:
        found = webhooks.deliveries(endpoint, status, limit)
        return [delivery_document(d, webhooks.attempts(d.delivery_id)) for d in found]

    return json_answer({"deliveries": await _call(deliveries)})


@router.post(
    "/v1/webhooks/deliveries/{delivery_id}/retry",
    summary="Send a delivery again now (attempt numbers continue)",
    responses={
        200: {"description": "{delivery: {...}} (pending, due now)"},
        **_ERRORS,
        404: {"description": "No such delivery"},
        409: {"description": "Its endpoint is disabled"},
    },
)
async def retry(request: Request, webhooks: WebhooksDependency, delivery_id: str) -> Response:
    await _admin(request, "POST webhook retry")

    def redeliver() -> WebhookDelivery:
        delivery = webhooks.redeliver(delivery_id)
        return delivery_document(delivery, webhooks.attempts(delivery_id))

    return json_answer({"delivery": await _call(redeliver)})


@router.delete(
    "/v1/webhooks/{endpoint_id}",
    summary="Disable an endpoint (its pending deliveries fail; nothing is deleted)",
    responses={
        200: {"description": "{endpoint: {...}} (disabled)"},
        **_ERRORS,
        404: {"description": "No such endpoint"},
    },
)
async def disable(request: Request, webhooks: WebhooksDependency, endpoint_id: str) -> Response:
    await _admin(request, "DELETE /v1/webhooks")
    endpoint = await _call(webhooks.disable, endpoint_id)
    return json_answer({"endpoint": endpoint_document(endpoint)})
