"""Webhook destinations (SSRF defence): subscribing refuses a URL whose host is or resolves
to a loopback, link-local, private, unspecified or multicast address (422 / non-zero exit
naming ``url`` and why); a delivery resolves again and fails, saying why, if the name
now points inside; a permitted delivery connects to the very address checked. Private
destinations are allowed only explicitly: ``allow_private=True``, the
``METERLINE_WEBHOOKS_ALLOW_PRIVATE`` variable, ``--allow-private``,
``meterline serve --webhooks-allow-private``.

Names resolve through an injected resolver (no DNS); no request leaves the test: the
HTTP client is an ``httpx.MockTransport`` recording what would have been sent, or a
server on loopback where loopback is allowed.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from meterline.api.server import spawn_server
from meterline.cli.webhooks import webhooks_app
from meterline.keys import Principal
from meterline.ledger.webhook_records import WebhookStore
from meterline.live.webhook_service import ALLOW_PRIVATE_ENV, WebhookError, Webhooks
from tests.conftest import FIXED_NOW_US, Location, RunningServer, make_keys
from tests.integration.test_webhooks import make_app

PUBLIC = "93.184.216.34"
HINT = (
    "webhooks go to public addresses only (allow private ones with"
    " METERLINE_WEBHOOKS_ALLOW_PRIVATE=1 or `meterline serve --webhooks-allow-private`)"
)


class Resolver:
    """Names to addresses, as the test says (and changes); an unknown name does not
    resolve. IP literals are themselves, as getaddrinfo answers them."""

    def __init__(self, **names: list[str]) -> None:
        self.names = {name.replace("_", "."): addresses for name, addresses in names.items()}
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host in self.names:
            return self.names[host]
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        except OSError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return [host]


class Recorder:
    """An HTTP client whose transport records each request and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status
        self.client = httpx.Client(transport=httpx.MockTransport(self.answer))

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status)


@pytest.fixture
def store(new_db: Callable[..., Location]) -> Iterator[WebhookStore]:
    opened = WebhookStore(new_db())
    yield opened
    opened.close()


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(hooks_example_com=[PUBLIC], inside_example_com=["10.0.0.7"])


@pytest.fixture
def strict(store: WebhookStore, resolver: Resolver) -> Webhooks:
    """The default: private destinations refused (explicitly, whatever the environment)."""
    return Webhooks(store, lambda: FIXED_NOW_US, allow_private=False, resolve=resolver)


# -- subscribing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("http://127.0.0.1:8080/hooks", "127.0.0.1 is a loopback address"),
        ("http://[::1]/hooks", "::1 is a loopback address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is a link-local address (cloud metadata)",
        ),
        ("https://10.1.2.3/hooks", "10.1.2.3 is a private address (RFC 1918)"),
        ("https://192.168.0.10/hooks", "192.168.0.10 is a private address (RFC 1918)"),
        ("https://[fd00::5]/hooks", "fd00::5 is a private address (unique local, fc00::/7)"),
        ("http://0.0.0.0:9000/", "0.0.0.0 is an unspecified address"),
        ("http://224.0.0.251/", "224.0.0.251 is a multicast address"),
        (
            "https://inside.example.com/hooks",
            "inside.example.com resolves to 10.0.0.7, a private address (RFC 1918)",
        ),
    ],
)
def test_subscribe_refuses_a_destination_inside(strict: Webhooks, url: str, refusal: str) -> None:
    """The error names the field, the address and its kind, and how to allow it."""
    with pytest.raises(WebhookError) as refused:
        strict.subscribe(url, ["*"])
    assert refused.value.field == "url"
    assert str(refused.value) == f"url: {refusal}; {HINT}"
    assert strict.endpoints() == []


def test_one_inside_address_among_public_ones_is_refused(
    strict: Webhooks, resolver: Resolver
) -> None:
    """Every address a name resolves to is checked, not only the first."""
    resolver.names["mixed.example.com"] = [PUBLIC, "127.0.0.1"]
    with pytest.raises(WebhookError, match=r"^url: mixed.example.com resolves to 127.0.0.1, a"):
        strict.subscribe("https://mixed.example.com/hooks", ["*"])


