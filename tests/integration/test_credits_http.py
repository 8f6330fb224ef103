"""Credits over HTTP, end to end: a real server process over each store (a SQLite file, a
PostgreSQL schema).

The servers here run ``create_app`` under uvicorn in a child process like ``meterline
serve``, with one difference: the ledger's clock (which billing reads too) is the wall
clock shifted by an offset the test writes to a file, so "now" is a known instant of
November 2026 whatever the date, and a test can move it past a period's end to close it.

One module-wide server holds the October usage of the three demo customers with contract
credit (stark-agents runs out of credit, cyberdyne-ops's pool resets and rolls over,
tyrell-research draws a prepaid commit) under the demo pricing, at 2026-11-23T12:00Z.
Tests that change a ledger each use a customer of their own. The threshold tests each
have a server of their own with a small pricing file.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from meterline.clock import system_clock_us
from meterline.core.events import encode_canonical, format_timestamp, timestamp_to_us
from meterline.demo.workload import generate_month
from meterline.keys import create_key
from meterline.ledger.event_ledger import open_store
from tests.conftest import Databases, Location, RunningServer, make_keys
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

PRICING = files("meterline.demo").joinpath("pricing.yaml").read_text()
CREDITED = ("stark-agents", "cyberdyne-ops", "tyrell-research")
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
YAML = {"content-type": "application/yaml"}
JSON = {"content-type": "application/json"}
GRANT_ID = re.compile(r"G-\d{6}")
INVOICE_ID = re.compile(r"INV-\d{6}")
_EXACT = msgspec.json.Decoder(float_hook=Decimal)

_LAUNCHER = """
import sys, time
from pathlib import Path

import uvicorn

from meterline.api import create_app
from meterline.ledger import open_ledger

db, port, offset = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])


def clock() -> int:
    return time.time_ns() // 1000 + int(offset.read_text())


ledger = open_ledger(db, clock=clock)
try:
    uvicorn.run(create_app(ledger), host="127.0.0.1", port=port, log_level="warning")
finally:
    ledger.close()
"""


# -- a server on a shifted clock ------------------------------------------------------------


def shift_clock(offset_file: Path, moment: datetime) -> None:
    """Make the server's "now" ``moment`` (from there it runs on with the wall clock)."""
    written = offset_file.with_suffix(".next")
    written.write_text(str(timestamp_to_us(moment) - system_clock_us()))
    written.replace(offset_file)  # atomic: the server never reads half a file


@dataclass
class ClockedServer:
    """A server process whose clock the test sets."""

    server: RunningServer
    offset_file: Path

    def set_now(self, moment: datetime) -> None:
        shift_clock(self.offset_file, moment)

    def client(self, scope: str | None = "admin") -> httpx.Client:
        return self.server.client(scope)


def start_clocked(db: Location, folder: Path, now: datetime, keys: dict[str, str]) -> ClockedServer:
    """Serve ``db`` in a child process with its clock at ``now`` (its offset in a file in
    ``folder``); wait until it answers."""
    offset_file = folder / "server.clock"
    shift_clock(offset_file, now)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(db), str(port), str(offset_file)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return ClockedServer(RunningServer(url, db, process, keys), offset_file)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError("server did not answer health in time")


# -- helpers ----------------------------------------------------------------------------------


def exact(response: httpx.Response) -> Any:
    """The body with every non-integer number as an exact Decimal."""
    return _EXACT.decode(response.content)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


def ingest(server: ClockedServer, events: list[dict[str, Any]]) -> None:
    with server.client("ingest") as client:
        for start in range(0, len(events), 5000):
            batch = events[start : start + 5000]
            response = client.post("/v1/events", content=encode_canonical(batch), headers=JSON)
            assert response.status_code == 200, response.text
            assert response.json()["accepted"] == len(batch)


def apply(client: httpx.Client, text: str) -> None:
    response = client.post("/v1/pricing", content=text.encode(), headers=YAML)
    assert response.status_code == 200, response.text


