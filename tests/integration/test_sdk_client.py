"""``meterline.Client`` against a real ``meterline serve`` process, on each store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest

from meterline import Client, QueueFull
from meterline.core.partitions import partition_of
from meterline.ledger.event_ledger import open_store
from tests.conftest import Location, RunningServer, make_keys, start_server
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

FIXED_TIME = datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
_EXACT = msgspec.json.Decoder(float_hook=Decimal)


# -- helpers ------------------------------------------------------------------------------


def stored_events(server: RunningServer, **params: Any) -> list[dict[str, Any]]:
    """Every stored event (numbers decoded exactly), walking all pages with an admin key."""
    events: list[dict[str, Any]] = []
    after = 0
    with server.client("admin") as admin:
        while True:
            response = admin.get("/v1/events", params={**params, "limit": 1000, "after": after})
            assert response.status_code == 200, response.text
            page = _EXACT.decode(response.content)
            events.extend(page["events"])
            if page["next_after"] is None:
                return events
            after = page["next_after"]


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Block until ``condition()`` holds (synchronization only, never an assertion of time)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def quick_client(url: str, key: str, **options: Any) -> Client:
    """A Client with short flush interval and backoff, so tests stay fast."""
    settings: dict[str, Any] = {
        "flush_interval_s": 0.05,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.2,
        "request_timeout_s": 10.0,
    }
    settings.update(options)
    return Client(url, key, **settings)


def dead_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


class CountingTransport(httpx.BaseTransport):
    """Forwards to the network and records how many events each POST carried."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.batches: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.batches.append(len(json.loads(request.content)))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class LoseFirstResponse(httpx.BaseTransport):
    """Delivers the first request to the server, then loses its response."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.lost_batch: list[dict[str, Any]] | None = None
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        response = self._inner.handle_request(request)
        if self.lost_batch is None:
            response.read()
            response.close()
            self.lost_batch = json.loads(request.content)
            raise httpx.ReadError("connection reset before the response arrived", request=request)
        return response

    def close(self) -> None:
        self._inner.close()


# -- delivery -----------------------------------------------------------------------------


def test_many_events_are_delivered_exactly_once_in_bounded_batches(server: RunningServer) -> None:
    """2,000 tracked events over 3 customers arrive once each, in batches of at most 100."""
    transport = CountingTransport()
    customers = ("acme", "globex", "initech")
    client = quick_client(
        server.url, server.keys["ingest"], batch_events_max=100, transport=transport
    )
    try:
        ids = [
            client.track(customers[n % 3], "llm.completion", {"input_tokens": n})
            for n in range(2000)
        ]
    finally:
        report = client.close()
    assert len(set(ids)) == 2000
    assert (report.accepted, report.duplicate, report.conflict, report.rejected) == (2000, 0, 0, 0)
    assert report.undelivered == 0
    assert report.rejections == []
    assert sum(transport.batches) == 2000
    assert max(transport.batches) <= 100
    events = stored_events(server)
    assert len(events) == 2000
    assert sorted(e["id"] for e in events) == sorted(ids)
    for customer in customers:
        count = 667 - (customer == "initech")
        assert sum(e["customer"] == customer for e in events) == count
    by_partition: dict[int, list[int]] = {}
    store = open_store(server.db)
    try:
        partitions = store.partitions
    finally:
        store.close()
    for e in events:  # each partition numbers its events 1, 2, ... without gaps
        by_partition.setdefault(partition_of(e["customer"], partitions), []).append(e["sequence"])
    for sequences in by_partition.values():
        assert sorted(sequences) == list(range(1, len(sequences) + 1))
    by_id = {e["id"]: e for e in events}
    assert by_id[ids[5]]["properties"] == {"input_tokens": 5}
    assert by_id[ids[5]]["customer"] == "initech"


def test_events_tracked_while_server_is_down_arrive_once_after_it_starts(
    new_db: Callable[..., Location],
) -> None:
    """Retries resend the same ids until the server is up; each event is stored once."""
    db = new_db("late")
    keys = make_keys(db)
    port = free_port()
    client = quick_client(f"http://127.0.0.1:{port}", keys["ingest"], batch_events_max=50)
    server: RunningServer | None = None
    try:
        ids = [client.track("acme", "llm.completion", {"n": n}) for n in range(120)]
        wait_until(lambda: client.report.retries > 0)
        assert client.flush(timeout_s=0) is False
        assert client.report.accepted == 0
        server = start_server(db, port)
        server.keys = keys
        assert client.flush(timeout_s=60) is True
        report = client.close()
        assert report.retries > 0
        assert (report.accepted, report.duplicate, report.rejected) == (120, 0, 0)
        assert report.undelivered == 0
        events = stored_events(server)
        assert sorted(e["id"] for e in events) == sorted(ids)
        assert len(events) == 120
    finally:
        client.close(timeout_s=1)
        if server is not None:
            server.stop()


def test_lost_response_is_retried_and_counted_as_duplicate(server: RunningServer) -> None:
    """A batch stored but whose response was lost is resent and counted once, as duplicate."""
    transport = LoseFirstResponse()
    client = quick_client(
        server.url, server.keys["ingest"], batch_events_max=100, transport=transport
    )
    try:
        ids = [client.track("acme", "llm.completion", {"n": n}) for n in range(100)]
    finally:
        report = client.close()
    assert transport.lost_batch is not None
    lost = len(transport.lost_batch)
    assert lost >= 1
    assert report.retries == 1
    assert report.duplicate == lost
    assert report.accepted == 100 - lost
    assert report.accepted + report.duplicate == 100
    assert report.rejected == report.conflict == 0
    events = stored_events(server)
    assert sorted(e["id"] for e in events) == sorted(ids)


def test_second_client_resending_the_same_events_gets_duplicates(server: RunningServer) -> None:
    """Sending the same events (ids and timestamps) through a second Client: all duplicates."""

    def send() -> Any:
        client = quick_client(server.url, server.keys["ingest"], batch_events_max=64)
        try:
            for n in range(200):
                client.track(
                    ("acme", "globex")[n % 2],
                    "llm.completion",
                    {"n": n, "cost": Decimal("0.5")},
                    id=f"replay-{n}",
                    timestamp=FIXED_TIME,
                )
        finally:
            report = client.close()
        return report

    first = send()
    second = send()
    assert (first.accepted, first.duplicate) == (200, 0)
    assert (second.accepted, second.duplicate, second.conflict, second.rejected) == (0, 200, 0, 0)
    events = stored_events(server)
    assert len(events) == 200
    assert sorted(e["id"] for e in events) == sorted(f"replay-{n}" for n in range(200))


def test_changed_event_under_a_used_id_is_reported_as_conflict(server: RunningServer) -> None:
    """Re-tracking an id with different properties counts a conflict and calls on_rejected."""
    seen: list[dict[str, Any]] = []
    client = quick_client(server.url, server.keys["ingest"], on_rejected=seen.append)
    try:
        client.track("acme", "llm.completion", {"n": 1}, id="same", timestamp=FIXED_TIME)
        assert client.flush(timeout_s=30)
        client.track("acme", "llm.completion", {"n": 2}, id="same", timestamp=FIXED_TIME)
    finally:
        report = client.close()
    assert (report.accepted, report.conflict) == (1, 1)
    assert [(d["status"], d["id"], d["sequence"]) for d in seen] == [("conflict", "same", 1)]
    [stored] = stored_events(server)
    assert stored["properties"] == {"n": 1}


# -- flush on exit ------------------------------------------------------------------------

_EXIT_SCRIPTS = {
    "module-global": """
        import sys
        from meterline import Client

        client = Client(sys.argv[1], sys.argv[2], batch_events_max=20)
        for n in range(50):
            client.track("acme", "llm.completion", {"n": n}, id=f"exit-{n}")
    """,
    "local-in-function": """
        import sys
        from meterline import Client

        def main():
            client = Client(sys.argv[1], sys.argv[2], batch_events_max=20)
            for n in range(50):
                client.track("acme", "llm.completion", {"n": n}, id=f"exit-{n}")

        main()
    """,
}


@pytest.mark.parametrize("script", list(_EXIT_SCRIPTS))
def test_events_are_flushed_when_the_process_exits(server: RunningServer, script: str) -> None:
    """A process that tracks 50 events and exits without close() still delivers all 50."""
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_EXIT_SCRIPTS[script]),
            server.url,
            server.keys["ingest"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    events = stored_events(server)
    assert sorted(e["id"] for e in events) == sorted(f"exit-{n}" for n in range(50))
    assert len(events) == 50


# -- back-pressure and shutdown -----------------------------------------------------------


def test_full_queue_raises_queue_full_instead_of_blocking() -> None:
    """With the server down, enqueueing past capacity raises QueueFull at once."""
    client = quick_client(
        dead_url(),
        "mlk_0000000000000000_unused",
        queue_events_max=10,
        batch_events_max=10,
        enqueue_timeout_s=0,
    )
    queued = 0
    try:
        with pytest.raises(QueueFull):
            for n in range(1000):
                client.track("acme", "llm.completion", {"n": n})
                queued += 1
        # Capacity is the queue plus at most one batch the sender already holds.
        assert 10 <= queued <= 20
        with pytest.raises(QueueFull):
            client.track("acme", "llm.completion", {"n": -1})
    finally:
        report = client.close(timeout_s=0.5)
    assert report.accepted == 0
    assert report.retries > 0


def test_events_abandoned_at_close_are_reported_undelivered() -> None:
    """Closing while the server is unreachable reports every unsent event as undelivered."""
    client = quick_client(dead_url(), "mlk_0000000000000000_unused", batch_events_max=10)
    try:
        for n in range(25):
            client.track("acme", "llm.completion", {"n": n})
        wait_until(lambda: client.report.retries > 0)
    finally:
        report = client.close(timeout_s=0.5)
    assert report.accepted + report.duplicate + report.conflict + report.rejected == 0
    assert report.undelivered == 25


def test_track_after_close_raises() -> None:
    """A closed client refuses new events."""
    client = quick_client(dead_url(), "mlk_0000000000000000_unused")
    client.close(timeout_s=1)
    with pytest.raises(RuntimeError):
        client.track("acme", "llm.completion")


# -- rejections ---------------------------------------------------------------------------


def test_per_event_rejections_reach_on_rejected_and_the_report(server: RunningServer) -> None:
    """Events refused by the server are counted rejected and passed to on_rejected."""
    seen: list[dict[str, Any]] = []
    client = quick_client(server.url, server.keys["ingest-acme"], on_rejected=seen.append)
    try:
        good = [client.track("acme", "llm.completion", {"n": n}) for n in range(3)]
        wrong_customer = client.track("globex", "llm.completion", {"n": 3})
        naive = client.track(
            "acme", "llm.completion", {"n": 4}, timestamp=datetime(2026, 11, 1, 10, 0, 0)
        )
    finally:
        report = client.close()
    assert (report.accepted, report.rejected, report.duplicate, report.conflict) == (3, 2, 0, 0)
    assert report.rejections == seen
    by_id = {detail["id"]: detail for detail in seen}
    assert set(by_id) == {wrong_customer, naive}
    assert all(detail["status"] == "rejected" for detail in seen)
    assert [e["field"] for e in by_id[wrong_customer]["errors"]] == ["customer"]
    assert [e["field"] for e in by_id[naive]["errors"]] == ["timestamp"]
    assert "time zone" in by_id[naive]["errors"][0]["reason"]
    assert sorted(e["id"] for e in stored_events(server)) == sorted(good)


def test_batch_refused_whole_is_counted_rejected_with_the_error(server: RunningServer) -> None:
    """A batch refused as a whole (401, bad key) counts every event rejected, with the error."""
    seen: list[dict[str, Any]] = []
    client = quick_client(server.url, "mlk_0123456789abcdef_wrong", on_rejected=seen.append)
    try:
        for n in range(5):
            client.track("acme", "llm.completion", {"n": n})
    finally:
        report = client.close()
    assert report.rejected == 5
    assert report.accepted == 0
    assert report.retries == 0
    assert sum(detail["events"] for detail in seen) == 5
    assert {detail["status"] for detail in seen} == {401}
    assert {detail["error"]["code"] for detail in seen} == {"unauthorized"}
    assert stored_events(server) == []


# -- exact numbers ------------------------------------------------------------------------


def test_decimal_and_float_properties_read_back_exactly(server: RunningServer) -> None:
    """Decimal("0.000123") and float 0.1 are stored as the exact decimals 0.000123 and 0.1."""
    client = quick_client(server.url, server.keys["ingest"])
    try:
        event_id = client.track(
            "acme",
            "llm.completion",
            {
                "cost": Decimal("0.000123"),
                "ratio": 0.1,
                "total": Decimal("123456789012345678.0000000001"),
                "tokens": 12,
            },
        )
    finally:
        report = client.close()
    assert report.accepted == 1
    [stored] = stored_events(server)
    assert stored["id"] == event_id
    properties = stored["properties"]
    assert properties["cost"] == Decimal("0.000123")
    assert str(properties["cost"]) == "0.000123"
    assert properties["ratio"] == Decimal("0.1")
    assert str(properties["ratio"]) == "0.1"
    assert properties["total"] == Decimal("123456789012345678.0000000001")
    assert properties["tokens"] == 12
