"""Outgoing webhooks end to end, against a real HTTP receiver on 127.0.0.1.

Time is an injected clock stepped by the test (``deliver_due(now_us=...)``), so retry
delays are checked against the policy without sleeping; only the dispatcher test waits,
boundedly, for its background thread. The receiver is on loopback, a private destination,
so every service here allows private addresses explicitly (``allow_private=True``, and
the ``allow_private`` fixture for the CLI); their refusal is tested in
``test_webhook_destinations``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from meterline.api import webhook_routes
from meterline.api.failures import meterline_error
from meterline.cli.webhooks import webhooks_app
from meterline.errors import MeterlineError
from meterline.keys import Principal
from meterline.ledger.database import database_errors
from meterline.ledger.event_ledger import open_store
from meterline.ledger.webhook_records import WebhookStore
from meterline.live.webhook_service import (
    ALLOW_PRIVATE_ENV,
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    KIND_HEADER,
    SIGNATURE_HEADER,
    Dispatcher,
    EndpointDisabled,
    RetryPolicy,
    WebhookError,
    Webhooks,
)
from meterline.sdk.webhook_signatures import verify_signature
from tests.conftest import FIXED_NOW_US, Location
from tests.stores import rows
from tests.support.ports import free_port

SECOND_US = 1_000_000


# -- a real receiver and a stepping clock ---------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A ThreadingHTTPServer on a free loopback port answering scripted status codes
    (then ``default``), recording every request."""

    codes: list[int] = field(default_factory=list)
    default: int = 200
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    code = receiver.codes.pop(0) if receiver.codes else receiver.default
                self.send_response(code)
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


class SteppingClock:
    """A clock the test moves by hand."""

    def __init__(self, now_us: int = FIXED_NOW_US) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def store(new_db: Callable[..., Location]) -> Iterator[WebhookStore]:
    opened = WebhookStore(new_db())
    yield opened
    opened.close()


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
def webhooks(store: WebhookStore, clock: SteppingClock) -> Webhooks:
    return Webhooks(store, clock, allow_private=True)


