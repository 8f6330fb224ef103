"""The pricing file's ``plans``: each plan's versions (effective date, currency, billing
terms, fees, prices) and the controls every version carries."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from meterline.config.control_schema import parse_controls
from meterline.config.fields import Declared, FieldReader, read_currency
from meterline.config.prices import read_fees, read_prices
from meterline.core.model import BillingTerms, PlanVersion
from meterline.core.periods import ANCHORS, CYCLES, EVERY_LIMIT, PRORATIONS
from meterline.core.revrec import RECOGNITIONS

ROUNDINGS = ("half_up", "half_even")
VERSION_KEYS = ("version", "effective_from", "currency", "billing", "fees", "prices")


def read_plan(declared: Declared, value: Any, path: str) -> list[PlanVersion]:
    """A plan's versions, each with the plan's controls."""
    reader = declared.reader
    item = reader.mapping(
        value, path, ("key", "name", "versions", "controls", "semantics"), ("key", "versions")
    )
    key = reader.text(item.get("key"), f"{path}.key")
    name = reader.text(item.get("name"), f"{path}.name", key) or ""
    controls = parse_controls(
        reader, item.get("controls"), f"{path}.controls", declared.meters, declared.credit_types
    )
    versions = []
    for index, raw in enumerate(reader.items(item.get("versions"), f"{path}.versions")):
        version = _version(declared, raw, f"{path}.versions[{index}]", key or "", name)
        if version is not None:
            versions.append(replace(version, controls=controls))
    if not versions and item.get("versions") is not None:
        reader.fail(f"{path}.versions", "needs at least one version")
    return versions


def _version(declared: Declared, value: Any, path: str, plan: str, name: str) -> PlanVersion | None:
    reader = declared.reader
    item = reader.mapping(value, path, VERSION_KEYS, ("version", "effective_from", "currency"))
    number = reader.integer(item.get("version"), f"{path}.version")
    if number is not None and number < 1:
        reader.fail(f"{path}.version", "must be 1 or more")
    currency = read_currency(reader, item.get("currency"), f"{path}.currency")
    effective = reader.instant(item.get("effective_from"), f"{path}.effective_from", "UTC")
    billing = _billing(reader, item.get("billing") or {}, f"{path}.billing")
    fees = read_fees(reader, item.get("fees"), f"{path}.fees")
    prices = read_prices(declared, item.get("prices"), f"{path}.prices")
    if number is None or currency is None or effective is None:
        return None
    return PlanVersion(plan, number, name, currency, effective, billing, fees, prices)


def _billing(reader: FieldReader, value: Any, path: str) -> BillingTerms:
    """A version's ``billing``: cycle, anchor, proration, rounding and ``every`` (how many
    cycles a period spans), each defaulted."""
    raw = reader.mapping(
        value, path, ("cycle", "anchor", "proration", "rounding", "every", "recognition")
    )
    every = reader.integer(raw.get("every"), f"{path}.every", 1) or 1
    if not 1 <= every <= EVERY_LIMIT:
        reader.fail(f"{path}.every", f"must be from 1 to {EVERY_LIMIT}")
        every = 1
    return BillingTerms(
        cycle=reader.choice(raw.get("cycle"), f"{path}.cycle", CYCLES, "monthly"),  # type: ignore[arg-type]
        anchor=reader.choice(raw.get("anchor"), f"{path}.anchor", ANCHORS, "calendar"),  # type: ignore[arg-type]
        proration=reader.choice(raw.get("proration"), f"{path}.proration", PRORATIONS, "day"),  # type: ignore[arg-type]
        rounding=reader.choice(raw.get("rounding"), f"{path}.rounding", ROUNDINGS, "half_up"),  # type: ignore[arg-type]
        every=every,
        recognition=reader.choice(
            raw.get("recognition"), f"{path}.recognition", RECOGNITIONS, "day"
        ),  # type: ignore[arg-type]
    )
