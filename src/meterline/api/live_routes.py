"""The live path over HTTP: access answers, the access push stream, live figures, control
firings and finance's overrides.

- ``GET /v1/access/{customer}?feature=`` answers from memory (no ledger read, no worker
  thread): allowed or not, why, and the remaining balance. Any scope may ask; a
  customer-bound key only about its own customer.
- ``GET /v1/access/stream`` is Server-Sent Events: a ``snapshot`` of every decision, then a
  ``change`` per customer whose answer changed, and a ``heartbeat`` every
  ``HEARTBEAT_S`` seconds (``meterline.sdk.gate.Gate`` reads it; see docs/gate.md).
- ``GET /v1/live/{customer}`` the live figures (``read``); ``GET /v1/controls/firings``
  the firing record (``read``); ``POST /v1/customers/{customer}/overrides`` unblock,
  extend a limit or grant credits, with a reason (``admin``).

The routes read the live front (``LiveFront``: the live worker's mirror, or the stream
workers') from ``app.state.services``; they are mounted only when there is one. An
override holds billing's lock alone (``Billing.lock``): it may grant credit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from meterline.api.answers import ENCODER, HttpError, json_answer
from meterline.api.dependencies import (
    LiveDependency,
    ServicesDependency,
    no_contract,
    own,
    principal_inline,
    principal_of,
)
from meterline.api.openapi import Amount, Reason, json_body
from meterline.api.reading import amount
from meterline.api.reading import json_body as read_json_body
from meterline.billing.service import Billing
from meterline.core.events import format_timestamp
from meterline.core.live_documents import AccessChange, AccessSnapshot, Heartbeat
from meterline.keys import Principal
from meterline.live.control_documents import PushedDecision
from meterline.live.control_engine import OverrideError, firing_document
from meterline.live.control_overrides import Override
from meterline.live.front import LiveFront

OVERRIDE_KINDS = ("unblock", "extend", "grant")
HEARTBEAT_S = 5.0
"""The longest silence on the access stream (the gate's heartbeat timeout is 15 s)."""
STREAM_QUEUE_MAX = 10_000
"""Changes one slow stream may hold back before it is dropped (the gate reconnects)."""


class OverrideRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Finance's manual action: ``unblock`` (one policy's block, or all), ``extend``
    (raise ``policy``'s limit by ``amount``) or ``grant`` (``amount`` of ``credit_type``,
    invoiced when ``paid``)."""

    kind: Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(OVERRIDE_KINDS)})]
    reason: Reason
    policy: str | None = None
    amount: Amount | None = None
    credit_type: str | None = None
    paid: Amount = "0"


class EventStream(StreamingResponse):
    """A Server-Sent Events answer (its media type, for the OpenAPI document)."""

    media_type = "text/event-stream"


_SSE_EVENT: dict[str, Any] = {
    "title": "AccessEvent",
    "description": "One Server-Sent Event; `data` is a JSON object",
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["snapshot", "change", "heartbeat"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def _event(name: str, data: AccessSnapshot | AccessChange | Heartbeat) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + ENCODER.encode(data) + b"\n\n"


router = APIRouter(tags=["live"])


def _override(
    live: LiveFront, billing: Billing, principal: Principal, customer: str, body: OverrideRequest
) -> Any:
    """The override, by this key, under billing's lock (held alone)."""
    quantity = None if body.amount is None else amount(body.amount, "amount")
    paid = amount(body.paid, "paid")
    try:
        with billing.lock.writing():
            record = live.override(
                Override(
                    customer,
                    body.kind,
                    body.reason,
                    f"key {principal.key_id}",
                    policy=body.policy,
                    amount=quantity,
                    credit_type=body.credit_type,
                    paid=paid,
                )
            )
    except OverrideError as error:
        field = str(error).split(":", 1)[0]
        raise HttpError(422, "invalid_input", str(error), field=field) from None
    return _override_document(record)


async def _changes(
    live: LiveFront,
    snapshot: AccessSnapshot,
    queue: asyncio.Queue[AccessChange | None],
    listener: Any,
) -> AsyncIterator[bytes]:
    """The access stream's events: the snapshot, then each change, a heartbeat in every
    silence of ``HEARTBEAT_S``; it ends when the listener fell too far behind."""
    try:
        yield _event("snapshot", snapshot)
        version = snapshot.version
        while True:
            try:
                change = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield _event("heartbeat", Heartbeat(version))
                continue
            if change is None:
                return  # fell too far behind: the client reconnects
            version = change.version
            yield _event("change", change)
    finally:
        if listener in live.listeners:
            live.listeners.remove(listener)


