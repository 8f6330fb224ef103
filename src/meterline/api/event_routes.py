"""Events over HTTP, and the operations routes: ingest (embedded, or published to
JetStream in stream mode), read pages of events, health and Prometheus metrics.

``router`` holds the reads; ingest is added by ``add_ingest_route``, since its OpenAPI
operation states the application's own batch limits and, in stream mode, its extra
answers (202, 429, 503). Ingest runs the ledger in a worker thread (an append waits for
fsync).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import PlainTextResponse, Response

from meterline.api.answers import json_answer
from meterline.api.bodies import ACCEPTED_TYPES, parse_body
from meterline.api.dependencies import (
    LedgerDependency,
    ServicesDependency,
    principal_of,
)
from meterline.api.failures import error_response
from meterline.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from meterline.api.metrics import Metrics
from meterline.api.openapi import (
    ERROR_REF,
    EVENT_PAGE_SCHEMA,
    HEALTH_SCHEMA,
    batch_outcome_ref,
    ingest_body,
    instant_schema,
    json_content,
)
from meterline.api.reading import instant
from meterline.api.stream_front import StreamFront
from meterline.billing.service import Billing
from meterline.core.admission import retry_after_header
from meterline.core.events import event_document, format_timestamp
from meterline.core.limits import IngestLimits
from meterline.core.outcomes import BatchOutcome
from meterline.errors import BatchTooLarge
from meterline.ledger.database import database_errors
from meterline.ledger.event_ledger import Ledger
from meterline.ledger.store import PAGE_EVENTS_MAX, SEQUENCE_MAX, EventQuery, StoredEvent
from meterline.stream.errors import IngestLagging, StreamUnavailable

_log = logging.getLogger(__name__)

router = APIRouter()


async def metrics_of(request: Request) -> Metrics:
    """The app's metrics (``async``: see ``meterline.api.dependencies``)."""
    metrics: Metrics = request.app.state.metrics
    return metrics


MetricsDependency = Annotated[Metrics, Depends(metrics_of)]


def _moment(description: str) -> Any:
    return Query(json_schema_extra=instant_schema(description))


def _ingest_responses(stream: bool) -> dict[int | str, dict[str, Any]]:
    outcome = batch_outcome_ref()
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "Per-event outcomes: accepted, duplicate, conflict, rejected",
            **json_content(outcome),
        },
        400: {
            "description": "Every event rejected (per-event outcomes), or the body refused"
            " whole: malformed JSON, nested too deep (the error shape)",
            **json_content({"oneOf": [outcome, ERROR_REF]}),
        },
        403: {"description": "The key lacks the ingest scope"},
        409: {"description": "Every event conflicts with a stored one", **json_content(outcome)},
        413: {"description": "More events or bytes than the batch limits"},
        415: {"description": "Unsupported content type (`accepted` lists the others)"},
    }
    if stream:
        responses[202] = {
            "description": "Stream mode: the valid events are stored in JetStream",
            **json_content(outcome),
        }
        responses[503] = {"description": "Stream mode: JetStream cannot take the batch now"}
        responses[429] = {
            "description": "Stream mode: a partition the batch touches lags past the ingest"
            " lag bound; nothing was accepted (`retry_after_ms` in the body)"
        }
    return responses


def _batch_status(outcome: BatchOutcome) -> int:
    """200 when anything was stored or already there; otherwise 400 (rejected) or 409."""
    if outcome.accepted or outcome.duplicate or not outcome.results:
        return 200
    return 400 if outcome.rejected else 409


def _render_event(stored: StoredEvent) -> dict[str, Any]:
    document = event_document(stored.record.body)
    document["sequence"] = stored.record.sequence
    document["ingested_at"] = format_timestamp(stored.ingested_at_us)
    document["hash"] = stored.record.hash.hex()
    return document


