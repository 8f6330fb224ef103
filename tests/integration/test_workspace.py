"""The contract workspace over a real ledger (a SQLite file and a PostgreSQL schema):
propose, preview, maker-checker approval applied as a revision, refusals that store
nothing, the history, and GitOps both ways with `apply`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner, Result

from meterline.billing import workspace, workspace_preview
from meterline.billing.service import Billing, NotFound, open_billing
from meterline.billing.workspace import ProposalRefused
from meterline.billing.workspace_preview import plain_document
from meterline.cli.app import app
from meterline.core.events import decode_exact, timestamp_to_us
from meterline.core.proposals import ContractChange, CreditPool
from meterline.dashboard import workspace_pages
from meterline.errors import ScopeError
from meterline.finance.export import export_tables
from meterline.keys import Principal, add_user, authenticate_user
from meterline.ledger.workspace_records import WorkspaceConflict
from tests.conftest import Location
from tests.stores import rows, write

PRICING = """\
credit_types:
  - {key: credits, name: Agent credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: tool_calls, event_type: agent.tool_call, aggregation: count}
plans:
  - key: team
    name: Team
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees:
          - {key: platform, name: Team platform fee, amount: "500.00", timing: advance}
        prices:
          - {meter: tool_calls, model: per_unit, description: Agent tool calls,
             unit_amount: "2", credit_type: credits}
contracts:
  - {customer: acme, plan: team, start: 2026-10-01}
  - {customer: globex, plan: team, start: 2026-10-01}
