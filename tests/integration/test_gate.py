"""``meterline.sdk.gate.Gate`` against a real Server-Sent Events server on loopback.

The server here is a small Starlette app served by uvicorn in a background thread; the
test steers it: what snapshot a new connection gets, events pushed to open connections,
going silent (no heartbeats), dropping every connection, and refusing with a status code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any, cast

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from meterline.sdk.gate import Decision, Gate
from tests.support.ports import free_port

HEARTBEAT_INTERVAL_S = 0.05
POLL_TIMEOUT_S = 5.0

_DROP = object()


def wait_until(condition: Callable[[], bool], timeout_s: float = POLL_TIMEOUT_S) -> None:
    """Block until ``condition()`` holds (synchronization only, never an assertion of time)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def decision(
    blocked: bool,
    features: list[str] | None = None,
    reason: str = "",
    policy: str | None = None,
    remaining: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "blocked": blocked,
        "features": features or [],
        "reason": reason,
        "policy": policy,
        "remaining": remaining or {},
    }


def snapshot(version: int, decisions: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return "snapshot", {"version": version, "decisions": decisions}


def change(version: int, customer: str, new: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "change", {"version": version, "customer": customer, "decision": new}


FIRST_SNAPSHOT = snapshot(
    12,
    {
        "acme": decision(
            True,
            reason="usage_spike rogue-agent fired",
            policy="rogue-agent",
            remaining={"credits": "0"},
        ),
        "globex": decision(False, remaining={"credits": "1500.5", "tokens": "0.000000001"}),
        "initech": decision(
            True, ["gpt-4o", "images"], reason="model budget spent", policy="model-cap"
        ),
    },
)


class AccessStreamServer:
    """A controllable ``GET /v1/access/stream`` on 127.0.0.1, run by uvicorn in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # What a new connection gets first; None sends nothing at all (not even heartbeats
        # would help: the first event must be a snapshot).
        self.opening: list[tuple[str, Any]] = [FIRST_SNAPSHOT]
        self.refuse_with: int | None = None
        self.silent = False
        self.requests = 0
        self.authorizations: list[str] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: list[asyncio.Queue[object]] = []
        app = Starlette(routes=[Route("/v1/access/stream", self._stream)])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    # -- the test's controls ----------------------------------------------------------------

    def start(self) -> AccessStreamServer:
        self._thread.start()
        wait_until(lambda: self._server.started)
        return self

    def stop(self) -> None:
        self.drop()
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def push(self, event_type: str, data: Any) -> None:
        """Send one event to every open connection (``data`` as JSON, or raw if a str)."""
        self._broadcast((event_type, data))

    def drop(self) -> None:
        """End every open connection (a clean end of the response body)."""
        self._broadcast(_DROP)

    def _broadcast(self, item: object) -> None:
        with self._lock:
            loop, queues = self._loop, list(self._connections)
        if loop is None:
            return
        for queue in queues:
            loop.call_soon_threadsafe(queue.put_nowait, item)

    # -- the server's side ------------------------------------------------------------------

    async def _stream(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
            self.authorizations.append(request.headers.get("authorization", ""))
            self._loop = asyncio.get_running_loop()
        if self.refuse_with is not None:
            return JSONResponse({"error": "refused by the test"}, status_code=self.refuse_with)
        queue: asyncio.Queue[object] = asyncio.Queue()
        for item in self.opening:
            queue.put_nowait(item)
        with self._lock:
            self._connections.append(queue)
        return StreamingResponse(self._events(queue), media_type="text/event-stream")

    async def _events(self, queue: asyncio.Queue[object]) -> AsyncIterator[bytes]:
        version = 0
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), HEARTBEAT_INTERVAL_S)
                except TimeoutError:
                    if not self.silent:
                        yield b": keep-alive comment\n\n"
                        yield f'event: heartbeat\ndata: {{"version": {version}}}\n\n'.encode()
                    continue
                if item is _DROP:
                    return
                assert isinstance(item, tuple)
                event_type, data = item
                if isinstance(data, dict):
                    version = max(version, int(data.get("version", 0)))
                text = data if isinstance(data, str) else json.dumps(data)
                yield f"event: {event_type}\ndata: {text}\n\n".encode()
        finally:
            with self._lock:
                self._connections.remove(queue)


@pytest.fixture
def server() -> Iterator[AccessStreamServer]:
    running = AccessStreamServer().start()
    yield running
    running.stop()


@pytest.fixture
def make_gate(server: AccessStreamServer) -> Iterator[Callable[..., Gate]]:
    """Build gates on ``server`` with quick reconnects; every one is closed afterwards."""
    gates: list[Gate] = []

    def build(**options: Any) -> Gate:
        settings: dict[str, Any] = {
            "heartbeat_timeout_s": 2.0,
            "reconnect_delay_s": 0.02,
            "reconnect_delay_max_s": 0.1,
        }
        settings.update(options)
        gate = Gate(server.url, "test-token", **settings)
        gates.append(gate)
        return gate

    yield build
    for gate in gates:
        gate.close()


def live_gate(make_gate: Callable[..., Gate], **options: Any) -> Gate:
    gate = make_gate(**options).start(wait_s=POLL_TIMEOUT_S)
    assert gate.status == "live", gate.last_error
    return gate


# -- 1. the snapshot's answers --------------------------------------------------------------


def test_snapshot_answers(server: AccessStreamServer, make_gate: Callable[..., Gate]) -> None:
    gate = live_gate(make_gate)
    assert gate.version == 12
    assert gate.lost_since is None
    assert server.authorizations == ["Bearer test-token"]

    # Blocked outright: every feature, and no feature, is denied.
    assert gate.allowed("acme") is False
    assert gate.allowed("acme", "gpt-4o") is False
    acme = gate.check("acme", "anything")
    assert acme == Decision(
        allowed=False,
        reason="usage_spike rogue-agent fired",
        source="stream",
        policy="rogue-agent",
        remaining={"credits": Decimal("0")},
    )

    # Feature-only block: those features denied, anything else (or no feature) allowed.
    assert gate.allowed("initech", "gpt-4o") is False
    assert gate.allowed("initech", "images") is False
    assert gate.allowed("initech", "gpt-4o-mini") is True
    assert gate.allowed("initech") is True
    denied = gate.check("initech", "images")
    assert (denied.allowed, denied.reason, denied.policy) == (
        False,
        "model budget spent",
        "model-cap",
    )
    other = gate.check("initech", "embeddings")
    assert other.allowed is True
    assert other.source == "stream"
    assert "gpt-4o, images" in other.reason

    # Unknown customer: no restriction.
    assert gate.allowed("nobody") is True
    assert gate.allowed("nobody", "gpt-4o") is True
    assert gate.check("nobody") == Decision(True, "no restriction", "stream")

    # Allowed with remaining balances, decimals exactly as sent.
    globex = gate.check("globex", "gpt-4o")
    assert globex.allowed is True
    assert globex.remaining == {"credits": Decimal("1500.5"), "tokens": Decimal("0.000000001")}
    assert format(globex.remaining["tokens"], "f") == "0.000000001"
    assert str(globex.remaining["credits"]) == "1500.5"
    with pytest.raises(TypeError):
        cast(Any, globex.remaining)["credits"] = Decimal(0)
    assert gate.check("nobody").remaining == {}
    # Decisions are values: hashable despite carrying a mapping.
    assert hash(acme) == hash(gate.check("acme"))


def test_context_manager_starts_and_closes(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    with make_gate() as gate:
        wait_until(lambda: gate.status == "live")
        assert gate.allowed("acme") is False
    assert gate.status == "closed"


# -- 2. changes -----------------------------------------------------------------------------


def test_change_applies_and_older_change_is_ignored(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    gate = live_gate(make_gate)
    server.push(*change(13, "acme", decision(False, reason="unblocked by finance: ticket 42")))
    wait_until(lambda: gate.version == 13)
    assert gate.allowed("acme") is True
    assert gate.check("acme").reason == "unblocked by finance: ticket 42"

    # Older than what was applied: ignored. A newer one after it still applies.
    server.push(*change(12, "acme", decision(True, reason="stale block")))
    server.push(*change(14, "hooli", decision(True, ["images"], reason="image cap")))
    wait_until(lambda: gate.version == 14)
    assert gate.allowed("acme") is True
    assert gate.check("acme").reason == "unblocked by finance: ticket 42"
    assert gate.allowed("hooli", "images") is False
    assert gate.allowed("hooli", "gpt-4o") is True

    # A change that blocks everything for a customer that was only feature-blocked.
    server.push(*change(15, "initech", decision(True, reason="all stop")))
    wait_until(lambda: gate.version == 15)
    assert gate.allowed("initech") is False
    assert gate.allowed("initech", "gpt-4o-mini") is False
    assert gate.status == "live"


# -- 3. the stream dropped ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail_mode", "expected_allowed", "expected_source"),
    [("closed", False, "fail-closed"), ("open", True, "fail-open")],
)
def test_dropped_stream_follows_fail_mode(
    server: AccessStreamServer,
    make_gate: Callable[..., Gate],
    fail_mode: str,
    expected_allowed: bool,
    expected_source: str,
) -> None:
    gate = live_gate(make_gate, fail_mode=fail_mode)
    server.refuse_with = 503  # the reconnects fail, so the gate stays lost
    server.drop()
    wait_until(lambda: gate.status == "lost")
    assert gate.lost_since is not None
    assert gate.last_error is not None

    for customer, feature in [("acme", None), ("globex", "gpt-4o"), ("nobody", None)]:
        assert gate.allowed(customer, feature) is expected_allowed
        answer = gate.check(customer, feature)
        assert answer.allowed is expected_allowed
        assert answer.source == expected_source
        assert answer.reason.startswith("access stream lost ")
        assert answer.reason.endswith(f" s ago; failing {fail_mode}")
        assert answer.policy is None
        assert answer.remaining == {}
    # Reconnection is being attempted (and refused) while lost.
    wait_until(lambda: gate.last_error is not None and "503" in gate.last_error)
    assert gate.status == "lost"


def test_malformed_event_counts_as_lost(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    gate = live_gate(make_gate)
    server.refuse_with = 503
    server.push("change", '{"version": 13, "customer": "acme", "decision": {"blocked": "maybe"}}')
    wait_until(lambda: gate.status == "lost")
    assert gate.allowed("globex") is False
    assert gate.check("globex").source == "fail-closed"


# -- 4. a silent stream ---------------------------------------------------------------------


def test_silent_stream_counts_as_lost(
    server: AccessStreamServer, make_gate: Callable[..., Gate], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="meterline.sdk.gate")
    server.silent = True  # the snapshot arrives, then not a byte more
    gate = live_gate(make_gate, heartbeat_timeout_s=0.5)
    server.refuse_with = 503  # new connections are refused; the open one stays open
    assert server.open_connections == 1
    wait_until(lambda: gate.status == "lost")
    assert "access stream lost (ReadTimeout" in caplog.text
    assert gate.check("nobody").source == "fail-closed"


def test_heartbeats_keep_the_stream_live(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    gate = live_gate(make_gate, heartbeat_timeout_s=0.5)
    server.push(*change(13, "globex", decision(False, reason="still fine")))
    wait_until(lambda: gate.version == 13)
    # Several heartbeat timeouts' worth of heartbeats later, the first connection is the
    # only one ever made: the gate never lost it.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert gate.status == "live", gate.last_error
        time.sleep(0.05)
    assert server.requests == 1


# -- 5. reconnect ---------------------------------------------------------------------------


def test_reconnect_applies_the_new_snapshot(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    gate = live_gate(make_gate)
    changes: list[tuple[str, Decision]] = []
    gate.on_change(lambda customer, answer: changes.append((customer, answer)))
    assert gate.allowed("acme") is False

    server.refuse_with = 503
    server.drop()
    wait_until(lambda: gate.status == "lost")
    server.opening = [
        snapshot(
            20,
            {
                "acme": decision(False, remaining={"credits": "10"}),
                "globex": FIRST_SNAPSHOT[1]["decisions"]["globex"],
                "umbrella": decision(True, reason="fraud review"),
            },
        )
    ]
    server.refuse_with = None
    wait_until(lambda: gate.status == "live")
    assert gate.version == 20
    assert gate.lost_since is None
    assert gate.allowed("acme") is True  # the old block is cleared
    assert gate.check("acme").remaining == {"credits": Decimal("10")}
    assert gate.allowed("umbrella") is False
    assert gate.allowed("initech", "gpt-4o") is True  # absent from the new snapshot
    assert gate.check("initech", "gpt-4o") == Decision(True, "no restriction", "stream")

    # Callbacks for exactly the customers whose decision differs; globex is unchanged.
    by_customer = dict(changes)
    assert sorted(by_customer) == ["acme", "initech", "umbrella"]
    assert by_customer["acme"].allowed is True
    assert by_customer["initech"] == Decision(True, "no restriction", "stream")
    assert by_customer["umbrella"].allowed is False
    assert by_customer["umbrella"].reason == "fraud review"


# -- 6. before the first snapshot -----------------------------------------------------------


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_not_connected_yet_follows_fail_mode(
    server: AccessStreamServer, make_gate: Callable[..., Gate], fail_mode: str
) -> None:
    server.refuse_with = 503
    gate = make_gate(fail_mode=fail_mode).start(wait_s=0)
    wait_until(lambda: server.requests >= 2)  # refused, backed off, tried again
    assert gate.status == "connecting"
    assert gate.lost_since is None
    assert gate.last_error is not None
    assert gate.last_error.startswith("access stream answered 503")
    answer = gate.check("acme")
    assert answer.allowed is (fail_mode == "open")
    assert answer.reason == f"access stream not connected yet; failing {fail_mode}"
    assert answer.source == f"fail-{fail_mode}"
    assert (answer.policy, answer.remaining) == (None, {})
    assert gate.allowed("acme") is (fail_mode == "open")


def test_start_waits_for_snapshot_only_as_long_as_asked(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    server.refuse_with = 503
    gate = make_gate().start(wait_s=0.2)
    assert gate.status == "connecting"
    server.refuse_with = None
    wait_until(lambda: gate.status == "live")
    assert gate.allowed("acme") is False


def test_bad_key_is_reported_and_retried_with_backoff(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    server.refuse_with = 401
    gate = make_gate(reconnect_delay_s=0.05, reconnect_delay_max_s=0.2).start(wait_s=0)
    wait_until(lambda: server.requests >= 3)
    assert gate.last_error is not None
    assert gate.last_error.startswith("access stream answered 401")
    assert "refused by the test" in gate.last_error
    assert gate.check("globex").reason == "access stream not connected yet; failing closed"
    # Once the key is accepted, the same gate goes live.
    server.refuse_with = None
    wait_until(lambda: gate.status == "live")


def test_first_event_must_be_a_snapshot(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    server.opening = [change(13, "acme", decision(False))]
    gate = make_gate().start(wait_s=0)
    wait_until(lambda: gate.last_error is not None)
    assert "before its snapshot" in str(gate.last_error)
    assert gate.status == "connecting"
    assert gate.allowed("acme") is False  # failing closed, not the change's answer


# -- 7. on_change ---------------------------------------------------------------------------


def test_on_change_callbacks_fire_and_a_raising_one_is_contained(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    gate = make_gate()
    seen: list[tuple[str, Decision, str]] = []

    def explode(customer: str, answer: Decision) -> None:
        raise RuntimeError("callback bug")

    gate.on_change(explode)
    gate.on_change(
        lambda customer, answer: seen.append((customer, answer, threading.current_thread().name))
    )
    gate.start(wait_s=POLL_TIMEOUT_S)
    assert gate.status == "live"
    # The first snapshot differs from the empty local copy for every customer it names.
    wait_until(lambda: len(seen) == 3)
    assert sorted(customer for customer, _, _ in seen) == ["acme", "globex", "initech"]
    assert {thread for _, _, thread in seen} == {"meterline-gate"}

    seen.clear()
    server.push(*change(13, "acme", decision(False, reason="ticket 42")))
    wait_until(lambda: len(seen) == 1)
    assert seen[0][:2] == ("acme", Decision(True, "ticket 42", "stream"))

    # The raising callback did not kill the thread: later changes still apply.
    server.push(*change(14, "globex", decision(True, reason="limit")))
    wait_until(lambda: len(seen) == 2)
    assert seen[1][0] == "globex"
    assert seen[1][1].allowed is False
    assert gate.allowed("globex") is False
    assert gate.status == "live"


# -- 8. close -------------------------------------------------------------------------------


def test_close_is_prompt_even_on_a_silent_stream(
    server: AccessStreamServer, make_gate: Callable[..., Gate]
) -> None:
    server.silent = True
    gate = live_gate(make_gate, heartbeat_timeout_s=30.0)
    started = time.monotonic()
    gate.close()
    # Far below the 30 s read timeout: close() woke the blocked read rather than waiting.
    assert time.monotonic() - started < 10.0
    assert gate.status == "closed"
    assert gate.allowed("nobody") is False
    assert gate.check("nobody").reason == "access gate closed; failing closed"
    wait_until(lambda: server.open_connections == 0)
    requests = server.requests
    gate.close()  # idempotent
    assert server.requests == requests
    with pytest.raises(RuntimeError):
        gate.start()
