"""Credits in the pricing file: the top-level ``credit_types`` (currency, unit value and
its conversions over time) and a contract's ``credits`` (grants, prepaid and minimum
commits, overage, threshold, breakage), each grant or commit with its window,
recurrence, rollover rule and scope."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from meterline.config.fields import Declared, FieldReader, raw_keys, read_currency, unique
from meterline.core.credit_records import OVERAGE_MODES, RolloverRule
from meterline.core.model import CREDIT_RECURRENCES, CreditSpec, CreditTerms, CreditType
from meterline.core.money import MINOR_UNITS
from meterline.core.revrec import BREAKAGE_MODES
from meterline.core.thresholds import THRESHOLD_SCOPES, ThresholdLevels, threshold_level_errors

CREDIT_TYPE_KEYS = ("key", "name", "currency", "unit_value", "conversions")
CREDIT_TERMS_KEYS = (
    "breakage",
    "breakage_rate",
    "grants",
    "commits",
    "overage",
    "overage_prices",
    "threshold",
    "thresholds",
    "breakage_timing",
    "breakage_rate_changes",
)
GRANT_KEYS = (
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
    "breakage_rate_changes",
    "unit_cost",
)
COMMIT_KEYS = (*(k for k in GRANT_KEYS if k not in ("credit_type", "unit_cost")), "kind")
ROLLOVER_KEYS = ("percent", "minimum", "maximum", "expires_after_periods")


def read_credit_type(reader: FieldReader, value: Any, path: str) -> CreditType | None:
    """A credit type: its currency and unit value, then each later conversion."""
    item = reader.mapping(value, path, CREDIT_TYPE_KEYS, ("key", "currency", "unit_value"))
    key = reader.text(item.get("key"), f"{path}.key")
    currency = read_currency(reader, item.get("currency"), f"{path}.currency")
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


def read_credit_terms(declared: Declared, value: Any, path: str, timezone: str) -> CreditTerms:
    """A contract's ``credits`` (none when absent)."""
    reader = declared.reader
    if value is None:
        return CreditTerms()
    item = reader.mapping(value, path, CREDIT_TERMS_KEYS)
    grants = []
    for index, raw in enumerate(reader.items(item.get("grants"), f"{path}.grants")):
        spec = read_credit_spec(declared, raw, f"{path}.grants[{index}]", timezone, commit=False)
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
        spec = read_credit_spec(declared, raw, where, timezone, commit=True)
        if spec is not None:
            grants.append(spec)
    unique(
        reader,
        raw_keys(item.get("grants"), f"{path}.grants", "key")
        + raw_keys(item.get("commits"), f"{path}.commits", "key"),
        "credit grant",
    )
    overage = reader.choice(item.get("overage"), f"{path}.overage", OVERAGE_MODES, "bill")
    prices = _overage_prices(declared, item.get("overage_prices"), f"{path}.overage_prices")
    threshold = reader.non_negative(item.get("threshold"), f"{path}.threshold")
    if threshold is not None and threshold == 0:
        reader.fail(f"{path}.threshold", "must be above zero")
    levels = _threshold_levels(declared, item.get("thresholds"), f"{path}.thresholds")
    if levels is not None and threshold is not None:
        reader.fail(f"{path}.thresholds", "give threshold or thresholds, not both")
    breakage, rate = read_breakage(reader, item, path, "expiry")
    changes = read_rate_changes(reader, item, path, timezone)
    timing = reader.choice(
        item.get("breakage_timing"), f"{path}.breakage_timing", ("expiry", "lapse"), "expiry"
    )
    return CreditTerms(
        tuple(grants),
        overage,  # type: ignore[arg-type]
        prices,
        minimum,
        threshold,
        levels,
        breakage or "expiry",
        rate or Decimal(0),
        breakage_timing=timing,
        breakage_rate_changes=changes,
    )