"""
PASSWORD = "correct horse battery"
HYBRID = ContractChange(
    "acme",
    "2026-11-01",
    fee_amount="800.00",
    credit_pool=CreditPool("10000", "credits", paid="90.00", priority=10, rollover_percent="50"),
)


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


NOW_US = at(2026, 11, 20)


def tool_calls(customer: str, month: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{customer}-{month}-{n}",
            "customer": customer,
            "type": "agent.tool_call",
            "timestamp": f"2026-{month:02d}-{1 + n % 19:02d}T10:00:00Z",
            "properties": {},
        }
        for n in range(count)
    ]


def prepare(billing: Billing) -> None:
    """October closed for acme and globex with real usage; November under way; users."""
    events = tool_calls("acme", 10, 300) + tool_calls("acme", 11, 200) + tool_calls("globex", 11, 5)
    assert billing.ledger.ingest(events).accepted == len(events)
    billing.apply(PRICING)
    assert len(billing.close(at(2026, 11, 2))) == 2
    for name, role in (("erin", "editor"), ("abe", "approver"), ("vic", "viewer")):
        add_user(billing.workspace_records, name, PASSWORD, role, NOW_US)


@pytest.fixture
def billing(new_db: Callable[..., Location]) -> Iterator[Billing]:
    with open_billing(new_db(), clock=lambda: NOW_US) as service:
        prepare(service)
        yield service


def user(billing: Billing, name: str) -> Principal:
    return authenticate_user(billing.workspace_records, name, PASSWORD)


def test_preview_rerates_both_periods_line_by_line(billing: Billing) -> None:
    """October re-rated under the new fee beside its invoice; November's draft with the
    pool bought, credits burned and a 50% rollover ahead; nothing stored."""
    found = workspace_preview.preview(billing.context, HYBRID)
    closed, current = found["periods"]
    assert (closed["period"], closed["invoice"]) == ("last_closed", "INV-000001")
    fee = next(r for r in closed["lines"] if r["description"] == "Team platform fee (team@1)")
    assert (fee["actual"], fee["proposed"], fee["difference"]) == ("500.00", "800.00", "300.00")
    assert (current["actual_total"], current["proposed_total"]) == ("504.00", "890.00")
    kinds = {r["kind"]: r for r in current["lines"]}
    assert kinds["purchase"]["proposed"] == "90.00" and kinds["credit"]["proposed"] == "-4.00"
    assert D(found["revenue_impact"]) == D("300.00") + D("386.00")
    grants = {g["grant"]: g for g in found["credit_path"]["grants"]}
    assert grants["pool-2026-11-01@2026-11-01/rollover"]["closing"] == "4800"
    assert billing.workspace_records.proposals() == [] and len(billing.store.revisions()) == 1


def test_maker_checker_applies_an_approved_proposal_as_a_revision(billing: Billing) -> None:
    """An editor proposes, cannot approve; an approver approves; the draft reflects it and
    the revision records proposer, approver, reason and time."""
    store, context = billing.workspace_records, billing.context
    erin, abe = user(billing, "erin"), user(billing, "abe")
    proposed = workspace.propose(context, store, erin, HYBRID, "hybrid contract for acme")
    assert proposed["state"] == "pending" and proposed["proposer"] == "user:erin"
    with pytest.raises(ScopeError):
        workspace.decide(context, store, erin, proposed["proposal_id"], True)
    with pytest.raises(ScopeError, match="own proposal"):
        workspace.decide(context, store, Principal("user:erin", "admin"), "P-000001", True)
    with pytest.raises(ScopeError):
        workspace.propose(context, store, user(billing, "vic"), HYBRID, "viewer tries")
    decided = workspace.decide(context, store, abe, "P-000001", True, "numbers check out")
    assert decided["state"] == "approved" and decided["decision"]["revision"] == 2
    with pytest.raises(WorkspaceConflict):
        workspace.decide(context, store, abe, "P-000001", False, "changed my mind")
    draft = plain_document(billing.draft("acme"))
    assert draft["total"] == "890.00" and draft["configuration"]["revision"] == 2
    revision = billing.store.revision(2)
    assert revision is not None and revision.source_name == "workspace P-000001"
    assert "proposed by user:erin" in revision.source_text
    assert "approved by user:abe at 2026-11-20T00:00:00Z: numbers check out" in revision.source_text
    assert billing.audit().passed


def test_an_approval_builds_the_new_revisions_buckets(billing: Billing) -> None:
    """The approved revision's rated-usage buckets are built by the approval (as ``apply``
    builds them), so the first read after it does not fold the whole ledger."""
    from meterline.billing import bucket_checks
    from meterline.ledger import bucket_records

    store, context = billing.workspace_records, billing.context
    assert context.keeps_buckets
    workspace.propose(context, store, user(billing, "erin"), HYBRID, "hybrid contract for acme")
    workspace.decide(context, store, user(billing, "abe"), "P-000001", True, "ok")
    assert 2 in bucket_records.built_revisions(context.connection)
    mark = bucket_records.watermark(context.connection, 2)
    assert mark is not None and mark.through == context.ledger_cut()
    assert bucket_checks.check_buckets(context) is None


def test_a_rejected_proposal_changes_nothing(billing: Billing) -> None:
    """A rejection is recorded with its reason and applies nothing."""
    store, context = billing.workspace_records, billing.context
    workspace.propose(context, store, user(billing, "erin"), HYBRID, "try it")
    rejected = workspace.decide(context, store, user(billing, "abe"), "P-000001", False, "too high")
    assert rejected["state"] == "rejected" and rejected["decision"]["revision"] is None
    assert (
        len(billing.store.revisions()) == 1
        and plain_document(billing.draft("acme"))["total"] == "504.00"
    )


def test_bad_input_is_refused_by_field_and_nothing_is_stored(billing: Billing) -> None:
    """Negative amounts, overlapping tiers, a rollover above 100% and an amendment before
    the last closed period: each named, no proposal, no revision."""
    tiers = [
        {"up_to": 100, "unit_amount": "1"},
        {"up_to": 50, "unit_amount": "1"},
        {"unit_amount": "1"},
    ]
    bad = ContractChange(
        "acme",
        "2026-10-15",
        fee_amount="-5",
        prices=({"meter": "tool_calls", "model": "graduated", "tiers": tiers},),
        credit_pool=CreditPool("10", "credits", rollover_percent="150"),
    )
    with pytest.raises(ProposalRefused) as refused:
        workspace.propose(
            billing.context, billing.workspace_records, user(billing, "erin"), bad, "bad"
        )
    fields = {name for name, _ in refused.value.fields}
    assert {"fee_amount", "effective", "prices", "credit_pool.rollover_percent"} <= fields
    assert billing.workspace_records.proposals() == []
    assert rows(billing.store.path, "SELECT COUNT(*) FROM workspace_proposals") == [(0,)]
    with pytest.raises(ProposalRefused, match="reason"):
        workspace.propose(
            billing.context, billing.workspace_records, user(billing, "erin"), HYBRID, "  "
        )


def test_a_customer_bound_editor_sees_only_its_customer(billing: Billing) -> None:
    """A bound caller proposes and reads only for its customer."""
    store, context = billing.workspace_records, billing.context
    workspace.propose(context, store, user(billing, "erin"), HYBRID, "for acme")
    bound = Principal("key-globex", "editor", "globex")
    with pytest.raises(NotFound):
        workspace.propose(context, store, bound, HYBRID, "not mine")
    with pytest.raises(NotFound):
        workspace.proposal(store, bound, "P-000001")
    assert workspace.history(context, store, bound) == {"proposals": [], "revisions": []}


def test_gitops_both_ways(billing: Billing) -> None:
    """The export applied from YAML is the same revision (nothing new); a change applied
    from YAML shows in the workspace's history."""
    store, context = billing.workspace_records, billing.context
    workspace.propose(context, store, user(billing, "erin"), HYBRID, "hybrid")
    workspace.decide(context, store, user(billing, "abe"), "P-000001", True, "ok")
    exported = workspace.export_yaml(context)
    assert billing.apply(exported, "exported.yaml").revision == 2  # the same content
    assert len(billing.store.revisions()) == 2
    # the text the workspace applied, applied from a file on another ledger, is the same
    # revision content (`meterline apply` and the workspace produce the same revisions)
    globex = "- customer: globex\n  plan: team\n  start: '2026-10-01'\n"
    amended = "  amendments:\n  - {effective: '2026-11-01', overrides: {discount_percent: 10}}\n"
    changed = exported.replace(globex, globex + amended)
    assert changed != exported
    assert billing.apply(changed, "pricing.yaml").revision == 3
    revisions = workspace.history(context, store, Principal("admin", "admin"))["revisions"]
    assert [(r["revision"], r["via"], r["proposal_id"]) for r in revisions] == [
        (1, "yaml", None),
        (2, "workspace", "P-000001"),
        (3, "yaml", None),
    ]
    assert revisions[1]["approver"] == "user:abe" and revisions[1]["proposer"] == "user:erin"


