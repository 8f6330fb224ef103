"""The HTTP API end to end: a real ``meterline serve`` process over a fresh SQLite ledger."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from meterline.core.partitions import partition_of
from meterline.ledger.event_ledger import open_store
from tests.conftest import RunningServer, event

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
CE_STRUCTURED = {"content-type": "application/cloudevents+json"}
CE_BATCH = {"content-type": "application/cloudevents-batch+json"}
CE_TIME = datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
SEVENTY_THOUSAND = "x" * 70_000


# -- helpers ------------------------------------------------------------------------------


_EXACT = msgspec.json.Decoder(float_hook=Decimal)


def exact(response: httpx.Response) -> Any:
    """The response body decoded with every non-integer number as an exact Decimal."""
    return _EXACT.decode(response.content)


def post(client: httpx.Client, payload: object, headers: dict[str, str] = JSON) -> httpx.Response:
    """POST ``payload`` (raw bytes as given, anything else JSON-encoded) to /v1/events."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post("/v1/events", content=body, headers=headers)


def pages(server: RunningServer, limit: int = 1000, **params: Any) -> Iterator[dict[str, Any]]:
    """Every page of GET /v1/events for ``params``, following ``next_after`` with admin."""
    with server.client("admin") as admin:
        after = 0
        while True:
            response = admin.get("/v1/events", params={**params, "limit": limit, "after": after})
            assert response.status_code == 200, response.text
            page = exact(response)
            yield page
            if page["next_after"] is None:
                return
            after = page["next_after"]


def stored(server: RunningServer, **params: Any) -> list[dict[str, Any]]:
    """Every stored event matching ``params``, in ledger order."""
    return [stored_event for page in pages(server, **params) for stored_event in page["events"]]


def head_sequence(server: RunningServer) -> int:
    response = httpx.get(f"{server.url}/v1/health", timeout=30)
    assert response.status_code == 200
    return int(response.json()["sequence"])


def only_result(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert len(body["results"]) == 1
    return body["results"][0]


def error_fields(result: dict[str, Any]) -> dict[str, str]:
    """The errors of one rejected result as ``{field: reason}``."""
    return {error["field"]: error["reason"] for error in result["errors"]}


def cloudevent(number: int = 1, subject: str | None = "acme", **attributes: Any) -> CloudEvent:
    """A valid CloudEvent built with the cloudevents SDK."""
    base: dict[str, Any] = {
        "id": f"ce-{number}",
        "source": "/services/chat",
        "type": "llm.completion",
        "time": CE_TIME,
        "datacontenttype": "application/json",
    }
    if subject is not None:
        base["subject"] = subject
    base.update(attributes)
    return CloudEvent(base, {"model": "gpt-4o", "input_tokens": 1000 + number, "cost": 0.25})


def structured_dict(ce: CloudEvent) -> dict[str, Any]:
    """The structured-mode JSON object the SDK produces for ``ce``."""
    return json.loads(to_structured_event(ce).body)


# -- native JSON: shape, idempotency ------------------------------------------------------


def test_single_object_is_accepted_with_full_response_shape(server: RunningServer) -> None:
    """A single JSON object is one accepted event: counts, results, id and sequence 1."""
    with server.client("ingest") as client:
        response = post(client, event(1))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "accepted": 1,
        "duplicate": 0,
        "conflict": 0,
        "rejected": 0,
        "results": [{"index": 0, "status": "accepted", "id": "evt-1", "sequence": 1}],
    }
    [only] = stored(server)
    assert only["id"] == "evt-1"
    assert only["customer"] == "acme"
    assert only["type"] == "llm.completion"
    assert only["timestamp"] == "2026-11-01T10:00:00Z"
    assert only["properties"] == {"model": "gpt-4o", "input_tokens": 1201, "output_tokens": 300}
    assert only["sequence"] == 1
    assert re.fullmatch(r"[0-9a-f]{64}", only["hash"])
    assert only["ingested_at"].endswith("Z")


def test_array_batch_gets_dense_sequences_in_input_order(server: RunningServer) -> None:
    """An array of events is accepted in order with sequences 1..n, one result per index."""
    with server.client("ingest") as client:
        response = post(client, [event(n) for n in range(1, 6)])
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["conflict"], body["rejected"]) == (5, 0, 0, 0)
    assert body["results"] == [
        {"index": n - 1, "status": "accepted", "id": f"evt-{n}", "sequence": n} for n in range(1, 6)
    ]
    assert [e["id"] for e in stored(server)] == [f"evt-{n}" for n in range(1, 6)]
    assert head_sequence(server) == 5


def test_empty_array_is_ok_and_stores_nothing(server: RunningServer) -> None:
    """An empty array answers 200 with zero counts and stores nothing."""
    with server.client("ingest") as client:
        response = post(client, [])
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 0,
        "duplicate": 0,
        "conflict": 0,
        "rejected": 0,
        "results": [],
    }
    assert head_sequence(server) == 0


