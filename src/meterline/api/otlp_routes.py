"""``POST /v1/traces``: an OTLP/HTTP trace receiver that meters GenAI spans.

An OpenTelemetry SDK or Collector exporter pointed at meterline works unchanged: the
body is decoded with the official protobuf definitions (``api.otlp_decoding``), the spans
are mapped by the pricing file's ``otel:`` block (``core.otel_spans``; the GenAI semantic
conventions' defaults before any pricing is applied), and the events go through the same
ledger path as ``POST /v1/events`` (stream mode: published to JetStream). A re-exported
span is a duplicate (its id is derived from the trace and span ids). Usage spans refused
(no customer, invalid, conflicting) are counted in ``partial_success.rejected_spans``
and named in its ``error_message``; spans that are not usage are counted there as a
warning. Authentication is the ingest key as a bearer token
(``OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<key>``).
"""

from __future__ import annotations

import logging
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from meterline.api.dependencies import ServicesDependency, principal_of
from meterline.api.failures import error_response
from meterline.api.otlp_decoding import (
    PROTOBUF,
    decode_request,
    encode_response,
    inflate,
    spans_of,
)
from meterline.api.reading import media_type, read_body
from meterline.api.services import Services
from meterline.core.admission import retry_after_header
from meterline.core.events import prepare_event
from meterline.core.otel_spans import DEFAULT_MAPPING, MappedSpans, OtelMapping, map_spans, summary
from meterline.core.outcomes import BatchOutcome
from meterline.stream.errors import IngestLagging, StreamUnavailable

_log = logging.getLogger(__name__)

router = APIRouter()

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An ExportTraceServiceResponse in the request's encoding;"
        " partial_success counts and names the spans not metered",
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    },
    400: {"description": "The body is not an OTLP trace export (the error shape)"},
    401: {"description": "No valid key"},
    403: {"description": "The key lacks the ingest scope"},
    413: {"description": "The body, or its inflated form, exceeds the batch limits"},
    415: {"description": "Another content type or content encoding"},
    429: {"description": "Stream mode: a partition lags past the ingest lag bound (retry)"},
    503: {"description": "Stream mode: JetStream cannot take the spans now (retry)"},
}


def _mapping(services: Services) -> OtelMapping:
    """The ``otel:`` block of the pricing in force (the defaults before any is applied)."""
    billing = services.billing
    with billing.lock.reading():
        loaded = billing.load()
    return DEFAULT_MAPPING if loaded is None else loaded.configuration.otel


def _refusals(mapped: MappedSpans, outcome: BatchOutcome) -> list[tuple[int, str]]:
    """The ledger's refusals as (span index, reason)."""
    refused = []
    for result in outcome.results:
        span = mapped.positions[result.index]
        if result.status == "rejected":
            reasons = "; ".join(f"{e.field}: {e.reason}" for e in result.errors or [])
            refused.append((span, f"event rejected: {reasons}"))
        elif result.status == "conflict":
            refused.append((span, f"a different event is stored under id {result.id}"))
    return refused


async def _store(
    services: Services, events: list[dict[str, Any]], customer: str | None
) -> BatchOutcome:
    ledger = services.ledger
    if services.stream is None:
        outcome: BatchOutcome = await to_thread.run_sync(ledger.ingest, events, customer)
        return outcome
    prepared = await to_thread.run_sync(
        ledger.prepare_batch, events, prepare_event, customer, "customer"
    )
    return await services.stream.ingest(ledger, prepared)


def _retry_later(error: IngestLagging | StreamUnavailable) -> Response:
    """Stream mode's 429 or 503 with ``Retry-After``: OTLP exporters retry on both."""
    wait_ms = error.retry_after_ms if isinstance(error, IngestLagging) else 1000
    headers = {"Retry-After": retry_after_header(wait_ms)}
    return error_response(error.http_status, error.code, str(error), headers)


@router.post(
    "/v1/traces",
    tags=["events"],
    summary="OTLP/HTTP traces: GenAI spans as usage events",
    responses=_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "An OTLP ExportTraceServiceRequest (gzip or deflate allowed)",
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "OTLP/JSON: the protobuf JSON mapping (null is a"
                        " field's default), hex trace and span ids",
                    }
                },
            },
        }
    },
)
async def export_traces(request: Request, services: ServicesDependency) -> Response:
    principal = await principal_of(request)
    principal.require("ingest", "POST /v1/traces")
    limit = services.ledger.limits.batch_bytes_max
    kind = media_type(request)
    body = await read_body(request, limit)
    body = inflate(body, request.headers.get("content-encoding"), limit)
    spans = spans_of(await to_thread.run_sync(decode_request, kind, body))
    mapped = map_spans(spans, await to_thread.run_sync(_mapping, services))
    refused: list[tuple[int, str]] = []
    if mapped.events:
        try:
            outcome = await _store(services, mapped.events, principal.customer)
        except (IngestLagging, StreamUnavailable) as error:
            return _retry_later(error)
        request.app.state.metrics.count(outcome)
        refused = _refusals(mapped, outcome)
    rejected = len(mapped.unattributed) + len(refused)
    message = summary(mapped, refused, spans)
    request.app.state.metrics.count_spans(
        metered=len(mapped.events) - len(refused),
        rejected=rejected,
        unmatched=len(mapped.unmatched),
    )
    if message:
        _log.info("otlp export not fully metered", extra={"detail": message})
    media = PROTOBUF if kind == PROTOBUF else "application/json"
    return Response(encode_response(kind, rejected, message), 200, media_type=media)
