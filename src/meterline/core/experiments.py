"""A price experiment: a new plan version for the customers who join the plan from its
effective date, while the customers on the plan keep the version they are on (pure).

A ``PlanExperiment`` is what an editor proposes: for ``plan``, a new version in force from
``effective`` (a date, UTC midnight as for every plan version), its fees and prices
starting from the plan's latest version: a fee is written over the one of its key (the
fields it does not give are kept: ``{key: platform, amount: "450.00"}`` changes the
amount alone), a price over the one of its meter and ``where`` (kept fields only when it
gives no other ``model``); the rest of the version is kept. ``experiment_configuration`` writes it
into the pricing file's plain data exactly as a person would in YAML:

- a version ``N+1`` appended to the plan's ``versions`` with ``effective_from``;
- each contract on the plan that floats (no ``version``) pinned to the version it is on
  at ``effective`` (``pins``, decided by the caller from the configuration in force): on
  the contract itself, or on its last amendment when it has amendments. So a contract
  added later without a version (a new customer) gets the new version, and nobody else
  does. A pin that would change a finalized period (a contract that floated across
  versions) is refused by the history check, naming the contract.

The preview re-rates a sample of real customers' last closed period under the new
version (``segments_on_version``: the period's segments on the plan moved onto it):
``sample`` when given, else the customers billed on the plan in their last closed period
with the most usage on that invoice (``sample_by_usage``, at most
``EXPERIMENT_SAMPLE_SIZE``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from meterline.core.model import PlanVersion, Segment
from meterline.core.money import MoneyError, to_decimal
from meterline.core.proposals import Changed

EXPERIMENT_KIND = "plan_version"
"""The ``kind`` a stored experiment's data carries (a contract change carries none)."""
EXPERIMENT_SAMPLE_SIZE = 10
"""How many customers a preview re-rates when the experiment names no sample: those
billed on the plan in their last closed period with the most usage on that invoice."""
EXPERIMENT_SAMPLE_MAX = 100
"""The most customers an experiment may name as its sample (each is a re-rating)."""


@dataclass(frozen=True, slots=True)
class PlanExperiment:
    """A new version of ``plan`` from ``effective`` (YYYY-MM-DD) for new customers."""

    plan: str
    effective: str
    fees: tuple[Mapping[str, Any], ...] = ()
    prices: tuple[Mapping[str, Any], ...] = ()
    sample: tuple[str, ...] = ()
    kind: str = EXPERIMENT_KIND

    @property
    def customer(self) -> str:
        """An experiment concerns no one customer (a customer-bound caller never sees it)."""
        return ""

    @property
    def subject(self) -> str:
        return f"plan {self.plan}"

    def as_data(self) -> dict[str, Any]:
        """The experiment as plain data (stored as canonical JSON with its proposal)."""
        return {
            "kind": self.kind,
            "plan": self.plan,
            "effective": self.effective,
            "fees": [dict(fee) for fee in self.fees],
            "prices": [dict(price) for price in self.prices],
            "sample": list(self.sample),
        }


def experiment_from_data(data: Mapping[str, Any]) -> PlanExperiment:
    """A stored experiment's plain data back as a ``PlanExperiment``."""
    return PlanExperiment(
        plan=str(data["plan"]),
        effective=str(data["effective"]),
        fees=tuple(data.get("fees") or ()),
        prices=tuple(data.get("prices") or ()),
        sample=tuple(data.get("sample") or ()),
    )


def experiment_problems(experiment: PlanExperiment, data: Any) -> list[str]:
    """What the parser cannot see, each ``field: reason``: no such plan, an effective date
    that is no date, a fee amount below zero, a sample too long or repeating a name."""
    problems = []
    if _plan_index(data, experiment.plan) is None:
        problems.append(f"plan: no plan {experiment.plan!r} in the configuration in force")
    try:
        date.fromisoformat(experiment.effective)
    except (TypeError, ValueError):
        problems.append(f"effective: {experiment.effective!r} is not a date (YYYY-MM-DD)")
    for index, fee in enumerate(experiment.fees):
        if not isinstance(fee, Mapping) or "amount" not in fee:
            continue
        try:
            if to_decimal(str(fee["amount"]), f"fees[{index}].amount") < 0:
                problems.append(f"fees: fees[{index}].amount: must not be negative")
        except MoneyError as error:
            problems.append(f"fees: {error}")
    if len(experiment.sample) > EXPERIMENT_SAMPLE_MAX:
        problems.append(f"sample: at most {EXPERIMENT_SAMPLE_MAX} customers")
    if len(set(experiment.sample)) != len(experiment.sample):
        problems.append("sample: names a customer twice")
    return problems