def test_charset_parameter_on_json_content_type_is_accepted(server: RunningServer) -> None:
    """application/json; charset=utf-8 is native JSON like plain application/json."""
    with server.client("ingest") as client:
        response = post(client, event(1), {"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200
    assert response.json()["accepted"] == 1


def test_replayed_batch_is_all_duplicates_with_original_sequences(server: RunningServer) -> None:
    """Replaying a batch answers duplicate for every event, with the first sequences."""
    batch = [event(n, customer=("acme" if n % 2 else "globex")) for n in range(1, 8)]
    with server.client("ingest") as client:
        first = post(client, batch).json()
        before = stored(server)
        replay = post(client, batch)
    assert replay.status_code == 200
    body = replay.json()
    assert (body["accepted"], body["duplicate"], body["conflict"], body["rejected"]) == (0, 7, 0, 0)
    assert [r["status"] for r in body["results"]] == ["duplicate"] * 7
    assert [r["sequence"] for r in body["results"]] == [r["sequence"] for r in first["results"]]
    assert [r["id"] for r in body["results"]] == [e["id"] for e in batch]
    assert stored(server) == before
    assert head_sequence(server) == 7


def test_duplicate_is_judged_on_canonical_content(server: RunningServer) -> None:
    """Same event with other key order and an equivalent zone offset is a duplicate."""
    original = event(1)
    reordered = {
        "properties": {"output_tokens": 300, "input_tokens": 1201, "model": "gpt-4o"},
        "timestamp": "2026-11-01T12:00:00+02:00",
        "type": "llm.completion",
        "customer": "acme",
        "id": "evt-1",
    }
    with server.client("ingest") as client:
        assert post(client, original).json()["accepted"] == 1
        response = post(client, reordered)
    assert response.status_code == 200
    assert only_result(response) == {
        "index": 0,
        "status": "duplicate",
        "id": "evt-1",
        "sequence": 1,
    }
    assert head_sequence(server) == 1


def test_same_id_different_payload_is_conflict_and_changes_nothing(server: RunningServer) -> None:
    """Same customer and id with different content is a 409 conflict; the original stays."""
    with server.client("ingest") as client:
        post(client, [event(1), event(2)])
        before = stored(server)
        changed = event(1, properties={"model": "gpt-4o", "input_tokens": 1, "output_tokens": 1})
        response = post(client, changed)
    assert response.status_code == 409
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["conflict"], body["rejected"]) == (0, 0, 1, 0)
    assert body["results"] == [{"index": 0, "status": "conflict", "id": "evt-1", "sequence": 1}]
    assert stored(server) == before
    assert head_sequence(server) == 2


def test_all_conflicts_batch_is_409(server: RunningServer) -> None:
    """A batch whose every event conflicts answers 409 with one conflict per event."""
    with server.client("ingest") as client:
        post(client, [event(1), event(2)])
        response = post(client, [event(1, type="other"), event(2, type="other")])
    assert response.status_code == 409
    assert [r["status"] for r in response.json()["results"]] == ["conflict", "conflict"]
    assert head_sequence(server) == 2


def test_conflict_beside_a_duplicate_is_200(server: RunningServer) -> None:
    """A batch with a duplicate and a conflict answers 200 (something already stored)."""
    with server.client("ingest") as client:
        post(client, [event(1), event(2)])
        response = post(client, [event(1), event(2, type="other")])
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["conflict"], body["rejected"]) == (0, 1, 1, 0)
    assert [r["status"] for r in body["results"]] == ["duplicate", "conflict"]


def test_same_id_for_another_customer_is_a_different_event(server: RunningServer) -> None:
    """Idempotency is per customer: the same id for another customer is accepted."""
    with server.client("ingest") as client:
        post(client, event(1, customer="acme"))
        response = post(client, event(1, customer="globex"))
    assert response.status_code == 200
    store = open_store(server.db)
    try:
        count = store.partitions
    finally:
        store.close()
    together = partition_of("acme", count) == partition_of("globex", count)
    expected = 2 if together else 1  # each partition numbers its own events
    assert only_result(response) == {
        "index": 0,
        "status": "accepted",
        "id": "evt-1",
        "sequence": expected,
    }
    assert sorted((e["customer"], e["id"]) for e in stored(server)) == [
        ("acme", "evt-1"),
        ("globex", "evt-1"),
    ]


def test_repeats_inside_one_batch_are_duplicate_or_conflict(server: RunningServer) -> None:
    """Within one batch a repeated id is duplicate (same bytes) or conflict (different)."""
    with server.client("ingest") as client:
        response = post(client, [event(1), event(1), event(1, type="other"), event(2)])
    assert response.status_code == 200
    assert response.json()["results"] == [
        {"index": 0, "status": "accepted", "id": "evt-1", "sequence": 1},
        {"index": 1, "status": "duplicate", "id": "evt-1", "sequence": 1},
        {"index": 2, "status": "conflict", "id": "evt-1", "sequence": 1},
        {"index": 3, "status": "accepted", "id": "evt-2", "sequence": 2},
    ]
    assert [e["id"] for e in stored(server)] == ["evt-1", "evt-2"]


# -- exact decimals -----------------------------------------------------------------------


def test_numbers_keep_every_decimal_digit(server: RunningServer) -> None:
    """0.1, "0.1" and the widest numbers accepted read back exactly as they were sent."""
    body = (
        b'{"id": "exact-1", "customer": "acme", "type": "llm.completion",'
        b' "timestamp": "2026-11-01T10:00:00Z", "properties": {"x": 0.1, "y": "0.1",'
        b' "z": 123456789012345678.0000000001,'
        b' "big": -999999999999999999, "tiny": 1E-10}}'
    )
    with server.client("ingest") as client:
        assert post(client, body).status_code == 200
    with server.client("read") as reader:
        response = reader.get("/v1/events")
    assert b"123456789012345678.0000000001" in response.content
    properties = exact(response)["events"][0]["properties"]
    assert type(properties["x"]) is Decimal
    assert properties["x"] == Decimal("0.1")
    assert str(properties["x"]) == "0.1"
    assert properties["y"] == "0.1"
    assert properties["z"] == Decimal("123456789012345678.0000000001")
    assert str(properties["z"]) == "123456789012345678.0000000001"
    assert properties["big"] == -999999999999999999
    assert properties["tiny"] == Decimal("1E-10")
    # The stdlib decoder with parse_float=Decimal agrees.
    via_json = json.loads(response.content, parse_float=Decimal)["events"][0]["properties"]
    assert via_json["x"] == Decimal("0.1")
    assert via_json["z"] == Decimal("123456789012345678.0000000001")


