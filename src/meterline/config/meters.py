"""The pricing file's ``meters``: each one read into a ``core.meters.Meter`` (its event
type, aggregation, property filters and group-by dimensions), with ``meter_errors``
reported at their paths."""

from __future__ import annotations

from typing import Any

from meterline.config.fields import FieldReader
from meterline.core.meters import (
    AGGREGATIONS,
    NEGATIVE_RULES,
    Meter,
    PropertyFilter,
    meter_errors,
)

METER_KEYS = (
    "key",
    "event_type",
    "aggregation",
    "property",
    "filters",
    "group_by",
    "description",
    "product",
    "negative",
)


def read_meter(reader: FieldReader, value: Any, path: str) -> Meter | None:
    """The meter at ``path``."""
    item = reader.mapping(value, path, METER_KEYS, ("key", "event_type", "aggregation"))
    filters = _filters(reader, item.get("filters"), f"{path}.filters")
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
        filters=filters,
        group_by=tuple(g for g in group_by if g),
        product=reader.text(item.get("product"), f"{path}.product", "") or "",
        negative=reader.choice(  # type: ignore[arg-type]
            item.get("negative"), f"{path}.negative", NEGATIVE_RULES, "reject"
        ),
    )
    reader.fail_all(meter_errors(meter, path))
    return meter


def _filters(reader: FieldReader, value: Any, path: str) -> tuple[PropertyFilter, ...]:
    """A meter's ``filters``: each names a property and exactly one of equals, in, exists."""
    filters = []
    for index, raw in enumerate(reader.items(value, path)):
        where = f"{path}[{index}]"
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
    return tuple(filters)
