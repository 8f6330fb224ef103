"""The pricing file's schema: plain data -> ``Configuration``, or every error by path.

Every problem is reported, not just the first, each as ``file:line: path: reason``
(``pricing.yaml:31: plans[1].versions[0].prices[0].tiers[1].up_to: 100 must be greater
than 1000 (tiers overlap or are out of order)``). Unknown keys are errors (a typo must not
silently drop a price). Amounts are exact: strings or YAML numbers read as Decimal;
booleans and floats are refused. Dates (``2026-10-01``) are local midnight in the
contract's time zone for contracts and amendments, UTC midnight for plan versions;
full RFC 3339 timestamps are taken as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from meterline.config.controls import parse_controls, parse_costs
from meterline.config.semantics import with_semantics
from meterline.core.credit_records import OVERAGE_MODES, RolloverRule
from meterline.core.events import timestamp_to_us
from meterline.core.meters import (
    AGGREGATIONS,
    NEGATIVE_RULES,
    Meter,
    PropertyFilter,
    meter_errors,
)
from meterline.core.model import (
    CREDIT_RECURRENCES,
    FEE_KINDS,
    FEE_TIMINGS,
    PRICE_MODELS,
    Amendment,
    BillingTerms,
    Configuration,
    Contract,
    CreditSpec,
    CreditTerms,
    CreditType,
    Fee,
    Overrides,
    PlanVersion,
    Price,
)
from meterline.core.money import MINOR_UNITS
from meterline.core.periods import ANCHORS, CYCLES, PRORATIONS, local_midnight_us
from meterline.core.pricing import Tier, tier_errors
from meterline.core.revrec import BREAKAGE_MODES

TOP_LEVEL = ("credit_types", "meters", "costs", "plans", "contracts", "semantics")
ROUNDINGS = ("half_up", "half_even")


class _Reader:
    """Collects errors while reading; each value is read at a path."""

    def __init__(self, positions: Mapping[str, int], name: str) -> None:
        self.errors: list[str] = []
        self.positions = positions
        self.name = name

    def error(self, path: str, reason: str) -> None:
        """Record ``reason`` at the line of ``path`` (or of its nearest parent in the file)."""
        line = self.positions.get(path)
        parent = path
        while line is None and parent:
            cut = max(parent.rfind("."), parent.rfind("["))
            parent = parent[:cut] if cut > 0 else ""
            line = self.positions.get(parent)
        where = f"{self.name}:{line}" if line is not None else self.name
        self.errors.append(f"{where}: {reason}")

    def fail(self, path: str, reason: str) -> None:
        self.error(path, f"{path}: {reason}")

    def mapping(
        self, value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping, not {_kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                self.fail(
                    f"{path}.{key}" if path else str(key),
                    f"unknown key (expected one of {', '.join(allowed)})",
                )
        for key in required:
            if key not in value or value[key] is None:
                self.fail(f"{path}.{key}" if path else key, "is required")
        return dict(value)

    def items(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {_kind(value)}")
            return []
        return value

    def text(self, value: Any, path: str, default: str | None = None) -> str | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(path, f"must be text, not {_kind(value)}")
            return default
        text = str(value)
        if not text:
            self.fail(path, "must not be empty")
        return text

    def amount(self, value: Any, path: str, default: Decimal | None = None) -> Decimal | None:
        if value is None:
            return default
        if isinstance(value, bool | float):
            self.fail(path, f"must be an exact number, not {_kind(value)}")
            return default
        if isinstance(value, int | Decimal):
            return Decimal(value)
        if isinstance(value, str):
            try:
                number = Decimal(value)
            except InvalidOperation:
                self.fail(path, f"{value!r} is not a number")
                return default
            if number.is_finite():
                return number
        self.fail(path, f"{value!r} is not a number")
        return default

    def non_negative(self, value: Any, path: str, default: Decimal | None = None) -> Decimal | None:
        number = self.amount(value, path, default)
        if number is not None and number < 0:
            self.fail(path, "must not be negative")
        return number

    def integer(self, value: Any, path: str, default: int | None = None) -> int | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be a whole number, not {_kind(value)}")
            return default
        return value

    def choice(self, value: Any, path: str, options: tuple[str, ...], default: str) -> str:
        if value is None:
            return default
        if value not in options:
            self.fail(path, f"{value!r} is not one of {', '.join(options)}")
            return default
        return str(value)

    def instant(self, value: Any, path: str, timezone: str) -> int | None:
        """A date (local midnight in ``timezone``) or an RFC 3339 timestamp, as microseconds."""
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None:
                self.fail(path, "a timestamp needs a zone offset (e.g. 2026-10-15T00:00:00Z)")
                return None
            return timestamp_to_us(value)
        if isinstance(value, date):
            try:
                return local_midnight_us(timezone, value)
            except (ValueError, KeyError):
                return None
        if isinstance(value, str):
            try:
                if len(value) == 10:
                    return self.instant(date.fromisoformat(value), path, timezone)
                return self.instant(
                    datetime.fromisoformat(value.replace("Z", "+00:00")), path, timezone
                )
            except ValueError:
                pass
        self.fail(path, f"{value!r} is not a date (2026-10-01) or an RFC 3339 timestamp")
        return None


def _kind(value: Any) -> str:
    return {bool: "a boolean", float: "a float", dict: "a mapping", list: "a list"}.get(
        type(value), type(value).__name__
    )


def _unique(reader: _Reader, keys: list[tuple[str, str]], what: str) -> None:
    """Each key given at most once; a repeat is named at its path with the first's line."""
    seen: dict[str, str] = {}
    for key, path in keys:
        if key in seen:
            first = reader.positions.get(seen[key])
            where = f" (first at line {first})" if first is not None else ""
            reader.fail(path, f"{what} {key!r} is declared twice{where}")
        else:
            seen[key] = path