def credits(client: httpx.Client, customer: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/customers/{customer}/credits", params=params)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = exact(response)
    return report


def post_grant(client: httpx.Client, customer: str, **body: Any) -> httpx.Response:
    return client.post(f"/v1/customers/{customer}/credits", json=body)


def grant_of(report: dict[str, Any], grant_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [g for g in report["grants"] if g["grant"] == grant_id]
    assert len(found) == 1, (grant_id, [g["grant"] for g in report["grants"]])
    return found[0]


def entries_of(report: dict[str, Any], grant_id: str) -> list[dict[str, Any]]:
    return [e for e in report["entries"] if e["grant"] == grant_id]


def account_sums(report: dict[str, Any]) -> dict[str, Decimal]:
    """Each grant's balance recomputed from the entries (debits minus credits)."""
    sums: dict[str, Decimal] = {}
    for entry in report["entries"]:
        for side, sign in ((entry["debit"], 1), (entry["credit"], -1)):
            if side.startswith("grant:"):
                sums[side[6:]] = sums.get(side[6:], Decimal(0)) + sign * Decimal(entry["amount"])
    return sums


def assert_conserved(report: dict[str, Any]) -> None:
    """Every balance is the sum of its entries; every unit's totals conserve."""
    sums = account_sums(report)
    for grant in report["grants"]:
        assert Decimal(grant["balance"]) == sums.get(grant["grant"], 0), grant
        assert Decimal(grant["balance"]) >= 0, grant
    for entry in report["entries"]:
        assert Decimal(entry["amount"]) > 0, entry
    for unit, totals in report["totals"].items():
        value = {name: Decimal(amount) for name, amount in totals.items()}
        assert value["granted"] == (
            value["consumed"] + value["expired"] + value["remaining"] + value["voided"]
        ), (unit, totals)
        balances = [Decimal(g["balance"]) for g in report["grants"] if g["unit"] == unit]
        assert value["remaining"] == sum(balances, Decimal(0)), (unit, totals)


def stable(report: dict[str, Any]) -> dict[str, Any]:
    """A credit report without its ``as_of`` (which is "now", so moves between calls)."""
    return {key: value for key, value in report.items() if key != "as_of"}


def invoice_ids(client: httpx.Client, customer: str) -> list[str]:
    response = client.get(f"/v1/customers/{customer}/invoices")
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["invoices"]]


def with_keys(db: Location) -> dict[str, str]:
    """The fixture's keys plus a read and an admin key bound to stark-agents."""
    keys = make_keys(db)
    store = open_store(db)
    now = system_clock_us()
    keys["read-stark"] = create_key(store, "read", now, customer="stark-agents")[1]
    keys["admin-stark"] = create_key(store, "admin", now, customer="stark-agents")[1]
    store.close()
    return keys


@pytest.fixture(scope="module")
def credited(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases
) -> Iterator[ClockedServer]:
    folder = tmp_path_factory.mktemp("credits-http")
    db = databases.new(folder, "served")
    server = start_clocked(db, folder, NOW, with_keys(db))
    try:
        ingest(server, [e for e in generate_month(scale=0.8) if e["customer"] in CREDITED])
        with server.client("admin") as admin:
            apply(admin, PRICING)
        yield server
    finally:
        server.server.stop()


# -- reading the ledger -----------------------------------------------------------------------


def test_a_pool_that_reset_and_rolled_over_shows_balances_statuses_and_entries(
    credited: ClockedServer,
) -> None:
    with credited.client("read") as reader:
        report = credits(reader, "cyberdyne-ops")
    assert report["customer"] == "cyberdyne-ops"
    assert report["as_of"].startswith("2026-11-23T12:")
    assert report["overage"] == "bill"
    grants = {g["grant"]: g for g in report["grants"]}
    october, rolled, november = (
        "monthly-pool@2026-10-01",
        "monthly-pool@2026-10-01/rollover",
        "monthly-pool@2026-11-01",
    )
    assert set(grants) == {october, rolled, november}
    assert (grants[october]["status"], grants[october]["balance"]) == ("reset", "0")
    assert grants[october]["resets"] == "2026-11-01T00:00:00Z"
    assert grants[october]["effective"] == "2026-10-08T00:00:00Z"  # the contract's start
    assert (grants[october]["amount"], grants[october]["paid"]) == ("15000", "135.00")
    # half of what was left, capped at 1,000, for one more period
    assert (grants[rolled]["status"], grants[rolled]["balance"]) == ("active", "1000")
    assert (grants[rolled]["source"], grants[rolled]["expires"]) == (
        "rollover",
        "2026-12-01T00:00:00Z",
    )
    assert (grants[november]["status"], grants[november]["balance"]) == ("active", "15000")
    for grant in grants.values():
        assert grant["unit"] == "credits" and grant["scope"] == ["tool_calls"]

    kinds = {e["kind"] for e in report["entries"]}
    assert {"grant", "consume", "expire", "rollover"} <= kinds
    consumed = [e for e in report["entries"] if e["kind"] == "consume"]
    assert all(e["grant"] == october and e["meter"] == "tool_calls" for e in consumed)
    assert all(e["first_sequence"] <= e["last_sequence"] for e in consumed)
    [expired] = [e for e in report["entries"] if e["kind"] == "expire"]
    [rollover] = [e for e in report["entries"] if e["kind"] == "rollover"]
    assert (rollover["debit"], rollover["credit"]) == (f"grant:{rolled}", f"grant:{october}")
    assert rollover["amount"] == "1000" and expired["at"] == "2026-11-01T00:00:00Z"
    used = sum((Decimal(e["amount"]) for e in consumed), Decimal(0))
    assert Decimal(expired["amount"]) == 15000 - used - 1000

    assert_conserved(report)
    totals = {k: Decimal(v) for k, v in report["totals"]["credits"].items()}
    assert totals["granted"] == 30000 and totals["consumed"] == used
    assert totals["voided"] == totals["overage"] == totals["carried"] == 0


def test_as_of_a_past_instant_gives_the_balances_then(credited: ClockedServer) -> None:
    with credited.client("read") as reader:
        then = credits(reader, "stark-agents", as_of="2026-10-02T00:00:00Z")
        same = credits(reader, "stark-agents", as_of="2026-10-02T02:00:00+02:00")
        now = credits(reader, "stark-agents")
    assert then["as_of"] == "2026-10-02T00:00:00Z" and same == then
    promo, pack = grant_of(then, "launch-promo"), grant_of(then, "october-pack")
    # the promotion burns first (priority 1) and had not run out by October 2
    assert promo["status"] == "active" and 0 < Decimal(promo["balance"]) < 2000
    assert (pack["status"], pack["balance"]) == ("active", "20000")
    assert all(entry["at"] <= "2026-10-02T00:00:00Z" for entry in then["entries"])
    assert {e["kind"] for e in then["entries"]} == {"grant", "consume"}
    assert_conserved(then)

    # by now the promotion is over and the pack is spent (usage beyond it is overage)
    assert grant_of(now, "launch-promo")["status"] == "expired"
    assert grant_of(now, "october-pack")["status"] == "exhausted"
    assert grant_of(now, "october-pack")["balance"] == "0"
    assert len(now["entries"]) > len(then["entries"])
    assert then["entries"] == now["entries"][: len(then["entries"])]


def test_totals_conserve_when_usage_ran_past_every_grant(credited: ClockedServer) -> None:
    with credited.client("read") as reader:
        report = credits(reader, "stark-agents")
    entries = report["entries"]

    def moved(kind: str) -> Decimal:
        return sum((Decimal(e["amount"]) for e in entries if e["kind"] == kind), Decimal(0))

    assert moved("overage") > 0  # the demo's pack runs out in October
    totals = {k: Decimal(v) for k, v in report["totals"]["credits"].items()}
    assert totals["overage"] == moved("overage")
    assert totals["consumed"] == moved("consume") - moved("release") + moved("settle")
    assert_conserved(report)


def test_a_bad_as_of_is_400_naming_it(credited: ClockedServer) -> None:
    with credited.client("read") as reader:
        for value in ("yesterday", "2026-10-05", "2026-10-05T00:00:00", "2026-13-01T00:00:00Z"):
            response = reader.get("/v1/customers/stark-agents/credits", params={"as_of": value})
            error = error_of(response, 400, "invalid_parameter")
            assert error["field"] == "as_of" and error["message"].startswith("as_of: "), value
        error = error_of(reader.get("/v1/customers/nobody/credits"), 404, "not_found")
        assert error["message"] == "customer 'nobody' has no contract"


def test_as_of_in_the_first_period_of_a_contract_that_started_mid_month(
    credited: ClockedServer,
) -> None:
    with credited.client("read") as reader:
        response = reader.get(
            "/v1/customers/cyberdyne-ops/credits", params={"as_of": "2026-10-20T00:00:00Z"}
        )
    assert response.status_code == 200, response.text
    report = exact(response)
    pool = grant_of(report, "monthly-pool@2026-10-01")
    assert pool["status"] == "active" and 0 < Decimal(pool["balance"]) < 15000
    assert_conserved(report)


# -- granting ---------------------------------------------------------------------------------


def test_a_paid_grant_is_invoiced_at_once_and_enters_the_ledger(credited: ClockedServer) -> None:
    customer = "cyberdyne-ops"
    with credited.client("admin") as admin:
        before = credits(admin, customer)
        invoices_before = invoice_ids(admin, customer)
        response = post_grant(
            admin,
            customer,
            credit_type="credits",
            amount="5000",
            paid="45.00",
            reason="November top-up",
            priority=5,
            scope=["tool_calls"],
        )
        assert response.status_code == 201, response.text
        made = response.json()
        assert GRANT_ID.fullmatch(made["grant"]) and INVOICE_ID.fullmatch(made["invoice"])
        expected = {
            "customer": customer,
            "unit": "credits",
            "amount": "5000",
            "paid": "45.00",
            "paid_currency": "USD",
            "priority": 5,
            "scope": ["tool_calls"],
            "source": "api",
            "reason": "November top-up",
        }
        assert {key: made[key] for key in expected} == expected

        served = admin.get(f"/v1/invoices/{made['invoice']}")
        assert served.status_code == 200, served.text
        invoice = exact(served)["invoice"]
        assert (invoice["kind"], invoice["status"], invoice["customer"]) == (
            "purchase",
            "finalized",
            customer,
        )
        assert (invoice["currency"], invoice["total"]) == ("USD", "45.00")
        [line] = invoice["lines"]
        assert (line["kind"], line["amount"], line["grant"]) == ("purchase", "45.00", made["grant"])
        assert (line["unit"], line["units"]) == ("credits", "5000")
        prefix, suffix = b'{"invoice":', len(b',"sha256":"') + 64 + len(b'"}')
        raw = served.content[len(prefix) : -suffix]
        assert served.json()["sha256"] == hashlib.sha256(raw).hexdigest()
        listed = admin.get(f"/v1/customers/{customer}/invoices").json()["invoices"]
        [row] = [r for r in listed if r["id"] == made["invoice"]]
        assert (row["kind"], row["total"]) == ("purchase", "45.00")
        assert invoice_ids(admin, customer) == [*invoices_before, made["invoice"]]

        after = credits(admin, customer)
        grant = grant_of(after, made["grant"])
        assert (grant["status"], grant["balance"], grant["amount"]) == ("active", "5000", "5000")
        assert (grant["source"], grant["paid"], grant["priority"]) == ("api", "45.00", 5)
        assert grant["reason"] == "November top-up" and grant["expires"] is None
        [issued] = entries_of(after, made["grant"])
        assert (issued["kind"], issued["amount"]) == ("grant", "5000")
        assert (issued["debit"], issued["credit"]) == (f"grant:{made['grant']}", "issued")
        assert_conserved(after)
        was, now = before["totals"]["credits"], after["totals"]["credits"]
        assert Decimal(now["granted"]) == Decimal(was["granted"]) + 5000
        assert Decimal(now["remaining"]) == Decimal(was["remaining"]) + 5000

        # a free grant is not invoiced; grant ids are consecutive
        free = post_grant(admin, customer, credit_type="credits", amount="250", reason="goodwill")
        assert free.status_code == 201, free.text
        assert free.json()["invoice"] is None and free.json()["paid"] == "0"
        assert int(free.json()["grant"][2:]) == int(made["grant"][2:]) + 1
        assert invoice_ids(admin, customer) == [*invoices_before, made["invoice"]]
        assert grant_of(credits(admin, customer), free.json()["grant"])["balance"] == "250"


GOOD = {"credit_type": "credits", "amount": "100", "reason": "goodwill"}


def _body(**changes: Any) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (_body(credit_type="gems"), "credit_type"),
        (_body(amount="0"), "amount"),
        (_body(amount="-5"), "amount"),
        (_body(amount=1.5), "amount"),
        (_body(amount=100), "amount"),
        (_body(amount="lots"), "amount"),
        (_body(amount="1.5.2"), "amount"),
        (_body(amount="NaN"), "amount"),
        (_body(amount="Infinity"), "amount"),
        (_body(amount=...), "amount"),
        (_body(paid="-1"), "paid"),
        (_body(paid=10), "paid"),
        (_body(paid="ten"), "paid"),
        (_body(scope=["tool_calls", "nope"]), "scope[1]"),
        (_body(scope="tool_calls"), "scope"),
        (_body(reason=""), "reason"),
        (_body(reason="   "), "reason"),
        (_body(reason=...), "reason"),
        (_body(priority=5000), "priority"),
        (_body(priority="high"), "priority"),
        (_body(effective="2026-11-01T00:00:00Z"), "effective"),
        (_body(effective="tomorrow"), "effective"),
        (_body(effective="2026-12-10T00:00:00"), "effective"),
        (
            _body(effective="2026-12-10T00:00:00Z", expires="2026-12-01T00:00:00Z"),
            "expires",
        ),
        (_body(colour="blue"), "colour"),
    ],
    ids=lambda value: value.decode() if isinstance(value, bytes) else value,
)
def test_an_invalid_grant_is_refused_naming_the_field_and_stores_nothing(
    credited: ClockedServer, content: bytes, field: str
) -> None:
    customer, path = "tyrell-research", "/v1/customers/tyrell-research/credits"
    with credited.client("admin") as admin:
        before, invoices = stable(credits(admin, customer)), invoice_ids(admin, customer)
        response = admin.post(path, content=content, headers=JSON)
        assert response.status_code in (400, 422), response.text
        error = response.json()["error"]
        assert error["code"] in ("invalid_input", "invalid_parameter"), error
        assert field in error["message"], error
        if "field" in error:
            assert error["field"] == field, error
        assert stable(credits(admin, customer)) == before
        assert invoice_ids(admin, customer) == invoices