def test_subscribe_refuses_a_name_that_does_not_resolve(strict: Webhooks) -> None:
    """Unresolvable: refused (it cannot be checked), naming the host and the resolver's
    reason."""
    with pytest.raises(WebhookError) as refused:
        strict.subscribe("https://nowhere.example.com/hooks", ["*"])
    assert (
        str(refused.value)
        == "url: nowhere.example.com does not resolve (Name or service not known)"
    )


def test_the_cheap_checks_come_before_resolving(strict: Webhooks, resolver: Resolver) -> None:
    """A bad scheme or bad kinds is refused without a lookup."""
    with pytest.raises(WebhookError, match=r"^url: must be http:// or https://"):
        strict.subscribe("file:///etc/passwd", ["*"])
    with pytest.raises(WebhookError, match=r"^kinds: "):
        strict.subscribe("https://hooks.example.com/", ["nope"])
    assert resolver.asked == []


def test_subscribe_accepts_a_public_destination(strict: Webhooks, resolver: Resolver) -> None:
    """A name resolving to public addresses is stored, as given."""
    endpoint, _ = strict.subscribe("https://hooks.example.com/hooks", ["*"])
    assert endpoint.url == "https://hooks.example.com/hooks"
    assert resolver.asked == [("hooks.example.com", 443)]


def test_allowed_explicitly_a_private_destination_is_not_even_resolved(
    store: WebhookStore, resolver: Resolver
) -> None:
    """allow_private=True: loopback is stored, no lookup made (the URL is used as is)."""
    webhooks = Webhooks(store, allow_private=True, resolve=resolver)
    endpoint, _ = webhooks.subscribe("http://127.0.0.1:9/hooks", ["*"])
    assert endpoint.url == "http://127.0.0.1:9/hooks"
    assert webhooks.destination(endpoint.url) is None
    assert resolver.asked == []


@pytest.mark.parametrize(
    ("value", "allowed"), [("1", True), ("true", True), ("0", False), ("", False)]
)
def test_the_environment_variable_decides_when_no_parameter_does(
    store: WebhookStore, monkeypatch: pytest.MonkeyPatch, value: str, allowed: bool
) -> None:
    """METERLINE_WEBHOOKS_ALLOW_PRIVATE=1 allows; unset or anything else refuses; an
    explicit parameter wins over it."""
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, value)
    assert Webhooks(store).allow_private is allowed
    assert Webhooks(store, allow_private=False).allow_private is False
    monkeypatch.delenv(ALLOW_PRIVATE_ENV)
    assert Webhooks(store).allow_private is False


# -- delivering ---------------------------------------------------------------------------------


def test_a_delivery_connects_to_the_address_checked(strict: Webhooks) -> None:
    """The request goes to the resolved public address; Host and SNI keep the name."""
    strict.subscribe("https://hooks.example.com:8443/hooks?x=1", ["balance.low"])
    [delivery_id] = strict.publish("balance.low", {"customer": "acme"}, "evt-1")
    recorder = Recorder()
    assert strict.deliver_due(client=recorder.client) == 1
    [request] = recorder.requests
    assert str(request.url) == f"https://{PUBLIC}:8443/hooks?x=1"
    assert request.headers["Host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.headers["Connection"] == "close"
    assert strict.delivery(delivery_id).status == "delivered"


def test_a_name_now_pointing_inside_fails_the_delivery_saying_why(
    strict: Webhooks, resolver: Resolver
) -> None:
    """Public at subscription, loopback at delivery: nothing is sent, the delivery fails at
    once (no retries: only a change of DNS or configuration helps), the reason logged."""
    strict.subscribe("https://hooks.example.com/hooks", ["*"])
    [delivery_id] = strict.publish("customer.blocked", {"customer": "acme"}, "evt-1")
    resolver.names["hooks.example.com"] = ["127.0.0.1"]
    recorder = Recorder()
    assert strict.deliver_due(client=recorder.client) == 1
    assert recorder.requests == []
    delivery = strict.delivery(delivery_id)
    reason = f"refused: url: hooks.example.com resolves to 127.0.0.1, a loopback address; {HINT}"
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 1, reason)
    assert delivery.next_attempt_at_us is None
    [attempt] = strict.attempts(delivery_id)
    assert (attempt.status_code, attempt.error) == (None, reason)
    assert strict.deliver_due(client=recorder.client) == 0


