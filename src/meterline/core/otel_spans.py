"""OpenTelemetry spans as usage events (pure): the pricing file's ``otel:`` mapping.

A span is usage when it carries any of the mapping's ``match`` attributes (by default the
GenAI semantic conventions' token counts, ``gen_ai.usage.input_tokens`` and
``gen_ai.usage.output_tokens``); other spans are counted as unmatched, never metered. A
usage span becomes one native event: its customer is the first ``customer`` attribute
present (the span's own attributes first, then its resource's), its type the mapping's
``event_type`` or, with an ``event_type_attribute``, one read from the span
(``span_type``), its timestamp the span's end, and each property the first of its listed
attributes present. The event id is ``otel-<trace id>-<span id>`` (lowercase hex), so a
span exported twice is the same event: the ledger answers ``duplicate``. A usage span
without a customer, or with an unusable id or end time, is reported as unattributed with
the reason: counted and named, never silently lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meterline.core.events import event_type_error, format_timestamp

TRACE_ID_HEX_DIGITS = 32
SPAN_ID_HEX_DIGITS = 16
EVENT_ID_PREFIX = "otel-"
_HEX_DIGITS = frozenset("0123456789abcdef")

DEFAULT_EVENT_TYPE = "llm.completion"
DEFAULT_CUSTOMER_ATTRIBUTES = ("meterline.customer", "enduser.id")
"""Where the customer is read by default: no GenAI convention names the paying customer,
so the application sets ``meterline.customer`` (or the general ``enduser.id``)."""
DEFAULT_MATCH = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
DEFAULT_PROPERTIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("gen_ai.response.model", "gen_ai.request.model")),
    ("input_tokens", ("gen_ai.usage.input_tokens",)),
    ("output_tokens", ("gen_ai.usage.output_tokens",)),
    # gen_ai.system is the name before the conventions renamed it (v1.37)
    ("provider", ("gen_ai.provider.name", "gen_ai.system")),
    ("operation", ("gen_ai.operation.name",)),
)
"""The GenAI semantic conventions' attributes, under the property names the meters read."""


@dataclass(frozen=True, slots=True)
class OtelMapping:
    """Which spans are usage, and how each becomes an event (the ``otel:`` block)."""

    event_type: str = DEFAULT_EVENT_TYPE
    """Every span's type, or the fallback when the type comes from an attribute."""
    customer: tuple[str, ...] = DEFAULT_CUSTOMER_ATTRIBUTES
    match: tuple[str, ...] = DEFAULT_MATCH
    properties: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_PROPERTIES
    event_type_attribute: str | None = None
    """The attribute whose value gives the span's type (``span_type``); None: every span
    is ``event_type``."""
    event_types: tuple[tuple[str, str], ...] | None = None
    """(attribute value, event type) pairs; None: the attribute's value is the type."""


DEFAULT_MAPPING = OtelMapping()


@dataclass(frozen=True, slots=True)
class Span:
    """One decoded span: ids as lowercase hex, attribute values as plain data (text,
    booleans, integers, exact decimals, lists, mappings)."""

    trace_id: str
    span_id: str
    name: str
    end_time_unix_nano: int
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unattributed:
    """A usage span that cannot become an event, and why."""

    index: int
    trace_id: str
    span_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class MappedSpans:
    """What a batch of spans became: native events (with the index of the span each came
    from), the indexes of spans that are not usage, and the usage spans refused."""

    events: list[dict[str, Any]]
    positions: list[int]
    unmatched: list[int]
    unattributed: list[Unattributed]


def span_event_id(trace_id: str, span_id: str) -> str:
    """The event id of a span: stable across re-exports, so a re-export is a duplicate."""
    return f"{EVENT_ID_PREFIX}{trace_id}-{span_id}"


def _is_id(value: str, digits: int) -> bool:
    return len(value) == digits and set(value) <= _HEX_DIGITS and set(value) != {"0"}


def _first(names: Sequence[str], span: Span) -> tuple[str, Any] | None:
    """The first of ``names`` the span carries, then the first its resource carries."""
    for attributes in (span.attributes, span.resource):
        for name in names:
            if name in attributes:
                return name, attributes[name]
    return None


