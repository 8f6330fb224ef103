"""The live engine's commands: ``meterline reconcile``, ``live show`` and ``controls ...``,
over a ledger built through the library (a SQLite file, a PostgreSQL schema), beside a
real server process on the same ledger.

The CLI reads the system clock, so the contracts started last month and the usage is
timed a minute ago, in the current period. The module's ledger is built through the
library with the live engine evaluating the controls as the usage arrives (firings,
blocks, a true-up invoice), then a real server serves it; tests that change it each use
a customer of their own.

Where ``reconcile`` must find a difference, it is a real one: ``reconcile --url`` against
a real server that serves a ledger behind it (an older copy), and against a small HTTP server
that answers ``/v1/live/{customer}`` with the real live documents, each with one figure
off by one cent (the comparison is the CLI's own; nothing is patched).

Overrides recorded by the CLI reach the running server by its poll of the ledger: tests
wait for the server's answer with a deadline, never a fixed time. To know the server has
*evaluated* a batch (so that "nothing fired" means something), a test ingests one event
for ``zz-barrier`` afterwards and waits for its spend-threshold firing (the engine feeds
events in ledger order and evaluates the customers of a cycle in sorted order).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from meterline.billing.service import open_billing
from meterline.cli import app
from meterline.core.events import format_timestamp, timestamp_to_us
from meterline.core.money import display_amount
from meterline.ledger import open_ledger
from meterline.ledger.control_records import ControlStore
from meterline.ledger.location import is_postgres, ledger_exists
from meterline.live.service import LiveEngine
from tests.conftest import Databases, Location, RunningServer, make_keys, start_server
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

DEADLINE_S = 20.0
POOL = 20
CUSTOMERS = ("acme", "globex", "hooli", "initech", "umbrella", "wayne", "zeta", "zz-barrier")
EXHAUSTED = ("acme", "hooli", "initech", "wayne")
"""Customers whose pool the module's usage ran out (blocked by the ``empty`` control)."""


def _start_of_last_month(now: datetime) -> str:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first - timedelta(days=1)).replace(day=1).date().isoformat()


