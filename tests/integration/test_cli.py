"""The ``meterline`` command, run as a real process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from meterline.keys import authenticate
from meterline.ledger.event_ledger import open_store
from meterline.ledger.location import is_postgres
from tests.conftest import DEMO_NOW, Location, clock_env, event
from tests.stores import tamper

NewDb = Callable[..., Location]


def meterline(
    *args: str, stdin: str | None = None, cwd: Path | None = None, now: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``meterline``; with ``now``, on a clock that starts at that instant."""
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
        cwd=cwd,
        env=clock_env(now) if now else None,
    )


def _head(db: Location) -> tuple[int, bytes]:
    store = open_store(db)
    try:
        return store.head()
    finally:
        store.close()


def test_demo_tells_the_story_and_is_idempotent(new_db: NewDb, tmp_path: Path) -> None:
    """The demo ingests a month, shows exactly-once and an intact chain; a rerun adds nothing."""
    db = new_db("demo")
    first = meterline(
        "demo", "--db", str(db), "--no-serve", "--scale", "0.1", cwd=tmp_path, now=DEMO_NOW
    )
    assert first.returncode == 0, first.stderr
    for phrase in (
        "accepted",
        "What the ledger holds",
        "1,000 duplicate",
        "conflict",
        "customer is required",
        "Ledger intact",
        "Checkpoint 1 signs every partition's head",
        "proven standalone",
        "10 invoices finalized now",
        "team@1 → enterprise@1",
        "Late usage for 2026-10-01",
        "verifies",
        "audit PASSED",
        "team@2",
        # the overdue customer, denied by its declared control until it pays
        "GET /v1/access/hooli-search -> allowed=False, policy=dunning:",
        "invoice_overdue dunning fired",
        "days_past_due 15",
        "GET /v1/access/hooli-search -> allowed=True (the block lifts",
        # the workspace: a contract change approved, then a price experiment over a sample
        "a price experiment: team@2 from 2026-12-01 for new Team customers",
        "Last closed period under team@2",
    ):
        assert phrase in " ".join(first.stdout.split()), phrase
    first_text = " ".join(first.stdout.split())
    accepted = re.search(r"([\d,]+) accepted, 0 already in the ledger", first_text)
    assert accepted is not None and int(accepted.group(1).replace(",", "")) > 10_000
    head = _head(db)
    second = meterline(
        "demo", "--db", str(db), "--no-serve", "--scale", "0.1", cwd=tmp_path, now=DEMO_NOW
    )
    second_text = " ".join(second.stdout.split())
    assert second.returncode == 0
    assert f"0 accepted, {accepted.group(1)} already in the ledger" in second_text
    assert _head(db) == head
    assert "0 invoices finalized now (numbered, immutable, content-hashed); 10 in all" in (
        second_text
    )
    assert "its invoice was paid on an earlier run of the demo" in second_text


@pytest.mark.parametrize(
    ("now", "month", "current"),
    [
        ("2026-12-06T21:00:00Z", "November 2026", "December"),
        ("2027-03-15T12:00:00Z", "February 2027", "March"),
        ("2028-01-10T08:00:00Z", "December 2027", "January"),
        ("2028-03-20T16:30:00Z", "February 2028", "March"),  # a leap February
    ],
)
def test_the_demo_reads_true_on_any_date(
    tmp_path: Path, now: str, month: str, current: str
) -> None:
    """Run at any date, the demo tells the last full month: its invoices, late usage, pools
    and audit all name that month and the current one."""
    db = tmp_path / "demo.db"
    first = meterline(
        "demo", "--db", str(db), "--no-serve", "--scale", "0.05", cwd=tmp_path, now=now
    )
    assert first.returncode == 0, first.stderr
    text = " ".join(first.stdout.split())
    name = month.split()[0]
    label = f"{month.split()[1]}-{_MONTHS.index(name) + 1:02d}-01"
    for phrase in (
        f"one month of usage ({month})",
        f"What the ledger holds, per customer ({month})",
        f"Closing {name}",
        "10 invoices finalized now (numbered, immutable, content-hashed); 10 in all",
        f"An event of {name} arrives after the close (accepted)",
        f"the {current} draft carries the difference",
        f"Late usage for {label}",
        f"against its {current} pool",
        "live == batch",
        "audit PASSED: 12 invoices",
        f"{name}, closed: revenue",
        "Unbillable usage, reported rather than dropped",
        "before_contract) of cyberdyne-ops",
        "policy=dunning: invoice_overdue dunning fired",
        "hooli-search -> allowed=True (the block lifts",
        "properties.input_tokens is too large",
    ):
        assert phrase in text, phrase
    delivered = re.search(r"received (\d+) signed deliveries \([^)]*\); (\d+) verified", text)
    assert delivered and delivered.group(1) == delivered.group(2) != "0", "webhooks verify"
    # months later, a rerun retells the same month: nothing new from the generator
    later = meterline(
        "demo",
        "--db",
        str(db),
        "--no-serve",
        "--scale",
        "0.05",
        cwd=tmp_path,
        now=now.replace(now[:4], str(int(now[:4]) + 1)),
    )
    assert later.returncode == 0, later.stderr
    again = " ".join(later.stdout.split())
    assert f"one month of usage ({month})" in again
    assert re.search(r"\b0 accepted, [\d,]+ already in the ledger", again)