def span_type(span: Span, mapping: OtelMapping) -> Any:
    """The span's event type. With an ``event_type_attribute``, read from the span (then
    its resource): ``event_types[value]`` when the map is given (a value not in it: the
    fallback ``event_type``), else the value itself; the attribute absent: the fallback.
    Without a map the value is returned as found (``_problem`` refuses one that is not a
    valid type)."""
    if mapping.event_type_attribute is None:
        return mapping.event_type
    found = _first((mapping.event_type_attribute,), span)
    if found is None:
        return mapping.event_type
    value = found[1]
    if mapping.event_types is None:
        return value
    if type(value) is str:
        for attribute_value, event_type in mapping.event_types:
            if value == attribute_value:
                return event_type
    return mapping.event_type


def _problem(span: Span, mapping: OtelMapping) -> str | None:
    if not _is_id(span.trace_id, TRACE_ID_HEX_DIGITS):
        return f"trace id {span.trace_id!r} is not {TRACE_ID_HEX_DIGITS} hex digits, not all 0"
    if not _is_id(span.span_id, SPAN_ID_HEX_DIGITS):
        return f"span id {span.span_id!r} is not {SPAN_ID_HEX_DIGITS} hex digits, not all 0"
    if span.end_time_unix_nano <= 0:
        return "the span has no end time (end_time_unix_nano)"
    found = _first(mapping.customer, span)
    if found is None:
        return f"no customer: none of {', '.join(mapping.customer)} is set on the span or resource"
    name, customer = found
    if type(customer) is not str or not customer.strip():
        return f"customer attribute {name} must be non-empty text"
    if mapping.event_type_attribute is not None:
        reason = event_type_error(span_type(span, mapping))
        if reason is not None:
            return f"event type attribute {mapping.event_type_attribute}: {reason}"
    return None


def span_event(span: Span, mapping: OtelMapping) -> dict[str, Any]:
    """The native event of a usage span that has no problem (``map_spans`` checks)."""
    found = _first(mapping.customer, span)
    properties: dict[str, Any] = {}
    for name, sources in mapping.properties:
        value = _first(sources, span)
        if value is not None:
            properties[name] = value[1]
    return {
        "id": span_event_id(span.trace_id, span.span_id),
        "customer": found[1] if found is not None else None,
        "type": span_type(span, mapping),
        "timestamp": format_timestamp(span.end_time_unix_nano // 1000),
        "properties": properties,
    }


def is_usage(span: Span, mapping: OtelMapping) -> bool:
    return any(name in span.attributes for name in mapping.match)


def map_spans(spans: Sequence[Span], mapping: OtelMapping = DEFAULT_MAPPING) -> MappedSpans:
    """Each span as usage (an event), not usage (unmatched) or unattributed."""
    mapped = MappedSpans([], [], [], [])
    for index, span in enumerate(spans):
        if not is_usage(span, mapping):
            mapped.unmatched.append(index)
            continue
        problem = _problem(span, mapping)
        if problem is not None:
            mapped.unattributed.append(Unattributed(index, span.trace_id, span.span_id, problem))
            continue
        mapped.events.append(span_event(span, mapping))
        mapped.positions.append(index)
    return mapped


REASONS_SHOWN_MAX = 5
"""How many refused spans a summary names (the rest are counted)."""


def summary(mapped: MappedSpans, rejected: Sequence[tuple[int, str]], spans: Sequence[Span]) -> str:
    """The partial-success message: what was not metered and why, naming the first
    ``REASONS_SHOWN_MAX`` refused spans; ``rejected`` are the ledger's refusals as (span
    index, reason). Empty when every span was metered."""
    reasons = [(item.index, item.reason) for item in mapped.unattributed] + list(rejected)
    reasons.sort()
    parts = []
    if reasons:
        named = [
            f"span {spans[index].span_id} ({spans[index].name}): {reason}"
            for index, reason in reasons[:REASONS_SHOWN_MAX]
        ]
        more = len(reasons) - REASONS_SHOWN_MAX
        parts.append(
            f"{len(reasons)} usage span(s) not metered: "
            + "; ".join(named)
            + (f"; and {more} more" if more > 0 else "")
        )
    if mapped.unmatched:
        parts.append(
            f"{len(mapped.unmatched)} span(s) carried none of the usage attributes"
            " and were not metered"
        )
    return ". ".join(parts)
