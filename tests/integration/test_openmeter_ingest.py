"""OpenMeter-compatible ingest (``POST /api/v1/events``) on the real API on a loopback
port (uvicorn in a thread), on each store: OpenMeter's published request bytes replayed
(fixtures naming their source), and OpenMeter's own Python client (``openmeter``)
pointed at meterline by its base URL, which expects 204 and RFC 9457 problems.

The client requires ``cloudevents<2`` while the tests use the 2.x API, so it is not a test
dependency: ``tests/support/openmeter_client.py`` runs it on the interpreter of a cached
venv with pyproject.toml's ``openmeter-client`` extra (``tests.support.client_venvs``),
against the server this module starts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Databases, make_keys
from tests.support.client_venvs import BUILD_TIMEOUT_S, OPENMETER, REPOSITORY, exchange, running_on
from tests.support.threaded_api import ThreadedApi

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openmeter_requests.json"
REQUESTS: list[dict[str, Any]] = json.loads(FIXTURES.read_text())
CLIENT_SCRIPT = REPOSITORY / "tests" / "support" / "openmeter_client.py"
CLIENT_SUBJECT = "customer-py"


@pytest.fixture(scope="module")
def server(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedApi]:
    db = databases.new(Path(tmp_path_factory.mktemp("openmeter")), "openmeter")
    running = ThreadedApi(db, make_keys(db)).start()
    try:
        yield running
    finally:
        running.stop()


@dataclass(frozen=True)
class ClientRun:
    """What OpenMeter's client got from each call (``openmeter_client.py``), and the ids
    of the events it sent: one, a batch of two, one as plain JSON."""

    calls: dict[str, dict[str, Any]]
    ids: list[str]


@pytest.fixture(scope="module")
def openmeter_client(server: ThreadedApi) -> ClientRun:
    """OpenMeter's client run once on its venv against the module's server."""
    ids = [str(uuid.uuid4()) for _ in range(4)]
    with running_on(OPENMETER, CLIENT_SCRIPT) as process:
        seen = exchange(
            process,
            {
                "url": server.url,
                "ingest_key": server.keys["ingest"],
                "subject": CLIENT_SUBJECT,
                "time": datetime(2026, 11, 2, 9, 30, tzinfo=UTC).isoformat(),
                "ids": ids,
            },
        )
    return ClientRun(seen["calls"], ids)


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


# The first run on a machine builds the client's venv (seconds) before the test.
@pytest.mark.timeout(2 * BUILD_TIMEOUT_S)
def test_openmeters_python_client_ingests_against_meterline(
    server: ThreadedApi, openmeter_client: ClientRun
) -> None:
    """OpenMeter's client, given meterline's URL and an ingest key, ingests one event, its
    retry, a batch and plain JSON, each answered 204 (it raises on anything else); the
    retry stores nothing more."""
    no_content = {"status": 204, "raised": None}
    calls = openmeter_client.calls
    assert [calls[name] for name in ("single", "retry", "batch", "json")] == [no_content] * 4
    events = server.events(CLIENT_SUBJECT)
    assert sorted(e["id"] for e in events) == sorted(openmeter_client.ids)
    assert sorted(e["properties"]["tokens"] for e in events) == [100, 200, 300, 400]
    assert {e["timestamp"] for e in events} == {"2026-11-02T09:30:00Z"}


@pytest.mark.timeout(2 * BUILD_TIMEOUT_S)
def test_an_invalid_event_refuses_the_batch_whole_as_a_problem(
    server: ThreadedApi, openmeter_client: ClientRun
) -> None:
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
    invalid = {"status": 400, "raised": "HttpResponseError"}
    assert openmeter_client.calls["invalid"] == invalid


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
