"""The live path end to end over HTTP: a real server process, a real webhook receiver and
the SDK's access gate.

The servers run ``create_app`` (which runs the live engine, the controls and the webhook
dispatcher beside the API) under uvicorn in a child process, on a clock shifted so "now"
is 2026-10-15T12:00Z whatever the date (``test_credits_http``'s launcher). Webhook
signatures carry that clock's seconds, so the receiver checks them against the server's
"now", as a receiver whose clock agrees with the server's would.

One module-wide server holds the pricing below and a receiver subscribed to every kind;
each test there uses customers of its own. The gate and restart tests each have a server
of their own, killed and restarted on the same ledger and port. Every server runs on each
store (a SQLite file, a PostgreSQL schema).

Nothing here waits a fixed time: every wait polls a condition with a deadline. To know
that the engine has *evaluated* a batch (so that "nothing fired" means something), a test
ingests one event for a ``zz-*`` customer afterwards and waits for that customer's
spend-threshold firing: the engine feeds events in ledger order and evaluates the
customers of a cycle in sorted order, so once ``zz-*`` has fired, every earlier batch of
the other customers has been evaluated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterline.clock import system_clock_us
from meterline.core.events import encode_canonical, format_timestamp
from meterline.keys import create_key
from meterline.ledger.event_ledger import open_store
from meterline.live.webhook_service import ALLOW_PRIVATE_ENV
from meterline.sdk.gate import Gate
from meterline.sdk.webhook_signatures import SIGNATURE_HEADER, verify_signature
from tests.conftest import Databases, Location, make_keys
from tests.integration.test_credits_http import _LAUNCHER, shift_clock
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
OLD = "2026-10-10T08:00:00Z"
"""An event time well inside the period and far before any spike window."""
DEADLINE_S = 20.0
JSON = {"content-type": "application/json"}

POOL = 20
"""Credits in each customer's pool; every call costs one."""

CUSTOMERS = (
    "acme",
    "globex",
    "hooli",
    "initech",
    "umbrella",
    "zz-1",
    "zz-2",
    "zz-3",
)


def pricing(customers: tuple[str, ...] = CUSTOMERS) -> str:
    contracts = "".join(
        f"""\
  - customer: {customer}
    plan: pro
    start: 2026-10-01
    credits:
      grants:
        - {{key: pool, credit_type: credits, amount: {POOL}, paid: 1, recurrence: period}}
"""
        for customer in customers
    )
    return f"""\
credit_types:
  - {{key: credits, name: Credits, currency: USD, unit_value: "0.01"}}
meters:
  - {{key: input_tokens, event_type: llm.completion, aggregation: sum,
     property: input_tokens, group_by: [model]}}
  - {{key: calls, event_type: llm.completion, aggregation: count}}
costs:
  - {{meter: input_tokens, per_unit: "0.000001"}}
plans:
  - key: pro
    controls:
      - {{key: empty, policy: balance_exhausted, unit: credits,
         actions: [block, true_up, alert]}}
      - {{key: spike, policy: usage_spike, meter: input_tokens, window: 1m, baseline: 10m,
         factor: 11, minimum: 100000, features: [big], actions: [block, alert]}}
      - {{key: budget, policy: spend_threshold, amount: 2, percents: [50, 100],
         actions: [alert]}}
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {{meter: input_tokens, model: per_unit, unit_amount: "0.00001"}}
          - {{meter: calls, model: per_unit, unit_amount: "1", credit_type: credits}}
contracts:
{contracts}"""


# -- a real webhook receiver ----------------------------------------------------------------


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return next(v for k, v in self.headers.items() if k.lower() == name.lower())


