"""A proposed contract change in the workspace, and who may decide it.

A ``ContractChange`` is what an editor fills in: from an ``effective`` date, a customer's
plan (and version), flat fee, discount, price overrides, a credit pool (amount, paid or
free, priority, expiry, recurrence, rollover percent), threshold levels and controls.
``changed_configuration`` writes it into the pricing file's plain data exactly as a
person would in YAML (a new contract starting on ``effective``, or an amendment and a
grant starting on it), so the one YAML parser validates it, and returns which pricing
file path each form field became (``field_paths``), so a parser error names the field.
The checks the parser cannot make are here: amounts not negative, and no amendment
before the end of the customer's last closed period.

Maker-checker (``decision_problem``): only the approver role (or admin) decides, and
never the proposer; a proposal is decided once. Nothing here reads a clock or a store.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from meterline.core.money import MoneyError, to_decimal

PROPOSAL_REASON_LENGTH_MAX = 2000
DEFAULT_FEE_KEY = "platform"
CONTROL_FORM_KEYS = ("key", "policy", "actions")
"""A proposed control's fields an error is named by on their own (``controls[0].actions``);
an error in any other field of it is named by the control (``controls[0]``)."""
_ERROR_PATH = re.compile(r"^[^:]*(?::\d+)?: ((?:contracts|plans)\S*): (.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CreditPool:
    """A prepaid (``paid`` above 0) or free credit pool, refilled each period when
    ``recurrence`` is ``period``, its unused units rolled over by ``rollover_percent``."""

    amount: str
    credit_type: str = ""
    paid: str = "0"
    priority: int = 50
    expires: str | None = None
    recurrence: str = "period"
    rollover_percent: str | None = None
    key: str = ""
    """The grant's key (``pool-<effective>`` when empty)."""
    description: str = "Credit pool (workspace)"


@dataclass(frozen=True, slots=True)
class ContractChange:
    """What an editor proposes for one customer, from ``effective`` (a local date)."""

    customer: str
    effective: str
    plan: str | None = None
    version: int | None = None
    fee_amount: str | None = None
    fee_key: str = DEFAULT_FEE_KEY
    fee_name: str | None = None
    discount_percent: str | None = None
    prices: tuple[Mapping[str, Any], ...] = ()
    credit_pool: CreditPool | None = None
    threshold_levels: tuple[str, ...] = ()
    controls: tuple[Mapping[str, Any], ...] = ()

    def as_data(self) -> dict[str, Any]:
        """The change as plain data (stored as canonical JSON with its proposal)."""
        data = asdict(self)
        data["prices"] = [dict(price) for price in self.prices]
        data["controls"] = [dict(control) for control in self.controls]
        data["threshold_levels"] = list(self.threshold_levels)
        return data


@dataclass(frozen=True, slots=True)
class Changed:
    """The pricing data with the change written in, and where each form field went."""

    data: dict[str, Any]
    contract_path: str
    field_paths: dict[str, str] = field(default_factory=dict)


def change_from_data(data: Mapping[str, Any]) -> ContractChange:
    """A stored change's plain data back as a ``ContractChange``."""
    values = dict(data)
    pool = values.get("credit_pool")
    values["credit_pool"] = CreditPool(**pool) if pool else None
    values["prices"] = tuple(values.get("prices") or ())
    values["controls"] = tuple(values.get("controls") or ())
    values["threshold_levels"] = tuple(values.get("threshold_levels") or ())
    return ContractChange(**values)


def change_problems(change: ContractChange, closed_through: date | None) -> list[str]:
    """What the parser cannot see, each ``field: reason``: amounts below zero, an
    effective date that is no date, or one before the end of the last closed period
    (``closed_through``: its first day after; history is not rewritten)."""
    problems = []
    amounts = {"fee_amount": change.fee_amount, "discount_percent": change.discount_percent}
    if change.credit_pool is not None:
        amounts["credit_pool.amount"] = change.credit_pool.amount
        amounts["credit_pool.paid"] = change.credit_pool.paid
        amounts["credit_pool.rollover_percent"] = change.credit_pool.rollover_percent
    for index, level in enumerate(change.threshold_levels):
        amounts[f"threshold_levels[{index}]"] = level
    for name, text in amounts.items():
        if text is None:
            continue
        try:
            if to_decimal(text, name) < 0:
                problems.append(f"{name}: must not be negative")
        except MoneyError as error:
            problems.append(str(error))
    if not change.customer:
        problems.append("customer: is required")
    try:
        effective = date.fromisoformat(change.effective)
    except (TypeError, ValueError):
        return [*problems, f"effective: {change.effective!r} is not a date (YYYY-MM-DD)"]
    if closed_through is not None and effective < closed_through:
        problems.append(
            f"effective: {effective} is before the end of the last closed period;"
            f" amend from {closed_through} or later (history is not rewritten)"
        )
    return problems


