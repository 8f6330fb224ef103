"""What a plan version charges, as the pricing file writes it: ``prices`` (each model's
fields, tiers, matrix cells, bounds and credit type), ``fees``, and a contract's
``overrides`` of both (with its discount)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from meterline.config.fields import Declared, FieldReader, raw_keys, unique
from meterline.core.allocation import RECOGNITIONS, Obligation
from meterline.core.meters import Meter
from meterline.core.model import FEE_KINDS, FEE_TIMINGS, PRICE_MODELS, Fee, Overrides, Price
from meterline.core.pricing import Tier, tier_errors

PRICE_KEYS = (
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
NEEDS: dict[str, tuple[str, ...]] = {
    "per_unit": ("unit_amount",),
    "package": ("size", "amount"),
    "graduated": ("tiers",),
    "volume": ("tiers",),
    "matrix": ("matrix",),
    "percentage": ("rate",),
}
"""The fields each price model requires."""
FEE_KEYS = ("key", "name", "amount", "kind", "timing", "obligations")


def read_prices(declared: Declared, value: Any, path: str) -> tuple[Price, ...]:
    """The ``prices`` list; a second price for one meter and the same groups is an error."""
    prices = []
    for index, raw in enumerate(declared.reader.items(value, path)):
        price = read_price(declared, raw, f"{path}[{index}]")
        if price is not None:
            prices.append(price)
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for index, price in enumerate(prices):
        if (price.meter, price.where) in seen:
            declared.reader.fail(
                f"{path}[{index}]",
                f"meter {price.meter} already has a price for the same groups",
            )
        seen.add((price.meter, price.where))
    return tuple(prices)


def read_price(declared: Declared, value: Any, path: str) -> Price | None:
    """One price: its meter (declared), model and the fields the model needs."""
    reader = declared.reader
    item = reader.mapping(value, path, PRICE_KEYS, ("meter", "model"))
    meter_key = reader.text(item.get("meter"), f"{path}.meter")
    meter = declared.meters.get(meter_key or "")
    if meter_key is not None and meter is None:
        known = ", ".join(sorted(declared.meters)) or "none declared"
        reader.fail(f"{path}.meter", f"unknown meter {meter_key!r} (meters: {known})")
    model = reader.choice(item.get("model"), f"{path}.model", PRICE_MODELS, "per_unit")
    for needed in NEEDS.get(str(item.get("model")), ()):
        if item.get(needed) is None:
            reader.fail(f"{path}.{needed}", f"is required for a {model} price")
    where_raw = reader.mapping(
        item.get("where") or {},
        f"{path}.where",
        tuple(meter.group_by) if meter else tuple(item.get("where") or {}),
    )
    where = tuple(sorted((str(k), str(v)) for k, v in where_raw.items()))
    tiers = (
        read_tiers(reader, item.get("tiers"), f"{path}.tiers")
        if model in ("graduated", "volume")
        else ()
    )
    matrix = (
        _matrix(reader, item.get("matrix"), f"{path}.matrix", meter) if model == "matrix" else ()
    )
    bounds = _bounds(declared, item, path, model)
    if meter_key is None:
        return None
    return Price(
        meter=meter_key,
        model=model,  # type: ignore[arg-type]
        where=where,
        tiers=tiers,
        matrix=matrix,
        **bounds,
        **_amounts(reader, item, path),
    )


def _matrix(
    reader: FieldReader, value: Any, path: str, meter: Meter | None
) -> tuple[tuple[tuple[str, ...], Decimal], ...]:
    """A matrix price's cells: each names a value for every group-by dimension."""
    if meter is not None and not meter.group_by:
        reader.fail(path, f"meter {meter.key} has no group_by dimensions to price by")
    matrix: list[tuple[tuple[str, ...], Decimal]] = []
    for index, raw in enumerate(reader.items(value, path)):
        where_cell = f"{path}[{index}]"
        cell = reader.mapping(raw, where_cell, ("values", "unit_amount"), ("values", "unit_amount"))
        values = reader.mapping(
            cell.get("values") or {},
            f"{where_cell}.values",
            tuple(meter.group_by) if meter else (),
        )
        amount = reader.non_negative(cell.get("unit_amount"), f"{where_cell}.unit_amount")
        if meter is not None and set(values) != set(meter.group_by):
            reader.fail(
                f"{where_cell}.values",
                f"must name every dimension of meter {meter.key}: " + ", ".join(meter.group_by),
            )
        elif meter is not None and amount is not None:
            matrix.append((tuple(str(values[d]) for d in meter.group_by), amount))
    return tuple(matrix)


def _bounds(declared: Declared, item: dict[str, Any], path: str, model: str) -> dict[str, Any]:
    """A price's credit type, minimum and maximum, package size, free events and whether
    a first tier's flat amount applies at zero, as ``Price`` fields."""
    reader = declared.reader
    credit_type = reader.text(item.get("credit_type"), f"{path}.credit_type")
    if credit_type is not None and credit_type not in declared.credit_types:
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
    return {
        "credit_type": credit_type,
        "minimum": minimum,
        "maximum": maximum,
        "package_size": size,
        "free_events": free_events,
        "first_flat_at_zero": flat_at_zero,
    }


