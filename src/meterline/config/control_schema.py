"""The pricing file's ``controls`` (on plans and contracts) and ``costs`` (top level).

```yaml
costs:
  - {meter: input_tokens, where: {model: gpt-4o}, per_unit: "0.0000025"}
  - {meter: provider_cost, per_unit: 1}      # a cost carried on each event
contracts:
  - customer: acme
    controls:
      - {key: rogue-agent, policy: usage_spike, meter: input_tokens, window: 5m,
         baseline: 1h, factor: 11, minimum: 200000, actions: [block, alert]}
      - {key: pool-empty, policy: balance_exhausted, unit: credits,
         actions: [block, true_up]}
      - {key: budget, policy: spend_threshold, amount: 5000, percents: [50, 80, 100],
         actions: [alert]}
      - {key: cogs-guard, policy: cost_exceeds_prepayment, margin_percent: 10,
         actions: [alert]}
      - {key: margin-floor, policy: margin_floor, margin_percent: 20, minimum: 50,
         actions: [alert]}
      - {key: refill, policy: balance_exhausted, unit: credits, remaining_at_most: 1000,
         actions: [top_up], top_up: {credit_type: credits, amount: 10000, paid: 90}}
      - {key: dunning, policy: invoice_overdue, days: 30, net_days: 30,
         actions: [block, alert]}
```

Every mistake is reported by path, like the rest of the file (``config.schema``); each
policy kind has its reader (``KIND_READERS``) for the fields only it takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from meterline.config.fields import FieldReader
from meterline.core.control_policies import (
    ACTION_KINDS,
    NET_DAYS_DEFAULT,
    POLICY_KINDS,
    RELEASES,
    SPIKE_BUCKET_US,
    SPIKE_HISTORY_MAX_US,
    SPIKE_WINDOW_MIN_US,
    ActionKind,
    ControlPolicy,
    TopUpRule,
)
from meterline.core.meters import Meter
from meterline.core.model import CostRate
from meterline.core.money import MINOR_UNITS

_CONTROL_KEYS = (
    "key",
    "policy",
    "actions",
    "unit",
    "remaining_at_most",
    "margin_percent",
    "amount",
    "percents",
    "meter",
    "window",
    "baseline",
    "factor",
    "minimum",
    "features",
    "top_up",
    "release",
    "days",
    "net_days",
)
_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "balance_exhausted": ("unit", "remaining_at_most"),
    "cost_exceeds_prepayment": ("margin_percent",),
    "margin_floor": ("margin_percent", "minimum"),
    "spend_threshold": ("amount", "percents"),
    "usage_spike": ("meter", "window", "baseline", "factor", "minimum"),
    "invoice_overdue": ("days", "net_days"),
}
_OVERDUE_ACTIONS = ("block", "alert")
"""What an ``invoice_overdue`` control may do (a true-up or top-up answers no debt)."""
OVERDUE_DAYS_LIMIT = 3650
"""The most days (past due, or net) an ``invoice_overdue`` control may count."""
_COMMON_KEYS = ("key", "policy", "actions", "features", "top_up", "release")
_COST_KEYS = ("meter", "per_unit", "currency", "where", "effective_from")
Item = dict[str, Any]
"""A control as read: its keys checked."""
Fields = dict[str, Any]
"""The ``ControlPolicy`` fields one policy kind takes."""
Meters = Mapping[str, Meter]
_DURATION = re.compile(r"^(\d+)(s|m|h)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def _duration(reader: FieldReader, value: Any, path: str, default_us: int) -> int:
    """``30s``, ``5m``, ``1h`` or whole seconds, as microseconds."""
    if value is None:
        return default_us
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = _DURATION.match(str(value)) if isinstance(value, str) else None
        if match is None:
            reader.fail(path, f"{value!r} is not a duration (e.g. 30s, 5m, 1h)")
            return default_us
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds * 1_000_000 % SPIKE_BUCKET_US or seconds * 1_000_000 < SPIKE_WINDOW_MIN_US:
        reader.fail(path, f"must be at least {SPIKE_WINDOW_MIN_US // 1_000_000}s")
        return default_us
    return seconds * 1_000_000


def parse_controls(
    reader: FieldReader,
    value: Any,
    path: str,
    meters: Mapping[str, Meter],
    units: set[str],
) -> tuple[ControlPolicy, ...]:
    """The list at ``path``; ``units`` are the declared credit types (currencies are known)."""
    controls = []
    for index, raw in enumerate(reader.items(value, path)):
        policy = _control(reader, raw, f"{path}[{index}]", meters, units)
        if policy is not None:
            controls.append(policy)
    seen: dict[str, int] = {}
    for index, policy in enumerate(controls):
        if policy.key in seen:
            reader.fail(f"{path}[{index}].key", f"control {policy.key!r} is declared twice")
        seen[policy.key] = index
    return tuple(controls)


def _control(
    reader: FieldReader, raw: Any, path: str, meters: Mapping[str, Meter], units: set[str]
) -> ControlPolicy | None:
    kind = raw.get("policy") if isinstance(raw, Mapping) else None
    if kind not in POLICY_KINDS:
        if isinstance(raw, Mapping):
            reader.fail(f"{path}.policy", f"{kind!r} is not one of {', '.join(POLICY_KINDS)}")
        else:
            reader.mapping(raw, path, _CONTROL_KEYS)
        return None
    allowed = (*_COMMON_KEYS, *_KIND_KEYS[kind])
    required: tuple[str, ...] = ("key", "policy", "actions")
    if kind == "spend_threshold":
        required += ("amount",)
    elif kind == "invoice_overdue":
        required += ("days",)
    item = reader.mapping(raw, path, allowed, required)
    key = reader.text(item.get("key"), f"{path}.key")
    actions = _actions(reader, item, path)
    features = tuple(str(f) for f in reader.items(item.get("features"), f"{path}.features"))
    if features and "block" not in actions:
        reader.fail(f"{path}.features", "only a block action takes features")
    release = reader.choice(item.get("release"), f"{path}.release", RELEASES, "clear")
    top_up = _top_up(reader, item.get("top_up"), f"{path}.top_up", units)
    if ("top_up" in actions) != (top_up is not None):
        reader.fail(f"{path}.top_up", "a top_up action needs a top_up rule, and only it")
    if kind == "invoice_overdue" and any(a not in _OVERDUE_ACTIONS for a in actions):
        reader.fail(f"{path}.actions", "an invoice_overdue control may only block and alert")
    fields = KIND_READERS[kind](reader, item, path, meters, units)
    optional = ("unit", "meter")  # None: the contract's currency; every event
    if key is None or not actions or any(v is None for n, v in fields.items() if n not in optional):
        return None
    return ControlPolicy(
        key=key,
        kind=kind,
        actions=tuple(actions),
        features=features,
        top_up=top_up,
        release=release,  # type: ignore[arg-type]
        **fields,
    )


def _actions(reader: FieldReader, item: Item, path: str) -> list[ActionKind]:
    """A control's ``actions``: at least one, each a known kind, each once."""
    actions: list[ActionKind] = []
    raw_actions = reader.items(item.get("actions"), f"{path}.actions")
    for number, action in enumerate(raw_actions):
        if action not in ACTION_KINDS:
            reader.fail(
                f"{path}.actions[{number}]", f"{action!r} is not one of {', '.join(ACTION_KINDS)}"
            )
        elif action in actions:
            reader.fail(f"{path}.actions[{number}]", f"{action!r} is listed twice")
        else:
            actions.append(action)
    if "actions" in item and not raw_actions:
        reader.fail(f"{path}.actions", "needs at least one action")
    return actions


