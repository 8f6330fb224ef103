"""The pricing file's ``otel:`` block: how OTLP spans become usage events
(``core.otel_spans``; docs/api.md, "OTLP traces").

Every key is optional; an absent key keeps the GenAI semantic conventions' default.
``customer`` and ``match`` are lists of attribute names; ``properties`` maps each property
name to an attribute name or a list of them (the first present wins) and, when given,
replaces the default properties whole. ``event_type`` is every span's type, or, with
``event_type_attribute``, the fallback: the type is then read from that attribute, through
``event_types`` (attribute value to event type) when it is given. Each event type is held
to the rules ingest applies to an event's ``type`` (``core.events.event_type_error``).
Problems are reported by path like the rest of the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterline.config.fields import FieldReader, kind_of
from meterline.core.events import event_type_error
from meterline.core.otel_spans import DEFAULT_MAPPING, OtelMapping

KEYS = ("event_type", "event_type_attribute", "event_types", "customer", "match", "properties")


def _name(reader: FieldReader, value: Any, path: str) -> str | None:
    """One attribute name: non-blank text."""
    if not isinstance(value, str) or not value.strip():
        reader.fail(path, f"must be an attribute name (text), not {kind_of(value)}")
        return None
    return value


def _names(reader: FieldReader, value: Any, path: str) -> tuple[str, ...] | None:
    """A list of attribute names (one name alone is a list of one)."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else reader.items(value, path)
    names = []
    for index, item in enumerate(items):
        name = _name(reader, item, path if isinstance(value, str) else f"{path}[{index}]")
        if name is None:
            return None
        names.append(name)
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


def _event_type(reader: FieldReader, value: Any, path: str) -> str | None:
    """An event type as ingest would accept it in an event's ``type``."""
    text = reader.text(value, path)
    if not text:
        return None
    reason = event_type_error(text)
    if reason is not None:
        reader.fail(path, reason)
        return None
    return text


def _event_types(reader: FieldReader, value: Any, path: str) -> tuple[tuple[str, str], ...] | None:
    """Attribute value to event type: a mapping of texts to valid event types."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        reader.fail(
            path, f"must be a mapping of attribute value to event type, not {kind_of(value)}"
        )
        return None
    read = []
    for attribute_value, event_type in value.items():
        where = f"{path}.{attribute_value}"
        if not isinstance(attribute_value, str):
            reader.fail(
                where,
                f"the attribute value must be text, not {kind_of(attribute_value)} (quote it)",
            )
            continue
        checked = _event_type(reader, event_type, where)
        if event_type is None:
            reader.fail(where, "is required (the event type of this attribute value)")
        elif checked is not None:
            read.append((attribute_value, checked))
    return tuple(read)


def parse_otel(reader: FieldReader, value: Any, path: str = "otel") -> OtelMapping:
    """The block at ``path`` (absent: ``core.otel_spans.DEFAULT_MAPPING``)."""
    if value is None:
        return DEFAULT_MAPPING
    item = reader.mapping(value, path, KEYS)
    event_type = _event_type(reader, item.get("event_type"), f"{path}.event_type")
    attribute = item.get("event_type_attribute")
    if attribute is not None:
        attribute = _name(reader, attribute, f"{path}.event_type_attribute")
    event_types = _event_types(reader, item.get("event_types"), f"{path}.event_types")
    if "event_types" in item and "event_type_attribute" not in item:
        reader.fail(
            f"{path}.event_types",
            f"needs {path}.event_type_attribute (the attribute whose values it maps)",
        )
    customer = _names(reader, item.get("customer"), f"{path}.customer")
    match = _names(reader, item.get("match"), f"{path}.match")
    properties = _properties(reader, item.get("properties"), f"{path}.properties")
    return OtelMapping(
        event_type=event_type or DEFAULT_MAPPING.event_type,
        customer=customer or DEFAULT_MAPPING.customer,
        match=match or DEFAULT_MAPPING.match,
        properties=DEFAULT_MAPPING.properties if properties is None else properties,
        event_type_attribute=attribute,
        event_types=event_types,
    )