# -- per-event rejections -----------------------------------------------------------------


def _without(field: str) -> dict[str, object]:
    raw = event(1)
    del raw[field]
    return raw


def _in_future(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


REJECTIONS = [
    pytest.param(_without("customer"), "customer", "is required", id="missing-customer"),
    pytest.param(event(1, customer=""), "customer", "must not be empty", id="empty-customer"),
    pytest.param(event(1, customer="   "), "customer", "must not be empty", id="blank-customer"),
    pytest.param(event(1, customer=42), "customer", "must be a string, got int", id="int-customer"),
    pytest.param(event(1, customer="c" * 257), "customer", "the limit is 256", id="long-customer"),
    pytest.param(_without("id"), "id", "is required", id="missing-id"),
    pytest.param(event(1, id=""), "id", "must not be empty", id="empty-id"),
    pytest.param(_without("type"), "type", "is required", id="missing-type"),
    pytest.param(_without("timestamp"), "timestamp", "is required", id="missing-timestamp"),
    pytest.param(
        event(1, timestamp="yesterday at noon"),
        "timestamp",
        "is not an RFC 3339 timestamp",
        id="bad-timestamp-text",
    ),
    pytest.param(
        event(1, timestamp="2026-13-45T10:00:00Z"),
        "timestamp",
        "is not an RFC 3339 timestamp",
        id="impossible-date",
    ),
    pytest.param(
        event(1, timestamp="2026-11-01T10:00:00"),
        "timestamp",
        "must include a time zone offset",
        id="timestamp-without-zone",
    ),
    pytest.param(
        event(1, timestamp=1_795_435_200),
        "timestamp",
        "must be an RFC 3339 string, got int",
        id="numeric-timestamp",
    ),
    pytest.param(
        lambda: event(1, timestamp=_in_future(timedelta(minutes=10))),
        "timestamp",
        "in the future",
        id="timestamp-10-min-ahead",
    ),
    pytest.param(
        lambda: event(1, timestamp=_in_future(timedelta(days=400))),
        "timestamp",
        "in the future",
        id="timestamp-next-year",
    ),
    pytest.param(
        event(1, properties=[1, 2]),
        "properties",
        "must be an object, got list",
        id="properties-list",
    ),
    pytest.param(
        event(1, properties="tokens=3"),
        "properties",
        "must be an object, got str",
        id="properties-string",
    ),
    pytest.param(
        event(1, properties={"prompt": SEVENTY_THOUSAND}),
        "event",
        "the limit is 65536",
        id="oversize-event",
    ),
    pytest.param(
        event(1, properties=_nested(9)),
        "properties" + ".a" * 8,
        "nested deeper than 8 levels",
        id="too-deep",
    ),
    pytest.param(
        event(1, tenant="acme-eu"),
        "tenant",
        "is not a field of an event",
        id="unknown-field",
    ),
    pytest.param(
        # A typo of "properties" leaves five top-level fields, one of them unknown.
        {**_without("properties"), "props": {"input_tokens": 12}},
        "props",
        "is not a field of an event",
        id="unknown-field-in-place-of-properties",
    ),
    pytest.param(42, "event", "must be a JSON object, got int", id="not-an-object"),
]


@pytest.mark.parametrize(("raw", "field", "reason"), REJECTIONS)
def test_invalid_event_is_rejected_naming_its_field(
    server: RunningServer, raw: object, field: str, reason: str
) -> None:
    """An invalid event is refused with 400; the error names the field and the reason."""
    if callable(raw):  # built at run time: relative to the real clock
        raw = raw()
    with server.client("ingest") as client:
        response = post(client, [raw])
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["conflict"], body["rejected"]) == (0, 0, 0, 1)
    result = body["results"][0]
    assert result["index"] == 0
    assert result["status"] == "rejected"
    assert "sequence" not in result
    fields = error_fields(result)
    assert field in fields, fields
    assert reason in fields[field]
    assert head_sequence(server) == 0


def test_timestamp_within_clock_skew_is_accepted(server: RunningServer) -> None:
    """A timestamp two minutes ahead of now is inside the 5-minute skew and accepted."""
    with server.client("ingest") as client:
        response = post(client, event(1, timestamp=_in_future(timedelta(minutes=2))))
    assert response.status_code == 200
    assert response.json()["accepted"] == 1


def test_every_problem_of_an_event_is_reported(server: RunningServer) -> None:
    """One event with several bad fields gets one error per field."""
    raw = event(1, customer="", type=None, timestamp="soon")
    with server.client("ingest") as client:
        response = post(client, raw)
    assert response.status_code == 400
    result = only_result(response)
    assert result["id"] == "evt-1"
    assert set(error_fields(result)) == {"customer", "type", "timestamp"}


