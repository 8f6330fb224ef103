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

A refusal is answered as the OTLP/HTTP specification asks: its HTTP status, and a
``google.rpc.Status`` body in the request's encoding (``api.otlp_decoding.encode_status``);
the retryable ones (429, 503) carry ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from meterline.api.dependencies import ServicesDependency, principal_of
from meterline.api.failures import ANSWERED, error_details, retry_after
from meterline.api.otlp_decoding import (
    JSON,
    PROTOBUF,
    decode_request,
    encode_response,
    encode_status,
    inflate,
    spans_of,
)
from meterline.api.reading import media_type, read_body
from meterline.api.services import Services
from meterline.core.events import prepare_event
from meterline.core.otel_spans import DEFAULT_MAPPING, MappedSpans, OtelMapping, map_spans, summary
from meterline.core.outcomes import BatchOutcome
from meterline.errors import MeterlineError
from meterline.stream.errors import IngestLagging, StreamUnavailable

_log = logging.getLogger(__name__)

router = APIRouter()

STATUS_SCHEMA: dict[str, Any] = {
    "title": "Status",
    "type": "object",
    "description": "google.rpc.Status in the protobuf JSON mapping",
    "properties": {
        "code": {"type": "integer", "description": "the gRPC code matching the HTTP status"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "description": "one google.rpc.ErrorInfo: reason (meterline's error code),"
            " domain meterline, metadata",
            "items": {"type": "object"},
        },
    },
}


def _refused(description: str) -> dict[str, Any]:
    """A refusal's documented answer: a ``google.rpc.Status`` in the request's encoding."""
    return {
        "description": description + " (a google.rpc.Status in the request's encoding)",
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": STATUS_SCHEMA},
        },
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An ExportTraceServiceResponse in the request's encoding;"
        " partial_success counts and names the spans not metered",
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": {"type": "object"}},
        },
    },
    400: _refused("The body is not an OTLP trace export"),
    401: _refused("No valid key"),
    403: _refused("The key lacks the ingest scope"),
    413: _refused("The body, or its inflated form, exceeds the batch limits"),
    415: _refused("Another content type or content encoding"),
    429: _refused("Stream mode: a partition lags past the ingest lag bound (retry)"),
    503: _refused("Stream mode: JetStream cannot take the spans now (retry)"),
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


def _refusal(kind: str, error: MeterlineError) -> Response:
    """``error`` as OTLP/HTTP answers a failure: its status, a ``google.rpc.Status`` body
    in the request's encoding, ``Retry-After`` when it is worth retrying."""
    status, code, message, extra = error_details(error)
    headers = {}
    wait = retry_after(error)
    if wait is not None:
        headers["Retry-After"] = wait
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = encode_status(kind, status, code, message, extra)
    return Response(body, status, headers, media_type=PROTOBUF if kind == PROTOBUF else JSON)


_REFUSED: tuple[type[MeterlineError], ...] = (*ANSWERED, IngestLagging, StreamUnavailable)
"""The errors answered as a ``Status`` (anything else is unexpected: a logged 500)."""


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
    kind = media_type(request)
    try:
        return await _export(request, services, kind)
    except _REFUSED as error:
        return _refusal(kind, error)


async def _export(request: Request, services: Services, kind: str) -> Response:
    principal = await principal_of(request)
    principal.require("ingest", "POST /v1/traces")
    limit = services.ledger.limits.batch_bytes_max
    body = await read_body(request, limit)
    body = inflate(body, request.headers.get("content-encoding"), limit)
    spans = spans_of(await to_thread.run_sync(decode_request, kind, body))
    mapped = map_spans(spans, await to_thread.run_sync(_mapping, services))
    refused: list[tuple[int, str]] = []
    if mapped.events:
        outcome = await _store(services, mapped.events, principal.customer)
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
    media = PROTOBUF if kind == PROTOBUF else JSON
    return Response(encode_response(kind, rejected, message), 200, media_type=media)
