"""``POST /api/v1/events``: OpenMeter-compatible ingest, so a team on OpenMeter switches
by changing its client's base URL (docs/openmeter-migration.md).

It takes what OpenMeter's clients send: one CloudEvent (``application/cloudevents+json``),
a batch (``application/cloudevents-batch+json``) or plain ``application/json`` holding
one CloudEvent or an array of them, with ``Authorization: Bearer <ingest key>``. The
events are CloudEvents as ``POST /v1/events`` reads them (``core.cloudevents``: subject
is the customer, type the event type, data the properties, id the idempotency key).
The answers are OpenMeter's: 204 No Content once every event is stored or already was;
otherwise an RFC 9457 problem (``application/problem+json``). A batch holding an invalid
event is refused whole (400, each refusal named, nothing stored), as OpenMeter refuses
it; events whose id is already stored with other content are 409 (the rest stored). In
stream mode a partition lagging past the bound is 429 and JetStream not taking the batch
503, both with ``Retry-After`` (nothing of the batch acknowledged: retry it whole).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from meterline.api.answers import ENCODER
from meterline.api.bodies import CLOUDEVENT_BATCH_TYPE, CLOUDEVENT_TYPE, decode_json
from meterline.api.dependencies import ServicesDependency, principal_of
from meterline.api.failures import retry_after
from meterline.api.openapi import ingest_body
from meterline.api.reading import media_type, read_body
from meterline.api.services import Services
from meterline.core.cloudevents import prepare_cloudevent
from meterline.core.limits import DEFAULT_LIMITS
from meterline.core.outcomes import BatchOutcome, EventOutcome
from meterline.errors import MalformedJSON, MeterlineError, UnsupportedContentType

PROBLEM = "application/problem+json"
ACCEPTED = (CLOUDEVENT_TYPE, CLOUDEVENT_BATCH_TYPE, "application/json")

router = APIRouter()

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "meterline's error code, when there is one"},
        "events": {
            "type": "array",
            "description": "Each refused event: `index`, `id`, `status`, `errors`",
            "items": {"type": "object"},
        },
    },
}


def _problem_answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}}}


_RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {"description": "Every event stored, or already stored"},
    400: _problem_answer("The body, or an event in it, is invalid: nothing stored"),
    401: _problem_answer("No valid bearer key"),
    403: _problem_answer("The key lacks the ingest scope"),
    409: _problem_answer("Events whose id is stored with other content (the rest stored)"),
    413: _problem_answer("More events or bytes than the batch limits"),
    415: _problem_answer("Another content type"),
    429: _problem_answer("Stream mode: a partition lags past the ingest lag bound (Retry-After)"),
    503: _problem_answer("Stream mode: JetStream cannot take the batch now (Retry-After)"),
}


def _request_body() -> dict[str, Any]:
    """CloudEvents as ``POST /v1/events`` documents them; plain JSON: one or an array."""
    content = ingest_body(DEFAULT_LIMITS, (CLOUDEVENT_TYPE,))["requestBody"]["content"]
    event = content[CLOUDEVENT_TYPE]["schema"]
    # a null time is an absent one: the receipt time (as OpenMeter reads it)
    event["properties"]["time"] = {"type": ["string", "null"], "format": "date-time"}
    batch = {"type": "array", "maxItems": DEFAULT_LIMITS.batch_events_max, "items": event}
    return {
        "requestBody": {
            "required": True,
            "content": {
                CLOUDEVENT_TYPE: {"schema": event},
                CLOUDEVENT_BATCH_TYPE: {"schema": batch},
                "application/json": {"schema": {"oneOf": [event, batch]}},
            },
        }
    }


def problem(
    status: int, detail: str, headers: dict[str, str] | None = None, **extensions: Any
) -> Response:
    """An RFC 9457 problem answer, as OpenMeter's API gives its errors."""
    document = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return Response(ENCODER.encode(document), status, headers, media_type=PROBLEM)


def envelopes_of(kind: str, body: bytes) -> list[Any]:
    """The CloudEvents in a body, by its content type (plain JSON: one or an array)."""
    if kind not in ACCEPTED:
        raise UnsupportedContentType(
            f"content type {kind or 'none'!r} is not accepted; use one of {', '.join(ACCEPTED)}"
        )
    document = decode_json(body)
    if kind == CLOUDEVENT_TYPE:
        return [document]
    if kind == CLOUDEVENT_BATCH_TYPE and type(document) is not list:
        raise MalformedJSON(f"{CLOUDEVENT_BATCH_TYPE} must hold a JSON array", None)
    return document if type(document) is list else [document]


def _refusals(results: list[EventOutcome]) -> list[dict[str, Any]]:
    return [
        {
            "index": result.index,
            "id": result.id,
            "status": result.status,
            "errors": [f"{error.field}: {error.reason}" for error in result.errors or []],
        }
        for result in results
    ]


async def _store(
    services: Services, envelopes: list[Any], customer: str | None
) -> BatchOutcome | Response:
    """Validate every event, then store them all; a problem if any is invalid."""
    ledger = services.ledger
    prepared = await to_thread.run_sync(
        ledger.prepare_batch, envelopes, prepare_cloudevent, customer, "subject"
    )
    if prepared[1]:
        return problem(
            400,
            f"{len(prepared[1])} of {len(envelopes)} events are invalid; none was stored",
            events=_refusals(prepared[1]),
        )
    if services.stream is not None:
        return await services.stream.ingest(ledger, prepared)
    return await to_thread.run_sync(ledger.ingest_cloudevents, envelopes, customer)


@router.post(
    "/api/v1/events",
    tags=["events"],
    summary="OpenMeter-compatible ingest (CloudEvents; 204 on success)",
    status_code=204,
    responses=_RESPONSES,
    openapi_extra=_request_body(),
)
async def ingest_openmeter(request: Request, services: ServicesDependency) -> Response:
    try:
        principal = await principal_of(request)
        principal.require("ingest", "POST /api/v1/events")
        body = await read_body(request, services.ledger.limits.batch_bytes_max)
        envelopes = envelopes_of(media_type(request), body)
        outcome = await _store(services, envelopes, principal.customer)
    except MeterlineError as error:
        wait = retry_after(error)
        headers = None if wait is None else {"Retry-After": wait}
        return problem(error.http_status, str(error), headers, code=error.code)
    if isinstance(outcome, Response):
        return outcome
    request.app.state.metrics.count(outcome)
    refused = [result for result in outcome.results if result.status in ("conflict", "rejected")]
    if refused:
        # 409 for ids stored with other content; a 400 here is an event that turned invalid
        # between the check and the append (the clock moved): both name each event
        conflicts_only = all(result.status == "conflict" for result in refused)
        return problem(
            409 if conflicts_only else 400,
            f"{len(refused)} event(s) not stored (conflict: an id stored with other content;"
            " rejected: invalid); the rest were stored",
            events=_refusals(refused),
        )
    return Response(status_code=204)