def test_mixed_batch_keeps_valid_events_and_leaves_no_trace_of_invalid(
    server: RunningServer,
) -> None:
    """Valid events of a mixed batch are stored densely; invalid ones leave no trace."""
    batch = [
        event(1),
        event(2, customer=""),
        event(3),
        event(4, timestamp="2026-11-01T10:00:00"),
        event(5, properties=["not", "an", "object"]),
        event(6),
    ]
    with server.client("ingest") as client:
        response = post(client, batch)
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["conflict"], body["rejected"]) == (3, 0, 0, 3)
    assert [(r["index"], r["status"], r["id"]) for r in body["results"]] == [
        (0, "accepted", "evt-1"),
        (1, "rejected", "evt-2"),
        (2, "accepted", "evt-3"),
        (3, "rejected", "evt-4"),
        (4, "rejected", "evt-5"),
        (5, "accepted", "evt-6"),
    ]
    assert [r.get("sequence") for r in body["results"]] == [1, None, 2, None, None, 3]
    assert [set(error_fields(r)) for r in body["results"] if r["status"] == "rejected"] == [
        {"customer"},
        {"timestamp"},
        {"properties"},
    ]
    events = stored(server)
    assert [(e["id"], e["sequence"]) for e in events] == [("evt-1", 1), ("evt-3", 2), ("evt-6", 3)]
    assert head_sequence(server) == 3
    # No trace: the corrected events are new, not duplicates or conflicts.
    with server.client("ingest") as client:
        fixed = post(client, [event(2), event(4), event(5)]).json()
    assert [(r["status"], r["sequence"]) for r in fixed["results"]] == [
        ("accepted", 4),
        ("accepted", 5),
        ("accepted", 6),
    ]