def changed_configuration(data: Any, change: ContractChange) -> Changed:
    """``data`` (the pricing file as plain data, left as it is) with ``change`` written
    in: a new contract starting on ``effective``, or the customer's contract with an
    amendment and a grant from ``effective`` and its thresholds and controls replaced."""
    new = copy.deepcopy(dict(data or {}))
    contracts = list(new.get("contracts") or [])
    index = next(
        (i for i, c in enumerate(contracts) if isinstance(c, Mapping)
         and c.get("customer") == change.customer),
        len(contracts),
    )  # fmt: skip
    path = f"contracts[{index}]"
    paths = {"customer": f"{path}.customer"}
    if index == len(contracts):
        contract: dict[str, Any] = {"customer": change.customer, "start": change.effective}
        contract["plan"] = change.plan
        paths.update(plan=f"{path}.plan", version=f"{path}.version", effective=f"{path}.start")
        if change.version is not None:
            contract["version"] = change.version
        overrides_at, overrides_path = contract, f"{path}.overrides"
        contracts.append(contract)
        base: Mapping[str, Any] = {}
    else:
        contract = dict(contracts[index])
        contracts[index] = contract
        base = _overrides_in_force(contract)
        overrides_at, overrides_path = _amendment(contract, change, path, paths)
    plan = change.plan or contract.get("plan")
    overrides = _overrides(new, plan, base, change, overrides_path, paths)
    if overrides:
        overrides_at["overrides"] = overrides
    _credits(contract, change, f"{path}.credits", paths)
    if change.controls:
        contract["controls"] = _controls(contract.get("controls"), change.controls)
        paths["controls"] = f"{path}.controls"
        first = len(contract["controls"]) - len(change.controls)
        for row in range(len(change.controls)):
            where = f"{path}.controls[{first + row}]"
            paths[f"controls[{row}]"] = where
            for name in CONTROL_FORM_KEYS:
                paths[f"controls[{row}].{name}"] = f"{where}.{name}"
    new["contracts"] = contracts
    return Changed(new, path, paths)


def _amendment(
    contract: dict[str, Any], change: ContractChange, path: str, paths: dict[str, str]
) -> tuple[dict[str, Any], str]:
    """An amendment from ``effective`` when the plan or the overrides change (the contract
    itself otherwise, whose overrides are then left alone)."""
    terms = (change.plan, change.fee_amount, change.discount_percent)
    if all(value is None for value in terms) and not change.prices:
        paths["effective"] = f"{path}.credits"
        return {}, f"{path}.overrides"
    amendments = list(contract.get("amendments") or [])
    where = f"{path}.amendments[{len(amendments)}]"
    amendment: dict[str, Any] = {"effective": change.effective}
    if change.plan is not None:
        amendment["plan"] = change.plan
    if change.version is not None:
        amendment["version"] = change.version
    amendments.append(amendment)
    contract["amendments"] = amendments
    paths.update(effective=f"{where}.effective", plan=f"{where}.plan", version=f"{where}.version")
    return amendment, f"{where}.overrides"


def _overrides_in_force(contract: Mapping[str, Any]) -> Mapping[str, Any]:
    """The overrides of the contract's last amendment, or its own (an amendment's
    overrides replace those before them, so the change starts from these)."""
    amendments = contract.get("amendments") or []
    last = amendments[-1] if amendments and isinstance(amendments[-1], Mapping) else contract
    overrides = last.get("overrides")
    return overrides if isinstance(overrides, Mapping) else {}


def _overrides(
    data: Mapping[str, Any],
    plan: Any,
    base: Mapping[str, Any],
    change: ContractChange,
    path: str,
    paths: dict[str, str],
) -> dict[str, Any]:
    """``base`` with the change's fee (by key), discount and prices (by meter and groups)."""
    overrides: dict[str, Any] = copy.deepcopy(dict(base))
    if change.fee_amount is not None:
        fee = {"key": change.fee_key, "amount": change.fee_amount}
        name = change.fee_name or _fee_name(data, overrides, plan, change.fee_key)
        if name:
            fee["name"] = name
        fees = [f for f in overrides.get("fees") or [] if f.get("key") != change.fee_key]
        overrides["fees"] = [*fees, fee]
        where = f"{path}.fees[{len(fees)}]"
        paths.update(fee_amount=f"{where}.amount", fee_key=f"{where}.key")
    if change.discount_percent is not None:
        overrides["discount_percent"] = change.discount_percent
        paths["discount_percent"] = f"{path}.discount_percent"
    if change.prices:
        replaced = {(p.get("meter"), str(p.get("where"))) for p in change.prices}
        kept = [
            p
            for p in overrides.get("prices") or []
            if (p.get("meter"), str(p.get("where"))) not in replaced
        ]
        overrides["prices"] = [*kept, *(dict(price) for price in change.prices)]
        paths["prices"] = f"{path}.prices[{len(kept)}]"
    return overrides


