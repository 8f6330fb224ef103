"""A real ``meterline serve`` on a fixed clock with one customer its live engine blocked.

The server's clock reads 2026-10-15T12:00Z (``clock_env``); the pricing file gives
``BLOCKED`` a one-credit pool under a balance control that blocks; three calls use it up.
A loopback receiver subscribed to every webhook kind keeps what the server sent, so a
test can check a real signed ``customer.blocked`` webhook. Used by the SDK-in-other-
languages and integration tests (TypeScript, LiteLLM).
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from meterline.api.server import wait_for_health
from tests.conftest import Location, clock_env, clock_now_us, make_keys
from tests.support.ports import free_port

NOW = "2026-10-15T12:00:00Z"
EVENT_TIME = "2026-10-15T11:00:00Z"
BLOCKED = "blocked-customer"
PRICING = f"""\
credit_types:
  - {{key: credits, name: Credits, currency: USD, unit_value: "0.01"}}
meters:
  - {{key: calls, event_type: llm.completion, aggregation: count}}
plans:
  - key: pro
    controls:
      - {{key: empty, policy: balance_exhausted, unit: credits, actions: [block, alert]}}
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {{meter: calls, model: per_unit, unit_amount: "1", credit_type: credits}}
contracts:
  - customer: {BLOCKED}
    plan: pro
    start: 2026-10-01
    credits:
      grants:
        - {{key: pool, credit_type: credits, amount: 1, paid: 1, recurrence: period}}
"""


@dataclass
class Hooks:
    """A loopback receiver answering 200 to every POST, keeping headers and raw bodies."""

    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Served:
    url: str
    keys: dict[str, str]
    hooks: Hooks
    webhook: dict[str, Any] = field(default_factory=dict)
    """The signed ``customer.blocked`` webhook: secret, header, event id, body, "now"."""

    def client(self, scope: str = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[scope]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll ``probe`` until it answers something truthy (synchronization only)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answer := probe():
            return answer
        time.sleep(0.02)
    raise AssertionError(f"{what}: not reached in time")


@contextmanager
def blocked_server(db: Location) -> Iterator[Served]:
    """A server on ``db`` with ``BLOCKED`` blocked (``Served.webhook`` says how)."""
    keys = make_keys(db)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterline",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--webhooks-allow-private",
        ],
        stdout=subprocess.DEVNULL,
        env={**clock_env(NOW), "PYTHONUNBUFFERED": "1"},
    )
    hooks = Hooks()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(process, url)
        served = Served(url, keys, hooks)
        served.webhook = block_customer(served)
        yield served
    finally:
        hooks.close()
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def block_customer(served: Served) -> dict[str, Any]:
    """Apply the pricing, subscribe the receiver, use up BLOCKED's pool; the signed
    ``customer.blocked`` webhook the server sent, with what checks it."""
    with served.client() as admin:
        applied = admin.post(
            "/v1/pricing", content=PRICING.encode(), headers={"content-type": "application/yaml"}
        )
        assert applied.status_code == 200, applied.text
        made = admin.post("/v1/webhooks", json={"url": served.hooks.url, "kinds": ["*"]})
        assert made.status_code == 201, made.text
        calls = [
            {
                "id": f"blocking-{number}",
                "customer": BLOCKED,
                "type": "llm.completion",
                "timestamp": EVENT_TIME,
                "properties": {"model": "small"},
            }
            for number in range(3)
        ]
        stored = admin.post("/v1/events", json=calls)
        assert stored.status_code == 200 and stored.json()["accepted"] == 3, stored.text
        wait_for(
            f"{BLOCKED} denied",
            lambda: admin.get(f"/v1/access/{BLOCKED}").json()["allowed"] is False,
        )
    headers, body = wait_for(
        "the customer.blocked webhook",
        lambda: next(
            (
                (headers, body)
                for headers, body in list(served.hooks.received)
                if headers.get("meterline-event-kind") == "customer.blocked"
            ),
            None,
        ),
    )
    return {
        "secret": made.json()["secret"],
        "header": headers["meterline-signature"],
        "event_id": headers["meterline-event-id"],
        "body_base64": base64.b64encode(body).decode(),
        "now_s": clock_now_us(NOW) // 1_000_000,
    }
