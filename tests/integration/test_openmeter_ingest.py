"""OpenMeter-compatible ingest (``POST /api/v1/events``) on the real API on a loopback
port (uvicorn in a thread), on each store: OpenMeter's published request bytes replayed
(fixtures naming their source), and OpenMeter's own Python client (``openmeter``)
pointed at meterline by its base URL, which expects 204 and RFC 9457 problems."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from corehttp.exceptions import HttpResponseError
from openmeter import Client as OpenMeterClient
from openmeter.models import Event

from tests.conftest import Databases, make_keys
from tests.support.threaded_api import ThreadedApi

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openmeter_requests.json"
REQUESTS: list[dict[str, Any]] = json.loads(FIXTURES.read_text())


@pytest.fixture(scope="module")
def server(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedApi]:
    db = databases.new(Path(tmp_path_factory.mktemp("openmeter")), "openmeter")
    running = ThreadedApi(db, make_keys(db)).start()
    try:
        yield running
    finally:
        running.stop()


def replay(server: ThreadedApi, request: dict[str, Any], scope: str = "ingest") -> Any:
    with server.client(scope) as client:
        return client.post(
            "/api/v1/events",
            content=request["body"].encode(),
            headers={"content-type": request["content_type"]},
        )


@pytest.mark.parametrize("request_shape", REQUESTS, ids=[r["name"] for r in REQUESTS])
def test_openmeter_request_bytes_are_stored_once_with_204(
    server: ThreadedApi, request_shape: dict[str, Any]
) -> None:
    """Each published request answers 204 and stores its events mapped as documented;
    replaying it answers 204 again and stores nothing more."""
    assert replay(server, request_shape).status_code == 204
    assert replay(server, request_shape).status_code == 204
    for expected in request_shape["events"]:
        found = [e for e in server.events(expected["customer"]) if e["id"] == expected["id"]]
        assert len(found) == 1
        (event,) = found
        assert event["type"] == expected["type"]
        assert event["properties"] == expected["properties"]


def test_openmeters_python_client_ingests_against_meterline(server: ThreadedApi) -> None:
    """OpenMeter's client, given meterline's URL and an ingest key, ingests one event, a
    batch and plain JSON without raising (it raises on anything but 204)."""
    client = OpenMeterClient(endpoint=server.url, token=server.keys["ingest"])
    at = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)

    def event(tokens: int) -> Event:
        return Event(
            id=str(uuid.uuid4()),
            source="my-app",
            specversion="1.0",
            type="prompt",
            subject="customer-py",
            time=at,
            data={"tokens": tokens, "model": "gpt-4o", "type": "input"},
        )

    single = event(100)
    client.events.ingest_event(single)
    client.events.ingest_event(single)  # a retry: the same id, a duplicate
    client.events.ingest_events([event(200), event(300)])
    client.events.ingest_events_json(event(400))
    events = server.events("customer-py")
    assert sorted(e["properties"]["tokens"] for e in events) == [100, 200, 300, 400]
    assert {e["timestamp"] for e in events} == {"2026-11-02T09:30:00Z"}


def test_an_invalid_event_refuses_the_batch_whole_as_a_problem(server: ThreadedApi) -> None:
    """A batch with one invalid event is 400 application/problem+json naming it; nothing
    of the batch is stored; OpenMeter's client raises with that status."""
    batch = [
        {"specversion": "1.0", "id": "ok-1", "source": "s", "type": "t", "subject": "cust-x"},
        {"specversion": "1.0", "id": "bad-1", "source": "s", "type": "t"},
    ]
    with server.client("ingest") as client:
        response = client.post(
            "/api/v1/events",
            json=batch,
            headers={"content-type": "application/cloudevents-batch+json"},
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400 and problem["title"] == "Bad Request"
    assert problem["events"][0]["index"] == 1
    assert any(error.startswith("subject:") for error in problem["events"][0]["errors"])
    assert server.events("cust-x") == []
    client_om = OpenMeterClient(endpoint=server.url, token=server.keys["ingest"])
    with pytest.raises(HttpResponseError) as raised:
        client_om.events.ingest_event({"specversion": "1.0", "id": "x", "source": "s", "type": "t"})
    assert raised.value.status_code == 400


def test_auth_type_and_conflict_answers(server: ThreadedApi) -> None:
    """No key 401, a read key 403, another type 415, a changed event under a used id 409:
    each an RFC 9457 problem."""
    first = REQUESTS[0]
    with server.client(None) as anonymous:
        assert anonymous.post("/api/v1/events", content=b"{}").status_code == 401
    assert replay(server, first, "read").status_code == 403
    assert replay(server, {**first, "content_type": "text/plain"}).status_code == 415
    assert replay(server, first).status_code == 204
    changed = {**first, "body": first["body"].replace('"GET"', '"POST"')}
    response = replay(server, changed)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["events"][0]["status"] == "conflict"