def test_a_grant_body_must_be_json(credited: ClockedServer) -> None:
    path = "/v1/customers/tyrell-research/credits"
    with credited.client("admin") as admin:
        before = stable(credits(admin, "tyrell-research"))
        error_of(admin.post(path, content=b"{", headers=JSON), 400, "malformed_json")
        error_of(
            admin.post(path, content=_body(), headers={"content-type": "text/plain"}),
            415,
            "unsupported_content_type",
        )
        error_of(admin.post(path, content=b"[]", headers=JSON), 400, "invalid_input")
        # every invalid field is named, and nothing is stored
        response = post_grant(admin, "tyrell-research", credit_type="gems", amount="0", reason="")
        error = error_of(response, 422, "invalid_input")
        assert error["field"] == "credit_type"
        assert [e.split(":")[0] for e in error["errors"]] == ["credit_type", "amount", "reason"]
        assert stable(credits(admin, "tyrell-research")) == before


def test_a_grant_in_a_currency_the_customer_is_not_billed_in_is_refused(
    credited: ClockedServer,
) -> None:
    customer = "initech-legal"  # billed in USD
    with credited.client("admin") as admin:
        before, invoices = stable(credits(admin, customer)), invoice_ids(admin, customer)
        response = post_grant(
            admin, customer, credit_type="EUR", amount="10", paid="5.00", reason="euro pack"
        )
        assert response.status_code in (400, 409, 422), response.text
        assert "credit_type" in response.json()["error"]["message"]
        assert stable(credits(admin, customer)) == before
        assert invoice_ids(admin, customer) == invoices


