"""Nothing a customer sends can stop billing, on real ledgers (a SQLite file, a PostgreSQL
schema): poisoned events (1e400 and an undecodable body planted behind ingest's back, a
string where a sum expects a number) are unbillable usage, reported per customer and
reason by the library, the CLI, the HTTP API (customer binding respected) and the
dashboard, sent once as a ``usage.unbillable`` webhook; a customer that cannot be rated
at all is named with the reason while every other customer is closed, drafted, rated
live and reconciled.

Every clock is injected (``FIXED_NOW_US``, 2026-11-23T12:00Z): October is closed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal as D
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from meterline.api import create_app
from meterline.billing import service as billing_service
from meterline.billing.service import Billing, RatingFailed, open_billing
from meterline.billing.unbillable import publish_unbillable
from meterline.billing.unbillable_report import unbillable_report
from meterline.cli import app as cli
from meterline.core.events import decode_exact, timestamp_to_us
from meterline.core.partitions import partition_of
from meterline.keys import create_key
from meterline.ledger.location import is_postgres
from meterline.ledger.webhook_records import WebhookStore
from meterline.live.reconcile import reconcile
from meterline.live.service import LiveEngine
from meterline.live.webhook_service import Webhooks
from tests.conftest import FIXED_NOW_US, Location
from tests.stores import tamper

NewDb = Callable[..., Location]

PRICING = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
  - {key: calls, event_type: llm, aggregation: count}
plans:
  - key: pro
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: tokens, model: per_unit, unit_amount: "0.001"}
          - {meter: calls, model: per_unit, unit_amount: "0.01"}
  - key: huge
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - meter: tokens
            model: per_unit
            unit_amount: "0.123456789012345678901234567890123456789012345"
contracts:
  - {customer: acme, plan: pro, start: 2026-10-01}
  - {customer: bad, plan: pro, start: 2026-10-01}
  - {customer: giant, plan: huge, start: 2026-10-01}
  - {customer: late, plan: pro, start: 2026-10-15}
  - {customer: zeta, plan: pro, start: 2026-10-01}
"""
"""``giant``'s price (45 significant digits) times an in-range quantity (18 digits) is an
amount beyond exact arithmetic (60 digits): the one customer no rating can price.
``late`` starts mid-October; ``nobody`` has no contract."""

CLOSED = {"acme", "bad", "late", "zeta"}
GIANT = 10**18 - 1
"""The largest integer ingest accepts (18 digits)."""
THROUGH = "2026-11-01T00:00:00Z"


def _at(text: str) -> int:
    return timestamp_to_us(datetime.fromisoformat(text.replace("Z", "+00:00")))


def llm(event_id: str, customer: str, tokens: Any, day: str = "2026-10-10") -> dict[str, Any]:
    return {
        "id": event_id,
        "customer": customer,
        "type": "llm",
        "timestamp": f"{day}T12:00:00Z",
        "properties": {"tokens": tokens},
    }


EVENTS = [
    llm("a-1", "acme", 100),
    llm("a-2", "acme", 200),
    llm("b-good", "bad", 1000),
    llm("b-string", "bad", "many"),  # a string where a sum expects a number: accepted
    llm("b-planted", "bad", 424242),  # becomes 1e400 behind ingest's back
    llm("b-shapeless", "bad", 777777),  # becomes a body whose properties are not an object
    llm("g-1", "giant", GIANT),
    llm("l-early", "late", 50, "2026-10-05"),
    llm("l-1", "late", 60, "2026-10-20"),
    llm("n-1", "nobody", 70),
    llm("z-1", "zeta", 300),
]


def _replaced(location: Location, old: str, new: str) -> str:
    """SQL for the ``body`` column with ``old`` replaced by ``new``, on either store."""
    if is_postgres(location):
        return f"convert_to(replace(convert_from(body, 'UTF8'), '{old}', '{new}'), 'UTF8')"
    return f"CAST(replace(CAST(body AS TEXT), '{old}', '{new}') AS BLOB)"


def plant(location: Location) -> None:
    """Poison two stored events as ingest would refuse them (an attacker with write access,
    or an event stored before today's validation)."""
    shapeless = _replaced(location, '{"tokens":777777}', "7")
    tamper(
        location,
        f"UPDATE events SET body = {_replaced(location, '424242', '1e400')}"
        " WHERE event_id = 'b-planted'",
        f"UPDATE events SET body = {shapeless} WHERE event_id = 'b-shapeless'",
    )


@dataclass
class Ledger:
    location: Location
    billing: Billing


@pytest.fixture
def poisoned(new_db: NewDb) -> Iterator[Ledger]:
    """The pricing above and ``EVENTS``, two of them poisoned after ingest."""
    location = new_db()
    with open_billing(location, clock=lambda: FIXED_NOW_US) as billing:
        billing.apply(PRICING)
        outcome = billing.ledger.ingest(EVENTS)
        assert outcome.accepted == len(EVENTS), outcome
        plant(location)
        yield Ledger(location, billing)


