"""The pricing file's ``otel:`` block: how OTLP spans become usage events
(``core.otel_spans``; docs/api.md, "OTLP traces").

Every key is optional; an absent key keeps the GenAI semantic conventions' default.
``customer`` and ``match`` are lists of attribute names; ``properties`` maps each property
name to an attribute name or a list of them (the first present wins) and, when given,
replaces the default properties whole. Problems are reported by path like the rest of the
schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterline.config.fields import FieldReader, kind_of
from meterline.core.otel_spans import DEFAULT_MAPPING, OtelMapping

KEYS = ("event_type", "customer", "match", "properties")


def _names(reader: FieldReader, value: Any, path: str) -> tuple[str, ...] | None:
    """A list of attribute names (one name alone is a list of one)."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else reader.items(value, path)
    names = []
    for index, item in enumerate(items):
        where = path if isinstance(value, str) else f"{path}[{index}]"
        if not isinstance(item, str) or not item.strip():
            reader.fail(where, f"must be an attribute name (text), not {kind_of(item)}")
            return None
        names.append(item)
    if not names:
        reader.fail(path, "must name at least one attribute")
    return tuple(names)


def _properties(
    reader: FieldReader, value: Any, path: str
) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        reader.fail(path, f"must be a mapping of property to attribute(s), not {kind_of(value)}")
        return None
    read = []
    for name, sources in value.items():
        names = _names(reader, sources, f"{path}.{name}")
        if names:
            read.append((str(name), names))
    return tuple(read)


def parse_otel(reader: FieldReader, value: Any, path: str = "otel") -> OtelMapping:
    """The block at ``path`` (absent: ``core.otel_spans.DEFAULT_MAPPING``)."""
    if value is None:
        return DEFAULT_MAPPING
    item = reader.mapping(value, path, KEYS)
    event_type = reader.text(item.get("event_type"), f"{path}.event_type")
    customer = _names(reader, item.get("customer"), f"{path}.customer")
    match = _names(reader, item.get("match"), f"{path}.match")
    properties = _properties(reader, item.get("properties"), f"{path}.properties")
    return OtelMapping(
        event_type=event_type or DEFAULT_MAPPING.event_type,
        customer=customer or DEFAULT_MAPPING.customer,
        match=match or DEFAULT_MAPPING.match,
        properties=DEFAULT_MAPPING.properties if properties is None else properties,
    )
