"""Price experiments in the workspace over a real ledger (a SQLite file and a PostgreSQL
schema): a new plan version for new customers previewed over a sample of real
customers' last closed period, proposed, approved by another person and applied as a
revision; the customers on the plan keep their version; refusals by field store nothing;
the CLI previews an experiment file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from meterline.billing import workspace, workspace_preview
from meterline.billing.service import Billing, open_billing
from meterline.billing.workspace import ProposalRefused
from meterline.billing.workspace_preview import plain_document
from meterline.cli.app import app
from meterline.core.experiments import PlanExperiment
from meterline.core.proposals import ContractChange
from meterline.errors import ScopeError
from meterline.keys import Principal
from tests.conftest import Location
from tests.integration.test_workspace import NOW_US, PRICING, at, prepare, user
from tests.stores import rows

CHEAPER = PlanExperiment(
    "team",
    "2026-11-20",
    fees=({"key": "platform", "amount": "450.00"},),
    prices=({"meter": "tool_calls", "unit_amount": "1"},),
)
BOTH = "(team@1 → team@2)"


@pytest.fixture
def billing(new_db: Callable[..., Location]) -> Iterator[Billing]:
    with open_billing(new_db(), clock=lambda: NOW_US) as service:
        prepare(service)
        yield service


def by_line(period: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        r["description"]: (r["actual"], r["proposed"], r["difference"]) for r in period["lines"]
    }


def test_the_preview_rerates_the_customers_with_most_usage_line_by_line(billing: Billing) -> None:
    """October re-rated under team@2 beside each finalized invoice: acme (300 tool calls)
    before globex (none); a named sample is that sample; nothing is stored."""
    found = workspace_preview.preview(billing.context, CHEAPER)
    assert (found["version"], found["kept_by"], found["sampled_by"]) == (
        2,
        ["acme", "globex"],
        "usage",
    )
    acme, globex = found["sample"]
    assert (acme["customer"], acme["invoice"], acme["label"]) == (
        "acme",
        "INV-000001",
        "2026-10-01",
    )
    assert by_line(acme) == {
        f"Team platform fee {BOTH}": ("500.00", "450.00", "-50.00"),
        f"Agent tool calls {BOTH}": ("6.00", "3.00", "-3.00"),
    }
    assert (acme["actual_total"], acme["proposed_total"]) == ("506.00", "453.00")
    assert (globex["customer"], globex["difference"]) == ("globex", "-50.00")
    assert found["revenue_impact"] == {"USD": "-103.00"}
    named = workspace_preview.preview(
        billing.context, PlanExperiment("team", "2026-11-20", sample=("globex",))
    )
    assert [row["customer"] for row in named["sample"]] == ["globex"]
    assert named["sampled_by"] == "given" and named["revenue_impact"] == {"USD": "0.00"}
    assert billing.workspace_records.proposals() == [] and len(billing.store.revisions()) == 1


def test_an_approved_experiment_reaches_new_customers_only(billing: Billing) -> None:
    """Maker-checker as for a contract change; once applied, acme and globex keep team@1
    (pinned in the YAML), a customer added afterwards on the plan gets team@2."""
    store, context = billing.workspace_records, billing.context
    erin, abe = user(billing, "erin"), user(billing, "abe")
    proposed = workspace.propose(context, store, erin, CHEAPER, "a cheaper tier for new teams")
    assert proposed["customer"] == "" and proposed["change"]["kind"] == "plan_version"
    stored = workspace_preview.preview(context, workspace.stored_change(store.proposals()[0]))
    assert stored["revenue_impact"] == {"USD": "-103.00"}
    with pytest.raises(ScopeError, match="own proposal"):
        admin_erin = Principal("user:erin", "admin")
        workspace.decide(context, store, admin_erin, proposed["proposal_id"], True)
    decided = workspace.decide(context, store, abe, proposed["proposal_id"], True, "try it")
    assert decided["decision"]["revision"] == 2
    text = workspace.export_yaml(context)
    assert text.startswith("# meterline workspace P-000001 for plan team\n")
    assert "version: 2\n" in text and "effective_from: '2026-11-20'" in text
    for customer, total in (("acme", "504.00"), ("globex", "500.10")):
        draft = plain_document(billing.draft(customer))
        assert draft["total"] == total and draft["configuration"]["revision"] == 2
    newcomer = ContractChange("initech", "2026-11-20", plan="team")
    joined = workspace.propose(context, store, erin, newcomer, "a new customer")
    workspace.decide(context, store, abe, joined["proposal_id"], True, "welcome")
    lines = plain_document(billing.draft("initech"))["lines"]
    assert [(line["description"], line["amount"]) for line in lines] == [
        ("Team platform fee (team@2), remaining time from 2026-11-20", "165.00")
    ]
    history = workspace.history(context, store, Principal("auditor", "read"))
    assert [r["proposal_id"] for r in history["revisions"]] == [None, "P-000001", "P-000002"]
    assert billing.audit().passed


def test_a_bad_experiment_is_refused_by_field_and_nothing_is_stored(billing: Billing) -> None:
    """No such plan, no date, a negative fee, a sample customer without a contract; a
    customer-bound editor may not propose one; nothing stored."""
    store, context, erin = billing.workspace_records, billing.context, user(billing, "erin")
    bad = PlanExperiment(
        "enterprise", "soon", fees=({"key": "platform", "amount": "-1"},), sample=("nobody",)
    )
    with pytest.raises(ProposalRefused) as refused:
        workspace.propose(context, store, erin, bad, "bad")
    assert {name for name, _ in refused.value.fields} == {"plan", "effective", "fees", "sample"}
    tiers = [{"up_to": 10, "unit_amount": "1"}, {"up_to": 5, "unit_amount": "1"}]
    overlapping = PlanExperiment(
        "team",
        "2026-12-01",
        prices=({"meter": "tool_calls", "model": "graduated", "tiers": tiers},),
    )
    with pytest.raises(ProposalRefused) as refused:
        workspace_preview.preview(context, overlapping)
    assert {name for name, _ in refused.value.fields} == {"prices"}
    assert "plans[0].versions[1].prices[0]" in refused.value.fields[0][1]
    with pytest.raises(ScopeError, match="every customer"):
        workspace.propose(context, store, Principal("k", "editor", "acme"), CHEAPER, "mine")
    assert rows(billing.store.path, "SELECT COUNT(*) FROM workspace_proposals") == [(0,)]
    assert len(billing.store.revisions()) == 1


def test_a_customer_that_floated_across_versions_is_named_not_rewritten(
    new_db: Callable[..., Location],
) -> None:
    """acme's October was billed under team@1 and it floats onto team@2 from November: a
    pin on the contract would rewrite October, so the history check refuses, naming it."""
    second = (
        "      - version: 2\n"
        "        effective_from: 2026-10-15\n"
        "        currency: USD\n"
        "        fees:\n"
        '          - {key: platform, name: Team platform fee, amount: "600.00", timing: advance}\n'
    )
    pricing = PRICING.replace("contracts:\n", second + "contracts:\n", 1)
    with open_billing(new_db(), clock=lambda: NOW_US) as service:
        service.apply(pricing)
        assert len(service.close(at(2026, 11, 2))) == 2
        experiment = PlanExperiment(
            "team", "2026-12-01", fees=({"key": "platform", "amount": "1"},)
        )
        with pytest.raises(ProposalRefused) as refused:
            workspace_preview.preview(service.context, experiment)
        named = dict(refused.value.fields)
        assert set(named) == {"pinned.acme", "pinned.globex"}
        assert "changes the terms of finalized invoice" in named["pinned.acme"]


def test_the_cli_previews_an_experiment_file(
    new_db: Callable[..., Location], tmp_path: Path
) -> None:
    """`meterline workspace experiment FILE` prints the preview; a bad file exits 1
    naming the field; nothing is stored."""
    location = new_db("cli")
    with open_billing(location, clock=lambda: NOW_US) as service:
        prepare(service)
    path = tmp_path / "experiment.yaml"
    path.write_text(
        "plan: team\neffective: 2026-11-20\nfees:\n  - {key: platform, amount: '450.00'}\n"
        "sample: [acme]\n"
    )
    runner = CliRunner()
    db = str(location)
    shown = runner.invoke(app, ["workspace", "experiment", str(path), "--db", db])
    assert shown.exit_code == 0, shown.output
    assert '"revenue_impact": {\n    "USD": "-50.00"' in shown.stdout
    path.write_text("plan: team\nwhen: 2026-11-20\n")
    refused = runner.invoke(app, ["workspace", "experiment", str(path), "--db", db])
    assert refused.exit_code == 1
    assert "when: unknown field" in refused.output and "effective: is required" in refused.output
    with open_billing(location, clock=lambda: NOW_US) as service:
        assert service.workspace_records.proposals() == []