def _plan_index(data: Any, plan: str) -> int | None:
    plans = (data or {}).get("plans") if isinstance(data, Mapping) else None
    for index, entry in enumerate(plans or []):
        if isinstance(entry, Mapping) and entry.get("key") == plan:
            return index
    return None


def floating_entry(contract: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where a contract's plan and version are in force from its last change: its last
    amendment, or the contract itself."""
    amendments = contract.get("amendments") or []
    last = amendments[-1] if amendments and isinstance(amendments[-1], Mapping) else None
    return contract if last is None else last


def experiment_configuration(
    data: Any, experiment: PlanExperiment, pins: Mapping[str, int]
) -> Changed:
    """``data`` (left as it is) with the experiment's version appended to its plan and
    each customer in ``pins`` (those floating on the plan) pinned to its version there."""
    new = copy.deepcopy(dict(data or {}))
    paths: dict[str, str] = {}
    index = _plan_index(new, experiment.plan)
    if index is None:
        return Changed(new, "plans", paths)
    plans = list(new["plans"])
    plan = dict(plans[index])
    versions = list(plan.get("versions") or [])
    latest = max(
        (v for v in versions if isinstance(v, Mapping) and isinstance(v.get("version"), int)),
        key=lambda v: v["version"],
        default={},
    )
    where = f"plans[{index}].versions[{len(versions)}]"
    version: dict[str, Any] = copy.deepcopy(dict(latest))
    version["version"] = int(latest.get("version", 0)) + 1
    version["effective_from"] = experiment.effective
    fees = [dict(f) for f in version.get("fees") or [] if isinstance(f, Mapping)]
    for fee in experiment.fees:
        same = [f for f in fees if f.get("key") == fee.get("key")]
        fees = [f for f in fees if f.get("key") != fee.get("key")]
        fees.append({**(same[0] if same else {}), **fee})
    if fees:
        version["fees"] = fees
    prices = [dict(p) for p in version.get("prices") or [] if isinstance(p, Mapping)]
    for price in experiment.prices:
        key = (price.get("meter"), str(price.get("where")))
        same = [p for p in prices if (p.get("meter"), str(p.get("where"))) == key]
        prices = [p for p in prices if (p.get("meter"), str(p.get("where"))) != key]
        kept = same[0] if same and price.get("model") in (None, same[0].get("model")) else {}
        prices.append({**kept, **price})
    version["prices"] = prices
    versions.append(version)
    plan["versions"] = versions
    plans[index] = plan
    new["plans"] = plans
    paths.update(
        plan=f"plans[{index}].key",
        version=where,
        effective=f"{where}.effective_from",
        fees=f"{where}.fees",
        prices=f"{where}.prices",
    )
    contracts = list(new.get("contracts") or [])
    for position, contract in enumerate(contracts):
        if not isinstance(contract, Mapping) or contract.get("customer") not in pins:
            continue
        pinned = copy.deepcopy(dict(contract))
        entry = floating_entry(pinned)
        if entry is pinned:
            pinned["version"] = pins[str(contract["customer"])]
        else:
            amendments = pinned["amendments"]
            amendments[-1] = {**entry, "version": pins[str(contract["customer"])]}
        contracts[position] = pinned
        paths[f"pinned.{contract['customer']}"] = f"contracts[{position}]"
    new["contracts"] = contracts
    return Changed(new, f"plans[{index}]", paths)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A customer that may be sampled: its last finalized invoice's usage charges."""

    customer: str
    usage: Decimal


def sample_by_usage(candidates: list[Candidate], size: int = EXPERIMENT_SAMPLE_SIZE) -> list[str]:
    """The ``size`` candidates with the most usage charges (ties by name)."""
    chosen = sorted(candidates, key=lambda c: (-c.usage, c.customer))
    return [candidate.customer for candidate in chosen[:size]]


def segments_on_version(
    segments: list[Segment], version: PlanVersion
) -> tuple[list[Segment], dict[str, str]]:
    """A billed period's segments with each one on ``version``'s plan moved onto
    ``version`` (overrides, trials and the splits kept: a customer that joined mid-period
    is still prorated); all of them when none is on that plan (a sample customer of
    another plan, as if it had been on the new version). With the aliases that match an
    old version's lines to the new one's (``core.proposals.line_comparison``)."""
    moved = [s.terms.plan.plan == version.plan for s in segments]
    if not any(moved):
        moved = [True] * len(segments)
    swapped = [
        replace(s, terms=replace(s.terms, plan=version)) if move else s
        for s, move in zip(segments, moved, strict=True)
    ]
    labels = sorted({s.terms.plan.label for s, move in zip(segments, moved, strict=True) if move})
    both = f"({', '.join(labels)} → {version.label})"
    return swapped, {f"({label})": both for label in [*labels, version.label]}
