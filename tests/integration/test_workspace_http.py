"""The contract workspace over HTTP against a real server process (both stores): propose,
preview, approve, reject, history and the YAML export, with keys whose scopes are roles
and with users over Basic; refusals by field; the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meterline.billing.service import open_billing
from meterline.clock import system_clock_us
from meterline.keys import create_key
from meterline.ledger.event_ledger import open_store
from tests.conftest import Databases, RunningServer, clock_env, start_server
from tests.integration.test_workspace import NOW_US, PASSWORD, prepare

NOW = "2026-11-20T00:00:00Z"
HYBRID: dict[str, Any] = {
    "customer": "acme",
    "effective": "2026-11-01",
    "fee_amount": "800.00",
    "credit_pool": {
        "amount": "10000",
        "credit_type": "credits",
        "paid": "90.00",
        "priority": 10,
        "rollover_percent": "50",
    },
}


@pytest.fixture(scope="module")
def served(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server per store for the module (starting one is the slow part); each test
    makes its own proposals and reads their ids from the answers."""
    db = databases.new(tmp_path_factory.mktemp("workspace"), "workspace")
    with open_billing(db, clock=lambda: NOW_US) as billing:
        prepare(billing)
    store = open_store(db)
    now = system_clock_us()
    keys = {
        scope: create_key(store, scope, now, name=scope)[1]
        for scope in ("read", "editor", "approver", "admin")
    }
    keys["editor-globex"] = create_key(store, "editor", now, customer="globex")[1]
    store.close()
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in clock_env(NOW).items():
            patch.setenv(variable, value)
        running = start_server(db)
    running.keys = keys
    try:
        yield running
    finally:
        running.stop()


def basic(server: RunningServer, name: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=(name, PASSWORD), timeout=30)


