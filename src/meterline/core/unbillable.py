"""Unbillable usage (pure): the reasons an event a billable meter selects cannot be billed,
which meters are billable (some price of the configuration bills them), and the problems
of an event no rating takes (no contract, or outside the contract's span). The problems
a rating meets while measuring are ``core.rating``'s and ``core.meters``'s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterline.core.events import format_timestamp
from meterline.core.meters import Meter, MeterProblem
from meterline.core.model import Configuration, Contract

UNBILLABLE_REASONS: dict[str, str] = {
    "missing": "the meter's property is missing",
    "not_a_number": "the value is not a number",
    "non_finite": "the value is NaN or infinite",
    "out_of_range": "the value is beyond the exact range (10**24, 18 decimals)",
    "negative": "the value is negative and the meter rejects negatives",
    "overflow": "the running total would stop being exact",
    "undecodable": "the stored event cannot be decoded",
    "before_contract": "the event is before the customer's contract starts",
    "after_contract": "the event is after the customer's contract ends",
    "no_contract": "the customer has no contract",
}
"""Every reason an event is unbillable usage, by code, in words."""


def billable_meters(configuration: Configuration) -> dict[str, tuple[Meter, ...]]:
    """Per event type, the meters some price of ``configuration`` bills (a plan version's,
    a contract's or an amendment's override): an event one of them selects is usage."""
    keys = {price.meter for plan in configuration.plans for price in plan.prices}
    for contract in configuration.contracts:
        keys.update(price.meter for price in contract.overrides.prices)
        for amendment in contract.amendments:
            keys.update(price.meter for price in amendment.overrides.prices)
    table: dict[str, list[Meter]] = {}
    for meter in configuration.meters:
        if meter.key in keys:
            table.setdefault(meter.event_type, []).append(meter)
    return {event_type: tuple(meters) for event_type, meters in table.items()}


def unrated_problems(
    meters: Mapping[str, tuple[Meter, ...]],
    contract: Contract | None,
    sequence: int,
    timestamp_us: int,
    event_type: str,
    properties: Mapping[str, Any] | None,
) -> list[MeterProblem]:
    """The problems of an event no rating takes (``meters``: ``billable_meters``): one
    per meter that selects it, ``no_contract`` without a contract, ``before_contract`` or
    ``after_contract`` outside its span; none inside the span (a period not rated yet) or
    when it is not usage. Undecodable properties (None) are one ``undecodable`` problem."""
    candidates = meters.get(event_type)
    if not candidates:
        return []
    if contract is None:
        code, detail = "no_contract", "the customer has no contract"
    elif timestamp_us < contract.start_us:
        code = "before_contract"
        detail = f"before the contract starts ({format_timestamp(contract.start_us)})"
    elif contract.end_us is not None and timestamp_us >= contract.end_us:
        code = "after_contract"
        detail = f"after the contract ends ({format_timestamp(contract.end_us)})"
    else:
        return []
    if properties is None:
        return [MeterProblem(sequence, f"undecodable event, {detail}", "", "undecodable")]
    return usage_problems(candidates, sequence, properties, code, detail)


def usage_problems(
    candidates: tuple[Meter, ...],
    sequence: int,
    properties: Mapping[str, Any],
    code: str,
    detail: str,
) -> list[MeterProblem]:
    """One ``code`` problem per meter of ``candidates`` whose filters select the event:
    the event is usage those meters would bill, and cannot be."""
    return [
        MeterProblem(sequence, detail, meter.key, code)
        for meter in candidates
        if all(f.matches(properties) for f in meter.filters)
    ]