_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


_RAISE_PRICE = {
    "sqlite": "UPDATE configuration_revisions SET content = replace(content,"
    ' CAST(\'"amount":"5000.00"\' AS BLOB), CAST(\'"amount":"5100.00"\' AS BLOB))',
    "postgresql": "UPDATE configuration_revisions SET content = convert_to(replace("
    'convert_from(content, \'UTF8\'), \'"amount":"5000.00"\', \'"amount":"5100.00"\'),'
    " 'UTF8')",
}


def test_audit_passes_on_the_demo_database_and_fails_on_a_tampered_price(
    new_db: NewDb, tmp_path: Path
) -> None:
    db = new_db("demo")
    demo = meterline(
        "demo", "--db", str(db), "--no-serve", "--scale", "0.1", cwd=tmp_path, now=DEMO_NOW
    )
    assert demo.returncode == 0
    passed = meterline("audit", "--db", str(db), now=DEMO_NOW)
    assert passed.returncode == 0, passed.stderr
    assert "audit PASSED: 12 invoices" in " ".join(passed.stdout.split())
    tamper(db, _RAISE_PRICE["postgresql" if is_postgres(db) else "sqlite"])
    failed = meterline("audit", "--db", str(db), now=DEMO_NOW)
    assert failed.returncode == 1
    text = " ".join(failed.stderr.split())
    assert "configuration revision 1: content does not match its hash" in text
    assert "invoice INV-000001" in text


def test_apply_names_the_path_of_every_error_and_stores_nothing(
    new_db: NewDb, tmp_path: Path
) -> None:
    db = new_db()
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(
        "meters:\n"
        "  - {key: calls, event_type: call, aggregation: count}\n"
        "plans:\n"
        "  - key: p\n"
        "    versions:\n"
        "      - version: 1\n"
        "        effective_from: 2026-01-01\n"
        "        prices:\n"
        "          - {meter: cals, model: per_unit, unit_amount: 1}\n"
        "          - meter: calls\n"
        "            model: graduated\n"
        "            where: {}\n"
        "            tiers: [{up_to: 10, unit_amount: 1}, {up_to: 5, unit_amount: 1}, {}]\n"
    )
    result = meterline("apply", "-f", str(pricing), "--db", str(db))
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert "pricing.yaml:6: plans[0].versions[0].currency: is required" in text
    assert "pricing.yaml:9: plans[0].versions[0].prices[0].meter: unknown meter 'cals'" in text
    assert "plans[0].versions[0].prices[1].tiers[1].up_to: 5 must be greater than 10" in text
    listed = meterline("invoices", "list", "--db", str(db))
    assert listed.returncode == 0 and listed.stdout == ""