def test_a_grant_expiring_before_now_is_refused(credited: ClockedServer) -> None:
    customer = "wonka-marketing"
    with credited.client("admin") as admin:
        before, invoices = stable(credits(admin, customer)), invoice_ids(admin, customer)
        response = post_grant(
            admin,
            customer,
            credit_type="credits",
            amount="10",
            paid="1.00",
            reason="already over",
            expires="2026-11-01T00:00:00Z",
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "expires"
        assert stable(credits(admin, customer)) == before
        assert invoice_ids(admin, customer) == invoices


def test_a_grant_effective_later_is_listed_as_pending(credited: ClockedServer) -> None:
    customer = "acme-copilot"
    with credited.client("admin") as admin:
        response = post_grant(admin, customer, effective="2026-11-25T00:00:00Z", **GOOD)
        assert response.status_code == 201, response.text
        grant_id = response.json()["grant"]
        later = credits(admin, customer, as_of="2026-11-26T00:00:00Z")
        assert (grant_of(later, grant_id)["status"], grant_of(later, grant_id)["balance"]) == (
            "active",
            "100",
        )
        now = credits(admin, customer)
        assert grant_id in [g["grant"] for g in now["grants"]], now["grants"]
        pending = grant_of(now, grant_id)
        assert (pending["status"], pending["balance"]) == ("pending", "0")


def test_a_grant_effective_later_can_be_voided_before_it_starts(credited: ClockedServer) -> None:
    customer, base = "umbrella-health", "/v1/customers/umbrella-health/credits"
    with credited.client("admin") as admin:
        response = post_grant(admin, customer, effective="2026-11-25T00:00:00Z", **GOOD)
        assert response.status_code == 201, response.text
        grant_id = response.json()["grant"]
        voided = admin.post(f"{base}/{grant_id}/void", json={"reason": "sold by mistake"})
        assert voided.status_code == 200, voided.text
        later = credits(admin, customer, as_of="2026-11-26T00:00:00Z")
        assert grant_of(later, grant_id)["status"] == "voided"
        assert grant_of(later, grant_id)["balance"] == "0"


# -- adjusting and voiding --------------------------------------------------------------------


def test_adjustments_and_a_void_move_the_balance_as_entries(credited: ClockedServer) -> None:
    customer, base = "globex-support", "/v1/customers/globex-support/credits"
    with credited.client("admin") as admin:
        made = post_grant(admin, customer, credit_type="credits", amount="1000", reason="pilot")
        assert made.status_code == 201, made.text
        grant_id = made.json()["grant"]
        account = f"grant:{grant_id}"

        taken = admin.post(
            f"{base}/{grant_id}/adjustments", json={"amount": "-250", "reason": "double grant"}
        )
        assert taken.status_code == 201, taken.text
        body = taken.json()
        assert (body["grant"], body["amount"], body["reason"]) == (
            grant_id,
            "-250",
            "double grant",
        )
        assert isinstance(body["at_us"], int)
        report = credits(admin, customer)
        assert grant_of(report, grant_id)["balance"] == "750"
        grant, adjust = entries_of(report, grant_id)
        assert (grant["kind"], adjust["kind"]) == ("grant", "adjust")
        assert (adjust["amount"], adjust["debit"], adjust["credit"]) == ("250", "issued", account)
        assert adjust["reason"] == "double grant"
        assert adjust["at"] == format_timestamp(body["at_us"])

        added = admin.post(
            f"{base}/{grant_id}/adjustments", json={"amount": "100.5", "reason": "SLA credit"}
        )
        assert added.status_code == 201, added.text
        report = credits(admin, customer)
        assert grant_of(report, grant_id)["balance"] == "850.5"
        adjust = entries_of(report, grant_id)[-1]
        assert (adjust["kind"], adjust["amount"]) == ("adjust", "100.5")
        assert (adjust["debit"], adjust["credit"]) == (account, "issued")
        assert_conserved(report)
        totals = report["totals"]["credits"]
        assert (totals["granted"], totals["remaining"], totals["consumed"]) == (
            "850.5",
            "850.5",
            "0",
        )

        voided = admin.post(f"{base}/{grant_id}/void", json={"reason": "contract ended"})
        assert voided.status_code == 200, voided.text
        assert voided.json()["grant"] == grant_id
        assert voided.json()["reason"] == "contract ended"
        report = credits(admin, customer)
        assert grant_of(report, grant_id)["status"] == "voided"
        assert Decimal(grant_of(report, grant_id)["balance"]) == 0
        void = entries_of(report, grant_id)[-1]
        assert (void["kind"], void["amount"], void["debit"], void["credit"]) == (
            "void",
            "850.5",
            "voided",
            account,
        )
        assert void["at"] == format_timestamp(voided.json()["voided_at_us"])
        assert_conserved(report)
        assert report["totals"]["credits"]["voided"] == "850.5"
        assert Decimal(report["totals"]["credits"]["remaining"]) == 0

        again = admin.post(f"{base}/{grant_id}/void", json={"reason": "again"})
        assert "already void" in error_of(again, 409, "billing_conflict")["message"]
        assert stable(credits(admin, customer)) == stable(report)


def test_voids_and_adjustments_of_unknown_grants_or_with_bad_fields(
    credited: ClockedServer,
) -> None:
    base = "/v1/customers/globex-support/credits"
    with credited.client("admin") as admin:
        made = post_grant(admin, "globex-support", **GOOD)
        assert made.status_code == 201, made.text
        grant_id = made.json()["grant"]
        before = stable(credits(admin, "globex-support"))
        for grant in ("G-999999", "october-pack", "monthly-pool@2026-11-01"):
            error_of(admin.post(f"{base}/{grant}/void", json={"reason": "x"}), 404, "not_found")
            error_of(
                admin.post(f"{base}/{grant}/adjustments", json={"amount": "1", "reason": "x"}),
                404,
                "not_found",
            )
        error_of(
            admin.post("/v1/customers/nobody/credits/G-000001/void", json={"reason": "x"}),
            404,
            "not_found",
        )
        for body, field in (
            ({"amount": "0", "reason": "x"}, "amount"),
            ({"amount": "lots", "reason": "x"}, "amount"),
            ({"amount": 5, "reason": "x"}, "amount"),
            ({"amount": "5", "reason": " "}, "reason"),
            ({"amount": "5"}, "reason"),
            ({"amount": "5", "reason": "x", "extra": 1}, "extra"),
        ):
            response = admin.post(f"{base}/{grant_id}/adjustments", json=body)
            assert response.status_code in (400, 422), (body, response.text)
            assert field in response.json()["error"]["message"], (body, response.text)
        for body, field in (({"reason": ""}, "reason"), ({}, "reason"), ({"why": "x"}, "why")):
            response = admin.post(f"{base}/{grant_id}/void", json=body)
            assert response.status_code in (400, 422), (body, response.text)
            assert field in response.json()["error"]["message"], (body, response.text)
        assert stable(credits(admin, "globex-support")) == before


def test_a_voided_grant_cannot_be_topped_up(credited: ClockedServer) -> None:
    customer, base = "hooli-search", "/v1/customers/hooli-search/credits"
    with credited.client("admin") as admin:
        made = post_grant(admin, customer, **GOOD)
        assert made.status_code == 201, made.text
        grant_id = made.json()["grant"]
        voided = admin.post(f"{base}/{grant_id}/void", json={"reason": "churned"})
        assert voided.status_code == 200, voided.text
        response = admin.post(
            f"{base}/{grant_id}/adjustments", json={"amount": "100", "reason": "after void"}
        )
        assert response.status_code == 409, response.text
        report = credits(admin, customer)
        assert grant_of(report, grant_id)["balance"] == "0"
        assert report["totals"]["credits"]["remaining"] == "0"


# -- tenancy and scopes -----------------------------------------------------------------------


def test_a_customer_bound_key_reaches_only_its_own_credits(credited: ClockedServer) -> None:
    other = "/v1/customers/cyberdyne-ops/credits"
    with credited.client("admin") as admin:
        before = stable(credits(admin, "cyberdyne-ops"))
        invoices = invoice_ids(admin, "cyberdyne-ops")
    with credited.client("admin-stark") as stark:
        assert credits(stark, "stark-agents")["customer"] == "stark-agents"
        missing = error_of(stark.get("/v1/customers/nobody/credits"), 404, "not_found")
        hidden = error_of(stark.get(other), 404, "not_found")
        assert hidden["message"].replace("cyberdyne-ops", "nobody") == missing["message"]
        error_of(stark.get(other, params={"as_of": "2026-11-01T00:00:00Z"}), 404, "not_found")
        error_of(stark.post(other, json=GOOD), 404, "not_found")
        grant = "monthly-pool@2026-11-01"
        error_of(stark.post(f"{other}/{grant}/void", json={"reason": "x"}), 404, "not_found")
        error_of(
            stark.post(f"{other}/{grant}/adjustments", json={"amount": "-1", "reason": "x"}),
            404,
            "not_found",
        )
        error_of(stark.post("/v1/invoices/thresholds"), 403, "forbidden")
    with credited.client("read-stark") as reader:
        assert credits(reader, "stark-agents")["customer"] == "stark-agents"
        error_of(reader.get(other), 404, "not_found")
        error_of(post_grant(reader, "stark-agents", **GOOD), 403, "forbidden")
    with credited.client("admin") as admin:
        assert stable(credits(admin, "cyberdyne-ops")) == before
        assert invoice_ids(admin, "cyberdyne-ops") == invoices


def test_writes_need_an_admin_key(credited: ClockedServer) -> None:
    base = "/v1/customers/stark-agents/credits"
    with credited.client("admin") as admin:
        before = stable(credits(admin, "stark-agents"))
    for scope in ("read", "ingest"):
        with credited.client(scope) as client:
            error_of(post_grant(client, "stark-agents", **GOOD), 403, "forbidden")
            error_of(
                client.post(f"{base}/october-pack/void", json={"reason": "x"}), 403, "forbidden"
            )
            error_of(
                client.post(
                    f"{base}/october-pack/adjustments", json={"amount": "1", "reason": "x"}
                ),
                403,
                "forbidden",
            )
            error_of(client.post("/v1/invoices/thresholds"), 403, "forbidden")
    with credited.client("ingest") as ingester:
        error_of(ingester.get(base), 403, "forbidden")
    with credited.client(None) as anonymous:
        error_of(anonymous.get(base), 401, "unauthorized")
        error_of(post_grant(anonymous, "stark-agents", **GOOD), 401, "unauthorized")
    with credited.client("admin") as admin:
        assert stable(credits(admin, "stark-agents")) == before
        # no demo contract has a threshold: checking bills nobody
        checked = admin.post("/v1/invoices/thresholds")
        assert checked.status_code == 200 and checked.json() == {"finalized": []}


def test_the_credit_routes_are_in_the_openapi_document(credited: ClockedServer) -> None:
    paths = httpx.get(f"{credited.server.url}/openapi.json", timeout=30).json()["paths"]
    for path, method in (
        ("/v1/customers/{customer}/credits", "get"),
        ("/v1/customers/{customer}/credits", "post"),
        ("/v1/customers/{customer}/credits/{grant_id}/void", "post"),
        ("/v1/customers/{customer}/credits/{grant_id}/adjustments", "post"),
        ("/v1/invoices/thresholds", "post"),
    ):
        operation = paths[path][method]
        assert operation["summary"] and operation["tags"] == ["credits"], (path, method)


# -- thresholds ---------------------------------------------------------------------------------

THRESHOLD_PRICING = """\
meters:
  - {key: calls, event_type: api.call, aggregation: count}
plans:
  - key: metered
    name: Metered
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: calls, model: per_unit, description: API calls, unit_amount: "1.00"}
contracts:
  - customer: initech
    plan: metered
    start: 2026-11-01
    credits:
      threshold: "10.00"
      grants:
        - {key: starter, credit_type: USD, amount: "3.00", description: Starter credit}
  - {customer: umbrella, plan: metered, start: 2026-11-01}
"""


def calls(customer: str, first: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{customer}-{number}",
            "customer": customer,
            "type": "api.call",
            "timestamp": f"2026-11-10T08:{number // 60:02d}:{number % 60:02d}Z",
            "properties": {},
        }
        for number in range(first, first + count)
    ]


