"""A small real ledger, a real ``meterline serve`` over it, and the system Chromium. The
ledger is built on each store (a SQLite file, a PostgreSQL schema), so every dashboard
test runs on both.

The ledger is built relative to the wall clock (the server runs on it): three customers
on a Pro plan since the first day of last month, usage in last month (closed into
invoices) and in this month so far (the live period):

- ``acme``: mostly a cheap model, some credits used: a healthy margin;
- ``globex``: uses more credits than its pool holds this month, so the plan's
  ``pool-empty`` control blocks it when the live engine starts;
- ``initech``: a negotiated low price on an expensive model: a negative margin.

Keys: ``admin``, ``read``, ``ingest`` (no read scope) and ``read-acme`` (bound to acme).

The browser is the system Chromium driven by Playwright, never a downloaded one. Under
``CI=true`` a missing Chromium fails the tests; elsewhere they are skipped with a reason.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterline.api.server import spawn_server
from meterline.billing.service import Billing
from meterline.clock import system_clock_us
from meterline.core.events import format_timestamp
from meterline.keys import create_key
from meterline.ledger import open_ledger
from meterline.ledger.billing_records import BillingStore
from tests.conftest import Databases, Location

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
DEADLINE_S = 30.0
CUSTOMERS = ("acme", "globex", "initech")
POOL = 20
"""Credits in globex's pool per period; each tool call costs one."""


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def pricing(start: datetime) -> str:
    """The pricing file: costs per model, a credit pool per customer, a blocking control."""
    return f"""\
credit_types:
  - {{key: credits, name: Credits, currency: USD, unit_value: "0.01"}}
meters:
  - {{key: input_tokens, event_type: llm.completion, aggregation: sum, property: input_tokens,
     group_by: [model], product: chat}}
  - {{key: tool_calls, event_type: tool.call, aggregation: count, product: agents}}
costs:
  - {{meter: input_tokens, where: {{model: large}}, per_unit: "0.00004"}}
  - {{meter: input_tokens, per_unit: "0.000002"}}
  - {{meter: tool_calls, per_unit: "0.002"}}
plans:
  - key: pro
    name: Pro
    controls:
      - {{key: pool-empty, policy: balance_exhausted, unit: credits, actions: [block, alert]}}
    versions:
      - version: 1
        effective_from: 2020-01-01
        currency: USD
        fees:
          - {{key: platform, name: Platform fee, amount: "30.00", timing: advance}}
        prices:
          - {{meter: input_tokens, model: per_unit, unit_amount: "0.00001"}}
          - {{meter: tool_calls, model: per_unit, unit_amount: "1", credit_type: credits}}
contracts:
  - customer: acme
    plan: pro
    start: {start:%Y-%m-%d}
    credits:
      grants:
        - {{key: pool, credit_type: credits, amount: 500, paid: "4.50", recurrence: period}}
  - customer: globex
    plan: pro
    start: {start:%Y-%m-%d}
    credits:
      grants:
        - {{key: pool, credit_type: credits, amount: {POOL}, paid: "0.18", recurrence: period}}
  - customer: initech
    plan: pro
    start: {start:%Y-%m-%d}
    overrides:
      prices: [{{meter: input_tokens, model: per_unit, unit_amount: "0.000001"}}]
"""


def spread(
    customer: str,
    kind: str,
    start: datetime,
    end: datetime,
    count: int,
    model: str = "small",
    tokens: int = 1000,
) -> list[dict[str, Any]]:
    """``count`` events evenly inside (start, end): tool calls or completions."""
    step = (end - start) / (count + 1)
    events = []
    for number in range(count):
        moment = start + step * (number + 1)
        event: dict[str, Any] = {
            "id": f"{customer}-{kind}-{model}-{start:%Y%m}-{number}",
            "customer": customer,
            "timestamp": format_timestamp(int(moment.timestamp() * 1_000_000)),
        }
        if kind == "call":
            event.update(type="tool.call", properties={"agent": "a1"})
        else:
            event.update(
                type="llm.completion",
                properties={"model": model, "input_tokens": tokens + number},
            )
        events.append(event)
    return events


@dataclass
class Served:
    """The running server, its keys and what the test ledger holds."""

    url: str
    db: Location
    process: subprocess.Popen[bytes]
    keys: dict[str, str]
    invoices: dict[str, str] = field(default_factory=dict)
    """Each customer's invoice id for last month."""

    def api(self, scope: str = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[scope]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def build_ledger(db: Location) -> tuple[dict[str, str], dict[str, str]]:
    """The ledger described above; returns the keys and last month's invoice ids."""
    now = datetime.now(UTC)
    current = month_start(now)
    previous = month_start(current - timedelta(days=1))
    with open_ledger(db) as ledger:
        billing = Billing(ledger, BillingStore(db), clock=ledger.clock)
        try:
            billing.apply(pricing(previous))
            events = []
            for start, end in ((previous, current), (current, now)):
                events += spread("acme", "llm", start, end, 40)
                events += spread("acme", "llm", start, end, 10, model="large", tokens=500)
                events += spread("acme", "call", start, end, 8)
                events += spread("globex", "llm", start, end, 15)
                events += spread("initech", "llm", start, end, 30, model="large", tokens=100_000)
            events += spread("globex", "call", previous, current, 5)
            events += spread("globex", "call", current, now, POOL + 5)
            outcome = ledger.ingest(events)
            assert outcome.accepted == len(events), outcome
            invoices = {stored.customer: stored.invoice_id for stored in billing.close()}
        finally:
            billing.store.close()
        assert set(invoices) == set(CUSTOMERS), invoices
        clock = system_clock_us()
        store = ledger.store
        keys = {
            scope: create_key(store, scope, clock, name=f"dashboard {scope}")[1]
            for scope in ("admin", "read", "ingest")
        }
        keys["read-acme"] = create_key(store, "read", clock, customer="acme")[1]
    return keys, invoices


def wait_for(what: str, condition: Callable[[], Any]) -> Any:
    """Poll ``condition`` until it answers something true, or fail naming ``what``."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        answer = condition()
        if answer:
            return answer
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def served(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``meterline serve`` on loopback over the test ledger; always stopped afterwards."""
    db = databases.new(tmp_path_factory.mktemp("dashboard"), "dashboard")
    keys, invoices = build_ledger(db)
    process, url = spawn_server(db)
    running = Served(url, db, process, keys, invoices)
    try:
        assert url.startswith("http://127.0.0.1:"), url
        with running.api("read") as reader:
            wait_for(
                "globex blocked by the live engine",
                lambda: reader.get("/v1/access/globex").json()["allowed"] is False,
            )
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """The system Chromium under Playwright (sync API), headless."""
    if not CHROMIUM.exists():
        # never skipped: a missing browser is a setup error (.ci/run installs it); leave
        # these tests out on purpose with -m "not browser"
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install chromium (the browser tests never"
            ' download one), or run pytest -m "not browser"'
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