def test_the_flow_over_http(served: RunningServer) -> None:
    """Preview, propose, the proposer refused, an approver applies it, history, export."""
    with served.client("editor") as editor, served.client("approver") as approver:
        preview = editor.post("/v1/workspace/preview", json=HYBRID)
        assert preview.status_code == 200, preview.text
        current = preview.json()["periods"][1]
        assert (current["actual_total"], current["proposed_total"]) == ("504.00", "890.00")
        proposed = editor.post(
            "/v1/workspace/proposals", json={"change": HYBRID, "reason": "hybrid"}
        )
        assert proposed.status_code == 201, proposed.text
        path = f"/v1/workspace/proposals/{proposed.json()['proposal_id']}"
        refused = editor.post(f"{path}/approve", json={})
        assert refused.status_code == 403
        stored_preview = approver.get(f"{path}/preview")
        assert stored_preview.json()["periods"] == preview.json()["periods"]
        approved = approver.post(f"{path}/approve", json={"reason": "agreed"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["decision"]["revision"] == 2
        again = approver.post(f"{path}/reject", json={})
        assert again.status_code == 409
    with served.client("read") as reader:
        draft = reader.get("/v1/customers/acme/invoices/draft")
        assert draft.status_code == 200 and draft.json()["total"] == "890.00"
        history = reader.get("/v1/workspace/history").json()
        assert [r["via"] for r in history["revisions"]] == ["yaml", "workspace"]
        exported = reader.get("/v1/workspace/configuration.yaml")
        assert exported.headers["content-type"].startswith("application/yaml")
        assert "# meterline workspace P-000001 for acme" in exported.text
        assert reader.post("/v1/workspace/proposals", json={}).status_code == 403


def test_users_over_basic_and_maker_checker(served: RunningServer) -> None:
    """A user proposes with a password; the same user cannot approve; a viewer cannot
    propose; a wrong password is 401."""
    with basic(served, "erin") as erin, basic(served, "abe") as abe:
        change = {"customer": "globex", "effective": "2026-11-10", "discount_percent": "5"}
        proposed = erin.post("/v1/workspace/proposals", json={"change": change, "reason": "r"})
        assert proposed.status_code == 201 and proposed.json()["proposer"] == "user:erin"
        path = f"/v1/workspace/proposals/{proposed.json()['proposal_id']}"
        assert erin.post(f"{path}/reject", json={}).status_code == 403
        rejected = abe.post(f"{path}/reject", json={"reason": "no"})
        assert rejected.json()["state"] == "rejected"
    with basic(served, "vic") as vic:
        assert vic.post("/v1/workspace/preview", json=HYBRID).status_code == 403
    with httpx.Client(base_url=served.url, auth=("erin", "wrong password"), timeout=30) as bad:
        assert bad.get("/v1/workspace/history").status_code == 401


def test_bad_input_is_422_naming_each_field_and_nothing_is_stored(served: RunningServer) -> None:
    """Negative fee, overlapping tiers, rollover above 100%, an early amendment: 422."""
    tiers = [
        {"up_to": 100, "unit_amount": "1"},
        {"up_to": 50, "unit_amount": "1"},
        {"unit_amount": "1"},
    ]
    bad = {
        **HYBRID,
        "effective": "2026-10-15",
        "fee_amount": "-5",
        "prices": [{"meter": "tool_calls", "model": "graduated", "tiers": tiers}],
        "credit_pool": {"amount": "10", "credit_type": "credits", "rollover_percent": "150"},
    }
    with served.client("editor") as editor:
        before = editor.get("/v1/workspace/history").json()["proposals"]
        answer = editor.post("/v1/workspace/proposals", json={"change": bad, "reason": "bad"})
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["code"] == "invalid_proposal"
        fields = {line.split(":")[0] for line in error["errors"]}
        assert {"fee_amount", "effective", "prices", "credit_pool.rollover_percent"} <= fields
        assert editor.get("/v1/workspace/history").json()["proposals"] == before


def test_a_bound_editor_proposes_only_for_its_customer(served: RunningServer) -> None:
    """A key bound to globex gets 404 for acme and cannot export everyone's pricing."""
    with served.client("editor-globex") as bound:
        answer = bound.post("/v1/workspace/proposals", json={"change": HYBRID, "reason": "r"})
        assert answer.status_code == 404
        assert bound.get("/v1/workspace/configuration.yaml").status_code == 403


def test_openapi_documents_the_workspace(served: RunningServer) -> None:
    """Every workspace route is in /openapi.json with its body."""
    document = httpx.get(f"{served.url}/openapi.json", timeout=30).json()
    paths = document["paths"]
    for path in (
        "/v1/workspace/preview",
        "/v1/workspace/proposals",
        "/v1/workspace/proposals/{proposal_id}/approve",
        "/v1/workspace/proposals/{proposal_id}/reject",
        "/v1/workspace/history",
        "/v1/workspace/configuration.yaml",
        "/v1/workspace/experiments",
        "/v1/workspace/experiments/preview",
    ):
        assert path in paths, path
    experiments = str(paths["/v1/workspace/experiments"]["post"]["requestBody"])
    assert "ExperimentProposalBody" in experiments
    assert "ProposalBody" in str(paths["/v1/workspace/proposals"]["post"]["requestBody"])


def dashboard_page(server: RunningServer, scope: str, path: str) -> str:
    """A dashboard page as a browser logged in with the key of ``scope`` gets it."""
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        logged = browser.post("/dashboard/login", data={"key": server.keys[scope]})
        assert logged.status_code in (302, 303), logged.text
        page = browser.get(path)
        assert page.status_code == 200, page.text
        return page.text


def test_a_price_experiment_over_http(served: RunningServer) -> None:
    """An editor previews a new plan version over the sample with most usage and proposes
    it; a customer-bound editor may not; another person approves it as a revision; the
    customers on the plan keep their version (last: it changes the pricing in force)."""
    experiment = {
        "plan": "team",
        "effective": "2026-11-20",
        "fees": [{"key": "platform", "amount": "450.00"}],
        "prices": [{"meter": "tool_calls", "unit_amount": "1"}],
    }
    with served.client("editor") as editor, served.client("approver") as approver:
        preview = editor.post("/v1/workspace/experiments/preview", json=experiment)
        assert preview.status_code == 200, preview.text
        found = preview.json()
        assert [row["customer"] for row in found["sample"]] == ["acme", "globex"]
        fee = found["sample"][0]["lines"][0]
        assert (fee["description"], fee["actual"], fee["proposed"]) == (
            "Team platform fee (team@1 → team@2)",
            "500.00",
            "450.00",
        )
        assert found["revenue_impact"] == {"USD": "-103.00"}
        bad = editor.post(
            "/v1/workspace/experiments",
            json={"experiment": {**experiment, "plan": "gold"}, "reason": "r"},
        )
        assert bad.status_code == 422
        assert bad.json()["error"]["errors"][0].startswith("plan: no plan 'gold'")
        proposed = editor.post(
            "/v1/workspace/experiments", json={"experiment": experiment, "reason": "cheaper"}
        )
        assert proposed.status_code == 201, proposed.text
        proposal_id = proposed.json()["proposal_id"]
        path = f"/v1/workspace/proposals/{proposal_id}"
        assert editor.post(f"{path}/approve", json={}).status_code == 403
        stored = approver.get(f"{path}/preview")
        assert stored.status_code == 200 and stored.json()["sample"] == found["sample"]
        page = dashboard_page(served, "approver", f"/dashboard/workspace/proposals/{proposal_id}")
        assert "Price experiment: team@2 from 2026-11-20" in page
        assert "Team platform fee (team@1 → team@2)" in page and ">Approve<" in page
        approved = approver.post(f"{path}/approve", json={"reason": "try it"})
        assert approved.status_code == 200, approved.text
    with served.client("editor-globex") as bound:
        answer = bound.post("/v1/workspace/experiments/preview", json=experiment)
        assert answer.status_code == 403
        assert bound.get(path).status_code == 404
    with served.client("read") as reader:
        exported = reader.get("/v1/workspace/configuration.yaml").text
        assert "for plan team" in exported and "effective_from: '2026-11-20'" in exported
        draft = reader.get("/v1/customers/globex/invoices/draft").json()
        assert draft["lines"][0]["description"] == "Team platform fee (team@1)"
