"""What the contract workspace's pages show and do (docs/workspace.md): the form (an
editor's), its preview, the proposal page (an approver's decision), the history.

The form's fields are read into a ``ContractChange`` here; every check beyond "is this a
number" is the workspace's (``billing.workspace``: the pricing file's own validation),
whose refusals come back by the core's field names and are shown beside the form field
they concern (``FORM_FIELDS``). Nothing is stored until the editor submits a form that
passes, and nothing is applied until an approver who did not propose it approves.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from meterline.billing import workspace, workspace_preview
from meterline.billing.workspace import ProposalRefused
from meterline.config.source import ConfigurationError, read_yaml
from meterline.core.control_policies import POLICY_KINDS
from meterline.core.proposals import CONTROL_FORM_KEYS, ContractChange, CreditPool
from meterline.dashboard.site import Dashboard, PageError
from meterline.errors import ScopeError
from meterline.keys import Principal

CONTROL_ROWS = 2
"""How many controls the form sets at once (the API takes any number)."""
CONTROL_FIELDS = (*CONTROL_FORM_KEYS, "settings")
"""Each control row's fields: its key, policy and actions, and the policy's settings
written ``name: value, ...`` as in the pricing file (``amount: 5000, percents: [50, 100]``)."""
FORM_KEYS = (
    "customer",
    "effective",
    "plan",
    "fee_amount",
    "discount_percent",
    "pool_amount",
    "pool_credit_type",
    "pool_paid",
    "pool_priority",
    "pool_expires",
    "pool_rollover_percent",
    "threshold_levels",
    "price_meter",
    "price_tiers",
    *(f"control_{row}_{name}" for row in range(CONTROL_ROWS) for name in CONTROL_FIELDS),
    "reason",
)
FORM_FIELDS = {
    "customer": "customer",
    "effective": "effective",
    "plan": "plan",
    "version": "plan",
    "fee_amount": "fee_amount",
    "fee_key": "fee_amount",
    "discount_percent": "discount_percent",
    "credit_pool.amount": "pool_amount",
    "credit_pool.key": "pool_amount",
    "credit_pool.recurrence": "pool_amount",
    "credit_pool.credit_type": "pool_credit_type",
    "credit_pool.paid": "pool_paid",
    "credit_pool.priority": "pool_priority",
    "credit_pool.expires": "pool_expires",
    "credit_pool.rollover_percent": "pool_rollover_percent",
    "threshold_levels": "threshold_levels",
    "prices": "price_tiers",
    "reason": "reason",
    **{f"controls[{row}]": f"control_{row}_settings" for row in range(CONTROL_ROWS)},
    **{
        f"controls[{row}].{name}": f"control_{row}_{name}"
        for row in range(CONTROL_ROWS)
        for name in CONTROL_FORM_KEYS
    },
}
"""The form field each of the core's field names is shown beside (else ``contract``)."""