def pricing(start: str) -> str:
    contracts = "".join(
        f"""\
  - customer: {customer}
    plan: pro
    start: {start}
    credits:
      grants:
        - {{key: pool, credit_type: credits, amount: {POOL}, paid: 1, recurrence: period}}
"""
        for customer in CUSTOMERS
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
      - {{key: empty, policy: balance_exhausted, unit: credits, actions: [block, true_up]}}
      - {{key: budget, policy: spend_threshold, amount: 2, percents: [50, 100],
         actions: [alert]}}
      - {{key: cogs, policy: cost_exceeds_prepayment, margin_percent: 0, actions: [alert]}}
    versions:
      - version: 1
        effective_from: 2020-01-01
        currency: USD
        prices:
          - {{meter: input_tokens, model: per_unit, unit_amount: "0.00001"}}
          - {{meter: calls, model: per_unit, unit_amount: "1", credit_type: credits}}
contracts:
{contracts}"""


def events(customer: str, first: int, count: int, tokens: int, at_us: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{customer}-{number}",
            "customer": customer,
            "type": "llm.completion",
            "timestamp": format_timestamp(at_us),
            "properties": {"model": "small" if number % 2 else "big", "input_tokens": tokens},
        }
        for number in range(first, first + count)
    ]


def usage_time_us() -> int:
    """A minute ago, but inside the current month (the contracts' current period)."""
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    moment: int = timestamp_to_us(max(now - timedelta(minutes=1), month))
    return moment


def build(db: Location, usage: dict[str, tuple[int, int]]) -> None:
    """Apply the pricing and ingest ``usage`` (customer -> (events, tokens each)) in a few
    batches, with the live engine evaluating the controls as a server's would."""
    with open_billing(db) as billing:
        billing.apply(pricing(_start_of_last_month(datetime.now(UTC))))
        engine = LiveEngine(billing).start(thread=False)
        try:
            at_us = usage_time_us()
            for customer, (count, tokens) in usage.items():
                for first in range(0, count, 10):
                    batch = events(customer, first, min(10, count - first), tokens, at_us)
                    outcome = billing.ledger.ingest(batch)
                    assert outcome.accepted == len(batch), outcome
                    engine.catch_up()
            engine.controls.drain()
        finally:
            engine.stop()


USAGE = {
    "acme": (POOL + 5, 1000),
    "globex": (8, 20_000),
    "hooli": (POOL + 2, 500),
    "initech": (POOL + 1, 500),
    "umbrella": (3, 1000),
    "wayne": (POOL + 3, 500),
    "zeta": (2, 100),
}


@dataclass
class Served:
    db: Location
    server: RunningServer

    def client(self, scope: str | None = "admin") -> httpx.Client:
        return self.server.client(scope)


@pytest.fixture(scope="module")
def served(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    db = databases.new(tmp_path_factory.mktemp("live-cli"), "live")
    build(db, USAGE)
    keys = make_keys(db)
    server = start_server(db)
    server.keys = keys
    try:
        yield Served(db, server)
    finally:
        server.stop()


runner = CliRunner(env={"METERLINE_KEY": None, "METERLINE_DB": None})


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def ok(*args: str) -> Result:
    result = cli(*args)
    assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
    return result


def words(text: str) -> str:
    return " ".join(text.split())


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in time (last: {found!r})")
        time.sleep(0.02)


def access(server: Served, customer: str) -> dict[str, Any]:
    with server.client("read") as reader:
        response = reader.get(f"/v1/access/{customer}")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def firings(server: Served) -> list[dict[str, Any]]:
    with server.client("read") as reader:
        response = reader.get("/v1/controls/firings")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["firings"]
    return rows


def overrides(server: Served, customer: str) -> list[dict[str, Any]]:
    with server.client("read") as reader:
        response = reader.get(f"/v1/customers/{customer}/overrides")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["overrides"]
    return rows


# -- reconcile ----------------------------------------------------------------------------------


def test_reconcile_proves_live_equals_batch_on_the_ledger(served: Served) -> None:
    db = str(served.db)
    shown = ok("reconcile", "--db", db)
    assert "live == batch" in words(shown.stdout)
    assert f"{len(CUSTOMERS)} customers" in words(shown.stdout)
    report = json.loads(ok("reconcile", "--db", db, "--json").stdout)
    assert report["passed"] is True and report["batches_replayed"] > len(CUSTOMERS)
    assert [c["customer"] for c in report["customers"]] == sorted(CUSTOMERS)
    for check in report["customers"]:
        assert check["differences"] == [], check
        assert {"spend", "cost", "prepaid", "usage lines"} <= check["checked"].keys()
        for figure in check["checked"].values():
            assert figure["live"] == figure["batch"], check
    acme = next(c for c in report["customers"] if c["customer"] == "acme")
    assert acme["checked"]["remaining credits"] == {"live": "0", "batch": "0"}
    globex = next(c for c in report["customers"] if c["customer"] == "globex")
    assert globex["checked"]["remaining credits"] == {"live": "12", "batch": "12"}
    # the real entry point, as a process: exit status 0
    finished = subprocess.run(
        [sys.executable, "-m", "meterline", "reconcile", "--db", db, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["passed"] is True


def test_reconcile_against_the_running_server_passes(served: Served) -> None:
    url, key = served.server.url, served.server.keys["read"]
    shown = ok("reconcile", "--db", str(served.db), "--url", url, "--key", key)
    assert "live == batch" in words(shown.stdout) and url in words(shown.stdout)
    report = json.loads(
        ok("reconcile", "--db", str(served.db), "--url", url, "--key", key, "--json").stdout
    )
    assert report["passed"] is True and len(report["customers"]) == len(CUSTOMERS)


def test_reconcile_fails_against_a_server_whose_ledger_is_behind(
    served: Served, new_db: Callable[..., Location]
) -> None:
    """A real difference: a server over a copy of the ledger taken before more usage (on
    PostgreSQL, where a schema has no cheap copy, the same ledger built again)."""
    older = new_db("older")
    behind = {"acme": (5, 1000), "globex": (3, 20_000)}
    build(older, behind)
    newer = new_db("newer")
    if is_postgres(newer):
        build(newer, behind)
    else:
        shutil.copy(older, newer)
    with open_billing(newer) as billing:
        more = events("globex", 100, 1, 20_000, usage_time_us())
        assert billing.ledger.ingest(more).accepted == 1
    keys = make_keys(older)
    server = start_server(older)
    try:
        url, key = server.url, keys["read"]
        result = cli("reconcile", "--db", str(newer), "--url", url, "--key", key)
        assert result.exit_code == 1, (result.stdout, result.stderr)
        assert "DIFFERENT" in result.stdout
        report = json.loads(
            cli("reconcile", "--db", str(newer), "--url", url, "--key", key, "--json").stdout
        )
        assert report["passed"] is False
        [globex] = [c for c in report["customers"] if c["differences"]]
        assert globex["customer"] == "globex"
        assert any(d.startswith("spend: live ") for d in globex["differences"])
        assert any(d.startswith("line input_tokens big") for d in globex["differences"])
        # the same server agrees with its own ledger
        assert cli("reconcile", "--db", str(older), "--url", url, "--key", key).exit_code == 0
    finally:
        server.stop()


@dataclass
class FakeLive:
    """An HTTP server answering ``GET /v1/live/{customer}`` from ``documents``."""

    documents: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                customer = self.path.rsplit("/", 1)[-1]
                document = fake.documents.get(customer)
                body = json.dumps(document or {"error": {"code": "not_found"}}).encode()
                self.send_response(200 if document else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _cent_more(value: str) -> str:
    return str(Decimal(value) + Decimal("0.01"))


def _off_line(document: dict[str, Any]) -> None:
    [line] = [
        line
        for line in document["lines"]
        if line["meter"] == "input_tokens" and line["group"] == {"model": "big"}
    ]
    line["amount"] = _cent_more(line["amount"])


def _off(name: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        if name == "remaining":
            document["remaining"]["credits"] = _cent_more(document["remaining"]["credits"])
        else:
            document[name] = _cent_more(document[name])

    return change


def test_reconcile_catches_one_cent_in_any_live_figure(served: Served) -> None:
    documents = {}
    with served.client("read") as reader:
        for customer in CUSTOMERS:
            response = reader.get(f"/v1/live/{customer}")
            assert response.status_code == 200, response.text
            documents[customer] = response.json()
    fake = FakeLive(json.loads(json.dumps(documents)))
    try:
        args = ("reconcile", "--db", str(served.db), "--url", fake.url, "--key", "k", "--json")
        untouched = cli(*args)
        assert untouched.exit_code == 0, untouched.stdout  # the real documents agree
        for change, customer, expected in (
            (_off_line, "globex", "line input_tokens big: live "),
            (_off("remaining"), "globex", "remaining credits: live 12.01, batch 12"),
            (_off("remaining"), "acme", "remaining credits: live 0.01, batch 0"),
            (_off("spend"), "umbrella", "spend: live "),
            (_off("cost"), "umbrella", "cost: live "),
        ):
            fake.documents = json.loads(json.dumps(documents))
            change(fake.documents[customer])
            result = cli(*args)
            assert result.exit_code == 1, (expected, result.stdout)
            report = json.loads(result.stdout)
            differing = {c["customer"]: c["differences"] for c in report["customers"]}
            assert [name for name, found in differing.items() if found] == [customer]
            [difference] = differing[customer]
            assert difference.startswith(expected), difference
        # a customer the server does not know is a difference too
        fake.documents = {k: v for k, v in documents.items() if k != "hooli"}
        result = cli(*args)
        assert result.exit_code == 1
        assert "no live figures" in result.stdout
    finally:
        fake.close()


# -- firings and live figures -------------------------------------------------------------------


def test_controls_firings_lists_every_firing_with_its_outcomes(served: Served) -> None:
    db = str(served.db)
    listed = json.loads(ok("controls", "firings", "--db", db, "--json").stdout)["firings"]
    empty = [(f["customer"], f["level"]) for f in listed if f["policy"] == "empty"]
    assert sorted(empty) == [(c, "crossed") for c in EXHAUSTED]
    for firing in listed:
        assert firing["firing"].startswith("F-") and firing["crossing"] == 1
        if firing["policy"] == "empty":
            assert firing["results"]["block"] == {"blocked": True}
            assert firing["results"]["true_up"]["invoice"].startswith("INV-")
    keys = [(f["customer"], f["policy"], f["level"], f["crossing"]) for f in listed]
    assert len(keys) == len(set(keys))
    with served.client("read") as reader:
        assert reader.get("/v1/controls/firings").json()["firings"] == listed
    only = json.loads(ok("controls", "firings", "--db", db, "--customer", "acme", "--json").stdout)
    assert only["firings"] == [f for f in listed if f["customer"] == "acme"]
    table = words(ok("controls", "firings", "--db", db).stdout)
    for firing in listed:
        assert firing["firing"] in table
    assert "Control firings" in table


def test_live_show_prints_the_figures_the_server_serves(served: Served) -> None:
    """live show --json is the served document exactly; the table reads it in cents."""
    db = str(served.db)
    document = json.loads(ok("live", "show", "globex", "--db", db, "--json").stdout)
    with served.client("read") as reader:
        served_figures = reader.get("/v1/live/globex").json()
    for name in ("spend", "cost", "prepaid", "margin", "remaining", "lines", "period"):
        assert document[name] == served_figures[name], name
    assert document["remaining"] == {"credits": "12"}
    assert document["access"]["allowed"] is True
    shown = words(ok("live", "show", "globex", "--db", db).stdout)
    currency = document["currency"]
    spend, cost = (display_amount(document[name], currency) for name in ("spend", "cost"))
    assert f"spend {spend}" in shown and f"cost {cost}" in shown
    assert "E-" not in shown and "E+" not in shown
    assert re.search(r"spend -?[\d,]+\.\d{2} cost -?[\d,]+\.\d{2} margin", shown), shown
    assert "remaining credits: 12" in shown and "access: allowed" in shown
    blocked = json.loads(ok("live", "show", "acme", "--db", db, "--json").stdout)
    assert blocked["remaining"] == {"credits": "0"}
    assert blocked["access"]["allowed"] is False and blocked["access"]["policy"] == "empty"
    assert "access: DENIED" in words(ok("live", "show", "acme", "--db", db).stdout)
    unknown = cli("live", "show", "nobody", "--db", db)
    assert unknown.exit_code == 1 and "'nobody' has no contract" in words(unknown.stderr)
    answer = cli("controls", "access", "acme", "--db", db)
    assert answer.exit_code == 3 and json.loads(answer.stdout)["allowed"] is False


# -- overrides from the CLI, picked up by the running server --------------------------------------


def test_a_cli_unblock_reaches_the_running_server(served: Served) -> None:
    assert access(served, "hooli")["allowed"] is False
    done = ok("controls", "unblock", "hooli", "--reason", "ticket 7", "--db", str(served.db))
    assert "recorded; access now allowed" in words(done.stdout)
    wait_for("server unblocked hooli", lambda: access(served, "hooli")["allowed"])
    [record] = overrides(served, "hooli")
    assert (record["kind"], record["actor"], record["reason"]) == ("unblock", "cli", "ticket 7")
    assert record["policy"] is None


def test_a_cli_grant_reaches_the_running_server(served: Served) -> None:
    assert access(served, "initech")["allowed"] is False
    done = ok(
        "controls",
        "grant",
        "initech",
        "--type",
        "credits",
        "--amount",
        "50",
        "--reason",
        "goodwill",
        "--db",
        str(served.db),
    )
    assert "access now allowed" in words(done.stdout)
    answer = wait_for(
        "server sees the grant",
        lambda: (a := access(served, "initech"))["allowed"] and a,
    )
    # the call past the pool before the grant is overage (billed), not taken from it
    assert answer["remaining"] == {"credits": "50"}
    [record] = overrides(served, "initech")
    assert (record["kind"], record["amount"], record["actor"]) == ("grant", "50", "cli")
    assert record["grant"].startswith("G-")


def test_a_cli_extend_is_recorded_and_reaches_the_running_server(served: Served) -> None:
    """Finance raises umbrella's budget and unblocks wayne from the CLI. Overrides reach
    the server in the order recorded, so once wayne is allowed there, umbrella's new limit
    holds too: usage past the old 50% level (not the new one) fires nothing."""
    db = str(served.db)
    assert access(served, "wayne")["allowed"] is False
    done = ok(
        "controls",
        "extend",
        "umbrella",
        "--policy",
        "budget",
        "--amount",
        "2.5",
        "--reason",
        "pilot",
        "--db",
        db,
    )
    assert "recorded" in words(done.stdout)
    ok("controls", "unblock", "wayne", "--reason", "paid by wire", "--db", db)
    wait_for("server applies the overrides", lambda: access(served, "wayne")["allowed"])
    [record] = overrides(served, "umbrella")
    assert (record["kind"], record["policy"], record["amount"]) == ("extend", "budget", "2.5")
    assert record["actor"] == "cli" and record["reason"] == "pilot"
    listed = words(ok("controls", "firings", "--db", db).stdout)
    assert "extend umbrella budget 2.5 by cli: pilot" in listed

    # 1.00 more: past 50% of 2 (1.00), not of 2 + 2.5
    at_us = usage_time_us()
    with served.client("ingest") as ingester:
        response = ingester.post("/v1/events", json=events("umbrella", 100, 1, 100_000, at_us))
        assert response.status_code == 200, response.text
        # a barrier: once zz-barrier's crossing is recorded, umbrella's batch was evaluated
        # (the engine feeds in ledger order and evaluates a cycle's customers sorted)
        response = ingester.post("/v1/events", json=events("zz-barrier", 0, 1, 100_000, at_us))
        assert response.status_code == 200, response.text
    wait_for(
        "barrier fired",
        lambda: any(f["customer"] == "zz-barrier" for f in firings(served)),
    )
    assert [f for f in firings(served) if f["customer"] == "umbrella"] == []


def test_a_crossing_a_cli_command_recorded_first_still_blocks_on_the_server(
    served: Served,
) -> None:
    """The server is paused (SIGSTOP) while usage lands in the ledger from another process
    and a CLI command evaluates it first: the CLI records the crossing (and its true-up).
    Resumed, the server finds the crossing taken; it must still hold the block."""
    assert access(served, "zeta")["allowed"] is True
    process = served.server.process
    os.kill(process.pid, signal.SIGSTOP)
    try:
        with open_ledger(served.db) as ledger:
            outcome = ledger.ingest(events("zeta", 100, POOL, 100, usage_time_us()))
            assert outcome.accepted == POOL
        answer = cli("controls", "access", "zeta", "--db", str(served.db))
        assert answer.exit_code == 3, answer.stdout
        assert json.loads(answer.stdout)["policy"] == "empty"
    finally:
        os.kill(process.pid, signal.SIGCONT)
    denied = wait_for(
        "server holds the block", lambda: (a := access(served, "zeta"))["allowed"] is False and a
    )
    assert denied["policy"] == "empty" and denied["remaining"] == {"credits": "0"}
    with served.client("read") as reader:
        rows = reader.get("/v1/controls/firings", params={"customer": "zeta"}).json()["firings"]
    assert [(f["policy"], f["crossing"]) for f in rows] == [("empty", 1)]
    assert rows[0]["firing"] in denied["reason"]


def test_bad_options_exit_non_zero_naming_the_option(
    served: Served, new_db: Callable[..., Location]
) -> None:
    db = str(served.db)
    before = {customer: overrides(served, customer) for customer in CUSTOMERS}
    missing_db = str(new_db("missing"))
    for args, code, named in (
        (
            ("controls", "extend", "acme", "--policy", "empty", "--amount", "abc", "--reason", "x"),
            2,
            "--amount",
        ),
        (
            ("controls", "grant", "acme", "--type", "credits", "--amount", "1..", "--reason", "x"),
            2,
            "--amount",
        ),
        (
            (
                "controls",
                "grant",
                "acme",
                "--type",
                "credits",
                "--amount",
                "5",
                "--paid",
                "x",
                "--reason",
                "x",
            ),
            2,
            "--paid",
        ),
        (("controls", "unblock", "acme"), 2, "--reason"),
        (("controls", "extend", "acme", "--amount", "5", "--reason", "x"), 2, "--policy"),
        (("controls", "unblock", "nobody", "--reason", "x"), 1, "customer: 'nobody'"),
        (("controls", "unblock", "acme", "--policy", "nope", "--reason", "x"), 1, "policy:"),
        (
            ("controls", "extend", "acme", "--policy", "nope", "--amount", "5", "--reason", "x"),
            1,
            "policy:",
        ),
        (("controls", "unblock", "acme", "--reason", " "), 1, "reason:"),
        (
            ("controls", "grant", "acme", "--type", "gold", "--amount", "5", "--reason", "x"),
            1,
            "gold",
        ),
        (("reconcile", "--url", served.server.url), 2, "--key"),
        # a refused key or an unreachable server is an error (2), not a difference (1)
        (("reconcile", "--url", served.server.url, "--key", "mlk_bogus"), 2, "--key: "),
        (
            ("reconcile", "--url", served.server.url, "--key", served.server.keys["ingest"]),
            2,
            "--key: ",
        ),
        (
            ("reconcile", "--url", f"http://127.0.0.1:{free_port()}", "--key", "k"),
            2,
            "--url: cannot read",
        ),
    ):
        result = cli(*args, "--db", db)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        assert named in words(result.stderr), (args, result.stderr)
    for command in (
        ("reconcile",),
        ("live", "show", "acme"),
        ("controls", "firings"),
        ("controls", "access", "acme"),
        ("controls", "unblock", "acme", "--reason", "x"),
    ):
        result = cli(*command, "--db", missing_db)
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        assert "--db" in result.stderr and "does not exist" in words(result.stderr), command
    assert not ledger_exists(missing_db)
    assert {customer: overrides(served, customer) for customer in CUSTOMERS} == before
    store = ControlStore(served.db)
    try:
        assert all(o.actor == "cli" for o in store.overrides())
    finally:
        store.close()