def test_the_workspace_text_applied_elsewhere_gives_the_same_content(
    billing: Billing, new_db: Callable[..., Location]
) -> None:
    """The revision the workspace stored and `apply` of its text on a fresh ledger hash alike."""
    store, context = billing.workspace_records, billing.context
    workspace.propose(context, store, user(billing, "erin"), HYBRID, "hybrid")
    workspace.decide(context, store, user(billing, "abe"), "P-000001", True, "ok")
    stored = billing.store.revision(2)
    assert stored is not None
    with open_billing(new_db("other"), clock=lambda: NOW_US) as other:
        other.apply(stored.source_text, "from-git.yaml")
        copy = other.store.revision(1)
        assert copy is not None and copy.content_sha256 == stored.content_sha256
    data = decode_exact(stored.content)
    assert json.dumps(data["contracts"][0]["amendments"]) == (
        '[{"effective": "2026-11-01", "overrides": {"fees": [{"amount": "800.00",'
        ' "key": "platform", "name": "Team platform fee"}]}}]'
    )


def test_the_workspace_history_is_append_only(billing: Billing) -> None:
    """The store's triggers refuse editing a proposal or a decision."""
    workspace.propose(
        billing.context, billing.workspace_records, user(billing, "erin"), HYBRID, "hybrid"
    )
    with pytest.raises(Exception, match="append-only"):
        write(billing.store.path, "UPDATE workspace_proposals SET reason = 'edited'")
    with pytest.raises(Exception, match="append-only"):
        write(billing.store.path, "DELETE FROM workspace_users")


def test_the_cli_adds_and_lists_users_and_exports_the_yaml(
    new_db: Callable[..., Location],
) -> None:
    """`users add` (password from the environment, stored hashed), `users list`, and
    `workspace export` printing the YAML `apply` takes back unchanged."""
    db = new_db("cli")
    with open_billing(db, clock=lambda: NOW_US) as service:
        service.apply(PRICING)

    runner = CliRunner()

    def run(*args: str, **env: str) -> Result:
        """The real command line, in this process (a process per command is slow here)."""
        return runner.invoke(app, [*args, "--db", str(db)], env=env)

    added = run("users", "add", "erin", "--role", "editor", METERLINE_USER_PASSWORD=PASSWORD)
    assert added.exit_code == 0, added.output
    refused = run("users", "add", "erin", "--role", "boss", METERLINE_USER_PASSWORD="short")
    assert refused.exit_code != 0 and "role: must be one of" in refused.output
    listed = run("users", "list")
    assert listed.stdout.split("\t")[:3] == ["erin", "editor", "*"]
    assert PASSWORD not in str(rows(db, "SELECT * FROM workspace_users"))
    exported = run("workspace", "export")
    assert exported.exit_code == 0 and exported.stdout == PRICING
    with open_billing(db, clock=lambda: NOW_US) as service:
        assert service.apply(exported.stdout).revision == 1  # nothing changed


