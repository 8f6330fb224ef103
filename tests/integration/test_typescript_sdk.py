"""The TypeScript SDK (sdks/typescript) under Node against a real ``meterline serve``.

One server on a clock fixed at 2026-10-15T12:00Z (``clock_env``), with a pricing file
whose balance control blocks a customer who used up a one-credit pool; a real webhook
receiver captures the server's signed ``customer.blocked`` webhook. Then ``npm ci``,
``npm run build`` and ``node --test`` run the package's own tests (client, gate, webhook
signatures, the CommonJS build) against that server, and this side checks through the
API that every event the Node tests meant to store is stored exactly once, the resent
batch included. Node and npm are required: missing, the test fails saying so.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterline.api.server import free_port, wait_for_health
from tests.conftest import Location, clock_env, clock_now_us, make_keys

pytestmark = pytest.mark.slow

PACKAGE = Path(__file__).resolve().parents[2] / "sdks" / "typescript"
NOW = "2026-10-15T12:00:00Z"
EVENT_TIME = "2026-10-15T11:00:00Z"
BLOCKED = "ts-blocked"
NODE_TIMEOUT_S = 120
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


@pytest.fixture
def served(new_db: Callable[..., Location]) -> Iterator[Served]:
    db = new_db("typescript")
    keys = make_keys(db)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "meterline", "serve", "--db", str(db), "--port", str(port)]
        + ["--webhooks-allow-private"],
        stdout=subprocess.DEVNULL,
        env={**clock_env(NOW), "PYTHONUNBUFFERED": "1"},
    )
    hooks = Hooks()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(process, url)
        yield Served(url, keys, hooks)
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


def npm(arguments: list[str], environment: dict[str, str]) -> str:
    """Run ``npm ARGUMENTS`` in the package; its output, or a failure showing it."""
    found = shutil.which("npm")
    if found is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed for the TypeScript SDK tests (Node 20 or later)")
    done = subprocess.run(
        [found, *arguments],
        cwd=PACKAGE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"npm {' '.join(arguments)} failed:\n{output}"
    return output


@pytest.fixture(scope="module")
def built() -> None:
    """``npm ci`` and ``npm run build``, once for both stores' runs."""
    npm(["ci", "--no-progress"], quiet_npm())
    npm(["run", "build"], quiet_npm())


def quiet_npm() -> dict[str, str]:
    return {
        **os.environ,
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_update_notifier": "false",
    }


def stored_ids(served: Served, prefix: str) -> Counter[str]:
    """How many times each stored event id starting with ``prefix`` appears."""
    counts: Counter[str] = Counter()
    after = 0
    with served.client("read") as reader:
        while True:
            page = reader.get("/v1/events", params={"limit": 1000, "after": after}).json()
            counts.update(e["id"] for e in page["events"] if e["id"].startswith(prefix))
            if page["next_after"] is None:
                return counts
            after = page["next_after"]


def test_the_typescript_sdk_under_node_against_a_running_server(
    built: None, served: Served, tmp_path: Path
) -> None:
    """npm ci, build and node --test pass against the server; every event is stored once."""
    webhook_file = tmp_path / "webhook.json"
    webhook_file.write_text(json.dumps(block_customer(served)))
    run = f"ts-{uuid.uuid4().hex[:8]}"
    environment = {
        **quiet_npm(),
        "METERLINE_URL": served.url,
        "METERLINE_INGEST_KEY": served.keys["ingest"],
        "METERLINE_ADMIN_KEY": served.keys["admin"],
        "METERLINE_RUN": run,
        "METERLINE_EVENT_TIME": EVENT_TIME,
        "METERLINE_BLOCKED_CUSTOMER": BLOCKED,
        "METERLINE_WEBHOOK_FILE": str(webhook_file),
    }
    output = npm(["test"], environment)
    assert "# fail 0" in output and "# pass " in output, output

    counts = stored_ids(served, run)
    expected = {f"{run}-plain-{n}" for n in range(25)} | {f"{run}-retried-{n}" for n in range(5)}
    expected |= {f"{run}-good", f"{run}-conflict"}
    assert set(counts) == expected, sorted(set(counts) ^ expected)
    assert set(counts.values()) == {1}, counts
    # the conflicting resend left the first content in place
    with served.client("read") as reader:
        page = reader.get("/v1/events", params={"limit": 1000}).json()
    first = next(e for e in page["events"] if e["id"] == f"{run}-conflict")
    assert first["properties"]["input_tokens"] == 1001