def test_unstorable_and_unratable_events_are_rejected_beside_valid_ones(
    server: RunningServer,
) -> None:
    """NUL or control characters in names, NUL in properties and numbers billing cannot
    carry are rejected per event naming the field (never a 500); the rest is stored."""
    valid = json.dumps(event(1)).encode()
    body = (
        b"["
        + b", ".join(
            [
                valid,
                json.dumps(event(2, id="evt\x00-2")).encode(),
                json.dumps(event(3, customer="acme\x00")).encode(),
                json.dumps(event(4, type="llm\ncompletion")).encode(),
                json.dumps(event(5, source="svc\x00")).encode(),
                json.dumps(event(6, properties={"model": "gpt\x00"})).encode(),
                valid.replace(b'"evt-1"', b'"evt-7"').replace(b"1201", b"1e400"),
                valid.replace(b'"evt-1"', b'"evt-8"').replace(b"1201", b"0.00000000001"),
                json.dumps(event(9)).encode(),
            ]
        )
        + b"]"
    )
    with server.client("ingest") as client:
        response = post(client, body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", *["rejected"] * 7, "accepted"]
    assert [list(error_fields(r)) for r in results[1:-1]] == [
        ["id"],
        ["customer"],
        ["type"],
        ["source"],
        ["properties.model"],
        ["properties.input_tokens"],
        ["properties.input_tokens"],
    ]
    assert results[1]["id"] == "evt\x00-2"
    assert "10**18" in error_fields(results[6])["properties.input_tokens"]
    assert [e["id"] for e in stored(server)] == ["evt-1", "evt-9"]


# -- whole-batch refusals -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"id" "evt-1"}', id="missing-colon"),
        pytest.param(b"[1, 2,, 3]", id="double-comma"),
        pytest.param(b'{"id": "evt-1"} trailing', id="trailing-characters"),
        pytest.param(b'[{"id": "evt-1", ', id="truncated"),
        pytest.param(b"", id="empty-body"),
        # Lone surrogates are not Unicode text: the batch is refused whole, on every store.
        pytest.param(b'[{"id": "evt-\\ud800", "customer": "acme"}]', id="lone-surrogate"),
        pytest.param(b'{"id": "a\\udc00b"}', id="lone-low-surrogate"),
        # NaN and Infinity are not JSON numbers: never accepted, on any store.
        pytest.param(b'{"id": "evt-1", "properties": {"n": NaN}}', id="nan-literal"),
        pytest.param(b'{"id": "evt-1", "properties": {"n": -Infinity}}', id="infinity-literal"),
    ],
)
def test_malformed_json_is_400_with_byte_position(server: RunningServer, body: bytes) -> None:
    """A body that is not JSON is 400 malformed_json with an integer byte position."""
    with server.client("ingest") as client:
        response = post(client, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_json"
    assert type(error["position"]) is int, error
    assert 0 <= error["position"] <= len(body)
    assert head_sequence(server) == 0


def test_malformed_json_position_points_at_the_bad_byte(server: RunningServer) -> None:
    """The reported position, line and column locate the offending character."""
    body = b'[\n  {"id": "evt-1",,}\n]'
    with server.client("ingest") as client:
        response = post(client, body)
    error = response.json()["error"]
    assert response.status_code == 400
    position = error["position"]
    assert position == body.index(b",,") + 1
    assert body[position : position + 1] == b","
    assert "line 2, column 18" in error["message"]


def test_batch_over_event_limit_is_413_and_stores_nothing(server: RunningServer) -> None:
    """10,001 events in one batch are refused whole with 413 batch_too_large."""
    with server.client("ingest") as client:
        response = post(client, [event(n) for n in range(10_001)])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"
    assert "10000" in response.json()["error"]["message"]
    assert head_sequence(server) == 0


def test_batch_at_event_limit_is_accepted(server: RunningServer) -> None:
    """Exactly 10,000 events in one batch are all accepted."""
    with server.client("ingest") as client:
        response = post(client, [event(n) for n in range(10_000)])
    assert response.status_code == 200
    assert response.json()["accepted"] == 10_000
    assert head_sequence(server) == 10_000


def test_body_over_16_mib_with_content_length_is_413(server: RunningServer) -> None:
    """A body declared (Content-Length) over 16 MiB is refused with 413 before parsing."""
    body = b"[" + b" " * (16 * 1024 * 1024) + b"]"
    with server.client("ingest") as client:
        response = client.post("/v1/events", content=body, headers=JSON)
    assert response.request.headers["content-length"] == str(len(body))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"
    assert head_sequence(server) == 0


def test_streamed_body_over_16_mib_is_413(server: RunningServer) -> None:
    """A chunked body without Content-Length is cut off with 413 once it passes 16 MiB."""

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(17):
            yield b" " * (1024 * 1024)
        yield b"]"

    with server.client("ingest") as client:
        response = client.post("/v1/events", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"
    assert head_sequence(server) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_unknown_content_type_is_415(server: RunningServer, content_type: str | None) -> None:
    """A body that is not JSON or CloudEvents JSON is 415 listing the accepted types."""
    headers = {"content-type": content_type} if content_type else {}
    with server.client("ingest") as client:
        response = client.post("/v1/events", content=json.dumps(event(1)), headers=headers)
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_content_type"
    assert error["accepted"] == [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    ]
    assert head_sequence(server) == 0


# -- CloudEvents ----------------------------------------------------------------------------


def _assert_mapped(stored_event: dict[str, Any], number: int, customer: str = "acme") -> None:
    assert stored_event["id"] == f"ce-{number}"
    assert stored_event["customer"] == customer
    assert stored_event["type"] == "llm.completion"
    assert stored_event["timestamp"] == "2026-11-01T10:00:00Z"
    assert stored_event["source"] == "/services/chat"
    assert stored_event["properties"] == {
        "model": "gpt-4o",
        "input_tokens": 1000 + number,
        "cost": Decimal("0.25"),
    }


def test_cloudevent_structured_mode_maps_to_native_event(server: RunningServer) -> None:
    """Structured mode: subject->customer, data->properties, time->timestamp, source kept."""
    message = to_structured_event(cloudevent(1))
    assert message.headers["content-type"] == "application/cloudevents+json"
    with server.client("ingest") as client:
        response = client.post("/v1/events", content=message.body, headers=message.headers)
    assert response.status_code == 200
    assert only_result(response) == {"index": 0, "status": "accepted", "id": "ce-1", "sequence": 1}
    [stored_event] = stored(server)
    _assert_mapped(stored_event, 1)


def test_cloudevent_binary_mode_maps_to_native_event(server: RunningServer) -> None:
    """Binary mode: ce-* headers and a JSON body become one native event."""
    message = to_binary_event(cloudevent(2))
    assert message.headers["ce-subject"] == "acme"
    with server.client("ingest") as client:
        response = client.post("/v1/events", content=message.body, headers=message.headers)
    assert response.status_code == 200
    assert only_result(response)["status"] == "accepted"
    [stored_event] = stored(server)
    _assert_mapped(stored_event, 2)


def test_cloudevent_binary_mode_percent_decodes_header_values(server: RunningServer) -> None:
    """Binary mode decodes percent-encoded ce-* values (HTTP binding 3.1.3.2), as the SDK sends."""
    ce = cloudevent(3, subject="acme corp", source="/services/chat v2")
    binary = to_binary_event(ce)
    assert binary.headers["ce-subject"] == "acme%20corp"
    structured = to_structured_event(ce)
    with server.client("ingest") as client:
        first = client.post("/v1/events", content=binary.body, headers=binary.headers)
        again = client.post("/v1/events", content=structured.body, headers=structured.headers)
    assert first.status_code == 200
    stored_event = stored(server)[0]
    assert stored_event["customer"] == "acme corp"
    assert stored_event["source"] == "/services/chat v2"
    # The same event in structured mode is the same event: a duplicate.
    assert only_result(again)["status"] == "duplicate"


def test_cloudevent_batch_mode_maps_every_event(server: RunningServer) -> None:
    """Batch mode: an array of structured CloudEvents is ingested in order."""
    envelopes = [structured_dict(cloudevent(n)) for n in range(1, 4)]
    with server.client("ingest") as client:
        response = post(client, envelopes, CE_BATCH)
    assert response.status_code == 200
    body = response.json()
    assert [(r["index"], r["status"], r["sequence"]) for r in body["results"]] == [
        (0, "accepted", 1),
        (1, "accepted", 2),
        (2, "accepted", 3),
    ]
    for number, stored_event in enumerate(stored(server), start=1):
        _assert_mapped(stored_event, number)


def test_cloudevent_replay_is_duplicate(server: RunningServer) -> None:
    """A CloudEvent sent twice (structured, then in a batch) is a duplicate the second time."""
    message = to_structured_event(cloudevent(1))
    with server.client("ingest") as client:
        client.post("/v1/events", content=message.body, headers=message.headers)
        response = post(client, [json.loads(message.body)], CE_BATCH)
    assert response.status_code == 200
    assert only_result(response) == {"index": 0, "status": "duplicate", "id": "ce-1", "sequence": 1}


def _envelope(**changes: Any) -> dict[str, Any]:
    envelope = structured_dict(cloudevent(1))
    for name, value in changes.items():
        if value is None:
            envelope.pop(name, None)
        else:
            envelope[name] = value
    return envelope


def _with_base64_data() -> dict[str, Any]:
    envelope = structured_dict(
        CloudEvent(
            {
                "id": "ce-b",
                "source": "/s",
                "type": "llm.completion",
                "subject": "acme",
                "time": CE_TIME,
            },
            b"\x00\x01binary",
        )
    )
    assert "data_base64" in envelope
    return envelope


CLOUDEVENT_REJECTIONS = [
    pytest.param(structured_dict(cloudevent(1, subject=None)), "subject", id="missing-subject"),
    pytest.param(_envelope(time="2026-11-01T10:00:00"), "time", id="time-without-zone"),
    pytest.param(_envelope(specversion="0.3"), "specversion", id="wrong-specversion"),
    pytest.param(_envelope(specversion=None), "specversion", id="missing-specversion"),
    pytest.param(_with_base64_data(), "data_base64", id="data-base64"),
    pytest.param(_envelope(source=None), "source", id="missing-source"),
    pytest.param(_envelope(data=[1, 2]), "data", id="data-not-object"),
    pytest.param(
        _envelope(datacontenttype="text/plain"),
        "datacontenttype",
        id="non-json-datacontenttype",
    ),
]


@pytest.mark.parametrize(("envelope", "field"), CLOUDEVENT_REJECTIONS)
def test_cloudevent_rejection_names_the_cloudevents_attribute(
    server: RunningServer, envelope: dict[str, Any], field: str
) -> None:
    """A bad CloudEvent is rejected with the error naming the CloudEvents attribute."""
    with server.client("ingest") as client:
        response = post(client, envelope, CE_STRUCTURED)
    assert response.status_code == 400, response.text
    result = only_result(response)
    assert result["status"] == "rejected"
    fields = error_fields(result)
    assert field in fields, fields
    assert not {"customer", "timestamp", "properties"} & set(fields)
    assert head_sequence(server) == 0


def test_cloudevent_without_time_is_stamped_with_its_receipt_time(server: RunningServer) -> None:
    """time is optional: the event takes the batch's receipt time, says so, and a re-send
    is a duplicate of the first receipt."""
    with server.client("ingest") as client:
        first = post(client, _envelope(time=None), CE_STRUCTURED)
        again = post(client, [_envelope(time=None)], CE_BATCH)
    assert first.status_code == 200, first.text
    assert only_result(first) == {"index": 0, "status": "accepted", "id": "ce-1", "sequence": 1}
    assert only_result(again) == {"index": 0, "status": "duplicate", "id": "ce-1", "sequence": 1}
    [stored_event] = stored(server)
    assert stored_event["timestamp"] == stored_event["ingested_at"]
    assert stored_event["timestamp_origin"] == "receipt"
    assert stored_event["source"] == "/services/chat"


def test_cloudevent_binary_mode_without_content_type_reads_json(server: RunningServer) -> None:
    """Binary mode with no Content-Type reads the body as JSON data; no body is no data."""
    message = to_binary_event(cloudevent(4))
    headers = {k: v for k, v in message.headers.items() if k.lower() != "content-type"}
    assert "content-type" not in {name.lower() for name in headers}
    empty = {**headers, "ce-id": "ce-5"}
    with server.client("ingest") as client:
        response = client.post("/v1/events", content=message.body, headers=headers)
        without_data = client.post("/v1/events", content=b"", headers=empty)
    assert response.status_code == 200, response.text
    assert without_data.status_code == 200, without_data.text
    first, second = stored(server)
    _assert_mapped(first, 4)
    assert (second["id"], second["properties"]) == ("ce-5", {})


def test_cloudevent_batch_keeps_valid_and_rejects_invalid(server: RunningServer) -> None:
    """In a CloudEvents batch, invalid envelopes are rejected and valid ones stored."""
    envelopes = [
        structured_dict(cloudevent(1)),
        structured_dict(cloudevent(2, subject=None)),
        structured_dict(cloudevent(3)),
    ]
    with server.client("ingest") as client:
        response = post(client, envelopes, CE_BATCH)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["status"], r.get("sequence")) for r in results] == [
        ("accepted", 1),
        ("rejected", None),
        ("accepted", 2),
    ]
    assert set(error_fields(results[1])) == {"subject"}
    assert [e["id"] for e in stored(server)] == ["ce-1", "ce-3"]