def test_keys_create_list_revoke(new_db: NewDb) -> None:
    """`keys create` prints a working token once; list hides secrets; revoke disables it."""
    db = new_db("keys")
    created = meterline("keys", "create", "--scope", "read", "--db", str(db), "--name", "bi")
    assert created.returncode == 0
    token = created.stdout.strip()
    store = open_store(db)
    principal = authenticate(store, token)
    assert principal.scope == "read"
    listed = meterline("keys", "list", "--db", str(db))
    assert principal.key_id in listed.stdout and token.split("_")[-1] not in listed.stdout
    assert meterline("keys", "revoke", principal.key_id, "--db", str(db)).returncode == 0
    with pytest.raises(Exception, match="revoked"):
        authenticate(store, token)
    assert meterline("keys", "revoke", principal.key_id, "--db", str(db)).returncode == 2
    store.close()


def test_keys_create_rejects_unknown_scope(tmp_path: Path) -> None:
    """An unknown scope exits 2 naming the allowed ones."""
    finished = meterline("keys", "create", "--scope", "root", "--db", str(tmp_path / "k.db"))
    assert finished.returncode == 2 and "ingest, read, admin" in finished.stderr


def test_ingest_bulk_file_json_and_ndjson(new_db: NewDb, tmp_path: Path) -> None:
    """`ingest` loads a JSON array or NDJSON file; a rerun is all duplicates."""
    db = new_db("bulk")
    array = tmp_path / "events.json"
    array.write_text(json.dumps([event(n) for n in range(1, 6)]))
    lines = tmp_path / "events.ndjson"
    lines.write_text("\n".join(json.dumps(event(n)) for n in range(4, 9)))
    assert json.loads(meterline("ingest", str(array), "--db", str(db)).stdout)["accepted"] == 5
    counts = json.loads(meterline("ingest", str(lines), "--db", str(db)).stdout)
    assert (counts["accepted"], counts["duplicate"]) == (3, 2)


def test_ingest_reports_rejections_with_exit_1(tmp_path: Path) -> None:
    """A file with a bad event exits 1 naming the event, field and reason."""
    file = tmp_path / "bad.ndjson"
    file.write_text(json.dumps(event(1)) + "\n" + json.dumps(event(2, timestamp="soon")))
    finished = meterline("ingest", str(file), "--db", str(tmp_path / "b.db"))
    assert finished.returncode == 1
    assert "event 1 (evt-2): rejected timestamp" in finished.stderr


def test_ingest_malformed_file_exits_2_with_position(tmp_path: Path) -> None:
    """A malformed JSON line exits 2 naming the line and the byte position."""
    file = tmp_path / "broken.ndjson"
    file.write_text(json.dumps(event(1)) + '\n{"id": "x",,}\n')
    finished = meterline("ingest", str(file), "--db", str(tmp_path / "b.db"))
    assert finished.returncode == 2 and "line 2" in finished.stderr and "byte" in finished.stderr


def test_verify_missing_database_exits_2(new_db: NewDb) -> None:
    """Verifying a ledger that does not exist (no file, an empty schema) is an error, not
    an empty success."""
    finished = meterline("verify", "--db", str(new_db("absent")))
    assert finished.returncode == 2 and "no such ledger" in finished.stderr


@pytest.mark.slow
def test_bench_ingest_json_prints_every_figure() -> None:
    """`bench ingest --json` prints one JSON object with every figure the issue names."""
    finished = meterline("bench", "ingest", "--json", "--events", "5000")
    assert finished.returncode == 0, finished.stderr
    figures = json.loads(finished.stdout)
    for name in (
        "events",
        "library_events_per_s",
        "http_events_per_s",
        "baseline_events_per_s",
        "ratio_to_baseline",
    ):
        assert figures[name] > 0, name
    assert figures["events"] == 5000


def test_apply_refuses_a_pricing_file_nested_too_deep(tmp_path: Path) -> None:
    """`meterline apply` on 3,000 nested brackets exits 1 naming the limit, no traceback."""
    deep = tmp_path / "deep.yaml"
    deep.write_text("meters: " + "[" * 3000 + "]" * 3000 + "\n")
    finished = meterline("apply", "-f", str(deep), "--db", str(tmp_path / "deep.db"))
    assert finished.returncode != 0
    assert "YAML_NESTING_LEVELS_MAX" in finished.stderr
    assert "Traceback" not in finished.stderr + finished.stdout