@dataclass
class Receiver:
    """A ThreadingHTTPServer on a free loopback port answering 200 to every POST."""

    hooks: list[Hook] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    receiver.hooks.append(Hook(dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

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


# -- a server that can be killed and started again on the same ledger and port -----------------


@dataclass
class LiveServer:
    db: Location
    port: int
    keys: dict[str, str]
    offset_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(self.db), str(self.port), str(self.offset_file)],
            stdout=subprocess.DEVNULL,
            # the receiver is on 127.0.0.1: a private destination, allowed explicitly
            env={**os.environ, ALLOW_PRIVATE_ENV: "1"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("server did not answer health in time")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM: a graceful shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def client(self, scope: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def now_us(self) -> int:
        """The server's "now" (its clock is the wall clock shifted by the offset file)."""
        wall: int = system_clock_us()
        return wall + int(self.offset_file.read_text())


def launch(db: Location, folder: Path) -> LiveServer:
    """A live server on ``db`` (its clock's offset file in ``folder``), pricing applied."""
    keys = make_keys(db)
    store = open_store(db)
    keys["admin-acme"] = create_key(store, "admin", system_clock_us(), customer="acme")[1]
    store.close()
    offset_file = folder / "server.clock"
    shift_clock(offset_file, NOW)
    server = LiveServer(db, free_port(), keys, offset_file).start()
    with server.client("admin") as admin:
        applied = admin.post("/v1/pricing", content=pricing().encode(), headers=YAML)
        assert applied.status_code == 200, applied.text
    return server


YAML = {"content-type": "application/yaml"}


@dataclass
class Module:
    server: LiveServer
    receiver: Receiver
    secret: str


@pytest.fixture(scope="module")
def live(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Module]:
    receiver = Receiver()
    server: LiveServer | None = None
    try:
        folder = tmp_path_factory.mktemp("live-http")
        server = launch(databases.new(folder, "live"), folder)
        with server.client("admin") as admin:
            made = admin.post("/v1/webhooks", json={"url": receiver.url, "kinds": ["*"]})
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        assert secret.startswith("whsec_")
        yield Module(server, receiver, secret)
    finally:
        if server is not None:
            server.kill()
        receiver.close()


@pytest.fixture
def fresh(new_db: Callable[..., Location], tmp_path: Path) -> Iterator[LiveServer]:
    """A server of the test's own (it may be killed and started again)."""
    server: LiveServer | None = None
    try:
        server = launch(new_db("fresh"), tmp_path)
        yield server
    finally:
        if server is not None:
            server.kill()


# -- helpers ----------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = DEADLINE_S) -> Any:
    """Poll ``probe`` until it returns something truthy (synchronization, not timing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in time (last: {found!r})")
        time.sleep(0.02)


_numbers: dict[str, int] = {}


def calls(
    customer: str,
    count: int,
    tokens: int = 1000,
    model: str = "small",
    timestamp: str = OLD,
) -> list[dict[str, Any]]:
    """``count`` new llm.completion events (each one call: one credit)."""
    first = _numbers.get(customer, 0)
    _numbers[customer] = first + count
    return [
        {
            "id": f"{customer}-{number}",
            "customer": customer,
            "type": "llm.completion",
            "timestamp": timestamp,
            "properties": {"model": model, "input_tokens": tokens},
        }
        for number in range(first, first + count)
    ]


def ingest(server: LiveServer, events: list[dict[str, Any]], scope: str = "ingest") -> None:
    with server.client(scope) as client:
        response = client.post("/v1/events", content=encode_canonical(events), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events), response.text


def access(client: httpx.Client, customer: str, feature: str | None = None) -> dict[str, Any]:
    params = {} if feature is None else {"feature": feature}
    response = client.get(f"/v1/access/{customer}", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def firings(client: httpx.Client, customer: str | None = None) -> list[dict[str, Any]]:
    params = {} if customer is None else {"customer": customer}
    response = client.get("/v1/controls/firings", params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["firings"]
    return rows


def exhaust(server: LiveServer, customer: str) -> dict[str, Any]:
    """Use up the customer's pool (and some) and wait until access is denied."""
    ingest(server, calls(customer, POOL + 5))
    with server.client("read") as reader:
        return wait_for(  # type: ignore[no-any-return]
            f"{customer} denied",
            lambda: (answer := access(reader, customer))["allowed"] is False and answer,
        )


def barrier(server: LiveServer, customer: str) -> None:
    """Wait until everything ingested so far has been evaluated (module docstring)."""
    assert customer.startswith("zz-")
    before = len(firings_of(server, customer, "budget"))
    ingest(server, calls(customer, 1, tokens=100_000))
    wait_for(
        f"barrier {customer}",
        lambda: len(firings_of(server, customer, "budget")) > before,
    )


def firings_of(server: LiveServer, customer: str, policy: str) -> list[dict[str, Any]]:
    with server.client("read") as reader:
        return [f for f in firings(reader, customer) if f["policy"] == policy]


def acted_firings_of(server: LiveServer, customer: str, policy: str) -> list[dict[str, Any]]:
    """The customer's firings of ``policy`` once every action of each has a result on
    record (actions run after the firing commits, some on a thread of their own)."""
    return wait_for(  # type: ignore[no-any-return]
        f"{customer}'s {policy} firings with their results",
        lambda: (
            (rows := firings_of(server, customer, policy))
            and all(None not in f["results"].values() for f in rows)
            and rows
        ),
    )


def hooks_of(receiver: Receiver, kind: str) -> list[Hook]:
    return [h for h in list(receiver.hooks) if h.header("Meterline-Event-Kind") == kind]


def verified(module: Module, hook: Hook) -> dict[str, Any]:
    """The envelope, after checking its signature with the subscription's secret."""
    now_s = module.server.now_us() // 1_000_000
    envelope: dict[str, Any] = verify_signature(
        module.secret, hook.header(SIGNATURE_HEADER), hook.body, now_s=now_s
    )
    assert envelope["id"] == hook.header("Meterline-Event-Id")
    assert envelope["kind"] == hook.header("Meterline-Event-Kind")
    return envelope


def wait_hook(module: Module, kind: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first ``kind`` webhook whose verified envelope ``match``es."""

    def find() -> dict[str, Any] | None:
        for hook in hooks_of(module.receiver, kind):
            envelope = verified(module, hook)
            if match(envelope):
                return envelope
        return None

    return wait_for(f"{kind} webhook", find)  # type: ignore[no-any-return]


def wait_gate(gate: Gate, what: str, condition: Callable[[Gate], bool]) -> None:
    wait_for(f"gate {what}", lambda: condition(gate))


def _initech_at(level: str) -> Callable[[dict[str, Any]], bool]:
    def match(envelope: dict[str, Any]) -> bool:
        return bool(
            envelope["data"]["customer"] == "initech" and envelope["data"]["level"] == level
        )

    return match


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


# -- exhaustion: block, true-up, webhooks -----------------------------------------------------


def test_an_exhausted_pool_blocks_trues_up_and_sends_signed_webhooks(live: Module) -> None:
    server = live.server
    with server.client("read-acme") as own:
        before = access(own, "acme")
        assert before["allowed"] is True and before["policy"] is None
        assert before["remaining"] == {"credits": str(POOL)}

    # ingested with acme's own customer-bound ingest key
    ingest(server, calls("acme", POOL + 5), scope="ingest-acme")
    with server.client("read") as reader:
        denied = wait_for(
            "acme denied", lambda: (a := access(reader, "acme"))["allowed"] is False and a
        )
    assert denied["policy"] == "empty"
    assert "empty" in denied["reason"] and "balance_exhausted" in denied["reason"]
    assert denied["remaining"] == {"credits": "0"}
    # any scope may ask, even an ingest key; a feature is denied too (a whole block)
    with server.client("ingest") as ingester:
        assert access(ingester, "acme", "small")["allowed"] is False
    with server.client("read-acme") as own:
        assert access(own, "acme")["allowed"] is False

    # the firing names its true-up invoice once the background action ran
    with server.client("read") as reader:
        [firing] = wait_for(
            "true-up recorded",
            lambda: [
                f
                for f in firings(reader, "acme")
                if f["policy"] == "empty" and f["results"]["true_up"] is not None
            ],
        )
        assert (firing["kind"], firing["level"], firing["crossing"]) == (
            "balance_exhausted",
            "crossed",
            1,
        )
        assert firing["observed"]["remaining"] == "0" and firing["observed"]["unit"] == "credits"
        assert firing["actions"] == ["block", "true_up", "alert"]
        assert firing["results"]["block"] == {"blocked": True}
        invoice_id = firing["results"]["true_up"]["invoice"]
        assert invoice_id and invoice_id.startswith("INV-")
        assert firing["firing"] in denied["reason"]
        listed = reader.get("/v1/customers/acme/invoices").json()["invoices"]
        assert [(row["id"], row["kind"]) for row in listed] == [(invoice_id, "threshold")]
        document = reader.get(f"/v1/invoices/{invoice_id}").json()["invoice"]
        assert document["control"] == firing["firing"]
        assert document["status"] == "finalized" and Decimal(document["total"]) > 0
        live_figures = reader.get("/v1/live/acme").json()
        assert live_figures["remaining"] == {"credits": "0"}
        assert live_figures["access"]["allowed"] is False

    # webhooks: signed with the secret the subscription returned
    fired = wait_hook(live, "control.fired", lambda e: e["data"]["firing"] == firing["firing"])
    assert fired["data"]["customer"] == "acme" and fired["data"]["policy"] == "empty"
    assert fired["id"] == f"control.fired:{firing['firing']}"
    blocked = wait_hook(live, "customer.blocked", lambda e: e["data"]["firing"] == firing["firing"])
    assert blocked["data"]["customer"] == "acme" and blocked["data"]["features"] == []
    assert blocked["data"]["policy"] == "empty"
    finalized = wait_hook(live, "invoice.finalized", lambda e: e["data"]["invoice"] == invoice_id)
    assert finalized["data"] == {
        "invoice": invoice_id,
        "customer": "acme",
        "kind": "true_up",
        "control": firing["firing"],
    }
    # a wrong secret is refused
    hook = hooks_of(live.receiver, "control.fired")[0]
    with pytest.raises(ValueError, match="signature mismatch"):
        verify_signature(
            "whsec_not-this-one",
            hook.header(SIGNATURE_HEADER),
            hook.body,
            now_s=server.now_us() // 1_000_000,
        )


def test_a_spike_blocks_only_its_features(live: Module) -> None:
    server = live.server
    recent = format_timestamp(server.now_us() - 1_000_000)
    # below the minimum (100,000 in the window) first, then past it
    ingest(server, calls("globex", 1, tokens=60_000, model="big", timestamp=recent))
    ingest(server, calls("globex", 1, tokens=60_000, model="big", timestamp=recent))
    with server.client("read") as reader:
        denied = wait_for(
            "globex big denied",
            lambda: (a := access(reader, "globex", "big"))["allowed"] is False and a,
        )
        assert denied["policy"] == "spike" and "usage_spike" in denied["reason"]
        assert access(reader, "globex")["allowed"] is True
        assert access(reader, "globex", "small")["allowed"] is True
        [spike] = [f for f in firings(reader, "globex") if f["policy"] == "spike"]
    # nothing fired at 60,000: the one crossing saw both events in the window
    assert spike["observed"]["window"] == "120000"
    assert spike["observed"]["minimum"] == "100000"
    blocked = wait_hook(live, "customer.blocked", lambda e: e["data"]["firing"] == spike["firing"])
    assert blocked["data"]["features"] == ["big"]


def test_a_spend_threshold_alerts_once_per_level(live: Module) -> None:
    server = live.server
    ingest(server, calls("initech", 1, tokens=100_000))  # 1.00 + 1 credit: past 50% of 2
    first = wait_for("50%", lambda: firings_of(server, "initech", "budget"))
    assert [f["level"] for f in first] == ["50%"]
    ingest(server, calls("initech", 1, tokens=100_000))  # 2.02: past 100%
    wait_for("100%", lambda: len(firings_of(server, "initech", "budget")) == 2)
    both = acted_firings_of(server, "initech", "budget")
    assert [(f["level"], f["crossing"]) for f in both] == [("50%", 1), ("100%", 1)]
    assert both[1]["observed"] == {"spend": "2.02000", "threshold": "2"}
    ingest(server, calls("initech", 1, tokens=100_000))  # still past both: nothing new
    barrier(server, "zz-1")
    assert firings_of(server, "initech", "budget") == both
    for level in ("50%", "100%"):
        alert = wait_hook(live, "control.fired", _initech_at(level))
        assert alert["data"]["policy"] == "budget" and alert["data"]["kind"] == "spend_threshold"
    sent = [verified(live, h)["id"] for h in hooks_of(live.receiver, "control.fired")]
    assert len([i for i in sent if i.split(":")[1] in {f["firing"] for f in both}]) == 2


# -- tenancy, scopes and bad overrides --------------------------------------------------------


def test_a_customer_bound_key_sees_only_its_own_customer(live: Module) -> None:
    server = live.server
    with server.client("admin") as admin:
        overrides_before = admin.get("/v1/customers/umbrella/overrides").json()
    with server.client("read-acme") as own:
        assert access(own, "acme")["customer"] == "acme"
        hidden = error_of(own.get("/v1/access/umbrella"), 404, "not_found")
        missing = error_of(own.get("/v1/access/nobody"), 404, "not_found")
        assert hidden["message"].replace("umbrella", "nobody") == missing["message"]
        error_of(own.get("/v1/live/umbrella"), 404, "not_found")
        error_of(own.get("/v1/customers/umbrella/overrides"), 404, "not_found")
        # a read key, bound or not, never posts an override
        body = {"kind": "unblock", "reason": "x"}
        error_of(own.post("/v1/customers/umbrella/overrides", json=body), 403, "forbidden")
        error_of(own.post("/v1/customers/acme/overrides", json=body), 403, "forbidden")
        # only its own customer's firings
        assert {f["customer"] for f in firings(own)} <= {"acme"}
    with server.client("read") as reader:
        body = {"kind": "unblock", "reason": "x"}
        error_of(reader.post("/v1/customers/umbrella/overrides", json=body), 403, "forbidden")
    with server.client("admin-acme") as bound_admin:
        body = {"kind": "unblock", "reason": "x"}
        error_of(bound_admin.post("/v1/customers/umbrella/overrides", json=body), 404, "not_found")
        # its own customer it may act on (budget only alerts: acme's tests are unaffected)
        made = bound_admin.post(
            "/v1/customers/acme/overrides",
            json={"kind": "extend", "policy": "budget", "amount": "0.5", "reason": "self-serve"},
        )
        assert made.status_code == 201, made.text
        assert made.json()["actor"].startswith("key ") and made.json()["customer"] == "acme"
    with server.client(None) as anonymous:
        error_of(anonymous.get("/v1/access/umbrella"), 401, "unauthorized")
        error_of(anonymous.get("/v1/access/stream"), 401, "unauthorized")
    with server.client("admin") as admin:
        assert admin.get("/v1/customers/umbrella/overrides").json() == overrides_before
        # a customer without a contract has no restriction
        free = access(admin, "nobody")
        assert free["allowed"] is True and free["remaining"] == {}


def test_bad_override_bodies_are_refused_naming_the_field(live: Module) -> None:
    url = "/v1/customers/umbrella/overrides"
    with live.server.client("admin") as admin:
        before = admin.get(url).json()
        for body, field_name in (
            ({"kind": "pause", "reason": "x"}, "kind"),
            ({"kind": "unblock"}, "reason"),
            ({"kind": "unblock", "reason": "  "}, "reason"),
            ({"kind": "extend", "reason": "x", "policy": "empty"}, "amount"),
            ({"kind": "extend", "reason": "x", "policy": "empty", "amount": "abc"}, "amount"),
            ({"kind": "extend", "reason": "x", "policy": "empty", "amount": "-5"}, "amount"),
            ({"kind": "extend", "reason": "x", "policy": "nope", "amount": "5"}, "policy"),
            ({"kind": "unblock", "reason": "x", "policy": "nope"}, "policy"),
            ({"kind": "grant", "reason": "x", "amount": "5"}, "credit_type"),
            ({"kind": "grant", "reason": "x", "amount": "5", "credit_type": "gold"}, "gold"),
            ({"kind": "unblock", "reason": "x", "why": "y"}, "why"),
        ):
            response = admin.post(url, json=body)
            assert 400 <= response.status_code < 500, (body, response.text)
            assert field_name in response.json()["error"]["message"], (body, response.text)
        error_of(
            admin.post("/v1/customers/nobody/overrides", json={"kind": "unblock", "reason": "x"}),
            422,
            "invalid_input",
        )
        response = admin.post(url, content=b"{", headers=JSON)
        error_of(response, 400, "malformed_json")
        assert admin.get(url).json() == before  # nothing was recorded


# -- overrides --------------------------------------------------------------------------------


def test_an_unblock_override_lifts_the_block_and_is_recorded(live: Module) -> None:
    server = live.server
    denied = exhaust(server, "hooli")
    assert denied["policy"] == "empty"
    with server.client("admin") as admin:
        made = admin.post(
            "/v1/customers/hooli/overrides",
            json={"kind": "unblock", "reason": "ticket 42: paid by wire"},
        )
        assert made.status_code == 201, made.text
        record = made.json()
        assert (record["customer"], record["kind"], record["reason"]) == (
            "hooli",
            "unblock",
            "ticket 42: paid by wire",
        )
        assert record["actor"].startswith("key ") and record["override"]
        answer = access(admin, "hooli")
        assert answer["allowed"] is True, answer
        assert answer["remaining"] == {"credits": "0"}  # still exhausted, but unblocked
        listed = admin.get("/v1/customers/hooli/overrides").json()["overrides"]
        assert listed == [record]
    unblocked = wait_hook(live, "customer.unblocked", lambda e: e["data"]["customer"] == "hooli")
    assert unblocked["data"]["policies"] == ["empty"]
    assert "ticket 42" in unblocked["data"]["reason"]
    # the event id names the override, so a later unblock (even after a restart) is a
    # new event, never a repeat the webhook log would drop
    assert unblocked["id"] == f"customer.unblocked:hooli:{record['override']}"

    # more usage while still exhausted: the crossing already fired, so no new block
    ingest(server, calls("hooli", 3))
    barrier(server, "zz-2")
    assert len(firings_of(server, "hooli", "empty")) == 1
    with server.client("read") as reader:
        assert access(reader, "hooli")["allowed"] is True


def test_extend_and_grant_overrides(live: Module) -> None:
    server = live.server
    with server.client("admin") as admin:
        extended = admin.post(
            "/v1/customers/umbrella/overrides",
            json={"kind": "extend", "policy": "budget", "amount": "1.5", "reason": "pilot"},
        )
        assert extended.status_code == 201, extended.text
        assert (extended.json()["policy"], extended.json()["amount"]) == ("budget", "1.5")
        granted = admin.post(
            "/v1/customers/umbrella/overrides",
            json={"kind": "grant", "credit_type": "credits", "amount": "30", "reason": "goodwill"},
        )
        assert granted.status_code == 201, granted.text
        assert granted.json()["grant"].startswith("G-") and granted.json()["invoice"] is None
        wait_for(
            "granted credits counted",
            lambda: access(admin, "umbrella")["remaining"] == {"credits": str(POOL + 30)},
        )
        listed = admin.get("/v1/customers/umbrella/overrides").json()["overrides"]
        kinds = [o["kind"] for o in listed]
        assert kinds == ["extend", "grant"]
    # 1.00 + 1 credit is 50% of 2 but not of 2 + 1.5
    ingest(server, calls("umbrella", 1, tokens=100_000))
    barrier(server, "zz-3")
    assert firings_of(server, "umbrella", "budget") == []


# -- the SDK's gate against a real server ------------------------------------------------------


def test_the_gate_follows_the_server_through_a_kill_and_a_restart(fresh: LiveServer) -> None:
    options: dict[str, Any] = {"reconnect_delay_s": 0.05, "reconnect_delay_max_s": 0.5}
    closed = Gate(fresh.url, fresh.keys["read"], fail_mode="closed", **options)
    opened = Gate(fresh.url, fresh.keys["read-acme"], fail_mode="open", **options)
    try:
        closed.start(wait_s=DEADLINE_S)
        opened.start(wait_s=DEADLINE_S)
        assert closed.status == opened.status == "live", (closed.last_error, opened.last_error)
        with fresh.client("read") as reader:
            for customer in ("acme", "globex", "nobody"):
                assert closed.allowed(customer) is access(reader, customer)["allowed"] is True
            assert closed.check("acme").remaining == {"credits": Decimal(POOL)}

        # a block made by ingest reaches both gates over the stream
        exhaust(fresh, "acme")
        for gate in (closed, opened):
            wait_gate(gate, "sees the block", lambda g: not g.allowed("acme"))
            answer = gate.check("acme", "small")
            assert (answer.allowed, answer.source, answer.policy) == (False, "stream", "empty")
            assert "empty" in answer.reason
            assert answer.remaining == {"credits": Decimal(0)}
        assert closed.allowed("globex") is True
        with fresh.client("read") as reader:
            assert access(reader, "acme")["allowed"] is closed.allowed("acme") is False

        # the server dies: each gate answers by its fail mode
        fresh.kill()
        for gate in (closed, opened):
            wait_gate(gate, "lost", lambda g: g.status == "lost")
            assert gate.lost_since is not None and gate.last_error
        assert closed.allowed("globex") is False and closed.allowed("acme") is False
        assert closed.check("globex").source == "fail-closed"
        assert "failing closed" in closed.check("globex").reason
        assert opened.allowed("acme") is True
        assert opened.check("acme").source == "fail-open"

        # a new server on the same ledger and port: the block is rebuilt from the records
        fresh.start()
        for gate in (closed, opened):
            wait_gate(gate, "live again", lambda g: g.status == "live")
            assert gate.allowed("acme") is False
            answer = gate.check("acme")
            assert (answer.source, answer.policy) == ("stream", "empty")
        assert closed.allowed("globex") is True
        # the customer-bound key's stream names only its own customer
        assert opened.allowed("globex") is True
        assert opened.check("globex").reason == "no restriction"
        with fresh.client("read") as reader:
            assert access(reader, "acme")["allowed"] is False
            assert access(reader, "globex")["allowed"] is True
    finally:
        closed.close()
        opened.close()
    assert (closed.status, opened.status) == ("closed", "closed")


def test_each_crossing_fires_once_across_restarts(fresh: LiveServer) -> None:
    exhaust(fresh, "acme")
    ingest(fresh, calls("initech", 1, tokens=100_000))  # 50% of the budget
    with fresh.client("read") as reader:
        before = wait_for(
            "actions done",
            lambda: (
                (rows := firings(reader))
                and len(rows) == 2
                and all(r is not None for f in rows for r in f["results"].values())
                and rows
            ),
        )
        invoices = reader.get("/v1/customers/acme/invoices").json()["invoices"]
    assert [(f["customer"], f["policy"], f["level"]) for f in before] == [
        ("acme", "empty", "crossed"),
        ("initech", "budget", "50%"),
    ]
    assert len(invoices) == 1

    for stop in (fresh.stop, fresh.kill):  # a graceful restart, then a crash
        stop()
        fresh.start()
        with fresh.client("read") as reader:
            assert access(reader, "acme")["allowed"] is False
            assert firings(reader) == before
            assert reader.get("/v1/customers/acme/invoices").json()["invoices"] == invoices

    # still exhausted, still past 50%: more usage fires nothing new
    ingest(fresh, calls("acme", 5))
    ingest(fresh, calls("initech", 1, tokens=10))
    barrier(fresh, "zz-1")
    with fresh.client("read") as reader:
        after = firings(reader)
        assert [f for f in after if f["customer"] != "zz-1"] == before
        assert access(reader, "acme")["allowed"] is False
        assert reader.get("/v1/customers/acme/invoices").json()["invoices"] == invoices
    keys = [(f["customer"], f["policy"], f["level"], f["crossing"]) for f in after]
    assert len(keys) == len(set(keys))


def test_the_live_routes_are_in_the_openapi_document(live: Module) -> None:
    paths = httpx.get(f"{live.server.url}/openapi.json", timeout=30).json()["paths"]
    for path, method in (
        ("/v1/access/{customer}", "get"),
        ("/v1/access/stream", "get"),
        ("/v1/live/{customer}", "get"),
        ("/v1/controls/firings", "get"),
        ("/v1/customers/{customer}/overrides", "post"),
        ("/v1/customers/{customer}/overrides", "get"),
    ):
        assert paths[path][method]["summary"], (path, method)