def test_a_name_that_stops_resolving_is_retried(strict: Webhooks, resolver: Resolver) -> None:
    """A lookup failure is an ordinary failed attempt: pending, retried on the schedule."""
    strict.subscribe("https://hooks.example.com/hooks", ["*"])
    [delivery_id] = strict.publish("balance.low", {}, "evt-1")
    del resolver.names["hooks.example.com"]
    assert strict.deliver_due(client=Recorder().client) == 1
    delivery = strict.delivery(delivery_id)
    assert delivery.status == "pending"
    assert "Name or service not known" in (delivery.last_error or "")
    assert delivery.next_attempt_at_us == FIXED_NOW_US + strict.policy.delay_after(1)


def test_an_endpoint_stored_before_the_check_is_refused_at_delivery(
    store: WebhookStore, resolver: Resolver
) -> None:
    """An endpoint added while private destinations were allowed (or by an older version)
    gets nothing from a service that refuses them."""
    Webhooks(store, allow_private=True, resolve=resolver).subscribe(
        "http://169.254.169.254/latest/meta-data/", ["*"]
    )
    strict = Webhooks(store, lambda: FIXED_NOW_US, allow_private=False, resolve=resolver)
    [delivery_id] = strict.publish("balance.low", {}, "evt-1")
    recorder = Recorder()
    strict.deliver_due(client=recorder.client)
    assert recorder.requests == []
    delivery = strict.delivery(delivery_id)
    assert delivery.status == "failed"
    assert (delivery.last_error or "").startswith(
        "refused: url: 169.254.169.254 is a link-local address (cloud metadata);"
    )


# -- the faces: HTTP, CLI, serve ----------------------------------------------------------------


def test_the_route_answers_422_naming_url_and_why(strict: Webhooks) -> None:
    """POST /v1/webhooks with a loopback URL: 422 invalid_input, field url, the reason."""
    http = TestClient(make_app(strict, Principal("k", "admin")))
    answer = http.post("/v1/webhooks", json={"url": "http://127.0.0.1:8787/x", "kinds": ["*"]})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", "url")
    assert error["message"] == f"url: 127.0.0.1 is a loopback address; {HINT}"
    assert http.get("/v1/webhooks").json()["endpoints"] == []


def test_the_cli_refuses_unless_allow_private(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`webhooks add` to loopback exits non-zero naming url and why; --allow-private adds."""
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)
    runner = CliRunner()
    db = str(new_db("cli"))
    add = ["add", "--db", db, "--url", "http://127.0.0.1:9/hooks", "--kind", "*"]
    refused = runner.invoke(webhooks_app, add)
    assert refused.exit_code == 2
    assert " ".join(refused.stderr.split()) == (
        f"error: url: 127.0.0.1 is a loopback address; {HINT}"
    )
    assert runner.invoke(webhooks_app, ["list", "--db", db]).stdout == ""
    added = runner.invoke(webhooks_app, [*add, "--allow-private"])
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith("we_")


def subscribe_loopback(db: Location, *serve_args: str) -> httpx.Response:
    """Start `meterline serve` on ``db`` with ``serve_args``, ask it for a loopback webhook."""
    keys = make_keys(db)
    process, url = spawn_server(db, stream_args=serve_args)
    server = RunningServer(url, db, process, keys)
    try:
        with server.client("admin") as admin:
            return admin.post(
                "/v1/webhooks", json={"url": "http://127.0.0.1:9/hooks", "kinds": ["*"]}
            )
    finally:
        server.stop()


def test_serve_refuses_private_destinations_by_default(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meterline serve` with neither flag nor variable: a loopback webhook is 422 on url."""
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)
    answer = subscribe_loopback(new_db("refusing"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "url"


def test_serve_with_webhooks_allow_private_accepts_them(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meterline serve --webhooks-allow-private`: a loopback webhook is created."""
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)
    answer = subscribe_loopback(new_db("allowing"), "--webhooks-allow-private")
    assert answer.status_code == 201, answer.text