def sequence_of(billing: Billing, event_id: str) -> int:
    row = billing.context.connection.execute(
        "SELECT sequence FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    return int(row[0])


def webhook_id(billing: Billing, event_id: str) -> str:
    """The ``usage.unbillable`` webhook id of an event: its sequence, prefixed by its
    partition past partition 0 (sequences are per partition)."""
    row = billing.context.connection.execute(
        "SELECT customer, sequence FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()
    partition = partition_of(row[0], billing.ledger.store.partitions)
    name = f"{row[1]}" if partition == 0 else f"{partition}:{row[1]}"
    return f"usage.unbillable:{name}"


def reasons(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {customer["customer"]: customer["reasons"] for customer in report["customers"]}


EXPECTED_REASONS = {
    "bad": {"not_a_number": 1, "out_of_range": 1, "undecodable": 1},
    "late": {"before_contract": 1},
    "nobody": {"no_contract": 1},
}


def test_a_poisoned_customer_never_stops_the_others_close(poisoned: Ledger) -> None:
    """Everyone is closed but the one customer that cannot be rated, named with why; the
    poisoned events are unbillable, not zero and not fatal."""
    billing = poisoned.billing
    report = billing.close(_at(THROUGH))
    assert {invoice.customer for invoice in report} == CLOSED
    assert [invoice.invoice_id for invoice in report] == [f"INV-{n:06d}" for n in range(1, 5)]
    assert [(f.customer, f.period is not None) for f in report.failed] == [("giant", True)]
    assert "beyond exact decimal arithmetic" in report.failed[0].reason
    bad = decode_exact(next(i for i in report if i.customer == "bad").document)
    lines = {line["meter"]: line for line in bad["lines"]}
    assert lines["tokens"]["quantity"] == "1000" and lines["tokens"]["lineage"]["events"] == 1
    assert lines["calls"]["lineage"]["events"] == 3  # a count needs no value; undecodable: none
    found = {(r.customer, r.event_id, r.meter, r.reason) for r in report.unbillable}
    assert found == {
        ("bad", "b-string", "tokens", "not_a_number"),
        ("bad", "b-planted", "tokens", "out_of_range"),
        ("bad", "b-shapeless", "", "undecodable"),
        ("late", "l-early", "tokens", "before_contract"),
        ("late", "l-early", "calls", "before_contract"),
    }
    record = next(r for r in report.unbillable if r.event_id == "b-planted")
    assert record.sequence == sequence_of(billing, "b-planted")
    again = billing.close(_at(THROUGH))
    assert list(again) == [] and [f.customer for f in again.failed] == ["giant"]


def test_drafts_and_live_figures_answer_per_customer(poisoned: Ledger) -> None:
    """A poisoned customer's draft bills the rest; one that cannot be rated is named."""
    billing = poisoned.billing
    october = _at("2026-10-20T00:00:00Z")
    assert billing.draft("bad", october).total == D("1.03")  # 1000 tokens + 3 calls
    with pytest.raises(RatingFailed, match="'giant' cannot be rated"):
        billing.draft("giant", october)
    assert billing.draft("zeta", october).total == D("0.31")
    billing.ledger.ingest(
        [
            llm("g-nov", "giant", GIANT, "2026-11-20"),
            llm("b-nov", "bad", "NaN", "2026-11-20"),
            llm("a-nov", "acme", 10, "2026-11-20"),
        ]
    )
    engine = LiveEngine(billing).start(thread=False)
    try:
        with pytest.raises(RatingFailed):
            engine.projection.figures("giant")
        assert engine.status()["failed"][0]["customer"] == "giant"
        acme = engine.projection.figures("acme")
        assert acme is not None and acme.spend == D("0.02")
        bad = engine.projection.figures("bad")
        assert bad is not None and bad.spend == D("0.01")  # the NaN event counted once
        engine.catch_up()  # a cycle over every customer still runs
    finally:
        engine.stop()


def test_reconcile_reports_the_customer_it_cannot_rate_and_checks_the_rest(
    poisoned: Ledger,
) -> None:
    """Reconcile names the failing customer and why, and proves every other one."""
    billing = poisoned.billing
    billing.ledger.ingest([llm("g-nov", "giant", GIANT, "2026-11-20")])
    report = reconcile(billing)
    checks = {check.customer: check for check in report.customers}
    assert checks["giant"].differences[0].startswith("cannot be rated: an amount")
    for customer in CLOSED:
        assert checks[customer].differences == [], customer
    assert not report.passed


def test_the_report_lists_every_unbillable_event_per_customer_and_reason(
    poisoned: Ledger,
) -> None:
    """Before and after a close, the report is the same: per customer, per reason."""
    billing = poisoned.billing
    before = unbillable_report(billing).as_dict()
    assert reasons(before) == EXPECTED_REASONS
    assert before["events"] == 5
    assert [f["customer"] for f in before["failed"]] == ["giant"]
    billing.close(_at(THROUGH))
    after = unbillable_report(billing).as_dict()
    assert reasons(after) == EXPECTED_REASONS
    only = unbillable_report(billing, "bad").as_dict()
    assert list(reasons(only)) == ["bad"] and only["failed"] == []
    usage = only["customers"][0]["usage"]
    assert {u["event_id"] for u in usage} == {"b-string", "b-planted", "b-shapeless"}
    planted = next(u for u in usage if u["event_id"] == "b-planted")
    assert planted["sequence"] == sequence_of(billing, "b-planted")
    assert planted["meter"] == "tokens" and "1E+400" in planted["detail"]


def _deliveries(store: WebhookStore) -> list[str]:
    rows = store._rows(
        "SELECT event_id FROM webhook_deliveries WHERE kind = 'usage.unbillable' ORDER BY 1"
    )
    return [row[0] for row in rows]


def test_the_webhook_is_sent_once_per_unbillable_event(
    poisoned: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close and a batch each publish what they find; finding it again sends nothing."""
    monkeypatch.setenv("METERLINE_WEBHOOKS_ALLOW_PRIVATE", "1")  # a loopback endpoint
    billing = poisoned.billing
    webhooks = Webhooks(WebhookStore(billing.store.path), clock=billing.clock)
    try:
        webhooks.subscribe("http://127.0.0.1:9/hook", ["usage.unbillable"])
        billing.unbillable_listeners.append(partial(publish_unbillable, webhooks.publish))
        report = billing.close(_at(THROUGH))
        closed = [webhook_id(billing, e) for e in ("b-string", "b-planted")]
        closed += [webhook_id(billing, e) for e in ("b-shapeless", "l-early")]
        assert _deliveries(webhooks.store) == sorted(closed)
        body = json.loads(webhooks.deliveries()[0].body)
        assert body["kind"] == "usage.unbillable" and body["data"]["customer"] in ("bad", "late")
        engine = LiveEngine(billing, publish=webhooks.publish).start(thread=False)
        try:
            billing.ledger.ingest([llm("b-nov", "bad", "lots", "2026-11-20")])
            engine.catch_up()
            live = webhook_id(billing, "b-nov")
            assert _deliveries(webhooks.store) == sorted([*closed, live])
            engine.projection.rebuild()
            engine.on_billing_change(None)
            engine.catch_up()
            publish_unbillable(webhooks.publish, report.unbillable)
            billing.close(_at(THROUGH))
            billing.ledger.ingest([llm("b-nov-2", "bad", "lots", "2026-11-21")])
            engine.catch_up()
        finally:
            engine.stop()
        second = webhook_id(billing, "b-nov-2")
        assert _deliveries(webhooks.store) == sorted([*closed, live, second])
    finally:
        webhooks.store.close()


# -- the CLI, in process on the injected clock ------------------------------------------------


@pytest.fixture
def fixed_cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner whose commands open billing on the fixed clock."""
    opened = billing_service.open_billing
    monkeypatch.setattr(
        billing_service, "open_billing", partial(opened, clock=lambda: FIXED_NOW_US)
    )
    return CliRunner()


def test_the_cli_closes_the_others_names_the_failure_and_lists_the_report(
    poisoned: Ledger, fixed_cli: CliRunner
) -> None:
    """``invoices close`` exits 1 naming giant; ``unbillable`` lists the rest by reason."""
    db = str(poisoned.location)
    closed = fixed_cli.invoke(cli, ["invoices", "close", "--db", db, "--through", THROUGH])
    assert closed.exit_code == 1, closed.output
    rows = [line.split("\t") for line in closed.stdout.splitlines() if line.startswith("INV-")]
    assert {row[1] for row in rows} == CLOSED
    said = " ".join(closed.stderr.split())
    assert "not closed: giant: an amount or quantity is beyond exact" in said
    assert "unbillable usage: 4 events of 2 customers" in said  # a close rates contracts
    listed = fixed_cli.invoke(cli, ["unbillable", "--db", db, "--json"])
    assert listed.exit_code == 0, listed.output
    assert reasons(json.loads(listed.stdout)) == EXPECTED_REASONS
    one = fixed_cli.invoke(cli, ["unbillable", "--db", db, "--customer", "late", "--json"])
    assert reasons(json.loads(one.stdout)) == {"late": {"before_contract": 1}}
    table = fixed_cli.invoke(cli, ["unbillable", "--db", db])
    assert table.exit_code == 0
    for phrase in ("not_a_number", "no_contract", "b-planted", "cannot be rated", "giant"):
        assert phrase in table.stdout, phrase


# -- HTTP and the dashboard, in process on the injected clock ---------------------------------


@pytest.fixture
def http(poisoned: Ledger) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The API (without the live worker) over the poisoned ledger, and a key per role."""
    store = poisoned.billing.ledger.store
    keys = {
        "read": create_key(store, "read", FIXED_NOW_US)[1],
        "admin": create_key(store, "admin", FIXED_NOW_US)[1],
        "read-bad": create_key(store, "read", FIXED_NOW_US, customer="bad")[1],
    }
    app = create_app(poisoned.billing.ledger, poisoned.billing, live=False)
    with TestClient(app) as client:
        yield client, keys


def _as(keys: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


def test_http_closes_with_both_lists_and_reports_within_the_key_s_customer(
    http: tuple[TestClient, dict[str, str]],
) -> None:
    """POST close answers finalized and failed; GET /v1/unbillable respects binding."""
    client, keys = http
    closed = client.post(
        "/v1/invoices/close", params={"through": THROUGH}, headers=_as(keys, "admin")
    )
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert len(body["finalized"]) == 4
    assert [f["customer"] for f in body["failed"]] == ["giant"]
    assert body["unbillable"] == {"events": 4, "customers": ["bad", "late"]}
    everyone = client.get("/v1/unbillable", headers=_as(keys, "read"))
    assert everyone.status_code == 200 and reasons(everyone.json()) == EXPECTED_REASONS
    own = client.get("/v1/unbillable", headers=_as(keys, "read-bad")).json()
    assert list(reasons(own)) == ["bad"] and own["failed"] == []
    named = client.get("/v1/unbillable", params={"customer": "bad"}, headers=_as(keys, "read-bad"))
    assert named.status_code == 200 and list(reasons(named.json())) == ["bad"]
    other = client.get("/v1/unbillable", params={"customer": "late"}, headers=_as(keys, "read-bad"))
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    assert client.get("/v1/unbillable").status_code == 401
    draft = client.get(
        "/v1/customers/giant/invoices/draft",
        params={"at": "2026-10-20T00:00:00Z"},  # October: not closed, cannot be rated
        headers=_as(keys, "read"),
    )
    assert draft.status_code == 409
    assert "'giant' cannot be rated" in draft.json()["error"]["message"]


def test_the_dashboard_page_lists_the_unbillable_usage(
    http: tuple[TestClient, dict[str, str]],
) -> None:
    """The page renders each customer and reason, the events, and who cannot be rated."""
    client, keys = http
    client.post("/dashboard/login", data={"key": keys["read"], "next": "/dashboard/unbillable"})
    page = client.get("/dashboard/unbillable")
    assert page.status_code == 200, page.text
    html = page.text
    for text in ('data-table="unbillable-summary"', "not_a_number", "no_contract", "b-planted"):
        assert text in html, text
    assert "the customer has no contract" in html  # each reason says what it means
    assert 'data-table="unbillable-failed"' in html and "giant" in html
    client.cookies.clear()
    client.post("/dashboard/login", data={"key": keys["read-bad"], "next": "/dashboard"})
    own = client.get("/dashboard/unbillable").text
    assert "b-string" in own and "l-early" not in own and "nobody" not in own


def test_live_figures_over_http_answer_409_for_the_one_customer_that_cannot_be_rated(
    poisoned: Ledger,
) -> None:
    """With the live worker: the failing customer's figures are 409 naming why, the
    poisoned one's and everyone else's answer, and the engine's status lists the failure."""
    billing = poisoned.billing
    billing.ledger.ingest(
        [
            llm("g-nov", "giant", GIANT, "2026-11-20"),
            llm("b-nov", "bad", "NaN", "2026-11-20"),
            llm("a-nov", "acme", 10, "2026-11-20"),
        ]
    )
    store = billing.ledger.store
    key = {"Authorization": f"Bearer {create_key(store, 'read', FIXED_NOW_US)[1]}"}
    app = create_app(billing.ledger, billing)
    with TestClient(app) as client:
        giant = client.get("/v1/live/giant", headers=key)
        assert giant.status_code == 409, giant.text
        assert "'giant' cannot be rated: an amount" in giant.json()["error"]["message"]
        bad = client.get("/v1/live/bad", headers=key)
        assert bad.status_code == 200 and D(str(bad.json()["spend"])) == D("0.01")
        acme = client.get("/v1/live/acme", headers=key)
        assert acme.status_code == 200 and D(str(acme.json()["spend"])) == D("0.02")
        status = client.get("/v1/live", headers=key).json()
        assert [f["customer"] for f in status["failed"]] == ["giant"]
