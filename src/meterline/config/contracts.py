"""The pricing file's ``contracts``: a customer on a plan (version or floating) from a
start in its time zone, with overrides, amendments (never a change of billing cycle),
credit terms and controls."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from meterline.config.commerce import (
    CONTRACT_COMMERCE_KEYS,
    read_contract_commerce,
    with_trial_end,
)
from meterline.config.control_schema import parse_controls
from meterline.config.credits import read_credit_terms
from meterline.config.fields import Declared, FieldReader
from meterline.config.prices import read_overrides
from meterline.core.model import Amendment, Contract
from meterline.core.periods import local_midnight_us

CONTRACT_KEYS = (
    "customer",
    "plan",
    "version",
    "start",
    "end",
    "timezone",
    "overrides",
    "amendments",
    "credits",
    "controls",
    "semantics",
    *CONTRACT_COMMERCE_KEYS,
)


def read_contract(declared: Declared, value: Any, path: str) -> Contract | None:
    """The contract at ``path``; plans and versions must be declared."""
    reader = declared.reader
    item = reader.mapping(value, path, CONTRACT_KEYS, ("customer", "plan", "start"))
    timezone = _timezone(reader, item.get("timezone"), f"{path}.timezone")
    customer = reader.text(item.get("customer"), f"{path}.customer")
    plan = reader.text(item.get("plan"), f"{path}.plan")
    version = reader.integer(item.get("version"), f"{path}.version")
    _plan_reference(declared, plan, version, path)
    start = reader.instant(item.get("start"), f"{path}.start", timezone)
    end = reader.instant(item.get("end"), f"{path}.end", timezone)
    if start is not None and end is not None and end <= start:
        reader.fail(f"{path}.end", "must be after start")
    overrides = read_overrides(declared, item.get("overrides"), f"{path}.overrides")
    amendments = _amendments(
        declared, item.get("amendments"), f"{path}.amendments", timezone, start, plan, version
    )
    credits = read_credit_terms(declared, item.get("credits"), f"{path}.credits", timezone)
    controls = parse_controls(
        reader, item.get("controls"), f"{path}.controls", declared.meters, declared.credit_types
    )
    commerce = read_contract_commerce(reader, item, path, timezone, start)
    if customer is None or plan is None or start is None:
        return None
    contract = Contract(
        customer, plan, start, timezone, version, end, overrides, amendments, credits, controls
    )
    return with_trial_end(replace(contract, **commerce))


def _timezone(reader: FieldReader, value: Any, path: str) -> str:
    """An IANA time zone (UTC by default; an unknown one is reported and UTC is used)."""
    timezone = reader.text(value, path, "UTC") or "UTC"
    try:
        local_midnight_us(timezone, date(2026, 1, 1))
    except (ValueError, KeyError):
        reader.fail(path, f"{timezone!r} is not a known time zone (e.g. UTC, America/New_York)")
        timezone = "UTC"
    return timezone


def _amendments(
    declared: Declared,
    value: Any,
    path: str,
    timezone: str,
    start: int | None,
    plan: str | None,
    version: int | None,
) -> tuple[Amendment, ...]:
    """A contract's amendments, each after the one before (the first after the start),
    none changing the billing cycle."""
    reader = declared.reader
    amendments = []
    previous = start
    cycle = _cycle_of(declared, plan, version)
    for index, raw in enumerate(reader.items(value, path)):
        where = f"{path}[{index}]"
        entry = reader.mapping(
            raw, where, ("effective", "plan", "version", "overrides"), ("effective",)
        )
        effective = reader.instant(entry.get("effective"), f"{where}.effective", timezone)
        new_plan = reader.text(entry.get("plan"), f"{where}.plan", plan)
        new_version = reader.integer(entry.get("version"), f"{where}.version")
        _plan_reference(declared, new_plan, new_version, where)
        if effective is not None and previous is not None and effective <= previous:
            reader.fail(
                f"{where}.effective",
                "must be after the contract start and the amendment before it",
            )
        new_cycle = _cycle_of(declared, new_plan, new_version)
        if cycle is not None and new_cycle is not None and new_cycle != cycle:
            reader.fail(
                f"{where}.plan",
                f"changes the billing cycle ({'/'.join(cycle)} to {'/'.join(new_cycle)});"
                " end this contract and start another",
            )
        overrides = read_overrides(declared, entry.get("overrides"), f"{where}.overrides")
        if effective is not None and new_plan is not None:
            amendments.append(Amendment(effective, new_plan, new_version, overrides))
            previous = effective
    return tuple(amendments)


def _plan_reference(declared: Declared, plan: str | None, version: int | None, path: str) -> None:
    """``plan`` (and ``version``, when given) must be declared."""
    if plan is None:
        return
    if plan not in declared.plans:
        known = ", ".join(sorted(declared.plans)) or "none declared"
        declared.reader.fail(f"{path}.plan", f"unknown plan {plan!r} (plans: {known})")
    elif version is not None and f"{plan}@{version}" not in declared.versions:
        declared.reader.fail(f"{path}.version", f"plan {plan} has no version {version}")


def _cycle_of(declared: Declared, plan: str | None, version: int | None) -> tuple[str, str] | None:
    """The (cycle, anchor) of ``plan`` at ``version`` (any version when None), if one."""
    candidates = [
        p
        for p in declared.versions.values()
        if p.plan == plan and (version is None or p.version == version)
    ]
    cycles = {
        (p.billing.cycle if p.billing.every == 1 else f"every {p.billing.every} {p.billing.cycle}",
         p.billing.anchor)
        for p in candidates
    }  # fmt: skip
    return next(iter(cycles)) if len(cycles) == 1 else None
