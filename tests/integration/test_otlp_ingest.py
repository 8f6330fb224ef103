"""OTLP/HTTP traces into the real API on a loopback port, on each store: the
OpenTelemetry SDK's own exporter (protobuf, gzip) and the OTLP/JSON encoding of the same
spans; a re-export is a duplicate; refused spans are counted in ``partial_success``; the
event type read from ``gen_ai.operation.name`` prices chat and embeddings spans by two
meters.

One server per store serves the module (uvicorn in a thread, ``tests.support.threaded_api``;
a pricing file with an ``otel:`` block applied before it starts), so the module is fast.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meterline.billing.service import open_billing
from tests.conftest import Databases, make_keys
from tests.support.threaded_api import ThreadedApi

PRICING = """\
meters:
  - {key: input_tokens, event_type: llm.completion, aggregation: sum, property: input_tokens}
  - {key: embedding_tokens, event_type: llm.embedding, aggregation: sum, property: input_tokens}
plans:
  - key: ai
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: input_tokens, model: per_unit, unit_amount: "0.01"}
          - {meter: embedding_tokens, model: per_unit, unit_amount: "0.001"}
contracts:
  - {customer: hooli, plan: ai, start: 2026-10-01}
otel:
  event_type: llm.completion
  event_type_attribute: gen_ai.operation.name
  event_types:
    chat: llm.completion
    embeddings: llm.embedding
  customer: [tenant.id, meterline.customer]
  properties:
    model: [gen_ai.response.model, gen_ai.request.model]
    input_tokens: gen_ai.usage.input_tokens
    output_tokens: gen_ai.usage.output_tokens
    provider: [gen_ai.provider.name, gen_ai.system]
    operation: gen_ai.operation.name
    feature: app.feature