def test_the_history_is_exported_with_the_journal(
    new_db: Callable[..., Location], tmp_path: Path
) -> None:
    """`export` writes the proposals with their decisions and every revision with its
    origin beside the journal; as of an instant before the approval, the proposal is
    pending and its revision absent."""
    now = [NOW_US]
    hour_us = 3_600_000_000
    tables = ["journal", "workspace_proposals", "configuration_revisions"]
    with open_billing(new_db("export"), clock=lambda: now[0]) as service:
        prepare(service)
        store, context = service.workspace_records, service.context
        erin, abe = user(service, "erin"), user(service, "abe")
        workspace.propose(context, store, erin, HYBRID, "hybrid contract")
        now[0] += hour_us
        workspace.decide(context, store, abe, "P-000001", True, "numbers check out")
        loyalty = ContractChange("globex", "2026-11-10", discount_percent="5")
        workspace.propose(context, store, erin, loyalty, "loyalty")
        workspace.decide(context, store, abe, "P-000002", False, "not now")
        export_tables(service, tmp_path / "now", tables=tables)
        export_tables(service, tmp_path / "before", at_us=NOW_US, tables=tables)

    def read(folder: str, query: str) -> list[tuple[Any, ...]]:
        connection = duckdb.connect()
        for name in tables:
            path = tmp_path / folder / f"{name}.parquet"
            connection.execute(f"CREATE VIEW {name} AS SELECT * FROM '{path}'")
        return connection.execute(query).fetchall()

    decided = read(
        "now",
        "SELECT proposal_id, kind, customer, proposer, state, decider, decision_reason,"
        " revision, epoch_us(decided_at), change->>'fee_amount' FROM workspace_proposals",
    )
    assert decided == [
        ("P-000001", "contract", "acme", "user:erin", "approved", "user:abe",
         "numbers check out", 2, NOW_US + hour_us, "800.00"),
        ("P-000002", "contract", "globex", "user:erin", "rejected", "user:abe",
         "not now", None, NOW_US + hour_us, None),
    ]  # fmt: skip
    revisions = read(
        "now",
        "SELECT revision, via, source, proposal_id, proposer, approver, reason,"
        " approval_reason FROM configuration_revisions",
    )
    assert revisions == [
        (1, "yaml", "pricing.yaml", None, None, None, None, None),
        (2, "workspace", "workspace P-000001", "P-000001", "user:erin", "user:abe",
         "hybrid contract", "numbers check out"),
    ]  # fmt: skip
    assert read("now", "SELECT count(*) FROM journal")[0][0] > 0
    before = read("before", "SELECT proposal_id, state, decider FROM workspace_proposals")
    assert before == [("P-000001", "pending", None)]
    assert read("before", "SELECT revision FROM configuration_revisions") == [(1,)]


def test_the_form_sets_controls_refused_under_their_row(billing: Billing) -> None:
    """The dashboard form's control rows become pricing file controls validated by the
    parser: a bad action under the row's actions, a negative amount under its settings,
    settings that are no `name: value` pairs refused first; a good row previews."""
    form = {
        "customer": "acme",
        "effective": "2026-11-20",
        "control_0_key": "budget",
        "control_0_policy": "spend_threshold",
        "control_0_actions": "alert",
        "control_0_settings": "amount: 400, percents: [50, 100]",
        "control_1_key": "guard",
        "control_1_policy": "spend_threshold",
        "control_1_actions": "alert, explode",
        "control_1_settings": "amount: [50",
    }
    with pytest.raises(workspace_pages.FormRefused) as shape:
        workspace_pages.change_of_form(form)
    assert list(shape.value.errors) == ["control_1_settings"]
    bad = workspace_pages.change_of_form({**form, "control_1_settings": "amount: -4"})
    assert bad.controls[0] == {
        "key": "budget",
        "policy": "spend_threshold",
        "actions": ["alert"],
        "amount": 400,
        "percents": [50, 100],
    }
    with pytest.raises(ProposalRefused) as refused:
        workspace.propose(
            billing.context, billing.workspace_records, user(billing, "erin"), bad, "r"
        )
    errors = workspace_pages.refused_by_field(refused.value)
    assert set(errors) == {"control_1_actions", "control_1_settings"}
    assert "'explode' is not one of" in errors["control_1_actions"][0]
    assert "controls[1].amount: must not be negative" in errors["control_1_settings"][0]
    good = workspace_pages.change_of_form({k: v for k, v in form.items() if "_1_" not in k})
    fired = workspace_preview.preview(billing.context, good)["controls"]
    assert [(row["control"], row["level"], row["would_fire"]) for row in fired] == [
        ("budget", "50%", True),
        ("budget", "100%", True),
    ]
    assert billing.workspace_records.proposals() == []