class FormRefused(PageError):
    """A form with bad fields: ``errors`` maps each form field to its messages."""

    code = "invalid_form"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(422, "Some fields need another look.")
        self.errors = errors


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _tiers(text: str, errors: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``up_to:unit_amount, ...`` (the last without up_to) as graduated tiers."""
    tiers: list[dict[str, Any]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        up_to, separator, unit_amount = part.partition(":")
        if not separator or (up_to.strip() and not up_to.strip().isdigit()):
            errors.setdefault("price_tiers", []).append(
                f"{part!r}: write each tier as up_to:unit_amount (the last as :unit_amount)"
            )
            continue
        tier: dict[str, Any] = {"unit_amount": unit_amount.strip()}
        if up_to.strip():
            tier["up_to"] = int(up_to)
        tiers.append(tier)
    return tiers


def _plain(value: Any) -> Any:
    """A setting as plain JSON data: a whole number as an integer, any other number as
    its exact text (never a float), a date as YYYY-MM-DD."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else format(value, "f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def _control(form: dict[str, str], row: int, errors: dict[str, list[str]]) -> dict[str, Any]:
    """Control row ``row`` as a pricing file control (empty when the row is blank)."""
    values = {name: form.get(f"control_{row}_{name}", "").strip() for name in CONTROL_FIELDS}
    if not any(values.values()):
        return {}
    field = f"control_{row}_settings"
    settings: Any = {}
    if values["settings"]:
        try:
            settings, _ = read_yaml("{" + values["settings"] + "}", field)
        except ConfigurationError:
            settings = None
        if not isinstance(settings, Mapping):
            errors.setdefault(field, []).append(
                "write the settings as name: value, ... (e.g. amount: 5000, percents: [50, 100])"
            )
            settings = {}
    clash = sorted(set(settings) & set(CONTROL_FORM_KEYS))
    if clash:
        errors.setdefault(field, []).append(f"{', '.join(clash)}: set in its own field")
    actions = [action.strip() for action in values["actions"].split(",") if action.strip()]
    return {
        "key": values["key"],
        "policy": values["policy"],
        "actions": actions,
        **{str(name): _plain(value) for name, value in settings.items() if name not in clash},
    }


def change_of_form(form: dict[str, str]) -> ContractChange:
    """The form as a ``ContractChange`` (``FormRefused`` for a field that is not even of
    the right shape)."""
    errors: dict[str, list[str]] = {}
    pool = None
    if _blank(form.get("pool_amount")):
        priority_text = _blank(form.get("pool_priority")) or "50"
        if not priority_text.isdigit():
            errors["pool_priority"] = ["must be a whole number"]
        pool = CreditPool(
            amount=form.get("pool_amount", "").strip(),
            credit_type=form.get("pool_credit_type", "").strip(),
            paid=_blank(form.get("pool_paid")) or "0",
            priority=int(priority_text) if priority_text.isdigit() else 50,
            expires=_blank(form.get("pool_expires")),
            rollover_percent=_blank(form.get("pool_rollover_percent")),
        )
    prices: tuple[dict[str, Any], ...] = ()
    if _blank(form.get("price_tiers")):
        tiers = _tiers(form.get("price_tiers", ""), errors)
        meter = form.get("price_meter", "").strip()
        prices = ({"meter": meter, "model": "graduated", "tiers": tiers},)
    levels = tuple(
        level.strip() for level in form.get("threshold_levels", "").split(",") if level.strip()
    )
    controls = tuple(
        control for row in range(CONTROL_ROWS) if (control := _control(form, row, errors))
    )
    if errors:
        raise FormRefused(errors)
    return ContractChange(
        customer=form.get("customer", "").strip(),
        effective=form.get("effective", "").strip(),
        plan=_blank(form.get("plan")),
        fee_amount=_blank(form.get("fee_amount")),
        discount_percent=_blank(form.get("discount_percent")),
        prices=prices,
        credit_pool=pool,
        threshold_levels=levels,
        controls=controls,
    )


def refused_by_field(refused: ProposalRefused) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for name, message in refused.fields:
        errors.setdefault(FORM_FIELDS.get(name, "contract"), []).append(message)
    return errors


def _editor(principal: Principal) -> None:
    try:
        principal.require("editor", "the contract form")
    except ScopeError:
        raise PageError(403, "The contract form needs the editor role.") from None


def form_page(
    dashboard: Dashboard, principal: Principal, form: dict[str, str], preview: bool
) -> dict[str, Any]:
    """The form with ``form``'s values; with ``preview``, the change previewed (or its
    refusals by field)."""
    _editor(principal)
    if principal.customer is not None:
        form = {**form, "customer": principal.customer}
    values = {key: form.get(key, "") for key in FORM_KEYS}
    context: dict[str, Any] = {
        "values": values,
        "errors": {},
        "preview": None,
        "control_rows": range(CONTROL_ROWS),
        "policies": POLICY_KINDS,
    }
    loaded = dashboard.billing.context.load()
    customers = [] if loaded is None else [c.customer for c in loaded.configuration.contracts]
    context["customers"] = [c for c in customers if principal.customer in (None, c)]
    if preview:
        try:
            change = change_of_form(form)
            context["preview"] = workspace_preview.preview(dashboard.billing.context, change)
        except FormRefused as refused:
            context["errors"] = refused.errors
        except ProposalRefused as refused:
            context["errors"] = refused_by_field(refused)
    return context


def submit(dashboard: Dashboard, principal: Principal, form: dict[str, str]) -> str:
    """Store the form's change as a proposal (its id); ``FormRefused`` by field."""
    _editor(principal)
    if principal.customer is not None:
        form = {**form, "customer": principal.customer}
    billing = dashboard.billing
    try:
        change = change_of_form(form)
        with billing.lock.writing():
            found = workspace.propose(
                billing.context,
                billing.workspace_records,
                principal,
                change,
                form.get("reason", ""),
            )
    except ProposalRefused as refused:
        raise FormRefused(refused_by_field(refused)) from None
    return str(found["proposal_id"])


def proposal_page(dashboard: Dashboard, principal: Principal, proposal_id: str) -> dict[str, Any]:
    """A proposal, its preview against the ledger as it stands, and whether the caller
    may decide it (and why not)."""
    store = dashboard.billing.workspace_records
    stored = workspace.proposal(store, principal, proposal_id)
    decision = store.decisions().get(proposal_id)
    document = workspace.proposal_document(stored, decision)
    preview = None
    problem = None
    if decision is None:
        try:
            preview = workspace_preview.preview(
                dashboard.billing.context, workspace.stored_change(stored)
            )
        except ProposalRefused as refused:
            problem = "; ".join(message for _, message in refused.fields)
    may_approve = principal.scope in ("approver", "admin")
    why_not = None
    if decision is not None:
        why_not = "decided"
    elif not may_approve:
        why_not = "Deciding a proposal needs the approver role."
    elif stored.proposer == principal.key_id:
        why_not = "You proposed this change: another approver decides it (maker-checker)."
    return {
        "proposal": document,
        "preview": preview,
        "problem": problem,
        "can_decide": why_not is None,
        "why_not": why_not,
    }


def decide(
    dashboard: Dashboard, principal: Principal, proposal_id: str, approve: bool, reason: str
) -> dict[str, Any]:
    """Approve or reject (``workspace.decide``, under billing's lock alone)."""
    billing = dashboard.billing
    with billing.lock.writing():
        return workspace.decide(
            billing.context, billing.workspace_records, principal, proposal_id, approve, reason
        )


def history_page(dashboard: Dashboard, principal: Principal) -> dict[str, Any]:
    """Every proposal the caller may see, and every revision (YAML or workspace)."""
    found = workspace.history(
        dashboard.billing.context, dashboard.billing.workspace_records, principal
    )
    return {
        **found,
        "can_propose": principal.scope in ("editor", "admin"),
        "pending": [p for p in found["proposals"] if p["state"] == "pending"],
    }