def _balance_exhausted(
    reader: FieldReader, item: Item, path: str, meters: Meters, units: set[str]
) -> Fields:
    unit = reader.text(item.get("unit"), f"{path}.unit")
    if unit is not None and unit not in units and unit not in MINOR_UNITS:
        reader.fail(f"{path}.unit", f"unknown credit type or currency {unit!r}")
    remaining = reader.non_negative(
        item.get("remaining_at_most"), f"{path}.remaining_at_most", Decimal(0)
    )
    return {"unit": unit, "remaining_at_most": remaining}


def _cost_exceeds_prepayment(
    reader: FieldReader, item: Item, path: str, meters: Meters, units: set[str]
) -> Fields:
    margin = reader.non_negative(item.get("margin_percent"), f"{path}.margin_percent", Decimal(0))
    return {"margin_percent": margin}


def _margin_floor(
    reader: FieldReader, item: Item, path: str, meters: Meters, units: set[str]
) -> Fields:
    floor = reader.non_negative(item.get("margin_percent"), f"{path}.margin_percent")
    if "margin_percent" not in item:
        reader.fail(f"{path}.margin_percent", "a margin floor needs its percent")
    elif floor is not None and floor > 100:
        reader.fail(f"{path}.margin_percent", "must be at most 100")
    minimum = reader.non_negative(item.get("minimum"), f"{path}.minimum", Decimal(0))
    return {"margin_percent": floor, "minimum": minimum}


