"""The pricing file's schema: plain data -> ``Configuration``, or every error by path.

Every problem is reported, not just the first, each as ``file:line: path: reason``
(``pricing.yaml:31: plans[1].versions[0].prices[0].tiers[1].up_to: 100 must be greater
than 1000 (tiers overlap or are out of order)``). Unknown keys are errors (a typo must not
silently drop a price). Amounts are exact: strings or YAML numbers read as Decimal;
booleans and floats are refused. Dates (``2026-10-01``) are local midnight in the
contract's time zone for contracts and amendments, UTC midnight for plan versions;
full RFC 3339 timestamps are taken as they are.

This module is the entry point: it reads the sections in order (credit types and
meters first, then costs, plans and contracts, which refer to them) and raises once with
every error. Each section has its own reader: ``config.fields`` (the shared field
readers), ``config.meters``, ``config.credits``, ``config.prices``, ``config.plans``,
``config.contracts``, ``config.control_schema`` (controls and costs), ``config.commerce``
(coupons, tax, trials), ``config.otel`` (the ``otel:`` block: OTLP spans as events) and
``config.semantics`` (the ``semantics:`` block, read last).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterline.config.commerce import check_references, read_coupons, read_reporting, read_tax
from meterline.config.contracts import read_contract
from meterline.config.control_schema import parse_costs
from meterline.config.credits import read_credit_type
from meterline.config.fields import Declared, FieldReader, raw_keys, unique
from meterline.config.meters import read_meter
from meterline.config.otel import parse_otel
from meterline.config.plans import read_plan
from meterline.config.semantics import with_semantics
from meterline.core.model import Configuration, PlanVersion

__all__ = ["TOP_LEVEL", "parse_configuration"]

TOP_LEVEL = (
    "credit_types",
    "meters",
    "costs",
    "plans",
    "contracts",
    "coupons",
    "tax",
    "reporting",
    "semantics",
    "otel",
)


def parse_configuration(
    data: Any, positions: Mapping[str, int] | None = None, name: str = "pricing.yaml"
) -> Configuration:
    """``data`` (the pricing file as plain data) as a ``Configuration``; raises
    ``ConfigurationError`` listing every problem."""
    reader = FieldReader(positions or {}, name)
    if data is None:
        data = {}
    root = reader.mapping(data, "", TOP_LEVEL)
    raw_credit_types = reader.items(root.get("credit_types"), "credit_types")
    credit_types = tuple(
        filter(
            None,
            (
                read_credit_type(reader, item, f"credit_types[{i}]")
                for i, item in enumerate(raw_credit_types)
            ),
        )
    )
    raw_meters = reader.items(root.get("meters"), "meters")
    meters = tuple(
        filter(
            None, (read_meter(reader, item, f"meters[{i}]") for i, item in enumerate(raw_meters))
        )
    )
    unique(reader, raw_keys(raw_meters, "meters", "key"), "meter")
    unique(reader, raw_keys(raw_credit_types, "credit_types", "key"), "credit type")
    declared = Declared(reader, {m.key: m for m in meters}, {c.key for c in credit_types})
    costs = parse_costs(reader, root.get("costs"), "costs", declared.meters)
    plans = _plans(declared, root.get("plans"))
    declared.plans = {p.plan for p in plans}
    declared.versions = {p.label: p for p in plans}
    coupons = read_coupons(reader, root.get("coupons"), "coupons")
    tax_rates, tax_rounding = read_tax(reader, root.get("tax"), "tax")
    reporting = read_reporting(reader, root.get("reporting"), "reporting")
    contracts = []
    raw_contracts = reader.items(root.get("contracts"), "contracts")
    for index, item in enumerate(raw_contracts):
        contract = read_contract(declared, item, f"contracts[{index}]")
        if contract is not None:
            contracts.append((f"contracts[{index}]", contract))
    unique(reader, raw_keys(raw_contracts, "contracts", "customer"), "contract for customer")
    check_references(reader, contracts, coupons, tax_rates)
    configuration = Configuration(
        meters,
        credit_types,
        tuple(plans),
        tuple(contract for _, contract in contracts),
        costs,
        coupons=coupons,
        tax_rates=tax_rates,
        tax_rounding=tax_rounding,
        reporting=reporting,
        otel=parse_otel(reader, root.get("otel")),
    )
    return with_semantics(
        configuration, reader, root.get("semantics"), root.get("plans"), root.get("contracts")
    )


def _plans(declared: Declared, value: Any) -> list[PlanVersion]:
    """Every plan's versions; each plan key, and each version of a plan, once."""
    reader = declared.reader
    plans: list[PlanVersion] = []
    raw_plans = reader.items(value, "plans")
    for index, item in enumerate(raw_plans):
        plans.extend(read_plan(declared, item, f"plans[{index}]"))
        if isinstance(item, Mapping):
            versions = raw_keys(item.get("versions"), f"plans[{index}].versions", "version")
            labels = [(f"{item.get('key')}@{number}", where) for number, where in versions]
            unique(reader, labels, "plan version")
    unique(reader, raw_keys(raw_plans, "plans", "key"), "plan")
    return plans