async def _read_batch(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BatchTooLarge(f"body is {declared} bytes, the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BatchTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _firing_counts(service: Billing) -> list[tuple[str, str, int]]:
    """Control firings per kind and level, from the records every process shares."""
    try:
        return service.control_firing_counts()
    except database_errors():
        return []  # no live engine ever created the control tables


@router.get(
    "/v1/health",
    tags=["operations"],
    summary="Liveness and ledger head",
    responses={200: {"description": "The ledger head", **json_content(HEALTH_SCHEMA)}},
)
async def health(ledger: LedgerDependency) -> Response:
    sequence, head_hash = await to_thread.run_sync(ledger.head)
    cut = await to_thread.run_sync(ledger.store.cut)
    return json_answer(
        {
            "status": "ok",
            "sequence": sequence,
            "head_hash": head_hash.hex(),
            "through": cut.to_json(),
        }
    )


async def ingest(
    request: Request, services: ServicesDependency, metrics: MetricsDependency
) -> Response:
    # POST /v1/events, added by add_ingest_route (no docstring: it would be the operation's)
    ledger = services.ledger
    principal = await principal_of(request)
    principal.require("ingest", "POST /v1/events")
    body = await _read_batch(request, ledger.limits.batch_bytes_max)
    if services.stream is not None:
        return await _publish(services.stream, ledger, metrics, request, body, principal.customer)
    parsed = parse_body(request.headers.get("content-type"), request.headers, body)
    run = ledger.ingest if parsed.shape == "native" else ledger.ingest_cloudevents
    outcome = await to_thread.run_sync(run, parsed.events, principal.customer)
    metrics.count(outcome)
    return json_answer(outcome, _batch_status(outcome))


async def _publish(
    front: StreamFront,
    ledger: Ledger,
    metrics: Metrics,
    request: Request,
    body: bytes,
    only_customer: str | None,
) -> Response:
    """Stream mode's ingest: validate, publish, answer once JetStream stored the batch."""
    content_type = request.headers.get("content-type")
    try:
        prepared = await front.prepare(ledger, content_type, request.headers, body, only_customer)
        outcome = await front.ingest(ledger, prepared)
    except IngestLagging as error:
        response = error_response(
            429,
            "ingest_lagging",
            str(error),
            partition=error.partition,
            lag_ms=round(error.lag_ms, 1),
            bound_ms=error.bound_ms,
            retry_after_ms=error.retry_after_ms,
        )
        response.headers["Retry-After"] = retry_after_header(error.retry_after_ms)
        return response
    except StreamUnavailable as error:
        response = error_response(503, "stream_unavailable", f"events not accepted: {error}")
        response.headers["Retry-After"] = "1"
        return response
    metrics.count(outcome)
    return json_answer(outcome, 202 if outcome.accepted else _batch_status(outcome))


def add_ingest_route(app: FastAPI, limits: IngestLimits, stream: bool) -> None:
    """``POST /v1/events`` on ``app``, its OpenAPI stating ``limits`` (and stream mode's
    answers when ``stream``)."""
    app.add_api_route(
        "/v1/events",
        ingest,
        methods=["POST"],
        tags=["events"],
        summary="Ingest usage events (native or CloudEvents 1.0)",
        openapi_extra=ingest_body(limits, ACCEPTED_TYPES),
        responses=_ingest_responses(stream),
    )


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics (aggregates only)",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format"}},
)
async def prometheus_metrics(services: ServicesDependency, metrics: MetricsDependency) -> Response:
    ledger, front = services.ledger, services.stream
    head, _ = await to_thread.run_sync(ledger.head)
    firings = await to_thread.run_sync(_firing_counts, services.billing)
    metrics.set_shared(head, firings)
    if front is not None:
        metrics.set_ingest_lag(front.lag_status())
        try:
            metrics.set_stream(await front.status(ledger.clock()))
        except Exception as error:  # the API's own figures still answer
            _log.warning("stream status unavailable for /metrics", extra={"error": repr(error)})
    return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)


@router.get(
    "/v1/events",
    tags=["events"],
    summary="Read events, paged by ledger sequence",
    responses={
        200: {"description": "A page of events", **json_content(EVENT_PAGE_SCHEMA)},
        400: {"description": "A parameter is invalid (`field` names it)"},
        403: {"description": "The key lacks the read scope, or is bound to another customer"},
    },
)
async def list_events(
    request: Request,
    ledger: LedgerDependency,
    customer: str | None = None,
    type: str | None = None,
    start: Annotated[str | None, _moment("inclusive")] = None,
    end: Annotated[str | None, _moment("exclusive")] = None,
    after: Annotated[int, Query(ge=0, le=SEQUENCE_MAX, description="ledger sequence cursor")] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_EVENTS_MAX)] = 100,
) -> Response:
    principal = await principal_of(request)
    principal.require("read", "GET /v1/events")
    if principal.customer is not None:
        if customer not in (None, principal.customer):
            return error_response(
                403, "forbidden", f"this key may only read {principal.customer!r}"
            )
        customer = principal.customer
    start_us, end_us = instant(start, "start"), instant(end, "end")
    try:
        query = EventQuery(
            customer=customer,
            type=type,
            start_us=start_us,
            end_us=end_us,
            after_sequence=after,
            limit=limit,
        )
    except ValueError as error:
        return error_response(400, "invalid_parameter", str(error))
    page = await to_thread.run_sync(ledger.query, query)
    return json_answer(
        {"events": [_render_event(event) for event in page.events], "next_after": page.next_after}
    )