def _threshold_levels(declared: Declared, value: Any, path: str) -> ThresholdLevels | None:
    """``thresholds``: ``levels`` of the period's cumulative usage, then every
    ``recurring``; of money, or of a ``meter``'s quantity."""
    if value is None:
        return None
    reader = declared.reader
    item = reader.mapping(value, path, ("levels", "recurring", "meter", "scope"))
    levels = tuple(
        level
        for index, raw in enumerate(reader.items(item.get("levels"), f"{path}.levels"))
        if (level := reader.amount(raw, f"{path}.levels[{index}]")) is not None
    )
    recurring = reader.amount(item.get("recurring"), f"{path}.recurring")
    meter = reader.text(item.get("meter"), f"{path}.meter")
    if meter is not None and meter not in declared.meters:
        reader.fail(f"{path}.meter", f"unknown meter {meter!r}")
    scope = reader.choice(item.get("scope"), f"{path}.scope", THRESHOLD_SCOPES, "period")
    found = ThresholdLevels(levels, recurring, meter, scope)  # type: ignore[arg-type]
    problems = threshold_level_errors(found, path)
    reader.fail_all(problems)
    return None if problems else found


def _overage_prices(declared: Declared, value: Any, path: str) -> tuple[tuple[str, Decimal], ...]:
    """``overage_prices``: a price per unit of each declared credit type."""
    reader = declared.reader
    prices: list[tuple[str, Decimal]] = []
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        reader.fail(path, "must be a mapping of credit type to price")
        return ()
    for unit, raw_price in value.items():
        where = f"{path}.{unit}"
        if unit not in declared.credit_types:
            reader.fail(where, f"unknown credit type {unit!r}")
        price = reader.non_negative(raw_price, where)
        if price is not None:
            prices.append((str(unit), price))
    return tuple(prices)


def read_breakage(
    reader: FieldReader, item: Mapping[str, Any], path: str, default: str | None
) -> tuple[str | None, Decimal | None]:
    """A ``breakage`` mode and its ``breakage_rate`` (required for proportional)."""
    raw = item.get("breakage")
    mode = default if raw is None else reader.choice(raw, f"{path}.breakage", BREAKAGE_MODES, "")
    rate = reader.non_negative(item.get("breakage_rate"), f"{path}.breakage_rate")
    if rate is not None and rate >= 1:
        reader.fail(f"{path}.breakage_rate", "must be below 1 (a share of the units)")
    if mode == "proportional" and rate is None:
        reader.fail(f"{path}.breakage_rate", "proportional breakage needs an expected rate")
    if rate is not None and mode not in ("proportional", None):
        reader.fail(f"{path}.breakage_rate", "only proportional breakage uses a rate")
    return mode, rate


def read_rate_changes(
    reader: FieldReader, item: Mapping[str, Any], path: str, timezone: str
) -> tuple[tuple[int, Decimal], ...]:
    """``breakage_rate_changes``: later estimates of the ``breakage_rate`` beside it, each
    ``{effective, rate}`` (a date is local midnight in ``timezone``), in date order."""
    where = f"{path}.breakage_rate_changes"
    raw = reader.items(item.get("breakage_rate_changes"), where)
    if raw and item.get("breakage_rate") is None:
        reader.fail(where, "changes a breakage_rate: give one beside it")
    changes: list[tuple[int, Decimal]] = []
    for index, value in enumerate(raw):
        at = f"{where}[{index}]"
        change = reader.mapping(value, at, ("effective", "rate"), ("effective", "rate"))
        effective = reader.instant(change.get("effective"), f"{at}.effective", timezone)
        rate = reader.non_negative(change.get("rate"), f"{at}.rate")
        if rate is not None and rate >= 1:
            reader.fail(f"{at}.rate", "must be below 1 (a share of the units)")
        if effective is None or rate is None:
            continue
        if changes and effective <= changes[-1][0]:
            reader.fail(f"{at}.effective", "must be after the change before it")
        changes.append((effective, rate))
    return tuple(changes)