def _raw_keys(items: Any, path: str, field: str) -> list[tuple[str, str]]:
    """``(key, path of the key)`` of each mapping in the raw list ``items`` that gives
    ``field`` as text or a number (a missing or bad one, or a list that is not one, is
    reported by the item's reader), at the item's own index, so a repeat is named on its
    own line."""
    if not isinstance(items, list):
        return []
    return [
        (str(item[field]), f"{path}[{index}].{field}")
        for index, item in enumerate(items)
        if isinstance(item, Mapping)
        and isinstance(item.get(field), str | int)
        and not isinstance(item.get(field), bool)
    ]


def parse_configuration(
    data: Any, positions: Mapping[str, int] | None = None, name: str = "pricing.yaml"
) -> Configuration:
    """``data`` (the pricing file as plain data) as a ``Configuration``; raises
    ``ConfigurationError`` listing every problem."""
    reader = _Reader(positions or {}, name)
    if data is None:
        data = {}
    root = reader.mapping(data, "", TOP_LEVEL)
    raw_credit_types = reader.items(root.get("credit_types"), "credit_types")
    credit_types = tuple(
        filter(
            None,
            (
                _credit_type(reader, item, f"credit_types[{i}]")
                for i, item in enumerate(raw_credit_types)
            ),
        )
    )
    raw_meters = reader.items(root.get("meters"), "meters")
    meters = tuple(
        filter(None, (_meter(reader, item, f"meters[{i}]") for i, item in enumerate(raw_meters)))
    )
    _unique(reader, _raw_keys(raw_meters, "meters", "key"), "meter")
    _unique(reader, _raw_keys(raw_credit_types, "credit_types", "key"), "credit type")
    context = _Context(reader, {m.key: m for m in meters}, {c.key for c in credit_types})
    costs = parse_costs(reader, root.get("costs"), "costs", context.meters)
    plans: list[PlanVersion] = []
    raw_plans = reader.items(root.get("plans"), "plans")
    for index, item in enumerate(raw_plans):
        plans.extend(context.plan(item, f"plans[{index}]"))
        if isinstance(item, Mapping):
            versions = _raw_keys(item.get("versions"), f"plans[{index}].versions", "version")
            labels = [(f"{item.get('key')}@{number}", where) for number, where in versions]
            _unique(reader, labels, "plan version")
    _unique(reader, _raw_keys(raw_plans, "plans", "key"), "plan")
    context.plans = {p.plan for p in plans}
    context.versions = {p.label: p for p in plans}
    contracts = []
    raw_contracts = reader.items(root.get("contracts"), "contracts")
    for index, item in enumerate(raw_contracts):
        contract = context.contract(item, f"contracts[{index}]")
        if contract is not None:
            contracts.append(contract)
    _unique(reader, _raw_keys(raw_contracts, "contracts", "customer"), "contract for customer")
    configuration = Configuration(meters, credit_types, tuple(plans), tuple(contracts), costs)
    return with_semantics(configuration, reader, root.get("semantics"))