@pytest.fixture
def allow_private(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands in this process may send webhooks to the loopback receiver."""
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as opened:
        yield opened


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hooks"


# -- delivery, retries, the log ---------------------------------------------------------------


def test_retries_until_delivered_with_one_event_id_and_valid_signatures(
    webhooks: Webhooks, receiver: Receiver, client: httpx.Client
) -> None:
    """500, 500, 200: three attempts on the policy's schedule, each signed and numbered,
    all with the same event id and body, and a log of the status codes."""
    receiver.codes = [500, 500]
    endpoint, secret = webhooks.subscribe(receiver.url, ["balance.low"])
    [delivery_id] = webhooks.publish("balance.low", {"customer": "acme"}, "evt-1")
    policy = webhooks.policy
    first = FIXED_NOW_US
    second = first + policy.delay_after(1)
    third = second + policy.delay_after(2)

    assert webhooks.deliver_due(now_us=first, client=client) == 1
    assert webhooks.delivery(delivery_id).next_attempt_at_us == second
    assert webhooks.deliver_due(now_us=second - 1, client=client) == 0
    assert webhooks.deliver_due(now_us=second, client=client) == 1
    assert webhooks.deliver_due(now_us=third - 1, client=client) == 0
    assert webhooks.deliver_due(now_us=third, client=client) == 1
    assert webhooks.deliver_due(now_us=third + 3600 * SECOND_US, client=client) == 0

    assert [request.headers[ATTEMPT_HEADER] for request in receiver.requests] == ["1", "2", "3"]
    assert {request.headers[EVENT_ID_HEADER] for request in receiver.requests} == {"evt-1"}
    assert {request.headers[KIND_HEADER] for request in receiver.requests} == {"balance.low"}
    stored = webhooks.delivery(delivery_id)
    for request, sent_at in zip(receiver.requests, (first, second, third), strict=True):
        assert request.path == "/hooks"
        assert request.headers["Content-Type"] == "application/json"
        assert request.body == stored.body
        envelope = verify_signature(
            secret, request.headers[SIGNATURE_HEADER], request.body, now_s=sent_at // SECOND_US
        )
        assert envelope == {
            "id": "evt-1",
            "kind": "balance.low",
            "created": "2026-11-23T12:00:00Z",
            "data": {"customer": "acme"},
        }
    assert stored.status == "delivered"
    assert stored.delivered_at_us == third
    assert stored.attempts == 3
    log = webhooks.attempts(delivery_id)
    assert [(a.attempt_number, a.at_us, a.status_code) for a in log] == [
        (1, first, 500),
        (2, second, 500),
        (3, third, 200),
    ]
    assert [a.error for a in log] == ["HTTP 500", "HTTP 500", None]
    assert webhooks.deliveries(endpoint.endpoint_id, "delivered") == [stored]


def test_an_unreachable_receiver_fails_after_attempts_max(
    webhooks: Webhooks, client: httpx.Client
) -> None:
    """Connection refused every time: attempts_max attempts on the schedule, then failed."""
    webhooks.subscribe(closed_url(), ["*"])
    [delivery_id] = webhooks.publish("customer.blocked", {"customer": "acme"}, "evt-1")
    made = 0
    delivery = webhooks.delivery(delivery_id)
    while delivery.status == "pending":
        assert delivery.next_attempt_at_us is not None
        made += webhooks.deliver_due(now_us=delivery.next_attempt_at_us, client=client)
        delivery = webhooks.delivery(delivery_id)
    policy = webhooks.policy
    assert made == policy.attempts_max == 8
    assert delivery.status == "failed"
    assert delivery.next_attempt_at_us is None
    log = webhooks.attempts(delivery_id)
    assert [attempt.attempt_number for attempt in log] == list(range(1, 9))
    assert all(attempt.status_code is None and attempt.error for attempt in log)
    assert "Connect" in (log[0].error or "")
    gaps = [later.at_us - earlier.at_us for earlier, later in itertools.pairwise(log)]
    assert gaps == [policy.delay_after(number) for number in range(1, 8)]
    assert webhooks.deliver_due(now_us=log[-1].at_us + 3600 * SECOND_US, client=client) == 0


def test_publishing_one_event_twice_makes_one_delivery(
    webhooks: Webhooks, receiver: Receiver, client: httpx.Client, clock: SteppingClock
) -> None:
    """The event id is the idempotency key: a repeat returns the same delivery."""
    webhooks.subscribe(receiver.url, ["invoice.finalized"])
    first = webhooks.publish("invoice.finalized", {"invoice": "INV-000001"}, "evt-9")
    clock.now_us += SECOND_US
    again = webhooks.publish("invoice.finalized", {"invoice": "INV-000001"}, "evt-9")
    assert first == again
    assert len(webhooks.deliveries()) == 1
    assert webhooks.deliver_due(client=client) == 1
    assert webhooks.publish("invoice.finalized", {"invoice": "INV-000001"}, "evt-9") == first
    assert webhooks.deliver_due(client=client) == 0
    assert len(receiver.requests) == 1


def test_a_disabled_endpoint_gets_nothing(
    webhooks: Webhooks, receiver: Receiver, client: httpx.Client
) -> None:
    """Disabling fails the endpoint's pending deliveries and stops new ones."""
    kept, _ = webhooks.subscribe(receiver.url + "/kept", ["*"])
    dropped, _ = webhooks.subscribe(receiver.url + "/dropped", ["*"])
    pending = webhooks.publish("balance.low", {}, "evt-1")
    assert len(pending) == 2
    disabled = webhooks.disable(dropped.endpoint_id)
    assert not disabled.enabled
    assert webhooks.disable(dropped.endpoint_id) == disabled
    [only] = webhooks.publish("balance.low", {}, "evt-2")
    assert webhooks.delivery(only).endpoint_id == kept.endpoint_id
    assert webhooks.deliver_due(client=client) == 2
    assert {request.path for request in receiver.requests} == {"/hooks/kept"}
    [failed] = webhooks.deliveries(dropped.endpoint_id)
    assert (failed.status, failed.last_error) == ("failed", "endpoint disabled")
    with pytest.raises(EndpointDisabled):
        webhooks.redeliver(failed.delivery_id)


def test_kinds_filter_what_an_endpoint_receives(
    webhooks: Webhooks, receiver: Receiver, client: httpx.Client
) -> None:
    """An endpoint gets the kinds it names; '*' gets every kind."""
    invoices, _ = webhooks.subscribe(receiver.url + "/invoices", ["invoice.finalized"])
    everything, _ = webhooks.subscribe(receiver.url + "/all", ["*"])
    access, _ = webhooks.subscribe(
        receiver.url + "/access", ["customer.blocked", "customer.unblocked"]
    )
    assert len(webhooks.publish("balance.low", {}, "evt-1")) == 1
    assert len(webhooks.publish("customer.blocked", {}, "evt-2")) == 2
    assert len(webhooks.publish("invoice.finalized", {}, "evt-3")) == 2
    webhooks.deliver_due(client=client)
    received = sorted((request.path, request.headers[KIND_HEADER]) for request in receiver.requests)
    assert received == [
        ("/hooks/access", "customer.blocked"),
        ("/hooks/all", "balance.low"),
        ("/hooks/all", "customer.blocked"),
        ("/hooks/all", "invoice.finalized"),
        ("/hooks/invoices", "invoice.finalized"),
    ]
    assert len(webhooks.deliveries(access.endpoint_id)) == 1
    assert len(webhooks.deliveries(everything.endpoint_id)) == 3
    assert len(webhooks.deliveries(invoices.endpoint_id)) == 1


def test_one_endpoint_receives_in_creation_order(
    webhooks: Webhooks, receiver: Receiver, client: httpx.Client
) -> None:
    """A later delivery waits while an earlier one of the same endpoint retries."""
    receiver.codes = [503]
    webhooks.subscribe(receiver.url, ["customer.blocked", "customer.unblocked"])
    webhooks.publish("customer.blocked", {"customer": "acme"}, "evt-1")
    webhooks.publish("customer.unblocked", {"customer": "acme"}, "evt-2")
    assert webhooks.deliver_due(now_us=FIXED_NOW_US, client=client) == 1
    later = FIXED_NOW_US + webhooks.policy.delay_after(1)
    assert webhooks.deliver_due(now_us=later, client=client) == 2
    order = [request.headers[EVENT_ID_HEADER] for request in receiver.requests]
    assert order == ["evt-1", "evt-1", "evt-2"]


def test_redeliver_continues_the_attempt_numbers(
    store: WebhookStore, clock: SteppingClock, receiver: Receiver, client: httpx.Client
) -> None:
    """A delivered or failed delivery can be sent again; its schedule starts over."""
    webhooks = Webhooks(store, clock, RetryPolicy(attempts_max=2), allow_private=True)
    _, secret = webhooks.subscribe(receiver.url, ["*"])
    [delivered] = webhooks.publish("balance.low", {"balance": "1.50"}, "evt-1")
    webhooks.deliver_due(client=client)
    clock.now_us += 10 * SECOND_US
    assert webhooks.redeliver(delivered).status == "pending"
    assert webhooks.delivery(delivered).next_attempt_at_us == clock.now_us
    assert webhooks.deliver_due(client=client) == 1
    assert [request.headers[ATTEMPT_HEADER] for request in receiver.requests] == ["1", "2"]
    assert receiver.requests[0].body == receiver.requests[1].body
    verify_signature(
        secret,
        receiver.requests[1].headers[SIGNATURE_HEADER],
        receiver.requests[1].body,
        now_s=clock.now_us // SECOND_US,
    )
    assert [attempt.attempt_number for attempt in webhooks.attempts(delivered)] == [1, 2]

    receiver.codes = [500, 500, 500]
    [failing] = webhooks.publish("balance.low", {}, "evt-2")
    webhooks.deliver_due(client=client)
    clock.now_us += webhooks.policy.delay_after(1)
    webhooks.deliver_due(client=client)
    assert webhooks.delivery(failing).status == "failed"
    webhooks.redeliver(failing)
    webhooks.deliver_due(client=client)
    again = webhooks.delivery(failing)
    assert (again.status, again.attempts) == ("pending", 3)
    assert again.next_attempt_at_us == clock.now_us + webhooks.policy.delay_after(1)
    clock.now_us = again.next_attempt_at_us
    webhooks.deliver_due(client=client)
    assert webhooks.delivery(failing).status == "delivered"
    assert [a.status_code for a in webhooks.attempts(failing)] == [500, 500, 500, 200]


def test_the_dispatcher_thread_delivers_a_published_event(
    store: WebhookStore, receiver: Receiver
) -> None:
    """Started, the dispatcher delivers what is published to the real receiver."""
    webhooks = Webhooks(store, allow_private=True)
    _, secret = webhooks.subscribe(receiver.url, ["control.fired"])
    dispatcher = Dispatcher(webhooks, poll_s=0.05).start()
    try:
        [delivery_id] = webhooks.publish("control.fired", {"control": "cap"}, "evt-1")
        deadline = time.monotonic() + 10
        while webhooks.delivery(delivery_id).status != "delivered":
            assert time.monotonic() < deadline, webhooks.attempts(delivery_id)
            time.sleep(0.02)
    finally:
        assert dispatcher.stop(timeout=5)
    [request] = receiver.requests
    envelope = verify_signature(secret, request.headers[SIGNATURE_HEADER], request.body)
    assert envelope["data"] == {"control": "cap"}


def test_a_pending_delivery_survives_a_restart(
    new_db: Callable[..., Location],
    clock: SteppingClock,
    receiver: Receiver,
    client: httpx.Client,
) -> None:
    """Published in one store, delivered after the ledger is reopened, beside the ledger."""
    path = new_db()
    ledger_store = open_store(path)
    first = WebhookStore(path)
    webhooks = Webhooks(first, clock, allow_private=True)
    webhooks.subscribe(receiver.url, ["*"])
    [delivery_id] = webhooks.publish("invoice.finalized", {"invoice": "INV-000001"}, "evt-1")
    first.close()
    ledger_store.close()

    reopened = WebhookStore(path)
    try:
        restarted = Webhooks(reopened, clock, allow_private=True)
        assert restarted.delivery(delivery_id).status == "pending"
        assert restarted.deliver_due(client=client) == 1
        assert restarted.delivery(delivery_id).status == "delivered"
    finally:
        reopened.close()
    open_store(path).close()
    assert len(receiver.requests) == 1


def test_the_attempt_log_is_append_only(
    webhooks: Webhooks, store: WebhookStore, client: httpx.Client
) -> None:
    """Triggers refuse UPDATE and DELETE on webhook_attempts."""
    webhooks.subscribe(closed_url(), ["*"])
    webhooks.publish("balance.low", {}, "evt-1")
    webhooks.deliver_due(client=client)
    with pytest.raises(database_errors(), match="append-only"):
        rows(store.path, "UPDATE webhook_attempts SET status_code = 200")
    with pytest.raises(database_errors(), match="append-only"):
        rows(store.path, "DELETE FROM webhook_attempts")
    assert len(rows(store.path, "SELECT * FROM webhook_attempts")) == 1


@pytest.mark.parametrize(
    ("url", "kinds", "field_name"),
    [
        ("ftp://example.com/hook", ["*"], "url"),
        ("https:///no-host", ["*"], "url"),
        ("not a url", ["*"], "url"),
        ("https://user:pass@example.com/", ["*"], "url"),
        ("https://example.com:99999/", ["*"], "url"),
        ("https://example.com/" + "x" * 3000, ["*"], "url"),
        ("https://example.com/hook", [], "kinds"),
        ("https://example.com/hook", ["invoice.paid"], "kinds"),
        ("https://example.com/hook", "balance.low", "kinds"),
    ],
)
def test_subscribe_names_the_bad_field(
    webhooks: Webhooks, url: str, kinds: Any, field_name: str
) -> None:
    """Bad input raises WebhookError naming the field, and stores nothing."""
    with pytest.raises(WebhookError, match=f"^{field_name}: ") as raised:
        webhooks.subscribe(url, kinds)
    assert raised.value.field == field_name
    assert webhooks.endpoints() == []


def test_publish_refuses_unknown_kinds_and_never_sends(webhooks: Webhooks) -> None:
    """publish validates and only queues: with no endpoint it stores nothing."""
    with pytest.raises(WebhookError, match=r"^kind: "):
        webhooks.publish("invoice.paid", {}, "evt-1")
    with pytest.raises(WebhookError, match=r"^event_id: "):
        webhooks.publish("balance.low", {}, "")
    assert webhooks.publish("balance.low", {}, "evt-1") == []
    webhooks.subscribe(closed_url(), ["*"])
    assert len(webhooks.publish("balance.low", {}, "evt-1")) == 1
    assert webhooks.delivery(webhooks.publish("balance.low", {}, "evt-1")[0]).attempts == 0


# -- HTTP routes --------------------------------------------------------------------------------


def make_app(webhooks: Webhooks, principal: Principal) -> FastAPI:
    """The webhook routes on a bare app, with the application's error handler: the
    services the routes read are the webhooks and a key check that always answers
    ``principal``."""
    app = FastAPI()
    app.state.services = SimpleNamespace(webhooks=webhooks, authenticate=lambda _: principal)
    app.add_exception_handler(MeterlineError, meterline_error)
    app.include_router(webhook_routes.router)
    return app


def test_routes_manage_endpoints_and_show_the_log(
    webhooks: Webhooks, receiver: Receiver, client: httpx.Client
) -> None:
    """Create (secret once), list, the delivery log with attempts, retry, disable."""
    receiver.codes = [500]
    http = TestClient(make_app(webhooks, Principal("k", "admin")))
    created = http.post(
        "/v1/webhooks",
        json={"url": receiver.url, "kinds": ["balance.low"], "description": "ops"},
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()["endpoint"]
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    assert endpoint["id"].startswith("we_")
    assert endpoint["kinds"] == ["balance.low"]
    assert endpoint["enabled"] is True

    listed = http.get("/v1/webhooks")
    assert listed.status_code == 200
    assert listed.json()["endpoints"] == [endpoint]
    assert secret not in listed.text and "secret" not in listed.text

    webhooks.publish("balance.low", {"balance": 1.5}, "evt-1")
    webhooks.deliver_due(client=client)
    log = http.get("/v1/webhooks/deliveries", params={"endpoint": endpoint["id"]}).json()
    [delivery] = log["deliveries"]
    assert delivery["status"] == "pending"
    assert delivery["event_id"] == "evt-1"
    assert delivery["event"]["data"] == {"balance": 1.5}
    assert [(a["attempt"], a["status_code"]) for a in delivery["attempts"]] == [(1, 500)]
    assert http.get("/v1/webhooks/deliveries", params={"status": "failed"}).json() == {
        "deliveries": []
    }

    retried = http.post(f"/v1/webhooks/deliveries/{delivery['id']}/retry")
    assert retried.status_code == 200
    assert retried.json()["delivery"]["status"] == "pending"
    webhooks.deliver_due(client=client)
    delivered = http.get("/v1/webhooks/deliveries", params={"status": "delivered"}).json()
    assert [a["status_code"] for a in delivered["deliveries"][0]["attempts"]] == [500, 200]

    disabled = http.delete(f"/v1/webhooks/{endpoint['id']}")
    assert disabled.status_code == 200
    assert disabled.json()["endpoint"]["enabled"] is False
    conflict = http.post(f"/v1/webhooks/deliveries/{delivery['id']}/retry")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "endpoint_disabled"


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"url": "ftp://example.com", "kinds": ["*"]}, "url"),
        ({"url": 5, "kinds": ["*"]}, "url"),
        ({"url": "https://example.com", "kinds": ["nope"]}, "kinds"),
        ({"url": "https://example.com", "kinds": []}, "kinds"),
        ({"url": "https://example.com"}, "kinds"),
        ({"kinds": ["*"]}, "url"),
        ({"url": "https://example.com", "kinds": ["*"], "secret": "mine"}, "secret"),
        ({"url": "https://example.com", "kinds": ["*"], "description": 7}, "description"),
    ],
)
def test_routes_name_the_bad_field(webhooks: Webhooks, body: Any, field_name: str) -> None:
    """A bad subscription is 422 with the error naming the field."""
    http = TestClient(make_app(webhooks, Principal("k", "admin")))
    answer = http.post("/v1/webhooks", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", field_name)
    assert error["message"].startswith(f"{field_name}: ")


def test_routes_refuse_bad_bodies_parameters_and_unknown_ids(webhooks: Webhooks) -> None:
    """Malformed JSON 400, wrong type 415, bad filters 422, unknown ids 404."""
    http = TestClient(make_app(webhooks, Principal("k", "admin")))
    malformed = http.post(
        "/v1/webhooks", content=b"{", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "malformed_json"
    not_object = http.post("/v1/webhooks", json=["https://example.com"])
    assert not_object.status_code == 400
    assert not_object.json()["error"]["field"] == "body"
    assert http.post("/v1/webhooks", content=b"url=x").status_code == 415
    bad_status = http.get("/v1/webhooks/deliveries", params={"status": "lost"})
    assert (bad_status.status_code, bad_status.json()["error"]["field"]) == (422, "status")
    bad_limit = http.get("/v1/webhooks/deliveries", params={"limit": 0})
    assert (bad_limit.status_code, bad_limit.json()["error"]["field"]) == (422, "limit")
    assert http.get("/v1/webhooks/deliveries", params={"endpoint": "we_0"}).status_code == 404
    assert http.post("/v1/webhooks/deliveries/wd_0/retry").status_code == 404
    missing = http.delete("/v1/webhooks/we_0")
    assert missing.status_code == 404
    assert missing.json()["error"] == {"code": "not_found", "message": "no webhook endpoint 'we_0'"}


@pytest.mark.parametrize(
    "principal", [Principal("k", "read"), Principal("k", "ingest"), Principal("k", "admin", "acme")]
)
def test_routes_need_an_unbound_admin_key(webhooks: Webhooks, principal: Principal) -> None:
    """Every webhook route is 403 for a read or ingest key, or a customer-bound one."""
    http = TestClient(make_app(webhooks, principal))
    answers = [
        http.post("/v1/webhooks", json={"url": "https://example.com", "kinds": ["*"]}),
        http.get("/v1/webhooks"),
        http.delete("/v1/webhooks/we_0"),
        http.get("/v1/webhooks/deliveries"),
        http.post("/v1/webhooks/deliveries/wd_0/retry"),
    ]
    assert [answer.status_code for answer in answers] == [403] * 5
    assert {answer.json()["error"]["code"] for answer in answers} == {"forbidden"}
    assert webhooks.endpoints() == []


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_adds_lists_delivers_and_retries(
    new_db: Callable[..., Location], receiver: Receiver, allow_private: None
) -> None:
    """add prints the id and secret once; list, deliver, deliveries and retry work on it."""
    runner = CliRunner()
    db = str(new_db("cli"))
    added = runner.invoke(
        webhooks_app,
        [
            "add",
            "--db",
            db,
            "--url",
            receiver.url,
            "--kind",
            "balance.low",
            "--kind",
            "invoice.finalized",
            "--description",
            "ops team",
        ],
    )
    assert added.exit_code == 0, added.output
    endpoint_id, secret = added.stdout.strip().split("\t")
    assert endpoint_id.startswith("we_") and secret.startswith("whsec_")
    assert "not shown again" in added.stderr

    listed = runner.invoke(webhooks_app, ["list", "--db", db])
    assert listed.exit_code == 0
    assert endpoint_id in listed.stdout and "balance.low,invoice.finalized" in listed.stdout
    assert "ops team" in listed.stdout and secret not in listed.stdout

    store = WebhookStore(db)
    try:
        [delivery_id] = Webhooks(store).publish("balance.low", {"balance": "0"}, "evt-1")
    finally:
        store.close()
    delivered = runner.invoke(webhooks_app, ["deliver", "--db", db])
    assert (delivered.exit_code, delivered.stdout.strip()) == (0, "1")
    table = runner.invoke(webhooks_app, ["deliveries", "--db", db, "--status", "delivered"])
    assert table.exit_code == 0
    assert delivery_id in table.stdout and "evt-1" in table.stdout

    retried = runner.invoke(webhooks_app, ["retry", "--db", db, "--delivery", delivery_id])
    assert retried.exit_code == 0, retried.output
    assert runner.invoke(webhooks_app, ["deliver", "--db", db]).stdout.strip() == "1"
    as_json = runner.invoke(
        webhooks_app, ["deliveries", "--db", db, "--endpoint", endpoint_id, "--json"]
    )
    [document] = msgspec.json.decode(as_json.stdout)["deliveries"]
    assert [attempt["attempt"] for attempt in document["attempts"]] == [1, 2]
    assert len(receiver.requests) == 2
    verify_signature(
        secret, receiver.requests[1].headers[SIGNATURE_HEADER], receiver.requests[1].body
    )

    disabled = runner.invoke(webhooks_app, ["disable", "--db", db, "--endpoint", endpoint_id])
    assert disabled.exit_code == 0
    assert "disabled" in runner.invoke(webhooks_app, ["list", "--db", db]).stdout


def test_cli_refuses_bad_input_with_a_message(new_db: Callable[..., Location]) -> None:
    """A bad kind or URL, an unknown id or a missing ledger exits non-zero, saying why."""
    runner = CliRunner()
    db = str(new_db("cli"))
    bad_kind = runner.invoke(
        webhooks_app, ["add", "--db", db, "--url", "https://example.com", "--kind", "nope"]
    )
    assert bad_kind.exit_code != 0
    assert "kinds:" in bad_kind.stderr and "nope" in bad_kind.stderr
    bad_url = runner.invoke(
        webhooks_app, ["add", "--db", db, "--url", "example.com", "--kind", "*"]
    )
    assert bad_url.exit_code != 0 and "url:" in bad_url.stderr
    status = runner.invoke(webhooks_app, ["deliveries", "--db", db, "--status", "lost"])
    assert status.exit_code != 0 and "status:" in status.stderr
    unknown = runner.invoke(webhooks_app, ["retry", "--db", db, "--delivery", "wd_0"])
    assert unknown.exit_code != 0 and "wd_0" in unknown.stderr
    missing = runner.invoke(webhooks_app, ["list", "--db", str(new_db("none"))])
    assert missing.exit_code != 0 and "no such ledger" in missing.stderr