def _fee_name(data: Mapping[str, Any], overrides: Mapping[str, Any], plan: Any, key: str) -> Any:
    """The name the fee ``key`` has now: in the overrides, else in the plan's last version."""
    for fee in overrides.get("fees") or []:
        if isinstance(fee, Mapping) and fee.get("key") == key and fee.get("name"):
            return fee["name"]
    for entry in data.get("plans") or []:
        if not isinstance(entry, Mapping) or entry.get("key") != plan:
            continue
        for version in reversed(entry.get("versions") or []):
            for fee in (version or {}).get("fees") or []:
                if isinstance(fee, Mapping) and fee.get("key") == key and fee.get("name"):
                    return fee["name"]
    return None


def _credits(
    contract: dict[str, Any], change: ContractChange, path: str, paths: dict[str, str]
) -> None:
    """The pool as a grant starting on ``effective``; the threshold levels replaced."""
    credits = dict(contract.get("credits") or {})
    pool = change.credit_pool
    if pool is not None:
        grants = list(credits.get("grants") or [])
        where = f"{path}.grants[{len(grants)}]"
        grant: dict[str, Any] = {
            "key": pool.key or f"pool-{change.effective}",
            "credit_type": pool.credit_type,
            "amount": pool.amount,
            "paid": pool.paid,
            "priority": pool.priority,
            "start": change.effective,
            "recurrence": pool.recurrence,
            "description": pool.description,
        }
        if pool.expires:
            grant["expires"] = pool.expires
        if pool.rollover_percent is not None:
            grant["rollover"] = {"percent": pool.rollover_percent}
        grants.append(grant)
        credits["grants"] = grants
        for name in ("amount", "paid", "priority", "expires", "recurrence", "credit_type", "key"):
            paths[f"credit_pool.{name}"] = f"{where}.{name}"
        paths["credit_pool.rollover_percent"] = f"{where}.rollover"
    if change.threshold_levels:
        credits.pop("threshold", None)
        credits["thresholds"] = {"levels": list(change.threshold_levels)}
        paths["threshold_levels"] = f"{path}.thresholds"
    if credits:
        contract["credits"] = credits


def _controls(existing: Any, proposed: tuple[Mapping[str, Any], ...]) -> list[Mapping[str, Any]]:
    """The contract's controls with each proposed one replacing the one of its key."""
    keys = {control.get("key") for control in proposed}
    kept = [c for c in existing or [] if not isinstance(c, Mapping) or c.get("key") not in keys]
    return [*kept, *(dict(control) for control in proposed)]


def field_errors(errors: list[str], changed: Changed) -> list[tuple[str, str]]:
    """Each parser error (``file:line: path: reason``) as ``(form field, message)``: the
    field whose pricing file path is the longest prefix of the error's path (``contract``
    when none is: the error concerns the contract as a whole, or the rest of the file)."""
    found = []
    for error in errors:
        match = _ERROR_PATH.match(error)
        path = match.group(1) if match else ""
        field_name = "contract"
        best = -1
        for name, field_path in changed.field_paths.items():
            if (path == field_path or path.startswith((f"{field_path}.", f"{field_path}["))) and (
                len(field_path) > best
            ):
                field_name, best = name, len(field_path)
        found.append((field_name, f"{path}: {match.group(2)}" if match else error))
    return found


def decision_problem(
    proposer: str, decider: str, decider_may_approve: bool, decided: bool
) -> str | None:
    """Why ``decider`` may not decide the proposal (None: it may)."""
    if decided:
        return "the proposal was decided already"
    if not decider_may_approve:
        return "deciding a proposal needs the approver role"
    if decider == proposer:
        return "no one approves or rejects their own proposal (maker-checker)"
    return None


def line_comparison(
    actual: list[Mapping[str, Any]],
    proposed: list[Mapping[str, Any]],
    aliases: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Two invoices' lines side by side, matched by kind and description (in the actual
    invoice's order, then the lines only the proposal has): each amount and the
    difference (a missing line is 0). ``aliases`` rewrites text in either side's
    descriptions first (``(team@1)`` and ``(team@2)`` both as ``(team@1 → team@2)``, so a
    line re-rated under another plan version meets its original)."""

    def described(line: Mapping[str, Any]) -> str:
        text = str(line["description"])
        for old, new in (aliases or {}).items():
            text = text.replace(old, new)
        return text

    def amounts(lines: list[Mapping[str, Any]]) -> dict[tuple[str, str], Any]:
        found: dict[tuple[str, str], Any] = {}
        for line in lines:
            key = (str(line["kind"]), described(line))
            found[key] = found.get(key, 0) + to_decimal(str(line["amount"]), "amount")
        return found

    before, after = amounts(actual), amounts(proposed)
    rows = []
    for key in [*before, *(k for k in after if k not in before)]:
        was, will = before.get(key, 0), after.get(key, 0)
        rows.append(
            {
                "kind": key[0],
                "description": key[1],
                "actual": str(was),
                "proposed": str(will),
                "difference": str(will - was),
            }
        )
    return rows