def _credit_type(reader: _Reader, value: Any, path: str) -> CreditType | None:
    item = reader.mapping(
        value,
        path,
        ("key", "name", "currency", "unit_value", "conversions"),
        ("key", "currency", "unit_value"),
    )
    key = reader.text(item.get("key"), f"{path}.key")
    currency = _currency(reader, item.get("currency"), f"{path}.currency")
    unit_value = reader.non_negative(item.get("unit_value"), f"{path}.unit_value")
    conversions: list[tuple[int, Decimal]] = []
    for index, raw in enumerate(reader.items(item.get("conversions"), f"{path}.conversions")):
        where = f"{path}.conversions[{index}]"
        entry = reader.mapping(raw, where, ("effective", "unit_value"), ("effective", "unit_value"))
        effective = reader.instant(entry.get("effective"), f"{where}.effective", "UTC")
        changed = reader.non_negative(entry.get("unit_value"), f"{where}.unit_value")
        if effective is None or changed is None:
            continue
        if conversions and effective <= conversions[-1][0]:
            reader.fail(f"{where}.effective", "must be after the conversion before it")
        conversions.append((effective, changed))
    if key is None or currency is None or unit_value is None:
        return None
    if key in MINOR_UNITS:
        reader.fail(f"{path}.key", f"{key} is a currency; a credit type needs its own name")
    return CreditType(
        key,
        reader.text(item.get("name"), f"{path}.name", key) or key,
        currency,
        unit_value,
        tuple(conversions),
    )


def _currency(reader: _Reader, value: Any, path: str) -> str | None:
    if value is None:
        reader.fail(path, "is required (an ISO 4217 code such as USD)")
        return None
    if value not in MINOR_UNITS:
        reader.fail(path, f"{value!r} is not a known currency ({', '.join(sorted(MINOR_UNITS))})")
        return None
    return str(value)


def _meter(reader: _Reader, value: Any, path: str) -> Meter | None:
    item = reader.mapping(
        value,
        path,
        (
            "key",
            "event_type",
            "aggregation",
            "property",
            "filters",
            "group_by",
            "description",
            "product",
            "negative",
        ),
        ("key", "event_type", "aggregation"),
    )
    filters = []
    for index, raw in enumerate(reader.items(item.get("filters"), f"{path}.filters")):
        where = f"{path}.filters[{index}]"
        rule = reader.mapping(raw, where, ("property", "equals", "in", "exists"), ("property",))
        present = [name for name in ("equals", "in", "exists") if name in rule]
        if len(present) != 1:
            reader.fail(where, "needs exactly one of equals, in, exists")
            continue
        one_of = rule.get("in")
        if one_of is not None and not isinstance(one_of, list):
            reader.fail(f"{where}.in", "must be a list")
            continue
        exists = rule.get("exists")
        if exists is not None and not isinstance(exists, bool):
            reader.fail(f"{where}.exists", "must be true or false")
            continue
        filters.append(
            PropertyFilter(
                str(rule.get("property")),
                equals=rule.get("equals"),
                one_of=tuple(one_of) if one_of is not None else None,
                exists=exists,
            )
        )
    group_by = [
        reader.text(g, f"{path}.group_by[{i}]")
        for i, g in enumerate(reader.items(item.get("group_by"), f"{path}.group_by"))
    ]
    aggregation = reader.choice(
        item.get("aggregation"), f"{path}.aggregation", AGGREGATIONS, "count"
    )
    meter = Meter(
        key=reader.text(item.get("key"), f"{path}.key") or "",
        event_type=reader.text(item.get("event_type"), f"{path}.event_type") or "",
        aggregation=aggregation,  # type: ignore[arg-type]
        property=reader.text(item.get("property"), f"{path}.property"),
        filters=tuple(filters),
        group_by=tuple(g for g in group_by if g),
        product=reader.text(item.get("product"), f"{path}.product", "") or "",
        negative=reader.choice(  # type: ignore[arg-type]
            item.get("negative"), f"{path}.negative", NEGATIVE_RULES, "reject"
        ),
    )
    for problem in meter_errors(meter, path):
        field, _, reason = problem.partition(": ")
        reader.fail(field, reason)
    return meter