"""


@pytest.fixture(scope="module")
def server(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedApi]:
    """A server whose pricing declares an ``otel:`` block (customer from ``tenant.id``)."""
    db = databases.new(Path(tmp_path_factory.mktemp("otlp")), "otlp")
    with open_billing(db) as billing:
        billing.apply(PRICING)
    running = ThreadedApi(db, make_keys(db)).start()
    try:
        yield running
    finally:
        running.stop()


OCTOBER_31_NS = 1_793_437_200_000_000_000
"""2026-10-31T09:00:00Z: when the priced spans end (a fixed past instant: holds on any date)."""


def genai_spans(
    customer: str,
    calls: list[tuple[str, int, int]],
    attribute: str = "tenant.id",
    operation: str = "chat",
    ended_ns: int | None = None,
) -> list[ReadableSpan]:
    """Finished spans of a GenAI-instrumented app: one ``operation`` span per call, inside
    an HTTP request span that carries no usage; the customer is the span's ``attribute``.
    Each span ends at ``ended_ns`` when given (else on the SDK's clock)."""
    recorder = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    tracer = provider.get_tracer("test.genai")
    started = None if ended_ns is None else ended_ns - 1_000_000_000
    timing: dict[str, Any] = {"start_time": started, "end_on_exit": ended_ns is None}
    with tracer.start_as_current_span(
        "POST /ask", attributes={attribute: customer}, **timing
    ) as request:
        for model, input_tokens, output_tokens in calls:
            with tracer.start_as_current_span(f"{operation} {model}", **timing) as span:
                span.set_attributes(
                    {
                        attribute: customer,
                        "gen_ai.operation.name": operation,
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": model,
                        "gen_ai.usage.input_tokens": input_tokens,
                        "gen_ai.usage.output_tokens": output_tokens,
                        "app.feature": "answers",
                    }
                )
                if ended_ns is not None:
                    span.end(end_time=ended_ns)
        if ended_ns is not None:
            request.end(end_time=ended_ns)
    provider.shutdown()
    return list(recorder.get_finished_spans())


def exporter(server: ThreadedApi, scope: str = "ingest") -> OTLPSpanExporter:
    """The SDK's OTLP/HTTP exporter, configured as a user would: endpoint, key, gzip."""
    return OTLPSpanExporter(
        endpoint=f"{server.url}/v1/traces",
        headers={"Authorization": f"Bearer {server.keys[scope]}"},
        compression=Compression.Gzip,
        timeout=10,
    )


def otlp_json(spans: list[ReadableSpan]) -> bytes:
    """The spans in OTLP/JSON: the protobuf JSON mapping with hex trace and span ids."""
    document = json_format.MessageToDict(encode_spans(spans))
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


def post(
    server: ThreadedApi, body: bytes, kind: str, scope: str = "ingest", **headers: str
) -> httpx.Response:
    with server.client(scope) as client:
        return client.post("/v1/traces", content=body, headers={"content-type": kind, **headers})


def answer(response: httpx.Response) -> ExportTraceServiceResponse:
    assert response.status_code == 200, response.text
    decoded = ExportTraceServiceResponse()
    if response.headers["content-type"].startswith("application/json"):
        json_format.Parse(response.text, decoded)
    else:
        decoded.ParseFromString(response.content)
    return decoded


def test_sdk_exported_genai_spans_become_events_once(server: ThreadedApi) -> None:
    """Each chat span is one event with the declared properties; a re-export adds none."""
    spans = genai_spans("acme", [("gpt-4o", 1200, 300), ("gpt-4o-mini", 800, 90)])
    sending = exporter(server)
    assert sending.export(spans) is SpanExportResult.SUCCESS
    events = server.events("acme")
    assert sorted((e["properties"]["model"], e["properties"]["input_tokens"]) for e in events) == [
        ("gpt-4o", 1200),
        ("gpt-4o-mini", 800),
    ]
    chat = next(s for s in spans if s.name == "chat gpt-4o")
    ids = {e["id"] for e in events}
    assert f"otel-{chat.context.trace_id:032x}-{chat.context.span_id:016x}" in ids
    assert events[0]["type"] == "llm.completion"
    assert events[0]["properties"]["feature"] == "answers"
    assert sending.export(spans) is SpanExportResult.SUCCESS
    assert len(server.events("acme")) == 2
    sending.shutdown()


def test_otlp_json_gives_the_same_events_and_a_protobuf_reexport_is_a_duplicate(
    server: ThreadedApi,
) -> None:
    """OTLP/JSON (gzip) meters what protobuf would; the same spans in protobuf add nothing."""
    spans = genai_spans("globex", [("claude-sonnet-4", 2000, 500)])
    body = gzip.compress(otlp_json(spans))
    decoded = answer(post(server, body, "application/json", **{"content-encoding": "gzip"}))
    assert decoded.partial_success.rejected_spans == 0
    assert "1 span(s) carried none of the usage attributes" in decoded.partial_success.error_message
    (event,) = server.events("globex")
    assert event["properties"]["input_tokens"] == 2000
    assert event["properties"]["output_tokens"] == 500
    assert exporter(server).export(spans) is SpanExportResult.SUCCESS
    assert len(server.events("globex")) == 1


def test_usage_spans_without_a_customer_are_counted_and_named(server: ThreadedApi) -> None:
    """A usage span with no customer attribute is rejected in partial_success, by name."""
    spans = genai_spans("initech", [("gpt-4o", 10, 1)])
    body = encode_spans(spans)
    for resource_spans in body.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                kept = [a for a in span.attributes if a.key != "tenant.id"]
                del span.attributes[:]
                span.attributes.extend(kept)
    decoded = answer(post(server, body.SerializeToString(), "application/x-protobuf"))
    assert decoded.partial_success.rejected_spans == 1
    assert "no customer: none of tenant.id, meterline.customer" in (
        decoded.partial_success.error_message
    )
    assert server.events("initech") == []


def test_a_customer_bound_key_meters_only_its_customer(server: ThreadedApi) -> None:
    """Spans for another customer than the key's are rejected, the key's own are metered."""
    mixed = genai_spans("acme-other", [("gpt-4o", 1, 1)]) + genai_spans("acme", [("o3", 7, 7)])
    decoded = answer(
        post(
            server, encode_spans(mixed).SerializeToString(), "application/x-protobuf", "ingest-acme"
        )
    )
    assert decoded.partial_success.rejected_spans == 1
    assert "may only send events for 'acme'" in decoded.partial_success.error_message
    assert [
        e["properties"]["model"] for e in server.events("acme") if e["properties"]["model"] == "o3"
    ]
    assert server.events("acme-other") == []


def status_of(answer: httpx.Response) -> tuple[Status, ErrorInfo]:
    """A refusal's ``google.rpc.Status`` (protobuf or JSON, by its content type) and its
    ``ErrorInfo`` detail, as an OTLP client would read them."""
    status = Status()
    if answer.headers["content-type"] == "application/x-protobuf":
        status.ParseFromString(answer.content)
    else:
        assert answer.headers["content-type"].startswith("application/json")
        json_format.Parse(answer.text, status)
    (detail,) = status.details
    info = ErrorInfo()
    assert detail.Unpack(info) and info.domain == "meterline"
    return status, info


def test_refusals_name_the_problem(server: ThreadedApi) -> None:
    """No key 401, a read key 403, another type 415, a broken body 400, a bomb 413: each
    a ``google.rpc.Status`` in the request's encoding (the OTLP/HTTP specification),
    naming the problem, meterline's code in its ``ErrorInfo``."""
    body = encode_spans(genai_spans("acme", [("gpt-4o", 1, 1)])).SerializeToString()
    protobuf = "application/x-protobuf"
    unauthenticated = post(server, body, protobuf, scope=None)  # type: ignore[arg-type]
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    assert status_of(unauthenticated)[0].code == 16  # UNAUTHENTICATED
    forbidden = post(server, body, protobuf, scope="read")
    assert forbidden.status_code == 403 and "ingest" in status_of(forbidden)[0].message
    other = post(server, body, "text/plain")
    assert other.status_code == 415
    assert status_of(other)[1].reason == "unsupported_content_type"
    broken = post(server, b"\xff\xff\xff", protobuf)
    status, info = status_of(broken)
    assert broken.status_code == 400 and "protobuf" in status.message
    assert (status.code, info.reason) == (3, "malformed_otlp")  # INVALID_ARGUMENT
    bad_id = post(
        server,
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
        "application/json",
    )
    status, info = status_of(bad_id)
    assert bad_id.status_code == 400 and "traceId" in status.message
    assert info.metadata["field"] == "traceId"
    assert json.loads(bad_id.text)["message"] == status.message  # the JSON form of Status
    bomb = gzip.compress(b"\x00" * (17 * 1024 * 1024))
    too_large = post(server, bomb, protobuf, **{"content-encoding": "gzip"})
    assert too_large.status_code == 413 and "limit" in status_of(too_large)[0].message


def test_an_otlp_json_body_that_is_not_an_export_request_is_400(server: ThreadedApi) -> None:
    """A JSON array, number or null is refused whole, naming the problem (not a 500)."""
    for body in (b"[]", b"5", b"null"):
        refused = post(server, body, "application/json")
        assert refused.status_code == 400, body
        assert status_of(refused)[1].reason == "malformed_otlp"


def test_spans_are_counted_in_metrics(server: ThreadedApi) -> None:
    """/metrics counts spans metered, rejected and unmatched."""
    before = _span_counts(server)
    spans = genai_spans("umbrella", [("gpt-4o", 3, 3)])
    post(server, encode_spans(spans).SerializeToString(), "application/x-protobuf")
    after = _span_counts(server)
    assert after["metered"] - before["metered"] == 1
    assert after["unmatched"] - before["unmatched"] == 1


def _span_counts(server: ThreadedApi) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("meterline_otlp_spans_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


def test_the_operation_attribute_gives_each_span_its_type_and_meter(server: ThreadedApi) -> None:
    """``event_type_attribute: gen_ai.operation.name``: a chat span is ``llm.completion``,
    an embeddings span ``llm.embedding`` (the ``event_types`` map), an operation not in the
    map the fallback ``event_type``; the draft invoice prices each type by its meter."""
    spans = (
        genai_spans("hooli", [("gpt-4o", 1200, 300)], ended_ns=OCTOBER_31_NS)
        + genai_spans(
            "hooli",
            [("text-embedding-3-small", 5000, 0)],
            operation="embeddings",
            ended_ns=OCTOBER_31_NS,
        )
        + genai_spans(
            "hooli", [("gpt-4o", 300, 10)], operation="text_completion", ended_ns=OCTOBER_31_NS
        )
    )
    sending = exporter(server)
    assert sending.export(spans) is SpanExportResult.SUCCESS
    sending.shutdown()
    events = server.events("hooli")
    assert sorted((e["properties"]["operation"], e["type"]) for e in events) == [
        ("chat", "llm.completion"),
        ("embeddings", "llm.embedding"),
        ("text_completion", "llm.completion"),
    ]
    assert {e["timestamp"] for e in events} == {"2026-10-31T09:00:00Z"}
    with server.client("read") as reader:
        draft = reader.get(
            "/v1/customers/hooli/invoices/draft", params={"at": "2026-10-31T12:00:00Z"}
        )
    assert draft.status_code == 200, draft.text
    usage = {
        line["meter"]: (line["quantity"], line["amount"])
        for line in draft.json()["lines"]
        if line["kind"] == "usage"
    }
    assert usage == {"input_tokens": ("1500", "15.00"), "embedding_tokens": ("5000", "5.00")}
