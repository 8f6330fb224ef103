"""The demo's contract workspace chapter: finance moves a customer on the Free plan to a
hybrid contract (a Team platform fee, a prepaid credit pool, half of what is unused
rolling over) from the current period, without a YAML file or a shell.

An editor proposes the change with a reason; its preview re-rates the customer's last
closed period and drafts the current one under the proposed terms, line by line; the
editor cannot approve their own change; an approver approves it, and it becomes a
configuration revision naming both (the same kind of revision ``meterline apply``
stores). Then product proposes a price experiment, a Team version with a lower platform
fee for the customers who join from next month, previewed over the Team customers with
the most usage last month (left pending for an approver). A rerun on the same ledger
proposes nothing again: it shows the history.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from meterline.billing import workspace, workspace_preview
from meterline.billing.service import Billing, open_billing
from meterline.billing.workspace import ProposalRefused
from meterline.clock import Clock, system_clock_us
from meterline.core.experiments import PlanExperiment
from meterline.core.proposals import ContractChange, CreditPool
from meterline.errors import ScopeError
from meterline.keys import Principal, add_user, authenticate_user

CUSTOMER = "initech-legal"
EDITOR, APPROVER = "dana-finance", "omar-controller"
REASON = "Initech signed the hybrid offer: Team fee, a 5,000-credit pool, 50% rollover"
EXPERIMENT_REASON = "Try a 450.00 Team platform fee for teams who sign up from next month"
EXPERIMENT_SHOWN = 5
"""How many of the experiment's sample customers the demo prints (the total is over all)."""


def tell_workspace(db: str | Path, console: Console, clock: Clock = system_clock_us) -> None:
    """The chapter over the demo ledger (its month closed; the current period open)."""
    console.rule("The contract workspace: a proposal, its preview, its approval")
    with open_billing(db, clock=clock) as billing:
        store = billing.workspace_records
        if store.proposals(CUSTOMER):
            history = workspace.history(billing.context, store, Principal("demo", "read"))
            _tell_history(console, history["proposals"])
            return
        editor, approver = _users(billing, clock())
        _tell_proposal(billing, console, editor, approver, _change(clock()))
        _tell_experiment(billing, console, editor, _experiment(clock()))


def _users(billing: Billing, now_us: int) -> tuple[Principal, Principal]:
    """An editor and an approver with passwords nobody needs again (the demo's users)."""
    principals = []
    for name, role in ((EDITOR, "editor"), (APPROVER, "approver")):
        password = secrets.token_urlsafe(18)
        add_user(billing.workspace_records, name, password, role, now_us)
        principals.append(authenticate_user(billing.workspace_records, name, password))
    return principals[0], principals[1]


def _change(now_us: int) -> ContractChange:
    """The hybrid contract from the first day of the current month (the open period)."""
    now = datetime.fromtimestamp(now_us / 1_000_000, UTC)
    return ContractChange(
        CUSTOMER,
        f"{now:%Y-%m}-01",
        plan="team",
        fee_amount="300.00",
        fee_name="Team platform fee (hybrid)",
        credit_pool=CreditPool("5000", "credits", paid="45.00", priority=10, rollover_percent="50"),
    )