def read_credit_spec(
    declared: Declared, value: Any, path: str, timezone: str, commit: bool
) -> CreditSpec | None:
    """A grant (of a credit type or a currency) or a prepaid commit (in the contract's
    currency, paid in full by default)."""
    reader = declared.reader
    keys = COMMIT_KEYS if commit else GRANT_KEYS
    required = ("key", "amount") if commit else ("key", "credit_type", "amount")
    item = reader.mapping(value, path, keys, required)
    key = reader.text(item.get("key"), f"{path}.key")
    unit = "" if commit else _grant_unit(declared, item.get("credit_type"), f"{path}.credit_type")
    amount = reader.non_negative(item.get("amount"), f"{path}.amount")
    paid = reader.non_negative(item.get("paid"), f"{path}.paid", amount if commit else Decimal(0))
    unit_cost = reader.non_negative(item.get("unit_cost"), f"{path}.unit_cost")
    if unit_cost is not None and item.get("paid") is not None:
        reader.fail(f"{path}.unit_cost", "give paid or unit_cost, not both")
    priority = reader.integer(item.get("priority"), f"{path}.priority", 50)
    if priority is not None and not 0 <= priority <= 1000:
        reader.fail(f"{path}.priority", "must be between 0 and 1000 (lower burns first)")
    start, end, expires = _window(reader, item, path, timezone)
    recurrence = reader.choice(
        item.get("recurrence"), f"{path}.recurrence", CREDIT_RECURRENCES, "none"
    )
    scope = tuple(str(meter) for meter in reader.items(item.get("scope"), f"{path}.scope"))
    for index, meter in enumerate(scope):
        if meter not in declared.meters:
            reader.fail(f"{path}.scope[{index}]", f"unknown meter {meter!r}")
    rollover, periods = _rollover(reader, item.get("rollover"), f"{path}.rollover", recurrence)
    description = reader.text(item.get("description"), f"{path}.description", "") or ""
    breakage, breakage_rate = read_breakage(reader, item, path, None)
    changes = read_rate_changes(reader, item, path, timezone)
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
        breakage_rate_changes=changes,
        unit_cost=unit_cost,
    )


def _grant_unit(declared: Declared, value: Any, path: str) -> str | None:
    """A grant's ``credit_type``: a declared credit type or a currency."""
    unit = declared.reader.text(value, path)
    if unit and unit not in declared.credit_types and unit not in MINOR_UNITS:
        known = ", ".join(sorted(declared.credit_types)) or "none declared"
        declared.reader.fail(
            path, f"unknown credit type {unit!r} (credit types: {known}; or a currency)"
        )
    return unit


def _window(
    reader: FieldReader, item: Mapping[str, Any], path: str, timezone: str
) -> tuple[int | None, int | None, int | None]:
    """A grant's start, end and expiry instants; end and expiry after the start."""
    start = reader.instant(item.get("start"), f"{path}.start", timezone)
    end = reader.instant(item.get("end"), f"{path}.end", timezone)
    expires = reader.instant(item.get("expires"), f"{path}.expires", timezone)
    if start is not None and expires is not None and expires <= start:
        reader.fail(f"{path}.expires", "must be after start")
    if start is not None and end is not None and end <= start:
        reader.fail(f"{path}.end", "must be after start")
    return start, end, expires


def _rollover(
    reader: FieldReader, value: Any, path: str, recurrence: str
) -> tuple[RolloverRule | None, int | None]:
    """A grant's ``rollover`` rule and for how many periods rolled units live (one by
    default; None: until used)."""
    if value is None:
        return None, 1
    if recurrence != "period":
        reader.fail(path, "needs recurrence: period (rollover happens at a reset)")
    rule = reader.mapping(value, path, ROLLOVER_KEYS)
    percent = reader.non_negative(rule.get("percent"), f"{path}.percent", Decimal(100))
    if percent is not None and percent > 100:
        reader.fail(f"{path}.percent", "must be at most 100")
    minimum = reader.non_negative(rule.get("minimum"), f"{path}.minimum", Decimal(0))
    maximum = reader.non_negative(rule.get("maximum"), f"{path}.maximum")
    if minimum is not None and maximum is not None and maximum < minimum:
        reader.fail(f"{path}.maximum", "must not be below minimum")
    periods: int | None = None
    if "expires_after_periods" not in rule or rule["expires_after_periods"] is not None:
        periods = reader.integer(
            rule.get("expires_after_periods"), f"{path}.expires_after_periods", 1
        )
        if periods is not None and periods < 1:
            reader.fail(f"{path}.expires_after_periods", "must be at least 1")
    rule_read = RolloverRule(
        Decimal(100) if percent is None else percent, minimum or Decimal(0), maximum
    )
    return rule_read, periods