def test_cloudevent_batch_that_is_not_an_array_is_400(server: RunningServer) -> None:
    """A cloudevents-batch body that is a single object is refused whole."""
    with server.client("ingest") as client:
        response = post(client, structured_dict(cloudevent(1)), CE_BATCH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert head_sequence(server) == 0


def test_cloudevent_binary_mode_needs_json_data(server: RunningServer) -> None:
    """Binary mode with a non-JSON content type is 415."""
    message = to_binary_event(cloudevent(1))
    headers = {**message.headers, "content-type": "text/plain"}
    with server.client("ingest") as client:
        response = client.post("/v1/events", content=message.body, headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_content_type"


# -- authentication and scopes --------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer garbage",
        "Bearer mlk_0123456789abcdef_notarealsecret",
        "Basic dXNlcjpwYXNz",
        "Bearer",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_missing_or_invalid_key_is_401(
    server: RunningServer, authorization: str | None, method: str
) -> None:
    """Without a valid bearer key both routes answer 401 unauthorized with WWW-Authenticate."""
    headers = dict(JSON)
    if authorization is not None:
        headers["authorization"] = authorization
    with server.client(None) as anonymous:
        response = anonymous.request(
            method, "/v1/events", content=json.dumps(event(1)), headers=headers
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    assert head_sequence(server) == 0


def test_key_with_wrong_secret_is_401(server: RunningServer) -> None:
    """A real key id with a wrong secret is refused."""
    token = server.keys["admin"]
    forged = token[: len("mlk_") + 16] + "_" + "A" * 43
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {forged}"}) as c:
        response = c.get("/v1/events")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_ingest_key_cannot_read(server: RunningServer) -> None:
    """An ingest key on GET /v1/events is 403 forbidden."""
    with server.client("ingest") as client:
        response = client.get("/v1/events")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "www-authenticate" not in response.headers


def test_read_key_cannot_ingest(server: RunningServer) -> None:
    """A read key on POST /v1/events is 403 forbidden and stores nothing."""
    with server.client("read") as client:
        response = post(client, event(1))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert head_sequence(server) == 0


def test_admin_key_can_ingest_and_read(server: RunningServer) -> None:
    """An admin key may both send and read events."""
    with server.client("admin") as admin:
        assert post(admin, event(1)).status_code == 200
        response = admin.get("/v1/events")
    assert response.status_code == 200
    assert [e["id"] for e in response.json()["events"]] == ["evt-1"]


def test_revoked_key_is_refused_from_the_next_request(server: RunningServer) -> None:
    """A key revoked with `meterline keys revoke` answers 401 afterwards; others still work."""
    token = server.keys["ingest"]
    key_id = token[len("mlk_") : len("mlk_") + 16]
    assert re.fullmatch(r"[0-9a-f]{16}", key_id)
    with server.client("ingest") as client:
        assert post(client, event(1)).status_code == 200
        revoke = subprocess.run(
            [sys.executable, "-m", "meterline", "keys", "revoke", key_id, "--db", str(server.db)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert revoke.returncode == 0, revoke.stderr
        response = post(client, event(2))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "revoked" in response.json()["error"]["message"]
    with server.client("admin") as admin:
        assert post(admin, event(3)).status_code == 200
    assert [e["id"] for e in stored(server)] == ["evt-1", "evt-3"]


def test_customer_bound_ingest_key_rejects_other_customers(server: RunningServer) -> None:
    """An ingest key bound to acme: other customers' events are rejected on field customer."""
    batch = [event(1, customer="acme"), event(2, customer="globex"), event(3, customer="acme")]
    with server.client("ingest-acme") as client:
        response = post(client, batch)
        only_other = post(client, event(4, customer="globex"))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["status"], r.get("sequence")) for r in results] == [
        ("accepted", 1),
        ("rejected", None),
        ("accepted", 2),
    ]
    assert results[1]["id"] == "evt-2"
    assert set(error_fields(results[1])) == {"customer"}
    assert only_other.status_code == 400
    assert set(error_fields(only_result(only_other))) == {"customer"}
    assert [(e["customer"], e["id"]) for e in stored(server)] == [
        ("acme", "evt-1"),
        ("acme", "evt-3"),
    ]


def test_customer_bound_ingest_key_rejects_cloudevent_subject(server: RunningServer) -> None:
    """An acme-bound key sending a CloudEvent for another subject is rejected on subject."""
    message = to_structured_event(cloudevent(1, subject="globex"))
    with server.client("ingest-acme") as client:
        response = client.post("/v1/events", content=message.body, headers=message.headers)
    assert response.status_code == 400
    assert set(error_fields(only_result(response))) == {"subject"}


def test_customer_bound_read_key_sees_only_its_customer(server: RunningServer) -> None:
    """A read key bound to acme sees only acme's events and is 403 for customer=other."""
    with server.client("admin") as admin:
        post(admin, [event(1, "acme"), event(2, "globex"), event(3, "acme"), event(4, "initech")])
    with server.client("read-acme") as reader:
        everything = reader.get("/v1/events")
        explicit = reader.get("/v1/events", params={"customer": "acme"})
        other = reader.get("/v1/events", params={"customer": "globex"})
        refused_post = post(reader, event(5))
    assert everything.status_code == 200
    assert [(e["customer"], e["id"]) for e in everything.json()["events"]] == [
        ("acme", "evt-1"),
        ("acme", "evt-3"),
    ]
    assert explicit.json()["events"] == everything.json()["events"]
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "forbidden"
    assert refused_post.status_code == 403


# -- reading --------------------------------------------------------------------------------


@pytest.fixture
def seeded(server: RunningServer) -> RunningServer:
    """Six events over two customers, two types and four timestamps."""
    batch = [
        event(1, "acme", timestamp="2026-11-01T09:00:00Z"),
        event(2, "globex", timestamp="2026-11-01T10:00:00Z"),
        event(3, "acme", type="embedding", timestamp="2026-11-01T10:00:00Z"),
        event(4, "acme", timestamp="2026-11-01T11:00:00Z"),
        event(5, "globex", type="embedding", timestamp="2026-11-01T11:30:00Z"),
        event(6, "acme", timestamp="2026-11-01T12:00:00Z"),
    ]
    with server.client("ingest") as client:
        assert post(client, batch).json()["accepted"] == 6
    return server


def _ids(server: RunningServer, **params: Any) -> list[str]:
    with server.client("read") as reader:
        response = reader.get("/v1/events", params=params)
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()["events"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [1, 2, 3, 4, 5, 6]),
        ({"customer": "acme"}, [1, 3, 4, 6]),
        ({"customer": "globex"}, [2, 5]),
        ({"customer": "nobody"}, []),
        ({"type": "embedding"}, [3, 5]),
        ({"customer": "acme", "type": "llm.completion"}, [1, 4, 6]),
        ({"start": "2026-11-01T10:00:00Z"}, [2, 3, 4, 5, 6]),
        ({"end": "2026-11-01T11:00:00Z"}, [1, 2, 3]),
        ({"start": "2026-11-01T10:00:00Z", "end": "2026-11-01T11:30:00Z"}, [2, 3, 4]),
        ({"start": "2026-11-01T12:00:00+02:00", "end": "2026-11-01T12:00:00+01:00"}, [2, 3]),
        ({"start": "2026-11-01T11:00:00Z", "end": "2026-11-01T11:00:00Z"}, []),
        ({"customer": "globex", "start": "2026-11-01T11:00:00Z"}, [5]),
    ],
)
def test_query_filters(seeded: RunningServer, params: dict[str, str], expected: list[int]) -> None:
    """customer, type, start (inclusive) and end (exclusive) filter the events read (in
    partition order, each partition in sequence order: one customer's in sequence)."""
    found = _ids(seeded, **params)
    assert sorted(found, key=lambda i: int(i.split("-")[1])) == [f"evt-{n}" for n in expected]
    if "customer" in params:
        assert found == [f"evt-{n}" for n in expected]


def test_paging_walks_every_event_exactly_once_in_order(server: RunningServer) -> None:
    """limit + next_after visit every event once, partition by partition in sequence
    order, then end with null."""
    with server.client("ingest") as client:
        post(client, [event(n, "acme" if n % 3 else "globex") for n in range(1, 26)])
    seen: list[str] = []
    page_sizes = []
    for page in pages(server, limit=7):
        page_sizes.append(len(page["events"]))
        seen.extend(e["id"] for e in page["events"])
    assert sorted(seen) == sorted(f"evt-{n}" for n in range(1, 26))  # each exactly once
    assert all(size <= 7 for size in page_sizes)
    assert sum(page_sizes) == 25 and page_sizes[0] == 7
    globex = [e["id"] for page in pages(server, limit=2, customer="globex") for e in page["events"]]
    assert globex == [f"evt-{n}" for n in range(3, 26, 3)]


def _sequence_of(server: RunningServer, event_id: str) -> int:
    with server.client("read") as reader:
        events = reader.get("/v1/events", params={"limit": 100}).json()["events"]
    return next(int(e["sequence"]) for e in events if e["id"] == event_id)


def test_after_cursor_skips_earlier_sequences(seeded: RunningServer) -> None:
    """after=<a page's next_after> returns only the events past that page."""
    with seeded.client("read") as reader:
        first = reader.get("/v1/events", params={"limit": 4}).json()
        rest = reader.get("/v1/events", params={"after": first["next_after"], "limit": 100})
    earlier = [e["id"] for e in first["events"]]
    later = [e["id"] for e in rest.json()["events"]]
    assert len(earlier) == 4 and not set(earlier) & set(later)
    assert sorted(earlier + later) == sorted(f"evt-{n}" for n in range(1, 7))
    acme = _ids(seeded, customer="acme")
    assert _ids(seeded, customer="acme", after=_sequence_of(seeded, "evt-4")) == acme[-1:]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": -1}, "after"),
        ({"start": "2026-11-01T10:00:00"}, "start"),
        ({"end": "2026-11-01T10:00:00"}, "end"),
        ({"start": "not a time"}, "start"),
    ],
)
def test_bad_query_parameter_is_400(
    server: RunningServer, params: dict[str, Any], field: str
) -> None:
    """A bad limit, after, start or end is 400 invalid_parameter naming the parameter."""
    with server.client("read") as reader:
        response = reader.get("/v1/events", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["field"] == field


def test_end_before_start_is_400(server: RunningServer) -> None:
    """end earlier than start is 400 invalid_parameter."""
    with server.client("read") as reader:
        response = reader.get(
            "/v1/events", params={"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_parameter"


def test_limit_bounds_are_inclusive(seeded: RunningServer) -> None:
    """limit=1 and limit=1000 are both allowed."""
    assert _ids(seeded, limit=1) == ["evt-1"]
    assert len(_ids(seeded, limit=1000)) == 6


# -- operations -----------------------------------------------------------------------------


def test_health_needs_no_key_and_reports_the_head(server: RunningServer) -> None:
    """GET /v1/health without a key is ok with the events held, the cut and the head hash
    (the root over the partition heads, as a checkpoint computes it)."""
    with server.client(None) as anonymous:
        empty = anonymous.get("/v1/health")
        assert empty.status_code == 200
        assert empty.json()["sequence"] == 0 and set(empty.json()["through"]) == {0}
        with server.client("ingest") as client:
            post(client, [event(1), event(2), event(3)])
        response = anonymous.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["sequence"] == 3 and sum(body["through"]) == 3
    store = open_store(server.db)
    try:
        assert body["head_hash"] == store.head()[1].hex() != empty.json()["head_hash"]
    finally:
        store.close()


def test_openapi_lists_ingest_and_read(server: RunningServer) -> None:
    """/openapi.json documents POST and GET /v1/events and the three body types."""
    response = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "meterline"
    assert {"get", "post"} <= set(spec["paths"]["/v1/events"])
    assert "get" in spec["paths"]["/v1/health"]
    content = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    assert set(content) == {
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    }
    parameters = {p["name"] for p in spec["paths"]["/v1/events"]["get"]["parameters"]}
    assert {"customer", "type", "start", "end", "after", "limit"} <= parameters


def test_docs_serve_swagger_assets_locally(server: RunningServer) -> None:
    """/docs is HTML whose Swagger UI assets are served by the server itself."""
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        docs = anonymous.get("/docs")
        assert docs.status_code == 200
        assert docs.headers["content-type"].startswith("text/html")
        assets = re.findall(r'(?:src|href)="(/static[^"]+)"', docs.text)
        assert any(asset.endswith(".js") for asset in assets), docs.text
        assert "cdn.jsdelivr" not in docs.text
        assert "unpkg.com" not in docs.text
        for asset in assets:
            fetched = anonymous.get(asset)
            assert fetched.status_code == 200, asset
            assert len(fetched.content) > 0