def _spend_threshold(
    reader: FieldReader, item: Item, path: str, meters: Meters, units: set[str]
) -> Fields:
    amount = reader.non_negative(item.get("amount"), f"{path}.amount")
    if amount is not None and amount == 0:
        reader.fail(f"{path}.amount", "must be above zero")
    percents = []
    for number, raw_percent in enumerate(
        reader.items(item.get("percents", [100]), f"{path}.percents")
    ):
        percent = reader.non_negative(raw_percent, f"{path}.percents[{number}]")
        if percent is not None and percent == 0:
            reader.fail(f"{path}.percents[{number}]", "must be above zero")
        elif percent is not None:
            percents.append(percent)
    if percents != sorted(set(percents)):
        reader.fail(f"{path}.percents", "must rise, each once (e.g. [50, 80, 100])")
    return {"amount": amount, "percents": tuple(percents) or (Decimal(100),)}


def _usage_spike(
    reader: FieldReader, item: Item, path: str, meters: Meters, units: set[str]
) -> Fields:
    meter = reader.text(item.get("meter"), f"{path}.meter")
    if meter is not None and meter not in meters:
        reader.fail(f"{path}.meter", f"unknown meter {meter!r}")
    window = _duration(reader, item.get("window"), f"{path}.window", 5 * 60_000_000)
    baseline = _duration(reader, item.get("baseline"), f"{path}.baseline", 3600_000_000)
    if window + baseline > SPIKE_HISTORY_MAX_US:
        reader.fail(f"{path}.baseline", "window + baseline must be at most 24h")
    factor = reader.non_negative(item.get("factor"), f"{path}.factor", Decimal(11))
    if factor is not None and factor <= 1:
        reader.fail(f"{path}.factor", "must be above 1 (11 is +1000%)")
    return {
        "meter": meter,
        "window_us": window,
        "baseline_us": baseline,
        "factor": factor,
        "minimum": reader.non_negative(item.get("minimum"), f"{path}.minimum", Decimal(0)),
    }


def _invoice_overdue(
    reader: FieldReader, item: Item, path: str, meters: Meters, units: set[str]
) -> Fields:
    fields = {}
    for name, default in (("days", None), ("net_days", NET_DAYS_DEFAULT)):
        days = reader.integer(item.get(name), f"{path}.{name}", default)
        if days is not None and not 0 <= days <= OVERDUE_DAYS_LIMIT:
            reader.fail(f"{path}.{name}", f"must be from 0 to {OVERDUE_DAYS_LIMIT} days")
            days = None
        fields[name] = days
    return fields


KindReader = Callable[[FieldReader, Item, str, Meters, set[str]], Fields]
KIND_READERS: dict[str, KindReader] = {
    "balance_exhausted": _balance_exhausted,
    "cost_exceeds_prepayment": _cost_exceeds_prepayment,
    "margin_floor": _margin_floor,
    "spend_threshold": _spend_threshold,
    "usage_spike": _usage_spike,
    "invoice_overdue": _invoice_overdue,
}
"""Each policy kind's reader: the ``ControlPolicy`` fields only that kind takes (its
item, its path, the declared meters and credit types)."""