_PRICE_KEYS = (
    "meter",
    "model",
    "where",
    "description",
    "unit_amount",
    "size",
    "amount",
    "tiers",
    "first_flat_at_zero",
    "matrix",
    "default",
    "rate",
    "property",
    "fixed_fee",
    "free_events",
    "per_event_minimum",
    "per_event_maximum",
    "free_units",
    "minimum",
    "maximum",
    "credit_type",
)
_NEEDS: dict[str, tuple[str, ...]] = {
    "per_unit": ("unit_amount",),
    "package": ("size", "amount"),
    "graduated": ("tiers",),
    "volume": ("tiers",),
    "matrix": ("matrix",),
    "percentage": ("rate",),
}
_FEE_KEYS = ("key", "name", "amount", "kind", "timing")
_CREDIT_TERMS_KEYS = (
    "breakage",
    "breakage_rate",
    "grants",
    "commits",
    "overage",
    "overage_prices",
    "threshold",
)
_GRANT_KEYS = (
    "key",
    "credit_type",
    "amount",
    "paid",
    "priority",
    "start",
    "end",
    "expires",
    "recurrence",
    "rollover",
    "scope",
    "description",
    "breakage",
    "breakage_rate",
)
_COMMIT_KEYS = (*(k for k in _GRANT_KEYS if k != "credit_type"), "kind")


