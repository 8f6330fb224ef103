"""The ``meterline credits`` commands and ``meterline invoices thresholds``, run as real
processes.

The commands run on a test clock that starts at 2026-11-23T12:00Z (``METERLINE_NOW``),
whatever today is: grants here are made "now" (no ``--effective`` or ``--expires`` unless
the date is far from now either way) and threshold usage is timed a few minutes before that
clock's now, in its current period. One module-wide ledger holds the demo pricing and
October usage of stark-agents and cyberdyne-ops; tests that change a ledger each use a
customer of their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from meterline.cli import app
from meterline.core.events import encode_canonical
from meterline.demo.workload import generate_month
from meterline.ledger.billing_records import BillingStore
from tests.conftest import DEMO_NOW, Databases, Location, clock_env, clock_now_us

pytestmark = pytest.mark.slow

PRICING = files("meterline.demo").joinpath("pricing.yaml").read_text()
NewDb = Callable[..., Location]


def meterline(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``meterline`` on the module's test clock."""
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=clock_env(DEMO_NOW),
    )


def words(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(text.split())


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    finished = meterline(*args)
    assert finished.returncode == 0, (args, finished.stdout, finished.stderr)
    return finished


def show(db: Location, customer: str, *options: str) -> dict[str, Any]:
    finished = ok("credits", "show", customer, "--db", str(db), "--json", *options)
    report: dict[str, Any] = json.loads(finished.stdout, parse_float=Decimal)
    return report


def stable(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key != "as_of"}


def grant_of(report: dict[str, Any], grant_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [g for g in report["grants"] if g["grant"] == grant_id]
    assert len(found) == 1, (grant_id, [g["grant"] for g in report["grants"]])
    return found[0]


def invoices(db: Location) -> list[list[str]]:
    listed = ok("invoices", "list", "--db", str(db)).stdout
    return [line.split("\t") for line in listed.splitlines()]


def assert_conserved(report: dict[str, Any]) -> None:
    sums: dict[str, Decimal] = {}
    for entry in report["entries"]:
        for side, sign in ((entry["debit"], 1), (entry["credit"], -1)):
            if side.startswith("grant:"):
                sums[side[6:]] = sums.get(side[6:], Decimal(0)) + sign * Decimal(entry["amount"])
    for grant in report["grants"]:
        assert Decimal(grant["balance"]) == sums.get(grant["grant"], 0), grant
    for unit, totals in report["totals"].items():
        value = {name: Decimal(amount) for name, amount in totals.items()}
        assert value["granted"] == (
            value["consumed"] + value["expired"] + value["remaining"] + value["voided"]
        ), (unit, totals)
        balances = [Decimal(g["balance"]) for g in report["grants"] if g["unit"] == unit]
        assert value["remaining"] == sum(balances, Decimal(0)), (unit, totals)


def stored(db: Location) -> tuple[list[str], list[str]]:
    """Every stored grant and invoice id, read from the billing store itself."""
    store = BillingStore(db)
    try:
        return [g.grant_id for g in store.grants()], [i.invoice_id for i in store.invoices()]
    finally:
        store.close()


def write_events(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"\n".join(encode_canonical(event) for event in events) + b"\n")
    return path


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Location:
    folder = tmp_path_factory.mktemp("credits-cli")
    ledger = databases.new(folder, "ledger")
    pricing = folder / "pricing.yaml"
    pricing.write_text(PRICING)
    customers = ("stark-agents", "cyberdyne-ops")
    events = [e for e in generate_month(scale=0.2) if e["customer"] in customers]
    ingested = ok(
        "ingest", str(write_events(folder / "october.ndjson", events)), "--db", str(ledger)
    )
    assert json.loads(ingested.stdout)["accepted"] == len(events)
    ok("apply", "-f", str(pricing), "--db", str(ledger))
    return ledger


# -- credits show ---------------------------------------------------------------------------------


def test_show_json_lists_grants_with_balances_and_conserves(db: Location) -> None:
    report = show(db, "stark-agents")
    assert report["customer"] == "stark-agents" and report["overage"] == "bill"
    promo, pack = grant_of(report, "launch-promo"), grant_of(report, "october-pack")
    assert (promo["status"], promo["expires"]) == ("expired", "2026-10-11T00:00:00Z")
    assert pack["status"] == "active" and 0 < Decimal(pack["balance"]) < 20000
    assert (pack["paid"], pack["scope"], pack["source"]) == ("180.00", ["tool_calls"], "contract")
    assert {e["kind"] for e in report["entries"]} >= {"grant", "consume"}
    assert_conserved(report)

    then = show(db, "stark-agents", "--as-of", "2026-10-02")
    assert then["as_of"] == "2026-10-02T00:00:00Z"
    assert grant_of(then, "launch-promo")["status"] == "active"
    assert grant_of(then, "october-pack")["balance"] == "20000"
    assert all(entry["at"] <= "2026-10-02T00:00:00Z" for entry in then["entries"])
    assert_conserved(then)
    assert show(db, "stark-agents", "--as-of", "2026-10-02T00:00:00Z") == then


def test_show_prints_tables_and_entries(db: Location) -> None:
    """credits show: grants in their unit, paid in the plan's cents; --entries adds entries."""
    table = words(ok("credits", "show", "stark-agents", "--db", str(db)).stdout)
    for text in ("launch-promo", "october-pack", "expired", "active", "credits"):
        assert text in table, text
    assert "│ 20,000 │ 180.00 │" in table  # the pack: its credits, and what it cost in USD
    assert "E-" not in table and "E+" not in table
    assert "grant:october-pack" not in table  # the entries only with --entries
    with_entries = words(ok("credits", "show", "stark-agents", "--db", str(db), "--entries").stdout)
    assert "consume" in with_entries and "grant:october-pack" in with_entries


def test_show_refuses_unknown_customers_and_bad_instants(db: Location) -> None:
    unknown = meterline("credits", "show", "nobody", "--db", str(db))
    assert unknown.returncode == 1 and "customer 'nobody' has no contract" in words(unknown.stderr)
    bad = meterline("credits", "show", "stark-agents", "--db", str(db), "--as-of", "yesterday")
    assert bad.returncode == 2 and "--as-of" in bad.stderr


# -- grant, void, adjust -----------------------------------------------------------------------


def test_a_paid_grant_prints_its_id_and_is_invoiced_then_voided(db: Location) -> None:
    customer = "cyberdyne-ops"
    before = invoices(db)
    granted = ok(
        "credits",
        "grant",
        customer,
        "--db",
        str(db),
        "--type",
        "credits",
        "--amount",
        "30000",
        "--paid",
        "270",
        "--reason",
        "top-up pack",
        "--priority",
        "10",
        "--scope",
        "tool_calls",
    )
    grant_id, shown_customer, shown_amount = granted.stdout.strip().split("\t")
    assert grant_id.startswith("G-") and len(grant_id) == 8
    assert (shown_customer, shown_amount) == (customer, "30000 credits")
    invoice_id = words(granted.stderr).removeprefix("invoiced on ")
    assert invoice_id.startswith("INV-")

    [row] = [row for row in invoices(db) if row not in before]
    assert row[:2] == [invoice_id, customer] and row[3] == "270.00 USD"
    document = json.loads(ok("invoices", "show", invoice_id, "--db", str(db), "--json").stdout)
    assert (document["kind"], document["total"]) == ("purchase", "270.00")
    [line] = document["lines"]
    assert (line["kind"], line["grant"], line["units"]) == ("purchase", grant_id, "30000")

    report = show(db, customer)
    grant = grant_of(report, grant_id)
    assert (grant["status"], grant["balance"], grant["source"]) == ("active", "30000", "cli")
    assert (grant["priority"], grant["scope"], grant["reason"]) == (
        10,
        ["tool_calls"],
        "top-up pack",
    )
    assert_conserved(report)

    voided = ok("credits", "void", customer, grant_id, "--reason", "refunded", "--db", str(db))
    assert voided.stdout.strip() == f"voided {grant_id}"
    report = show(db, customer)
    grant = grant_of(report, grant_id)
    assert grant["status"] == "voided" and Decimal(grant["balance"]) == 0
    [void] = [e for e in report["entries"] if e["grant"] == grant_id and e["kind"] == "void"]
    assert (void["amount"], void["reason"]) == ("30000", "refunded")
    assert Decimal(report["totals"]["credits"]["voided"]) == 30000
    assert_conserved(report)

    again = meterline("credits", "void", customer, grant_id, "--reason", "x", "--db", str(db))
    assert again.returncode == 1 and "already void" in words(again.stderr)
    unknown = meterline("credits", "void", customer, "G-999999", "--reason", "x", "--db", str(db))
    assert unknown.returncode == 1 and "has no grant 'G-999999'" in words(unknown.stderr)
    assert stable(show(db, customer)) == stable(report)


def test_adjust_takes_and_gives_with_a_reason(db: Location) -> None:
    customer, grant_id = "tyrell-research", "annual-commit"
    before = grant_of(show(db, customer), grant_id)
    assert (before["unit"], before["balance"]) == ("USD", "20000.00")
    taken = ok(
        "credits", "adjust", customer, grant_id, "--amount", "-100.50", "--reason", "billing fix",
        "--db", str(db),
    )  # fmt: skip
    assert taken.stdout.strip() == f"adjusted {grant_id} by -100.50"
    report = show(db, customer)
    assert Decimal(grant_of(report, grant_id)["balance"]) == Decimal("19899.50")
    [adjust] = [e for e in report["entries"] if e["kind"] == "adjust"]
    assert (adjust["amount"], adjust["debit"], adjust["credit"]) == (
        "100.50",
        "issued",
        f"grant:{grant_id}",
    )
    assert adjust["reason"] == "billing fix"

    ok("credits", "adjust", customer, grant_id, "--amount", "0.5", "--reason", "goodwill",
       "--db", str(db))  # fmt: skip
    report = show(db, customer)
    assert Decimal(grant_of(report, grant_id)["balance"]) == Decimal("19900.00")
    assert [e["kind"] for e in report["entries"]] == ["grant", "adjust", "adjust"]
    assert_conserved(report)

    for amount, code, named in (
        ("abc", 2, "--amount"),
        ("1.5.2", 2, "--amount"),
        ("0", 1, "amount"),
    ):
        bad = meterline(
            "credits", "adjust", customer, grant_id, "--amount", amount, "--reason", "x",
            "--db", str(db),
        )  # fmt: skip
        assert bad.returncode == code and named in bad.stderr, (amount, bad.stderr)
    blank = meterline(
        "credits", "adjust", customer, grant_id, "--amount", "1", "--reason", " ", "--db", str(db)
    )
    assert blank.returncode == 1 and "reason" in blank.stderr
    unknown = meterline(
        "credits", "adjust", customer, "october-pack", "--amount", "1", "--reason", "x",
        "--db", str(db),
    )  # fmt: skip
    assert unknown.returncode == 1 and "has no grant 'october-pack'" in words(unknown.stderr)
    assert stable(show(db, customer)) == stable(report)


@pytest.mark.parametrize(
    ("options", "code", "named"),
    [
        (("--amount", "1.5.2"), 2, "--amount"),
        (("--amount", "lots"), 2, "--amount"),
        (("--amount", "NaN"), 2, "--amount"),
        (("--amount", "1e100"), 2, "--amount"),
        (("--paid", "0.0000000000001"), 2, "--paid"),
        (("--paid", "ten"), 2, "--paid"),
        (("--type", "gems"), 1, "credit_type"),
        (("--amount", "0"), 1, "amount"),
        (("--amount", "-5"), 1, "amount"),
        (("--paid", "-1"), 1, "paid"),
        (("--scope", "tool_calls", "--scope", "nope"), 1, "scope[1]"),
        (("--reason", "  "), 1, "reason"),
        (("--priority", "5000"), 1, "priority"),
        (("--effective", "2020-01-01"), 1, "effective"),
        (("--effective", "soon"), 2, "--effective"),
        (("--expires", "someday"), 2, "--expires"),
        (("--effective", "2099-02-01", "--expires", "2099-01-01"), 1, "expires"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else str(value),
)
def test_a_bad_grant_exits_non_zero_naming_the_option_and_stores_nothing(
    db: Location, options: tuple[str, ...], code: int, named: str
) -> None:
    """In process (typer's runner) for speed: the same command, exit code and streams."""
    before = stored(db)
    defaults = ("--type", "credits", "--amount", "100", "--reason", "pilot", "--paid", "1")
    # an option given again overrides its default (the last one wins)
    arguments = ["credits", "grant", "globex-support", "--db", str(db), *defaults, *options]
    finished = CliRunner().invoke(app, arguments)
    assert finished.exit_code == code, (finished.stdout, finished.stderr)
    assert finished.stdout == ""
    assert named in finished.stderr, finished.stderr
    assert stored(db) == before


# -- thresholds -----------------------------------------------------------------------------------

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
  - {customer: initech, plan: metered, start: 2026-01-01, credits: {threshold: "10.00"}}
  - {customer: umbrella, plan: metered, start: 2026-01-01}
"""


def recent_calls(customer: str, first: int, count: int) -> list[dict[str, Any]]:
    """Calls timed a few minutes ago, never before the current (calendar, UTC) month."""
    now = datetime.fromtimestamp(clock_now_us(DEMO_NOW) / 1_000_000, tz=UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    at = max(month_start, now - timedelta(minutes=5))
    return [
        {
            "id": f"{customer}-{number}",
            "customer": customer,
            "type": "api.call",
            "timestamp": (at + timedelta(microseconds=number)).isoformat().replace("+00:00", "Z"),
            "properties": {},
        }
        for number in range(first, first + count)
    ]


@pytest.fixture
def metered(new_db: NewDb, tmp_path: Path) -> Iterator[Location]:
    ledger = new_db("thresholds")
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(THRESHOLD_PRICING)
    ok("apply", "-f", str(pricing), "--db", str(ledger))
    yield ledger


def test_invoices_thresholds_prints_what_it_finalized_once_per_crossing(
    metered: Location, tmp_path: Path
) -> None:
    def ingest(name: str, events: list[dict[str, Any]]) -> None:
        ok("ingest", str(write_events(tmp_path / name, events)), "--db", str(metered))

    ingest("first.ndjson", recent_calls("initech", 0, 9) + recent_calls("umbrella", 0, 40))
    nothing = ok("invoices", "thresholds", "--db", str(metered))
    assert nothing.stdout == "" and "finalized 0 threshold invoices" in nothing.stderr

    ingest("second.ndjson", recent_calls("initech", 9, 3))  # 12.00 unbilled: reached
    made = ok("invoices", "thresholds", "--db", str(metered))
    [line] = made.stdout.splitlines()
    invoice_id, customer, total = line.split("\t")
    assert (customer, total) == ("initech", "12.00") and invoice_id.startswith("INV-")
    assert "finalized 1 threshold invoices" in made.stderr
    again = ok("invoices", "thresholds", "--db", str(metered))
    assert again.stdout == "" and "finalized 0 threshold invoices" in again.stderr

    document = json.loads(ok("invoices", "show", invoice_id, "--db", str(metered), "--json").stdout)
    assert (document["kind"], document["customer"], document["total"]) == (
        "threshold",
        "initech",
        "12.00",
    )
    # the draft of the period nets what was billed early
    draft = json.loads(ok("invoices", "draft", "initech", "--db", str(metered), "--json").stdout)
    [prepaid] = [line for line in draft["lines"] if line["kind"] == "prepaid"]
    assert (prepaid["amount"], prepaid["invoice"]) == ("-12.00", invoice_id)

    ingest("third.ndjson", recent_calls("initech", 12, 10))  # 10.00 more: crossed again
    second = ok("invoices", "thresholds", "--db", str(metered)).stdout.splitlines()
    assert [row.split("\t")[1:] for row in second] == [["initech", "10.00"]]
    assert ok("invoices", "thresholds", "--db", str(metered)).stdout == ""
    assert ok("audit", "--db", str(metered)).returncode == 0


def test_invoices_thresholds_without_pricing_fails(new_db: NewDb) -> None:
    finished = meterline("invoices", "thresholds", "--db", str(new_db("empty")))
    assert finished.returncode == 1 and "no pricing applied yet" in words(finished.stderr)