def check(client: httpx.Client) -> list[str]:
    response = client.post("/v1/invoices/thresholds")
    assert response.status_code == 200, response.text
    finalized: list[str] = response.json()["finalized"]
    return finalized


@pytest.fixture
def metered(new_db: Callable[..., Location], tmp_path: Path) -> Iterator[ClockedServer]:
    db = new_db("thresholds")
    server = start_clocked(db, tmp_path, datetime(2026, 11, 10, 12, tzinfo=UTC), make_keys(db))
    try:
        yield server
    finally:
        server.server.stop()


def test_a_threshold_bills_once_per_crossing_and_the_period_invoice_nets_it(
    metered: ClockedServer,
) -> None:
    with metered.client("admin") as admin:
        apply(admin, THRESHOLD_PRICING)
        ingest(metered, calls("initech", 0, 10) + calls("umbrella", 0, 50))
        assert check(admin) == []  # 10 calls less 3.00 of credit: 7.00 unbilled

        ingest(metered, calls("initech", 10, 3))  # 13.00 - 3.00 = 10.00: reached
        first = check(admin)
        assert len(first) == 1 and INVOICE_ID.fullmatch(first[0])
        assert check(admin) == []  # the same crossing never bills twice
        document = exact(admin.get(f"/v1/invoices/{first[0]}"))["invoice"]
        assert (document["kind"], document["status"], document["customer"]) == (
            "threshold",
            "finalized",
            "initech",
        )
        assert document["total"] == "10.00"
        assert document["period"]["start"] == "2026-11-01T00:00:00Z"
        [line] = document["lines"]
        assert (line["kind"], line["amount"], line["threshold"]) == ("threshold", "10.00", "10.00")

        ingest(metered, calls("initech", 13, 4))  # 4.00 unbilled since
        assert check(admin) == []
        ingest(metered, calls("initech", 17, 7))  # 11.00 unbilled: crossed again

        results: list[list[str]] = []

        def concurrent_check() -> None:
            with metered.client("admin") as client:
                results.append(check(client))

        threads = [threading.Thread(target=concurrent_check) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        second = [invoice for made in results for invoice in made]
        assert len(results) == 4 and len(second) == 1, results
        assert check(admin) == []
        assert exact(admin.get(f"/v1/invoices/{second[0]}"))["invoice"]["total"] == "11.00"
        listed = admin.get("/v1/customers/initech/invoices").json()["invoices"]
        assert [(row["id"], row["kind"]) for row in listed] == [
            (first[0], "threshold"),
            (second[0], "threshold"),
        ]
        assert admin.get("/v1/customers/umbrella/invoices").json()["invoices"] == []

        # November ends: its invoice bills the usage and nets what was billed early
        metered.set_now(datetime(2026, 12, 1, 6, tzinfo=UTC))
        closed = admin.post("/v1/invoices/close")
        assert closed.status_code == 200, closed.text
        assert len(closed.json()["finalized"]) == 2  # initech's and umbrella's November
        [period] = [
            row
            for row in admin.get("/v1/customers/initech/invoices").json()["invoices"]
            if row["kind"] == "period"
        ]
        invoice = exact(admin.get(f"/v1/invoices/{period['id']}"))["invoice"]
        amounts = {
            kind: [line["amount"] for line in invoice["lines"] if line["kind"] == kind]
            for kind in ("usage", "credit", "prepaid")
        }
        assert amounts == {"usage": ["24.00"], "credit": ["-3.00"], "prepaid": ["-10.00", "-11.00"]}
        prepaid = [line for line in invoice["lines"] if line["kind"] == "prepaid"]
        assert [line["invoice"] for line in prepaid] == [first[0], second[0]]
        assert invoice["total"] == "0.00"

        assert check(admin) == []  # December: nothing unbilled
        audit = admin.get("/v1/audit")
        assert audit.status_code == 200, audit.text
        report = audit.json()
        assert report["passed"] is True and report["mismatches"] == []
        assert report["invoices"] == 4


CORRECTED_PRICING = """\
meters:
  - {key: units, event_type: work, aggregation: sum, property: units, negative: allow}
plans:
  - key: metered
    name: Metered
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: units, model: per_unit, description: Units, unit_amount: "1.00"}
contracts:
  - {customer: initech, plan: metered, start: 2026-11-01, credits: {threshold: "10.00"}}
"""


def work(number: int, units: int, day: str) -> dict[str, Any]:
    return {
        "id": f"work-{number}",
        "customer": "initech",
        "type": "work",
        "timestamp": f"{day}T08:00:{number:02d}Z",
        "properties": {"units": units},
    }


def test_a_threshold_surplus_never_makes_an_invoice_negative_and_carries_over(
    metered: ClockedServer,
) -> None:
    """Billed early 12.00, then a correction brings November's usage to 4.00: November's
    invoice nets 4.00 (total 0.00, not -8.00) and carries 8.00; December's nets 5.00 of
    it against 5.00 of usage; audit passes."""
    with metered.client("admin") as admin:
        apply(admin, CORRECTED_PRICING)
        ingest(metered, [work(0, 12, "2026-11-10")])
        [early] = check(admin)
        assert exact(admin.get(f"/v1/invoices/{early}"))["invoice"]["total"] == "12.00"
        ingest(metered, [work(1, -8, "2026-11-10")])  # a correction: 4.00 of usage
        assert check(admin) == []

        metered.set_now(datetime(2026, 12, 1, 6, tzinfo=UTC))
        assert admin.post("/v1/invoices/close").status_code == 200
        metered.set_now(datetime(2026, 12, 15, 12, tzinfo=UTC))
        ingest(metered, [work(2, 5, "2026-12-10")])
        assert check(admin) == []  # 5.00 of usage against 8.00 still billed early
        metered.set_now(datetime(2027, 1, 1, 6, tzinfo=UTC))
        assert admin.post("/v1/invoices/close").status_code == 200
        invoices = [
            exact(admin.get(f"/v1/invoices/{row['id']}"))["invoice"]
            for row in admin.get("/v1/customers/initech/invoices").json()["invoices"]
            if row["kind"] == "period"
        ]
        netted = [
            [
                (line["amount"], line["billed_early"], line.get("carried"), line["invoice"])
                for line in document["lines"]
                if line["kind"] == "prepaid"
            ]
            for document in invoices
        ]
        assert netted == [
            [("-4.00", "12.00", "8.00", early)],
            [("-5.00", "8.00", "3.00", early)],
        ]
        assert [document["total"] for document in invoices] == ["0.00", "0.00"]
        report = admin.get("/v1/audit").json()
        assert report["passed"] is True and report["mismatches"] == []
    # the journal agrees with itself: the surplus was deferred, then released, and
    # unbilled receivable at each period end equals that period's invoice
    from meterline.billing.service import open_billing
    from meterline.finance.truth import one_truth

    january = timestamp_to_us(datetime(2027, 1, 2, tzinfo=UTC))
    with open_billing(metered.server.db, clock=lambda: january, create=False) as billing:
        truth = one_truth(billing)
    assert truth.agrees, [check for check in truth.checks if not check.agrees]


def test_thresholds_with_a_contract_that_started_mid_period(metered: ClockedServer) -> None:
    pricing = THRESHOLD_PRICING.replace(
        "start: 2026-11-01\n    credits:", "start: 2026-11-05\n    credits:"
    )
    assert pricing != THRESHOLD_PRICING
    with metered.client("admin") as admin:
        apply(admin, pricing)
        ingest(metered, calls("initech", 0, 20))  # 20.00 - 3.00 of credit: reached
        response = admin.post("/v1/invoices/thresholds")
        assert response.status_code == 200, response.text
        [made] = response.json()["finalized"]
        assert exact(admin.get(f"/v1/invoices/{made}"))["invoice"]["total"] == "17.00"