class _Context:
    def __init__(self, reader: _Reader, meters: dict[str, Meter], credit_types: set[str]) -> None:
        self.reader = reader
        self.meters = meters
        self.credit_types = credit_types
        self.plans: set[str] = set()
        self.versions: dict[str, PlanVersion] = {}

    def plan(self, value: Any, path: str) -> list[PlanVersion]:
        reader = self.reader
        item = reader.mapping(
            value, path, ("key", "name", "versions", "controls"), ("key", "versions")
        )
        key = reader.text(item.get("key"), f"{path}.key")
        name = reader.text(item.get("name"), f"{path}.name", key) or ""
        controls = parse_controls(
            reader, item.get("controls"), f"{path}.controls", self.meters, self.credit_types
        )
        versions = []
        for index, raw in enumerate(reader.items(item.get("versions"), f"{path}.versions")):
            version = self.version(raw, f"{path}.versions[{index}]", key or "", name)
            if version is not None:
                versions.append(replace(version, controls=controls))
        if not versions and item.get("versions") is not None:
            reader.fail(f"{path}.versions", "needs at least one version")
        return versions

    def version(self, value: Any, path: str, plan: str, name: str) -> PlanVersion | None:
        reader = self.reader
        item = reader.mapping(
            value,
            path,
            ("version", "effective_from", "currency", "billing", "fees", "prices"),
            ("version", "effective_from", "currency"),
        )
        number = reader.integer(item.get("version"), f"{path}.version")
        if number is not None and number < 1:
            reader.fail(f"{path}.version", "must be 1 or more")
        currency = _currency(reader, item.get("currency"), f"{path}.currency")
        effective = reader.instant(item.get("effective_from"), f"{path}.effective_from", "UTC")
        billing_raw = reader.mapping(
            item.get("billing") or {},
            f"{path}.billing",
            ("cycle", "anchor", "proration", "rounding"),
        )
        billing = BillingTerms(
            cycle=reader.choice(
                billing_raw.get("cycle"), f"{path}.billing.cycle", CYCLES, "monthly"
            ),  # type: ignore[arg-type]
            anchor=reader.choice(
                billing_raw.get("anchor"), f"{path}.billing.anchor", ANCHORS, "calendar"
            ),  # type: ignore[arg-type]
            proration=reader.choice(
                billing_raw.get("proration"), f"{path}.billing.proration", PRORATIONS, "day"
            ),  # type: ignore[arg-type]
            rounding=reader.choice(
                billing_raw.get("rounding"), f"{path}.billing.rounding", ROUNDINGS, "half_up"
            ),  # type: ignore[arg-type]
        )
        fees = self.fees(item.get("fees"), f"{path}.fees")
        prices = self.prices(item.get("prices"), f"{path}.prices")
        if number is None or currency is None or effective is None:
            return None
        return PlanVersion(plan, number, name, currency, effective, billing, fees, prices)

    def fees(self, value: Any, path: str) -> tuple[Fee, ...]:
        reader = self.reader
        fees = []
        for index, raw in enumerate(reader.items(value, path)):
            where = f"{path}[{index}]"
            item = reader.mapping(raw, where, _FEE_KEYS, ("key", "amount"))
            key = reader.text(item.get("key"), f"{where}.key")
            amount = reader.amount(item.get("amount"), f"{where}.amount")
            kind = reader.choice(item.get("kind"), f"{where}.kind", FEE_KINDS, "recurring")
            timing = reader.choice(item.get("timing"), f"{where}.timing", FEE_TIMINGS, "advance")
            if key is None or amount is None:
                continue
            fees.append(
                Fee(
                    key,
                    reader.text(item.get("name"), f"{where}.name", key) or key,
                    amount,
                    kind,  # type: ignore[arg-type]
                    timing,  # type: ignore[arg-type]
                )
            )
        _unique(reader, _raw_keys(value, path, "key"), "fee")
        return tuple(fees)

    def prices(self, value: Any, path: str) -> tuple[Price, ...]:
        prices = []
        for index, raw in enumerate(self.reader.items(value, path)):
            price = self.price(raw, f"{path}[{index}]")
            if price is not None:
                prices.append(price)
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for index, price in enumerate(prices):
            if (price.meter, price.where) in seen:
                self.reader.fail(
                    f"{path}[{index}]",
                    f"meter {price.meter} already has a price for the same groups",
                )
            seen.add((price.meter, price.where))
        return tuple(prices)

    def price(self, value: Any, path: str) -> Price | None:
        reader = self.reader
        item = reader.mapping(value, path, _PRICE_KEYS, ("meter", "model"))
        meter_key = reader.text(item.get("meter"), f"{path}.meter")
        meter = self.meters.get(meter_key or "")
        if meter_key is not None and meter is None:
            known = ", ".join(sorted(self.meters)) or "none declared"
            reader.fail(f"{path}.meter", f"unknown meter {meter_key!r} (meters: {known})")
        model = reader.choice(item.get("model"), f"{path}.model", PRICE_MODELS, "per_unit")
        for needed in _NEEDS.get(str(item.get("model")), ()):
            if item.get(needed) is None:
                reader.fail(f"{path}.{needed}", f"is required for a {model} price")
        where_raw = reader.mapping(
            item.get("where") or {},
            f"{path}.where",
            tuple(meter.group_by) if meter else tuple(item.get("where") or {}),
        )
        where = tuple(sorted((str(k), str(v)) for k, v in where_raw.items()))
        tiers = (
            self.tiers(item.get("tiers"), f"{path}.tiers")
            if model in ("graduated", "volume")
            else ()
        )
        matrix: list[tuple[tuple[str, ...], Decimal]] = []
        if model == "matrix":
            if meter is not None and not meter.group_by:
                reader.fail(
                    f"{path}.matrix", f"meter {meter.key} has no group_by dimensions to price by"
                )
            for index, raw in enumerate(reader.items(item.get("matrix"), f"{path}.matrix")):
                where_cell = f"{path}.matrix[{index}]"
                cell = reader.mapping(
                    raw, where_cell, ("values", "unit_amount"), ("values", "unit_amount")
                )
                values = reader.mapping(
                    cell.get("values") or {},
                    f"{where_cell}.values",
                    tuple(meter.group_by) if meter else (),
                )
                amount = reader.non_negative(cell.get("unit_amount"), f"{where_cell}.unit_amount")
                if meter is not None and set(values) != set(meter.group_by):
                    reader.fail(
                        f"{where_cell}.values",
                        f"must name every dimension of meter {meter.key}: "
                        + ", ".join(meter.group_by),
                    )
                elif meter is not None and amount is not None:
                    matrix.append((tuple(str(values[d]) for d in meter.group_by), amount))
        credit_type = reader.text(item.get("credit_type"), f"{path}.credit_type")
        if credit_type is not None and credit_type not in self.credit_types:
            reader.fail(f"{path}.credit_type", f"unknown credit type {credit_type!r}")
        minimum = reader.non_negative(item.get("minimum"), f"{path}.minimum")
        maximum = reader.non_negative(item.get("maximum"), f"{path}.maximum")
        if minimum is not None and maximum is not None and minimum > maximum:
            reader.fail(f"{path}.minimum", f"{minimum} exceeds maximum {maximum}")
        size = reader.non_negative(item.get("size"), f"{path}.size")
        if model == "package" and size is not None and size == 0:
            reader.fail(f"{path}.size", "must be positive")
        free_events = reader.integer(item.get("free_events"), f"{path}.free_events", 0) or 0
        flat_at_zero = item.get("first_flat_at_zero", True)
        if not isinstance(flat_at_zero, bool):
            reader.fail(f"{path}.first_flat_at_zero", "must be true or false")
            flat_at_zero = True
        if meter_key is None:
            return None
        return Price(
            meter=meter_key,
            model=model,  # type: ignore[arg-type]
            where=where,
            unit_amount=reader.non_negative(item.get("unit_amount"), f"{path}.unit_amount"),
            package_size=size,
            package_amount=reader.non_negative(item.get("amount"), f"{path}.amount"),
            tiers=tiers,
            first_flat_at_zero=flat_at_zero,
            matrix=tuple(matrix),
            matrix_default=reader.non_negative(item.get("default"), f"{path}.default"),
            rate=reader.non_negative(item.get("rate"), f"{path}.rate"),
            property=reader.text(item.get("property"), f"{path}.property"),
            fixed_fee=reader.non_negative(item.get("fixed_fee"), f"{path}.fixed_fee", Decimal(0))
            or Decimal(0),
            free_events=free_events,
            per_event_minimum=reader.non_negative(
                item.get("per_event_minimum"), f"{path}.per_event_minimum"
            ),
            per_event_maximum=reader.non_negative(
                item.get("per_event_maximum"), f"{path}.per_event_maximum"
            ),
            free_units=reader.non_negative(item.get("free_units"), f"{path}.free_units", Decimal(0))
            or Decimal(0),
            minimum=minimum,
            maximum=maximum,
            credit_type=credit_type,
            description=reader.text(item.get("description"), f"{path}.description"),
        )

    def tiers(self, value: Any, path: str) -> tuple[Tier, ...]:
        reader = self.reader
        tiers = []
        for index, raw in enumerate(reader.items(value, path)):
            where = f"{path}[{index}]"
            item = reader.mapping(raw, where, ("up_to", "unit_amount", "flat_amount"))
            up_to = reader.amount(item.get("up_to"), f"{where}.up_to")
            tiers.append(
                Tier(
                    up_to,
                    reader.amount(item.get("unit_amount"), f"{where}.unit_amount", Decimal(0))
                    or Decimal(0),
                    reader.amount(item.get("flat_amount"), f"{where}.flat_amount", Decimal(0))
                    or Decimal(0),
                )
            )
        if value is not None:
            for problem in tier_errors(tiers, path):
                field, _, reason = problem.partition(": ")
                reader.fail(field, reason)
        return tuple(tiers)

    def overrides(self, value: Any, path: str) -> Overrides:
        reader = self.reader
        if value is None:
            return Overrides()
        item = reader.mapping(value, path, ("prices", "fees", "discount_percent"))
        discount = reader.non_negative(item.get("discount_percent"), f"{path}.discount_percent")
        if discount is not None and discount > 100:
            reader.fail(f"{path}.discount_percent", "must be at most 100")
        return Overrides(
            prices=self.prices(item.get("prices"), f"{path}.prices"),
            fees=self.fees(item.get("fees"), f"{path}.fees"),
            discount_percent=discount,
        )

    def plan_reference(self, plan: str | None, version: int | None, path: str) -> None:
        if plan is None:
            return
        if plan not in self.plans:
            known = ", ".join(sorted(self.plans)) or "none declared"
            self.reader.fail(f"{path}.plan", f"unknown plan {plan!r} (plans: {known})")
        elif version is not None and f"{plan}@{version}" not in self.versions:
            self.reader.fail(f"{path}.version", f"plan {plan} has no version {version}")

    def cycle_of(self, plan: str | None, version: int | None) -> tuple[str, str] | None:
        candidates = [
            p
            for p in self.versions.values()
            if p.plan == plan and (version is None or p.version == version)
        ]
        cycles = {(p.billing.cycle, p.billing.anchor) for p in candidates}
        return next(iter(cycles)) if len(cycles) == 1 else None

    def contract(self, value: Any, path: str) -> Contract | None:
        reader = self.reader
        item = reader.mapping(
            value,
            path,
            (
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
            ),
            ("customer", "plan", "start"),
        )
        timezone = reader.text(item.get("timezone"), f"{path}.timezone", "UTC") or "UTC"
        try:
            local_midnight_us(timezone, date(2026, 1, 1))
        except (ValueError, KeyError):
            reader.fail(
                f"{path}.timezone",
                f"{timezone!r} is not a known time zone (e.g. UTC, America/New_York)",
            )
            timezone = "UTC"
        customer = reader.text(item.get("customer"), f"{path}.customer")
        plan = reader.text(item.get("plan"), f"{path}.plan")
        version = reader.integer(item.get("version"), f"{path}.version")
        self.plan_reference(plan, version, path)
        start = reader.instant(item.get("start"), f"{path}.start", timezone)
        end = reader.instant(item.get("end"), f"{path}.end", timezone)
        if start is not None and end is not None and end <= start:
            reader.fail(f"{path}.end", "must be after start")
        overrides = self.overrides(item.get("overrides"), f"{path}.overrides")
        amendments = []
        previous = start
        cycle = self.cycle_of(plan, version)
        for index, raw in enumerate(reader.items(item.get("amendments"), f"{path}.amendments")):
            where = f"{path}.amendments[{index}]"
            entry = reader.mapping(
                raw, where, ("effective", "plan", "version", "overrides"), ("effective",)
            )
            effective = reader.instant(entry.get("effective"), f"{where}.effective", timezone)
            new_plan = reader.text(entry.get("plan"), f"{where}.plan", plan)
            new_version = reader.integer(entry.get("version"), f"{where}.version")
            self.plan_reference(new_plan, new_version, where)
            if effective is not None and previous is not None and effective <= previous:
                reader.fail(
                    f"{where}.effective",
                    "must be after the contract start and the amendment before it",
                )
            new_cycle = self.cycle_of(new_plan, new_version)
            if cycle is not None and new_cycle is not None and new_cycle != cycle:
                reader.fail(
                    f"{where}.plan",
                    f"changes the billing cycle ({'/'.join(cycle)} to {'/'.join(new_cycle)});"
                    " end this contract and start another",
                )
            amendment_overrides = self.overrides(entry.get("overrides"), f"{where}.overrides")
            if effective is not None and new_plan is not None:
                amendments.append(Amendment(effective, new_plan, new_version, amendment_overrides))
                previous = effective
        credits = self.credit_terms(item.get("credits"), f"{path}.credits", timezone)
        controls = parse_controls(
            reader, item.get("controls"), f"{path}.controls", self.meters, self.credit_types
        )
        if customer is None or plan is None or start is None:
            return None
        return Contract(
            customer,
            plan,
            start,
            timezone,
            version,
            end,
            overrides,
            tuple(amendments),
            credits,
            controls,
        )

    def credit_terms(self, value: Any, path: str, timezone: str) -> CreditTerms:
        reader = self.reader
        if value is None:
            return CreditTerms()
        item = reader.mapping(value, path, _CREDIT_TERMS_KEYS)
        grants = []
        for index, raw in enumerate(reader.items(item.get("grants"), f"{path}.grants")):
            spec = self.credit_spec(raw, f"{path}.grants[{index}]", timezone, commit=False)
            if spec is not None:
                grants.append(spec)
        minimum = None
        for index, raw in enumerate(reader.items(item.get("commits"), f"{path}.commits")):
            where = f"{path}.commits[{index}]"
            kind = raw.get("kind") if isinstance(raw, Mapping) else None
            if kind == "minimum":
                entry = reader.mapping(raw, where, ("kind", "amount"), ("amount",))
                minimum = reader.non_negative(entry.get("amount"), f"{where}.amount")
                continue
            if kind != "prepaid":
                reader.fail(f"{where}.kind", f"{kind!r} is not one of prepaid, minimum")
                continue
            spec = self.credit_spec(raw, where, timezone, commit=True)
            if spec is not None:
                grants.append(spec)
        _unique(
            reader,
            _raw_keys(item.get("grants"), f"{path}.grants", "key")
            + _raw_keys(item.get("commits"), f"{path}.commits", "key"),
            "credit grant",
        )
        overage = reader.choice(item.get("overage"), f"{path}.overage", OVERAGE_MODES, "bill")
        prices = []
        raw_prices = item.get("overage_prices")
        if raw_prices is not None:
            if not isinstance(raw_prices, Mapping):
                reader.fail(f"{path}.overage_prices", "must be a mapping of credit type to price")
            else:
                for unit, raw_price in raw_prices.items():
                    where = f"{path}.overage_prices.{unit}"
                    if unit not in self.credit_types:
                        reader.fail(where, f"unknown credit type {unit!r}")
                    price = reader.non_negative(raw_price, where)
                    if price is not None:
                        prices.append((str(unit), price))
        threshold = reader.non_negative(item.get("threshold"), f"{path}.threshold")
        if threshold is not None and threshold == 0:
            reader.fail(f"{path}.threshold", "must be above zero")
        breakage, rate = self.breakage(item, path, "expiry")
        return CreditTerms(
            tuple(grants),
            overage,  # type: ignore[arg-type]
            tuple(prices),
            minimum,
            threshold,
            breakage or "expiry",
            rate or Decimal(0),
        )

    def breakage(
        self, item: Mapping[str, Any], path: str, default: str | None
    ) -> tuple[str | None, Decimal | None]:
        """A ``breakage`` mode and its ``breakage_rate`` (required for proportional)."""
        reader = self.reader
        raw = item.get("breakage")
        mode = (
            default if raw is None else reader.choice(raw, f"{path}.breakage", BREAKAGE_MODES, "")
        )
        rate = reader.non_negative(item.get("breakage_rate"), f"{path}.breakage_rate")
        if rate is not None and rate >= 1:
            reader.fail(f"{path}.breakage_rate", "must be below 1 (a share of the units)")
        if mode == "proportional" and rate is None:
            reader.fail(f"{path}.breakage_rate", "proportional breakage needs an expected rate")
        if rate is not None and mode not in ("proportional", None):
            reader.fail(f"{path}.breakage_rate", "only proportional breakage uses a rate")
        return mode, rate

    def credit_spec(self, value: Any, path: str, timezone: str, commit: bool) -> CreditSpec | None:
        reader = self.reader
        keys = _COMMIT_KEYS if commit else _GRANT_KEYS
        required = ("key", "amount") if commit else ("key", "credit_type", "amount")
        item = reader.mapping(value, path, keys, required)
        key = reader.text(item.get("key"), f"{path}.key")
        unit = "" if commit else reader.text(item.get("credit_type"), f"{path}.credit_type")
        if unit and unit not in self.credit_types and unit not in MINOR_UNITS:
            known = ", ".join(sorted(self.credit_types)) or "none declared"
            reader.fail(
                f"{path}.credit_type",
                f"unknown credit type {unit!r} (credit types: {known}; or a currency)",
            )
        amount = reader.non_negative(item.get("amount"), f"{path}.amount")
        paid = reader.non_negative(
            item.get("paid"), f"{path}.paid", amount if commit else Decimal(0)
        )
        priority = reader.integer(item.get("priority"), f"{path}.priority", 50)
        if priority is not None and not 0 <= priority <= 1000:
            reader.fail(f"{path}.priority", "must be between 0 and 1000 (lower burns first)")
        start = reader.instant(item.get("start"), f"{path}.start", timezone)
        end = reader.instant(item.get("end"), f"{path}.end", timezone)
        expires = reader.instant(item.get("expires"), f"{path}.expires", timezone)
        if start is not None and expires is not None and expires <= start:
            reader.fail(f"{path}.expires", "must be after start")
        if start is not None and end is not None and end <= start:
            reader.fail(f"{path}.end", "must be after start")
        recurrence = reader.choice(
            item.get("recurrence"), f"{path}.recurrence", CREDIT_RECURRENCES, "none"
        )
        scope = tuple(str(meter) for meter in reader.items(item.get("scope"), f"{path}.scope"))
        for index, meter in enumerate(scope):
            if meter not in self.meters:
                reader.fail(f"{path}.scope[{index}]", f"unknown meter {meter!r}")
        rollover = None
        periods: int | None = 1
        raw_rollover = item.get("rollover")
        if raw_rollover is not None:
            where = f"{path}.rollover"
            if recurrence != "period":
                reader.fail(where, "needs recurrence: period (rollover happens at a reset)")
            rule = reader.mapping(
                raw_rollover, where, ("percent", "minimum", "maximum", "expires_after_periods")
            )
            percent = reader.non_negative(rule.get("percent"), f"{where}.percent", Decimal(100))
            if percent is not None and percent > 100:
                reader.fail(f"{where}.percent", "must be at most 100")
            minimum = reader.non_negative(rule.get("minimum"), f"{where}.minimum", Decimal(0))
            maximum = reader.non_negative(rule.get("maximum"), f"{where}.maximum")
            if minimum is not None and maximum is not None and maximum < minimum:
                reader.fail(f"{where}.maximum", "must not be below minimum")
            if "expires_after_periods" in rule and rule["expires_after_periods"] is None:
                periods = None
            else:
                periods = reader.integer(
                    rule.get("expires_after_periods"), f"{where}.expires_after_periods", 1
                )
                if periods is not None and periods < 1:
                    reader.fail(f"{where}.expires_after_periods", "must be at least 1")
            rollover = RolloverRule(
                Decimal(100) if percent is None else percent, minimum or Decimal(0), maximum
            )
        description = reader.text(item.get("description"), f"{path}.description", "") or ""
        breakage, breakage_rate = self.breakage(item, path, None)
        if key is None or amount is None or unit is None:
            return None
        return CreditSpec(
            key=key,
            unit=unit,
            amount=amount,
            paid=paid if paid is not None else Decimal(0),
            priority=priority if priority is not None else 50,
            start_us=start,
            end_us=end,
            expires_us=expires,
            recurrence=recurrence,  # type: ignore[arg-type]
            rollover=rollover,
            rollover_periods=periods,
            scope=scope,
            commit=commit,
            description=description,
            breakage=breakage,
            breakage_rate=breakage_rate,
        )
