"""CloudEvents 1.0 envelopes as the specification reads them (pure core, and the HTTP
body parser): optional ``time`` stamped at receipt, binary mode without a content type."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meterline.api.bodies import parse_body
from meterline.core.cloudevents import prepare_cloudevent
from meterline.core.events import (
    PreparedEvent,
    event_document,
    format_timestamp,
    same_event,
)
from meterline.core.limits import IngestLimits
from meterline.errors import UnsupportedContentType
from tests.conftest import FIXED_NOW_US


def envelope(**changes: Any) -> dict[str, Any]:
    """A valid structured CloudEvent; a change to None removes the attribute."""
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/services/chat",
        "type": "llm.completion",
        "subject": "acme",
        "time": "2026-11-01T10:00:00Z",
        "data": {"model": "gpt-4o", "input_tokens": 1200},
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def prepared(raw: object, now_us: int = FIXED_NOW_US) -> PreparedEvent:
    result = prepare_cloudevent(raw, now_us)
    assert isinstance(result, PreparedEvent), result
    return result


def test_time_is_optional_and_receipt_time_is_recorded() -> None:
    """Without time, the event is stamped with the clock reading and says so."""
    stamped = prepared(envelope(time=None))
    assert stamped.timestamp_us == FIXED_NOW_US
    document = event_document(stamped.body)
    assert document["timestamp"] == format_timestamp(FIXED_NOW_US) == "2026-11-23T12:00:00Z"
    assert document["timestamp_origin"] == "receipt"
    assert b'"timestamp_origin":"receipt","type"' in stamped.body  # canonical: keys sorted


def test_receipt_time_bytes_are_a_function_of_event_and_clock() -> None:
    """The same envelope and clock give the same bytes; a later clock only moves the time."""
    assert prepared(envelope(time=None)) == prepared(envelope(time=None))
    later = prepared(envelope(time=None), FIXED_NOW_US + 1_000_000)
    assert later.timestamp_us == FIXED_NOW_US + 1_000_000
    assert later.body != prepared(envelope(time=None)).body


def test_a_given_time_is_kept_and_not_marked() -> None:
    """An event with its own time carries no receipt marker; null time counts as absent."""
    given = prepared(envelope())
    assert "timestamp_origin" not in event_document(given.body)
    assert given.timestamp_us != FIXED_NOW_US
    assert prepared(envelope(time=None)) == prepared({**envelope(), "time": None})


def test_receipt_marker_counts_toward_the_event_size_limit() -> None:
    """An event that fits only without the marker is rejected by size, as field 'event'."""
    body = prepared(envelope(data={"prompt": "x"})).body
    limits = IngestLimits(event_bytes_max=len(body) + 1)
    assert isinstance(
        prepare_cloudevent(envelope(data={"prompt": "x"}), FIXED_NOW_US, limits), PreparedEvent
    )
    result = prepare_cloudevent(envelope(time=None, data={"prompt": "x"}), FIXED_NOW_US, limits)
    assert isinstance(result, list)
    assert [error.field for error in result] == ["event"]


def test_a_replay_without_time_is_the_same_event() -> None:
    """Two receipts of one time-less event differ only in time: same_event says so."""
    first = prepared(envelope(time=None)).body
    again = prepared(envelope(time=None), FIXED_NOW_US + 60_000_000).body
    other = prepared(envelope(time=None, data={"input_tokens": 1}), FIXED_NOW_US + 1).body
    timed = prepared(envelope(time=format_timestamp(FIXED_NOW_US + 1))).body
    assert same_event(first, first) and same_event(first, again)
    assert not same_event(first, other)
    assert not same_event(first, timed) and not same_event(timed, again)


@pytest.mark.parametrize("content_type", [42, ["application/json"], "text/plain"])
def test_a_datacontenttype_that_is_not_json_text_is_rejected(content_type: object) -> None:
    """A non-JSON or non-string datacontenttype is an error on that attribute, not a crash."""
    result = prepare_cloudevent(envelope(datacontenttype=content_type), FIXED_NOW_US)
    assert isinstance(result, list)
    assert [error.field for error in result] == ["datacontenttype"]


BINARY_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "ce-2",
    "ce-source": "/services/chat",
    "ce-type": "llm.completion",
    "ce-subject": "acme",
}


@pytest.mark.parametrize("content_type", [None, "", "application/json", "text/json; charset=utf-8"])
def test_binary_mode_without_a_content_type_reads_json(content_type: str | None) -> None:
    """Binary mode with no Content-Type (or a JSON one) decodes the body as JSON data."""
    parsed = parse_body(content_type, BINARY_HEADERS, json.dumps({"input_tokens": 7}).encode())
    assert parsed.shape == "cloudevents"
    [raw] = parsed.events
    event = prepared(raw)
    assert event_document(event.body)["properties"] == {"input_tokens": 7}
    assert event_document(event.body)["timestamp_origin"] == "receipt"


def test_binary_mode_with_an_empty_body_is_an_event_without_data() -> None:
    """No body in binary mode is no data: the event is stored with empty properties."""
    [raw] = parse_body(None, BINARY_HEADERS, b"").events
    assert event_document(prepared(raw).body)["properties"] == {}


def test_binary_mode_with_non_json_data_is_refused() -> None:
    """A non-JSON body type in binary mode is still 415: it cannot be metered."""
    with pytest.raises(UnsupportedContentType, match="text/plain"):
        parse_body("text/plain", BINARY_HEADERS, b"hello")
