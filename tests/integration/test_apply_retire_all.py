"""``apply`` refuses a pricing file that would retire everything (empty, no meters, plans
or contracts, or none of those in force kept) unless asked explicitly; the HTTP API always
refuses it. Nothing is stored by a refusal, dry run or not."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path

import pytest

from meterline.billing.service import Billing, open_billing
from meterline.config.source import RetireAllRefused
from tests.conftest import FIXED_NOW_US, Location, RunningServer

NewDb = Callable[..., Location]

PRICING = files("meterline.demo").joinpath("pricing.yaml").read_text()
IN_FORCE = "7 meters, 3 plan versions and 10 contracts"
"""What the demo pricing file puts in force."""
EMPTY_FILES = ["", "# nothing yet\n", "{}\n", "meters: []\nplans: []\ncontracts: []\n"]


@pytest.fixture
def billing(new_db: NewDb) -> Iterator[Billing]:
    with open_billing(new_db(), clock=lambda: FIXED_NOW_US) as service:
        yield service


def revision(billing: Billing) -> int | None:
    loaded = billing.load()
    return None if loaded is None else loaded.revision


@pytest.mark.parametrize("text", EMPTY_FILES, ids=["empty", "comment", "braces", "lists"])
def test_an_empty_file_is_refused_on_a_new_ledger(billing: Billing, text: str) -> None:
    """Nothing defined, nothing in force: refused as defining nothing, nothing stored."""
    for dry_run in (True, False):
        with pytest.raises(RetireAllRefused) as refused:
            billing.apply(text, name="empty.yaml", dry_run=dry_run)
        assert refused.value.errors == ["empty.yaml: defines no meters, plans or contracts"]
    assert revision(billing) is None


@pytest.mark.parametrize("text", EMPTY_FILES, ids=["empty", "comment", "braces", "lists"])
def test_an_empty_file_would_retire_everything_and_is_refused(billing: Billing, text: str) -> None:
    """Over the demo pricing, an empty file names what it would retire; nothing changes."""
    assert billing.apply(PRICING).revision == 1
    for dry_run in (True, False):
        with pytest.raises(RetireAllRefused) as refused:
            billing.apply(text, name="empty.yaml", dry_run=dry_run)
        assert refused.value.errors == [
            f"empty.yaml: defines no meters, plans or contracts; applying it would retire all"
            f" {IN_FORCE} in force"
        ]
    assert revision(billing) == 1


def test_a_file_keeping_nothing_in_force_is_refused(billing: Billing) -> None:
    """Every meter, plan version and contract replaced by others: the wrong file, likely."""
    billing.apply(PRICING)
    other = (
        "meters:\n  - {key: calls, event_type: call, aggregation: count}\n"
        "plans:\n  - key: basic\n    versions:\n      - version: 1\n"
        "        effective_from: 2026-01-01\n        currency: USD\n"
        "        prices: [{meter: calls, model: per_unit, unit_amount: 1}]\n"
        "contracts:\n  - {customer: someone-else, plan: basic, start: 2026-11-01}\n"
    )
    with pytest.raises(RetireAllRefused) as refused:
        billing.apply(other, name="other.yaml")
    assert refused.value.errors == [
        f"other.yaml: keeps none of the {IN_FORCE} in force; applying it would retire every"
        " one of them (is it the right file?)"
    ]
    assert revision(billing) == 1
    assert billing.apply(other, name="other.yaml", allow_retire_all=True).revision == 2


def test_keeping_one_object_is_an_ordinary_change(billing: Billing) -> None:
    """Retiring all but one contract is a change like any other, applied without asking."""
    billing.apply(PRICING)
    head, _, contracts = PRICING.partition("\ncontracts:\n")
    first = contracts.split("\n  - ")[0]
    report = billing.apply(f"{head}\ncontracts:\n{first}\n")
    assert report.revision == 2
    assert sum(change.change == "retired" for change in report.changes) == 9


def test_allow_retire_all_applies_and_retires_everything(billing: Billing) -> None:
    """Asked explicitly, the empty file is stored and every object is retired."""
    billing.apply(PRICING)
    planned = billing.apply("{}\n", dry_run=True, allow_retire_all=True)
    assert planned.revision is None
    assert {change.change for change in planned.changes} == {"retired"}
    assert revision(billing) == 1
    report = billing.apply("{}\n", allow_retire_all=True)
    assert report.revision == 2
    assert len(report.changes) == 7 + 1 + 3 + 10  # meters, credit types, versions, contracts
    loaded = billing.load()
    assert loaded is not None and loaded.configuration.contracts == ()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args], capture_output=True, text=True, timeout=300
    )


def test_the_cli_refuses_with_exit_1_and_allows_with_the_flag(
    new_db: NewDb, tmp_path: Path
) -> None:
    """`meterline apply -f empty.yaml` says why and how, exits 1, stores nothing;
    --allow-retire-all applies it."""
    db = str(new_db())
    pricing, empty = tmp_path / "pricing.yaml", tmp_path / "empty.yaml"
    pricing.write_text(PRICING)
    empty.write_text("# nothing\n")
    assert run("apply", "-f", str(pricing), "--db", db).returncode == 0
    refused = run("apply", "-f", str(empty), "--db", db)
    assert refused.returncode == 1
    text = " ".join(refused.stderr.split())
    assert (
        "empty.yaml: defines no meters, plans or contracts; applying it would retire all"
        f" {IN_FORCE} in force"
    ) in text
    assert "--allow-retire-all" in text
    assert "Traceback" not in refused.stderr
    with open_billing(db) as billing:
        assert revision(billing) == 1
    allowed = run("apply", "-f", str(empty), "--db", db, "--allow-retire-all", "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert '"revision": 2' in allowed.stdout


def test_the_http_api_always_refuses(server: RunningServer) -> None:
    """POST /v1/pricing with a file defining nothing is 422 retires_everything, dry run
    or not, and the revision in force stays."""
    yaml = {"content-type": "application/yaml"}
    with server.client("admin") as admin:
        assert admin.post("/v1/pricing", content=PRICING, headers=yaml).status_code == 200
        for params in ({}, {"dry_run": "true"}):
            answer = admin.post("/v1/pricing", content="{}\n", headers=yaml, params=params)
            assert answer.status_code == 422, answer.text
            error = answer.json()["error"]
            assert error["code"] == "retires_everything"
            assert error["message"].startswith(
                "pricing.yaml: defines no meters, plans or contracts; applying it would retire"
            )
        assert admin.get("/v1/pricing").json()["revision"] == 1
