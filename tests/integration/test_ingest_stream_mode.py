"""OTLP traces and OpenMeter-compatible ingest in stream mode: the API over a real NATS
JetStream at 127.0.0.1:4222 publishes the mapped events for the workers (and answers
as in embedded mode), like ``POST /v1/events``."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from meterline.api import create_app
from meterline.api.stream_front import GC_YOUNG_OBJECTS_MAX
from meterline.keys import create_key
from meterline.ledger import open_ledger
from meterline.stream.settings import StreamSettings
from tests.integration.test_otlp_ingest import genai_spans, status_of
from tests.integration.test_stream import (
    delete_stream_and_bucket,
    own_stream,
    stream_messages,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openmeter_requests.json"


@pytest.fixture
def settings() -> Iterator[StreamSettings]:
    """A stream, subjects and bucket of this test's own on the shared server."""
    with own_stream() as made:
        yield made


def test_spans_and_openmeter_events_are_published_in_stream_mode(
    settings: StreamSettings, tmp_path: Path
) -> None:
    """Two usage spans of one customer and an OpenMeter batch of two events of another:
    one message each reaches JetStream; the answers are OTLP's (nothing rejected) and
    OpenMeter's 204."""
    ledger = open_ledger(tmp_path / "replica.db")
    key = create_key(ledger.store, "ingest", ledger.clock())[1]
    calls = [("gpt-4o", 10, 2), ("gpt-4o-mini", 5, 1)]
    spans = genai_spans("acme", calls, "meterline.customer")  # no pricing: the defaults
    batch = next(r for r in json.loads(FIXTURES.read_text()) if r["name"] == "node-sdk-batch")
    try:
        with TestClient(create_app(ledger, stream=settings)) as client:
            headers = {"Authorization": f"Bearer {key}"}
            traces = client.post(
                "/v1/traces",
                content=encode_spans(spans).SerializeToString(),
                headers={**headers, "Content-Type": "application/x-protobuf"},
            )
            assert traces.status_code == 200, traces.text
            answer = ExportTraceServiceResponse()
            answer.ParseFromString(traces.content)
            assert answer.partial_success.rejected_spans == 0
            openmeter = client.post(
                "/api/v1/events",
                content=batch["body"].encode(),
                headers={**headers, "Content-Type": batch["content_type"]},
            )
            assert openmeter.status_code == 204, openmeter.text
    finally:
        ledger.close()
    assert asyncio.run(stream_messages(settings)) == 2


def test_a_serving_replica_collects_young_objects_less_often_then_restores_the_collector(
    settings: StreamSettings, tmp_path: Path
) -> None:
    ledger = open_ledger(tmp_path / "replica.db")
    before = gc.get_threshold()
    try:
        with TestClient(create_app(ledger, stream=settings)) as client:
            assert client.get("/v1/health").status_code == 200
            assert gc.get_threshold() == (GC_YOUNG_OBJECTS_MAX, *before[1:])
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
        ledger.close()


def test_when_jetstream_cannot_take_them_both_answer_503_with_retry_after(
    settings: StreamSettings, tmp_path: Path
) -> None:
    """The stream is gone (deleted under a running API): the OTLP export is refused with
    503, ``Retry-After`` and a protobuf ``google.rpc.Status`` (UNAVAILABLE, meterline's
    ``stream_unavailable``), and the OpenMeter batch with 503, ``Retry-After`` and a
    problem; nothing is acknowledged, so the clients retry."""
    ledger = open_ledger(tmp_path / "replica.db")
    key = create_key(ledger.store, "ingest", ledger.clock())[1]
    spans = genai_spans("acme", [("gpt-4o", 10, 2)], "meterline.customer")
    batch = next(r for r in json.loads(FIXTURES.read_text()) if r["name"] == "node-sdk-batch")
    try:
        with TestClient(create_app(ledger, stream=settings)) as client:
            asyncio.run(delete_stream_and_bucket(settings))
            headers = {"Authorization": f"Bearer {key}"}
            traces = client.post(
                "/v1/traces",
                content=encode_spans(spans).SerializeToString(),
                headers={**headers, "Content-Type": "application/x-protobuf"},
            )
            assert traces.status_code == 503 and traces.headers["retry-after"] == "1"
            status, info = status_of(traces)
            assert (status.code, info.reason) == (14, "stream_unavailable")  # UNAVAILABLE
            openmeter = client.post(
                "/api/v1/events",
                content=batch["body"].encode(),
                headers={**headers, "Content-Type": batch["content_type"]},
            )
            assert openmeter.status_code == 503 and openmeter.headers["retry-after"] == "1"
            assert openmeter.headers["content-type"] == "application/problem+json"
            assert openmeter.json()["code"] == "stream_unavailable"
    finally:
        ledger.close()


def test_retry_after_is_known_for_the_retryable_refusals_only() -> None:
    """A lagging partition's own wait (rounded up to whole seconds), a second when
    JetStream or the live worker is unavailable, nothing for a refusal not worth retrying."""
    from meterline.api.failures import retry_after
    from meterline.errors import BatchTooLarge
    from meterline.stream.errors import IngestLagging, StreamUnavailable

    assert retry_after(IngestLagging("lagging", 0, 1500.0, 1000, 2100)) == "3"
    assert retry_after(StreamUnavailable("down")) == "1"
    assert retry_after(BatchTooLarge("too large")) is None