def _amounts(reader: FieldReader, item: dict[str, Any], path: str) -> dict[str, Any]:
    """A price's amounts and texts, as ``Price`` fields (read once its meter is known). A
    ``per_event_minimum`` above the ``per_event_maximum`` is refused: no fee could lie
    within both (Lago refuses the same, ``per_transaction_max_lower_than_per_transaction_min``)."""
    minimum = reader.non_negative(item.get("per_event_minimum"), f"{path}.per_event_minimum")
    maximum = reader.non_negative(item.get("per_event_maximum"), f"{path}.per_event_maximum")
    if minimum is not None and maximum is not None and minimum > maximum:
        reader.fail(f"{path}.per_event_minimum", "must not exceed per_event_maximum")
    return {
        "unit_amount": reader.non_negative(item.get("unit_amount"), f"{path}.unit_amount"),
        "package_amount": reader.non_negative(item.get("amount"), f"{path}.amount"),
        "matrix_default": reader.non_negative(item.get("default"), f"{path}.default"),
        "rate": reader.non_negative(item.get("rate"), f"{path}.rate"),
        "property": reader.text(item.get("property"), f"{path}.property"),
        "fixed_fee": reader.non_negative(item.get("fixed_fee"), f"{path}.fixed_fee", Decimal(0))
        or Decimal(0),
        "per_event_minimum": minimum,
        "per_event_maximum": maximum,
        "free_units": reader.non_negative(item.get("free_units"), f"{path}.free_units", Decimal(0))
        or Decimal(0),
        "description": reader.text(item.get("description"), f"{path}.description"),
    }


def read_tiers(reader: FieldReader, value: Any, path: str) -> tuple[Tier, ...]:
    """A graduated or volume price's tiers, checked by ``tier_errors``."""
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
        reader.fail_all(tier_errors(tiers, path))
    return tuple(tiers)


def read_fees(reader: FieldReader, value: Any, path: str) -> tuple[Fee, ...]:
    """The ``fees`` list (recurring in advance by default); each key once."""
    fees = []
    for index, raw in enumerate(reader.items(value, path)):
        where = f"{path}[{index}]"
        item = reader.mapping(raw, where, FEE_KEYS, ("key", "amount"))
        key = reader.text(item.get("key"), f"{where}.key")
        amount = reader.amount(item.get("amount"), f"{where}.amount")
        kind = reader.choice(item.get("kind"), f"{where}.kind", FEE_KINDS, "recurring")
        timing = reader.choice(item.get("timing"), f"{where}.timing", FEE_TIMINGS, "advance")
        obligations = _obligations(reader, item.get("obligations"), f"{where}.obligations")
        if key is None or amount is None:
            continue
        fees.append(
            Fee(
                key,
                reader.text(item.get("name"), f"{where}.name", key) or key,
                amount,
                kind,  # type: ignore[arg-type]
                timing,  # type: ignore[arg-type]
                obligations,
            )
        )
    unique(reader, raw_keys(value, path, "key"), "fee")
    return tuple(fees)


def _obligations(reader: FieldReader, value: Any, path: str) -> tuple[Obligation, ...]:
    """A fee's ``obligations``: each ``name``, ``standalone_price`` and ``recognition``
    (``ratable`` or ``point``); names once; standalone prices not all zero."""
    found = []
    for index, raw in enumerate(reader.items(value, path)):
        where = f"{path}[{index}]"
        item = reader.mapping(
            raw, where, ("name", "standalone_price", "recognition"), ("name", "standalone_price")
        )
        name = reader.text(item.get("name"), f"{where}.name")
        price = reader.non_negative(item.get("standalone_price"), f"{where}.standalone_price")
        recognition = reader.choice(
            item.get("recognition"), f"{where}.recognition", RECOGNITIONS, "ratable"
        )
        if name is not None and price is not None:
            found.append(Obligation(name, price, recognition))  # type: ignore[arg-type]
    if found and not any(obligation.standalone_price for obligation in found):
        reader.fail(path, "standalone prices must not all be 0")
    unique(reader, raw_keys(value, path, "name"), "obligation")
    return tuple(found)


def read_overrides(declared: Declared, value: Any, path: str) -> Overrides:
    """A contract's (or an amendment's) ``overrides``: prices, fees, a discount percent."""
    reader = declared.reader
    if value is None:
        return Overrides()
    item = reader.mapping(value, path, ("prices", "fees", "discount_percent"))
    discount = reader.non_negative(item.get("discount_percent"), f"{path}.discount_percent")
    if discount is not None and discount > 100:
        reader.fail(f"{path}.discount_percent", "must be at most 100")
    return Overrides(
        prices=read_prices(declared, item.get("prices"), f"{path}.prices"),
        fees=read_fees(reader, item.get("fees"), f"{path}.fees"),
        discount_percent=discount,
    )
