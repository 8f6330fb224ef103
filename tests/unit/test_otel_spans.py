"""GenAI spans as usage events (core.otel_spans) and the pricing file's ``otel:`` block."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError
from meterline.core.otel_spans import (
    DEFAULT_MAPPING,
    OtelMapping,
    Span,
    map_spans,
    span_event_id,
    summary,
)

TRACE = "5b8efff798038103d269b633813fc60c"
END_NS = 1_793_437_200_123_456_789  # 2026-10-31T09:00:00.123456789Z


def genai_span(span_id: str = "eee19b7ec3c1b174", **attributes: Any) -> Span:
    """A chat span as an instrumentation following the GenAI conventions records it."""
    recorded: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "meterline.customer": "acme",
    }
    recorded.update(attributes)
    return Span(TRACE, span_id, "chat gpt-4o", END_NS, recorded, {"service.name": "support-bot"})


def test_a_genai_span_becomes_one_event_under_the_conventions_defaults() -> None:
    """Model (response first), tokens, provider and operation map to the meters' names."""
    mapped = map_spans([genai_span()])
    assert mapped.unmatched == [] and mapped.unattributed == []
    assert mapped.events == [
        {
            "id": f"otel-{TRACE}-eee19b7ec3c1b174",
            "customer": "acme",
            "type": "llm.completion",
            "timestamp": "2026-10-31T09:00:00.123456Z",
            "properties": {
                "model": "gpt-4o-2024-08-06",
                "input_tokens": 1200,
                "output_tokens": 300,
                "provider": "openai",
                "operation": "chat",
            },
        }
    ]


def test_older_attribute_names_and_resource_customer_are_read() -> None:
    """gen_ai.system stands in for gen_ai.provider.name; the customer may be on the resource."""
    span = Span(
        TRACE,
        "00f067aa0ba902b7",
        "chat",
        END_NS,
        {
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude",
            "gen_ai.usage.input_tokens": 5,
        },
        {"enduser.id": "globex"},
    )
    (event,) = map_spans([span]).events
    assert event["customer"] == "globex"
    assert event["properties"] == {"model": "claude", "input_tokens": 5, "provider": "anthropic"}


def test_the_same_span_always_has_the_same_event_id() -> None:
    """A re-export maps to the same id (the ledger's idempotency key)."""
    first = map_spans([genai_span()]).events[0]["id"]
    again = map_spans([genai_span(**{"gen_ai.usage.output_tokens": 300})]).events[0]["id"]
    assert first == again == span_event_id(TRACE, "eee19b7ec3c1b174")


def test_spans_without_usage_are_unmatched_and_usage_without_a_customer_is_named() -> None:
    """Nothing is silently lost: each span is metered, unmatched or refused with a reason."""
    http = Span(TRACE, "1111111111111111", "GET /", END_NS, {"http.method": "GET"})
    anonymous = genai_span("2222222222222222")
    anonymous = Span(
        anonymous.trace_id,
        anonymous.span_id,
        anonymous.name,
        anonymous.end_time_unix_nano,
        {k: v for k, v in anonymous.attributes.items() if k != "meterline.customer"},
    )
    zero_id = genai_span("0000000000000000")
    spans = [http, anonymous, zero_id, genai_span()]
    mapped = map_spans(spans)
    assert mapped.unmatched == [0]
    assert [item.index for item in mapped.unattributed] == [1, 2]
    assert "no customer" in mapped.unattributed[0].reason
    assert "span id" in mapped.unattributed[1].reason
    assert mapped.positions == [3]
    message = summary(mapped, [], spans)
    assert "2 usage span(s) not metered" in message
    assert "1 span(s) carried none of the usage attributes" in message
    assert summary(map_spans([genai_span()]), [], [genai_span()]) == ""


def test_a_declared_mapping_replaces_the_defaults() -> None:
    """The customer, type, match and properties are the file's."""
    mapping = OtelMapping(
        event_type="ai.call",
        customer=("tenant.id",),
        match=("gen_ai.operation.name",),
        properties=(("tokens", ("gen_ai.usage.output_tokens",)), ("cost", ("app.cost",))),
    )
    (event,) = map_spans(
        [genai_span(**{"tenant.id": "initech", "app.cost": D("0.25")})], mapping
    ).events
    assert (event["customer"], event["type"]) == ("initech", "ai.call")
    assert event["properties"] == {"tokens": 300, "cost": D("0.25")}


def test_the_otel_block_is_read_from_the_pricing_file() -> None:
    """Names alone or in lists; absent keys keep the defaults."""
    configuration = parse_configuration(
        {
            "otel": {
                "customer": "tenant.id",
                "properties": {"model": ["gen_ai.response.model", "gen_ai.request.model"]},
            }
        }
    )
    assert configuration.otel.customer == ("tenant.id",)
    assert configuration.otel.properties == (
        ("model", ("gen_ai.response.model", "gen_ai.request.model")),
    )
    assert configuration.otel.match == DEFAULT_MAPPING.match
    assert parse_configuration({}).otel == DEFAULT_MAPPING