_TOP_UP_KEYS = (
    "credit_type",
    "amount",
    "paid",
    "expires_after_days",
    "target_balance",
    "minimum",
    "maximum",
    "unit_cost",
)


def _top_up(reader: FieldReader, value: Any, path: str, units: set[str]) -> TopUpRule | None:
    if value is None:
        return None
    item = reader.mapping(value, path, _TOP_UP_KEYS, ("credit_type",))
    unit = reader.text(item.get("credit_type"), f"{path}.credit_type")
    if unit is not None and unit not in units and unit not in MINOR_UNITS:
        reader.fail(f"{path}.credit_type", f"unknown credit type or currency {unit!r}")
    target = reader.non_negative(item.get("target_balance"), f"{path}.target_balance")
    amount = reader.non_negative(item.get("amount"), f"{path}.amount", target)
    if target is None and (amount is None or amount == 0):
        reader.fail(f"{path}.amount", "is required and must be above zero")
    if target is not None and item.get("amount") is not None:
        reader.fail(f"{path}.amount", "a top-up to a target_balance grants what it needs")
    paid = reader.non_negative(item.get("paid"), f"{path}.paid", Decimal(0))
    unit_cost = reader.non_negative(item.get("unit_cost"), f"{path}.unit_cost")
    if unit_cost is not None and item.get("paid") is not None:
        reader.fail(f"{path}.unit_cost", "give paid or unit_cost, not both")
    minimum = reader.non_negative(item.get("minimum"), f"{path}.minimum", Decimal(0))
    maximum = reader.non_negative(item.get("maximum"), f"{path}.maximum")
    if maximum is not None and minimum is not None and maximum < minimum:
        reader.fail(f"{path}.maximum", "must not be below minimum")
    days = reader.integer(item.get("expires_after_days"), f"{path}.expires_after_days")
    if days is not None and days < 1:
        reader.fail(f"{path}.expires_after_days", "must be at least 1")
    if unit is None or amount is None or paid is None or minimum is None:
        return None
    return TopUpRule(unit, amount, paid, days, target, minimum, maximum, unit_cost)


def parse_costs(
    reader: FieldReader, value: Any, path: str, meters: Mapping[str, Meter]
) -> tuple[CostRate, ...]:
    """The top-level ``costs`` list."""
    rates = []
    for index, raw in enumerate(reader.items(value, path)):
        where_path = f"{path}[{index}]"
        item = reader.mapping(raw, where_path, _COST_KEYS, ("meter", "per_unit"))
        meter_key = reader.text(item.get("meter"), f"{where_path}.meter")
        meter = meters.get(meter_key or "")
        if meter_key is not None and meter is None:
            reader.fail(f"{where_path}.meter", f"unknown meter {meter_key!r}")
        per_unit = reader.non_negative(item.get("per_unit"), f"{where_path}.per_unit")
        currency = reader.text(item.get("currency"), f"{where_path}.currency", "USD") or "USD"
        if currency not in MINOR_UNITS:
            reader.fail(f"{where_path}.currency", f"unknown currency {currency!r}")
        where: list[tuple[str, str]] = []
        raw_where = item.get("where")
        if raw_where is not None:
            if not isinstance(raw_where, Mapping):
                reader.fail(f"{where_path}.where", "must be a mapping of dimension to value")
            else:
                for name, dimension_value in raw_where.items():
                    if meter is not None and name not in meter.group_by:
                        reader.fail(
                            f"{where_path}.where.{name}",
                            f"meter {meter.key!r} is not grouped by {name!r}",
                        )
                    where.append((str(name), str(dimension_value)))
        effective = reader.instant(
            item.get("effective_from"), f"{where_path}.effective_from", "UTC"
        )
        if meter_key is None or per_unit is None:
            continue
        rates.append(CostRate(meter_key, per_unit, currency, tuple(sorted(where)), effective or 0))
    return tuple(rates)