def _tell_proposal(
    billing: Billing,
    console: Console,
    editor: Principal,
    approver: Principal,
    change: ContractChange,
) -> None:
    context, store = billing.context, billing.workspace_records
    try:
        preview = workspace_preview.preview(context, change)
        proposed = workspace.propose(context, store, editor, change, REASON)
    except ProposalRefused as refused:
        for field, message in refused.fields:
            console.print(f"[yellow]refused[/yellow] {field}: {message}")
        return
    console.print(
        f"{editor.key_id} (editor) proposes {proposed['proposal_id']} for {CUSTOMER}"
        f" from {change.effective}: {REASON}."
    )
    for period in preview["periods"]:
        console.print(_period_table(period))
    console.print(f"Revenue impact over both periods: {preview['revenue_impact']} USD.")
    proposal_id = proposed["proposal_id"]
    try:
        workspace.decide(context, store, editor, proposal_id, True)
    except ScopeError as error:
        console.print(f"[red]refused[/red] {editor.key_id} approving: {error}")
    decided = workspace.decide(context, store, approver, proposal_id, True, "terms as signed")
    revision = decided["decision"]["revision"]
    console.print(
        f"{approver.key_id} (approver) approved it: configuration revision {revision},"
        f" named 'workspace {proposal_id}'. Its source opens with:"
    )
    stored = billing.store.revision(revision)
    for line in stored.source_text.splitlines()[:3] if stored else []:
        console.print(f"  [dim]{line}[/dim]")
    draft = workspace_preview.plain_document(billing.draft(CUSTOMER))
    console.print(
        f"{CUSTOMER}'s draft invoice now totals {draft['total']} {draft['currency']};"
        " `meterline workspace export` prints the YAML in force, `meterline apply`"
        " takes it back unchanged."
    )


def _experiment(now_us: int) -> PlanExperiment:
    """A Team version with a 450.00 platform fee from the first day of next month."""
    now = datetime.fromtimestamp(now_us / 1_000_000, UTC)
    following = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return PlanExperiment(
        "team", f"{following:%Y-%m-%d}", fees=({"key": "platform", "amount": "450.00"},)
    )


def _tell_experiment(
    billing: Billing, console: Console, editor: Principal, experiment: PlanExperiment
) -> None:
    context, store = billing.context, billing.workspace_records
    try:
        preview = workspace_preview.preview(context, experiment)
        proposed = workspace.propose(context, store, editor, experiment, EXPERIMENT_REASON)
    except ProposalRefused as refused:
        for field, message in refused.fields:
            console.print(f"[yellow]refused[/yellow] {field}: {message}")
        return
    version = f"team@{preview['version']}"
    console.print(
        f"{editor.key_id} proposes {proposed['proposal_id']}, a price experiment: {version}"
        f" from {experiment.effective} for new Team customers;"
        f" {len(preview['kept_by'])} customers on Team keep their version."
    )
    table = Table(title=f"Last closed period under {version}, the Team customers with most usage")
    for column in ("customer", "invoice", "actual", version, "difference"):
        table.add_column(column, justify="left" if column in ("customer", "invoice") else "right")
    for row in preview["sample"][:EXPERIMENT_SHOWN]:
        table.add_row(
            row["customer"],
            row["invoice"],
            row["actual_total"],
            row["proposed_total"],
            row["difference"],
        )
    console.print(table)
    impacts = preview["revenue_impact"].items()
    impact = ", ".join(f"{amount} {currency}" for currency, amount in impacts)
    console.print(
        f"Revenue impact over the {len(preview['sample'])} sampled customers: {impact or '0'};"
        " it waits for an approver (`meterline workspace experiment FILE` previews one too)."
    )


def _period_table(period: dict[str, Any]) -> Table:
    title = "Last closed period" if period["period"] == "last_closed" else "Current period"
    table = Table(title=f"{title} {period['label']}: actual beside proposed ({period['currency']})")
    for column in ("line", "actual", "proposed", "difference"):
        table.add_column(column, justify="left" if column == "line" else "right")
    for row in period["lines"]:
        table.add_row(row["description"], row["actual"], row["proposed"], row["difference"])
    table.add_row(
        "[bold]total[/bold]", period["actual_total"], period["proposed_total"], period["difference"]
    )
    return table


def _tell_history(console: Console, proposals: list[dict[str, Any]]) -> None:
    for proposal in proposals:
        decision = proposal["decision"] or {}
        subject = proposal["customer"] or f"plan {proposal['change']['plan']}"
        console.print(
            f"{proposal['proposal_id']} for {subject}:"
            f" {proposal['state']}"
            f" (proposed by {proposal['proposer']}, decided by {decision.get('decider', '-')},"
            f" revision {decision.get('revision', '-')})"
        )