@router.get(
    "/v1/access/stream",
    summary="Access decisions, pushed (Server-Sent Events)",
    response_class=EventStream,
    responses={
        200: {
            "description": "`snapshot`, then `change` and `heartbeat` events",
            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        }
    },
)
async def access_stream(request: Request, live: LiveDependency) -> StreamingResponse:
    principal = await principal_of(request)
    only = principal.customer
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[AccessChange | None] = asyncio.Queue()

    def listener(version: int, customer: str, decision: PushedDecision) -> None:
        if only is not None and customer != only:
            return
        if queue.qsize() >= STREAM_QUEUE_MAX:
            loop.call_soon_threadsafe(queue.put_nowait, None)
            return
        loop.call_soon_threadsafe(queue.put_nowait, AccessChange(version, customer, decision))

    with live.lock:
        snapshot = live.snapshot(only)
        live.listeners.append(listener)
    return EventStream(
        _changes(live, snapshot, queue, listener),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/v1/access/{customer}",
    summary="May this customer use this feature now?",
    responses={404: {"description": "Not this key's customer"}},
)
async def access(
    request: Request, live: LiveDependency, customer: str, feature: str | None = None
) -> Response:
    # authenticated in the event loop: a hop to a worker thread costs more than the answer
    principal = principal_inline(request)
    own(principal, customer)
    return json_answer(live.access(customer, feature))


@router.get(
    "/v1/live",
    summary="The live engine: its worker, progress and restarts",
    responses={
        403: {"description": "Key lacks the read scope, or is bound to a customer"},
        503: {"description": "The live worker is not answering"},
    },
)
async def status(request: Request, live: LiveDependency) -> Response:
    principal = await principal_of(request)
    principal.require("read", "GET /v1/live")
    if principal.customer is not None:
        raise HttpError(403, "forbidden", "the live engine's status is not a customer's")
    return json_answer(await to_thread.run_sync(live.status))


@router.get(
    "/v1/live/{customer}",
    summary="A customer's live figures for this period",
    responses={
        403: {"description": "Key lacks the read scope"},
        404: {"description": "No contract in force (or not this key's customer)"},
        503: {"description": "The live worker is not answering"},
    },
)
async def live(request: Request, front: LiveDependency, customer: str) -> Response:
    principal = await principal_of(request)
    principal.require("read", "GET /v1/live")
    own(principal, customer)
    document = await to_thread.run_sync(front.figures, customer)
    if document is None:
        raise no_contract(customer)
    return json_answer(document)


@router.get(
    "/v1/controls/firings",
    summary="Every control firing, oldest first",
    responses={403: {"description": "Key lacks the read scope"}},
)
async def firings(request: Request, live: LiveDependency, customer: str | None = None) -> Response:
    principal = await principal_of(request)
    principal.require("read", "GET /v1/controls/firings")
    if principal.customer is not None:
        customer = principal.customer
    records = await to_thread.run_sync(live.store.firings, customer)
    results = await to_thread.run_sync(live.store.results)
    return json_answer({"firings": [firing_document(f, results) for f in records]})


@router.post(
    "/v1/customers/{customer}/overrides",
    status_code=201,
    summary="Unblock, extend a limit or grant credits, with a reason",
    openapi_extra=json_body(OverrideRequest, "The override"),
    responses={
        400: {"description": "Malformed JSON, a wrong or unknown field, a bad amount"},
        403: {"description": "Key lacks the admin scope"},
        404: {"description": "Not this key's customer"},
        413: {"description": "Body over 64 KiB"},
        415: {"description": "Not a JSON body"},
        422: {"description": "The override breaks a rule (the message names the field)"},
        503: {"description": "The live worker is not answering"},
    },
)
async def override(request: Request, services: ServicesDependency, customer: str) -> Response:
    principal = await principal_of(request)
    principal.require("admin", "POST /v1/customers/{customer}/overrides")
    own(principal, customer)
    body = await read_json_body(request, OverrideRequest)
    live = services.live
    assert live is not None
    document = await to_thread.run_sync(
        _override, live, services.billing, principal, customer, body
    )
    return json_answer(document, 201)


@router.get(
    "/v1/customers/{customer}/overrides",
    summary="Overrides, oldest first",
    responses={
        403: {"description": "Key lacks the read scope"},
        404: {"description": "Not this key's customer"},
    },
)
async def overrides(request: Request, live: LiveDependency, customer: str) -> Response:
    principal = await principal_of(request)
    principal.require("read", "GET /v1/customers/{customer}/overrides")
    own(principal, customer)
    records = await to_thread.run_sync(live.store.overrides, customer)
    return json_answer({"overrides": [_override_document(r) for r in records]})


def _override_document(record: Any) -> dict[str, Any]:
    return {
        "override": record.override_id,
        "customer": record.customer,
        "kind": record.kind,
        "policy": record.policy,
        "amount": record.amount,
        "reason": record.reason,
        "actor": record.actor,
        "at": format_timestamp(record.at_us),
        **record.detail,
    }