def test_a_wrong_otel_block_is_refused_naming_the_path() -> None:
    """Unknown keys and non-text attribute names are errors with their path."""
    with pytest.raises(ConfigurationError) as raised:
        parse_configuration({"otel": {"customers": ["x"], "match": [3], "properties": []}})
    text = str(raised.value)
    assert "otel.customers: unknown key" in text
    assert "otel.match[0]: must be an attribute name" in text
    assert "otel.properties: must be a mapping" in text


BY_OPERATION = OtelMapping(
    event_type_attribute="gen_ai.operation.name",
    event_types=(("chat", "llm.completion"), ("embeddings", "llm.embedding")),
)


def typed(mapping: OtelMapping, *spans: Span) -> list[str]:
    """The event type each span became."""
    return [event["type"] for event in map_spans(list(spans), mapping).events]


def test_the_event_type_comes_from_an_attribute_through_the_map() -> None:
    """A mapped value gives its type; a value not in the map, or no attribute, the fallback."""
    without = genai_span("4444444444444444")
    without = Span(
        without.trace_id,
        without.span_id,
        without.name,
        without.end_time_unix_nano,
        {k: v for k, v in without.attributes.items() if k != "gen_ai.operation.name"},
    )
    assert typed(
        BY_OPERATION,
        genai_span("1111111111111111"),
        genai_span("2222222222222222", **{"gen_ai.operation.name": "embeddings"}),
        genai_span("3333333333333333", **{"gen_ai.operation.name": "text_completion"}),
        without,
    ) == ["llm.completion", "llm.embedding", "llm.completion", "llm.completion"]
    fallback = OtelMapping(
        event_type="ai.other",
        event_type_attribute="gen_ai.operation.name",
        event_types=(("embeddings", "llm.embedding"),),
    )
    assert typed(fallback, genai_span(), genai_span(**{"gen_ai.operation.name": 7})) == [
        "ai.other",
        "ai.other",
    ]


def test_without_a_map_the_attribute_value_is_the_type() -> None:
    """The value itself (the span's, else its resource's); one that is no valid type is
    refused naming the attribute, never stored under another type."""
    mapping = OtelMapping(event_type_attribute="app.event_type")
    on_resource = Span(
        TRACE, "5555555555555555", "chat", END_NS, genai_span().attributes, {"app.event_type": "r"}
    )
    spans = [
        genai_span("1111111111111111", **{"app.event_type": "ai.chat"}),
        on_resource,
        genai_span("2222222222222222"),
        genai_span("3333333333333333", **{"app.event_type": 42}),
        genai_span("6666666666666666", **{"app.event_type": "a\tb"}),
    ]
    mapped = map_spans(spans, mapping)
    assert [event["type"] for event in mapped.events] == ["ai.chat", "r", "llm.completion"]
    assert [(item.index, item.reason) for item in mapped.unattributed] == [
        (3, "event type attribute app.event_type: must be a string, got int"),
        (
            4,
            "event type attribute app.event_type: holds the control character U+0009 at"
            " position 1; control characters (U+0000-U+001F) are not allowed",
        ),
    ]


def test_the_event_type_mapping_is_read_from_the_pricing_file() -> None:
    """``event_type_attribute`` and ``event_types`` become the mapping; without them the
    fixed type stays (backwards compatible)."""
    configuration = parse_configuration(
        {
            "otel": {
                "event_type": "llm.other",
                "event_type_attribute": "gen_ai.operation.name",
                "event_types": {"chat": "llm.completion", "embeddings": "llm.embedding"},
            }
        }
    )
    assert configuration.otel == OtelMapping(
        event_type="llm.other",
        event_type_attribute="gen_ai.operation.name",
        event_types=(("chat", "llm.completion"), ("embeddings", "llm.embedding")),
    )
    fixed = parse_configuration({"otel": {"event_type": "ai.call"}}).otel
    assert (fixed.event_type, fixed.event_type_attribute, fixed.event_types) == (
        "ai.call",
        None,
        None,
    )


def test_a_wrong_event_type_mapping_is_refused_naming_the_path() -> None:
    """Each event type is held to ingest's rules for ``type``; a map needs its attribute."""
    with pytest.raises(ConfigurationError) as raised:
        parse_configuration(
            {
                "otel": {
                    "event_type": "x" * 257,
                    "event_types": {
                        "chat": "",
                        "embeddings": "llm\nembedding",
                        "rerank": None,
                        True: "llm.yes",
                    },
                }
            }
        )
    text = str(raised.value)
    assert "otel.event_type: is 257 characters, the limit is 256" in text
    assert "otel.event_types.chat: must not be empty" in text
    assert "otel.event_types.embeddings: holds the control character U+000A" in text
    assert "otel.event_types.rerank: is required" in text
    assert "otel.event_types.True: the attribute value must be text, not a boolean" in text
    assert "otel.event_types: needs otel.event_type_attribute" in text
    with pytest.raises(ConfigurationError) as raised:
        parse_configuration({"otel": {"event_type_attribute": ["a", "b"]}})
    assert "otel.event_type_attribute: must be an attribute name (text), not a list" in str(
        raised.value
    )
