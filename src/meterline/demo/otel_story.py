"""The demo's OpenTelemetry chapter: the same usage through two doors, the same figures.

One customer's LLM calls arrive as OpenTelemetry spans following the GenAI semantic
conventions, exported over OTLP/HTTP (protobuf, the official ``opentelemetry-proto``
messages) to ``POST /v1/traces``; its twin's identical calls arrive as the SDK's events
(``meterline.Client``) on ``POST /v1/events``. Both go to the real API served on a
loopback port, and the figures are read back from the ledger. The spans' ids and times
are fixed by the story's month (the first minutes of the month after it, outside the
month the story tells), so a rerun
exports the same spans again: duplicates, nothing appended.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from rich.console import Console
from rich.table import Table

from meterline.api.app import create_app
from meterline.api.server import free_port
from meterline.clock import Clock
from meterline.core.events import event_document
from meterline.demo.calendar import add_months
from meterline.keys import create_key
from meterline.ledger.event_ledger import Ledger, open_ledger
from meterline.ledger.store import EventQuery
from meterline.sdk.client import Client

OTEL_CUSTOMER = "twin-otel"
SDK_CUSTOMER = "twin-sdk"
CALLS = (
    ("openai", "gpt-4o", 1840, 412),
    ("openai", "gpt-4o-mini", 920, 150),
    ("anthropic", "claude-sonnet-4", 3105, 780),
    ("openai", "gpt-4o", 2210, 505),
    ("anthropic", "claude-haiku-4", 640, 96),
    ("openai", "gpt-4o-mini", 1333, 201),
)
"""The twins' calls: provider, model, input tokens, output tokens."""
SERVER_START_S = 20.0


@contextmanager
def _serving(ledger: Ledger) -> Iterator[str]:
    """The real API over ``ledger`` on a loopback port (embedded mode), in a thread."""
    port = free_port()
    config = uvicorn.Config(
        create_app(ledger, live=False), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _number(key: str, value: int) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(int_value=value))


def _spans(month: date, start: datetime) -> ExportTraceServiceRequest:
    """One trace of chat spans, as a GenAI-instrumented service exports them."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [_text("service.name", "support-bot"), _text("meterline.customer", OTEL_CUSTOMER)]
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "meterline.demo"
    trace_id = hashlib.sha256(f"meterline demo trace {month}".encode()).digest()[:16]
    for number, (provider, model, input_tokens, output_tokens) in enumerate(CALLS):
        ended = start + timedelta(minutes=number)
        span = scope_spans.spans.add()
        span.trace_id = trace_id
        span.span_id = hashlib.sha256(trace_id + bytes([number])).digest()[:8]
        span.name = f"chat {model}"
        span.kind = span.SPAN_KIND_CLIENT
        span.start_time_unix_nano = int((ended - timedelta(seconds=2)).timestamp()) * 10**9
        span.end_time_unix_nano = int(ended.timestamp()) * 10**9
        span.attributes.extend(
            [
                _text("gen_ai.operation.name", "chat"),
                _text("gen_ai.provider.name", provider),
                _text("gen_ai.request.model", model),
                _number("gen_ai.usage.input_tokens", input_tokens),
                _number("gen_ai.usage.output_tokens", output_tokens),
            ]
        )
    return request


def _export(url: str, key: str, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
    response = httpx.post(
        f"{url}/v1/traces",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"},
        timeout=30,
    )
    response.raise_for_status()
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    return answer


def _track(url: str, key: str, start: datetime) -> None:
    """The twin's same calls through the SDK, at the same instants."""
    with Client(url, key, flush_interval_s=0.05) as client:
        for number, (provider, model, input_tokens, output_tokens) in enumerate(CALLS):
            client.track(
                SDK_CUSTOMER,
                "llm.completion",
                {
                    "model": model,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "provider": provider,
                    "operation": "chat",
                },
                id=f"demo-twin-{start:%Y%m}-{number}",
                timestamp=start + timedelta(minutes=number),
            )


def _figures(ledger: Ledger, customer: str) -> tuple[int, int, int, str]:
    """Events, input and output tokens, and the models, read back from the ledger."""
    page = ledger.query(EventQuery(customer=customer, type="llm.completion", limit=1000))
    events = [event_document(stored.record.body) for stored in page.events]
    models = sorted({event["properties"].get("model", "?") for event in events})
    return (
        len(events),
        sum(event["properties"].get("input_tokens", 0) for event in events),
        sum(event["properties"].get("output_tokens", 0) for event in events),
        ", ".join(models),
    )


def tell_otel(db: str | Path, console: Console, month: date, clock: Clock) -> None:
    """The chapter: spans for one twin, SDK events for the other, the same figures."""
    console.rule("Usage where it already flows: OpenTelemetry GenAI spans")
    first_day = add_months(month, 1)
    start = datetime(first_day.year, first_day.month, 1, tzinfo=UTC)
    with open_ledger(db, clock=clock) as ledger:
        key = create_key(ledger.store, "ingest", clock(), name="demo otel exporter")[1]
        request = _spans(month, start)
        with _serving(ledger) as url:
            first = _export(url, key, request)
            _track(url, key, start)
            before = ledger.head()[0]
            again = _export(url, key, request)
            added = ledger.head()[0] - before
        console.print(
            f"{len(CALLS)} chat spans exported over OTLP/HTTP to POST /v1/traces (rejected:"
            f" {first.partial_success.rejected_spans}); exported again (rejected:"
            f" {again.partial_success.rejected_spans}), {added} events added: a span's event"
            " id is its trace and span ids, so a re-export is a duplicate."
        )
        table = Table(title="The same calls through two doors", title_justify="left")
        for column in ("customer", "arrived as", "events", "input tokens", "output tokens"):
            table.add_column(
                column, justify="left" if column in ("customer", "arrived as") else "right"
            )
        table.add_column("models")
        for customer, door in ((OTEL_CUSTOMER, "OTel spans"), (SDK_CUSTOMER, "SDK events")):
            events, input_tokens, output_tokens, models = _figures(ledger, customer)
            table.add_row(
                customer, door, str(events), f"{input_tokens:,}", f"{output_tokens:,}", models
            )
        console.print(table)
    console.print(
        "Point any OpenTelemetry exporter at it: OTEL_EXPORTER_OTLP_ENDPOINT=<meterline URL>,"
        " OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<ingest key>; the pricing file's"
        " otel: block says which attributes are the customer and the event type (docs/api.md)."
    )
