"""Validation and canonical bytes of native events (pure core)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from meterline.core.events import (
    FieldError,
    PreparedEvent,
    event_document,
    prepare_event,
    prepare_event_checked,
)
from meterline.core.limits import IngestLimits
from tests.conftest import FIXED_NOW_US, event


def errors_of(raw: object, limits: IngestLimits = IngestLimits()) -> list[FieldError]:
    result = prepare_event(raw, FIXED_NOW_US, limits)
    assert isinstance(result, list), f"expected a rejection, got {result}"
    return result


def fields_of(raw: object) -> list[str]:
    return [error.field for error in errors_of(raw)]


def test_valid_event_is_prepared_with_canonical_bytes() -> None:
    """A valid event becomes a PreparedEvent whose bytes are sorted, compact JSON."""
    prepared = prepare_event(event(1), FIXED_NOW_US)
    assert isinstance(prepared, PreparedEvent)
    assert prepared.body == (
        b'{"customer":"acme","id":"evt-1","properties":{"input_tokens":1201,'
        b'"model":"gpt-4o","output_tokens":300},"timestamp":"2026-11-01T10:00:00Z",'
        b'"type":"llm.completion"}'
    )
    assert prepared.timestamp_us == 1_793_527_200_000_000


def test_key_order_does_not_change_bytes() -> None:
    """The same content in any key order gives the same canonical bytes."""
    forward = prepare_event(event(1, properties={"a": 1, "b": {"y": 2, "x": 3}}), FIXED_NOW_US)
    raw = event(1, properties={"b": {"x": 3, "y": 2}, "a": 1})
    backward = prepare_event(dict(reversed(list(raw.items()))), FIXED_NOW_US)
    assert isinstance(forward, PreparedEvent) and isinstance(backward, PreparedEvent)
    assert forward.body == backward.body


def test_timestamp_offsets_normalize_to_utc() -> None:
    """An instant written with any offset is stored as the same UTC instant."""
    utc = prepare_event(event(1, timestamp="2026-11-01T10:00:00Z"), FIXED_NOW_US)
    paris = prepare_event(event(1, timestamp="2026-11-01T11:00:00+01:00"), FIXED_NOW_US)
    as_datetime = prepare_event(
        event(1, timestamp=datetime(2026, 11, 1, 5, tzinfo=timezone(timedelta(hours=-5)))),
        FIXED_NOW_US,
    )
    assert isinstance(utc, PreparedEvent)
    assert utc == paris == as_datetime


def test_decimal_digits_are_never_lost() -> None:
    """0.1 as float, Decimal or JSON number reads back as exactly Decimal('0.1')."""
    for value in (0.1, Decimal("0.1")):
        prepared = prepare_event(event(1, properties={"cost": value}), FIXED_NOW_US)
        assert isinstance(prepared, PreparedEvent)
        assert event_document(prepared.body)["properties"]["cost"] == Decimal("0.1")
    long = Decimal("123456789012345678901234567890.000000000000000001")
    prepared = prepare_event(event(1, properties={"cost": long}), FIXED_NOW_US)
    assert isinstance(prepared, PreparedEvent)
    assert event_document(prepared.body)["properties"]["cost"] == long


def test_numeric_strings_stay_strings() -> None:
    """A string property is stored as the string it was; meters parse it exactly later."""
    prepared = prepare_event(event(1, properties={"cost": "0.1"}), FIXED_NOW_US)
    assert isinstance(prepared, PreparedEvent)
    assert event_document(prepared.body)["properties"]["cost"] == "0.1"


@pytest.mark.parametrize(
    ("overrides", "field", "reason_part"),
    [
        ({"customer": None}, "customer", "required"),
        ({"customer": ""}, "customer", "empty"),
        ({"customer": "   "}, "customer", "empty"),
        ({"customer": 42}, "customer", "string"),
        ({"id": None}, "id", "required"),
        ({"id": "x" * 257}, "id", "limit is 256"),
        ({"type": ""}, "type", "empty"),
        ({"timestamp": None}, "timestamp", "required"),
        ({"timestamp": "yesterday"}, "timestamp", "RFC 3339"),
        ({"timestamp": "2026-13-01T00:00:00Z"}, "timestamp", "RFC 3339"),
        ({"timestamp": "2026-11-01T10:00:00"}, "timestamp", "time zone"),
        ({"timestamp": 1_700_000_000}, "timestamp", "RFC 3339 string"),
        ({"timestamp": "2026-11-23T12:05:01Z"}, "timestamp", "future"),
        ({"properties": [1, 2]}, "properties", "object"),
        ({"properties": "tokens=5"}, "properties", "object"),
        ({"properties": {"cost": float("nan")}}, "properties.cost", "finite"),
        ({"properties": {"cost": Decimal("Infinity")}}, "properties.cost", "finite"),
        ({"properties": {"when": datetime(2026, 1, 1, tzinfo=UTC)}}, "properties.when", "JSON"),
        ({"properties": {"nested": {"deep": float("inf")}}}, "properties.nested.deep", "finite"),
        ({"tokens": 5}, "tokens", "not a field"),
    ],
)
def test_each_rejection_names_field_and_reason(
    overrides: dict[str, object], field: str, reason_part: str
) -> None:
    """Each invalid field is rejected with its name and a reason saying what is wrong."""
    errors = errors_of(event(1, **overrides))
    assert [error.field for error in errors] == [field]
    assert reason_part in errors[0].reason


def test_future_skew_is_configurable() -> None:
    """A timestamp within the configured skew is accepted; past it is rejected."""
    in_ten_minutes = "2026-11-23T12:10:00Z"
    assert fields_of(event(1, timestamp=in_ten_minutes)) == ["timestamp"]
    generous = IngestLimits(future_skew_us=3600 * 1_000_000)
    assert isinstance(
        prepare_event(event(1, timestamp=in_ten_minutes), FIXED_NOW_US, generous), PreparedEvent
    )


def test_late_events_are_accepted() -> None:
    """An event from long ago is valid: late events are kept, not dropped."""
    assert isinstance(
        prepare_event(event(1, timestamp="2020-01-01T00:00:00Z"), FIXED_NOW_US), PreparedEvent
    )


def test_oversize_event_is_rejected_naming_the_limit() -> None:
    """An event over event_bytes_max is rejected as a whole, naming the limit."""
    errors = errors_of(event(1, properties={"prompt": "x" * 70_000}))
    assert errors[0].field == "event" and "65536" in errors[0].reason


def test_all_problems_are_reported_at_once() -> None:
    """Several bad fields give several errors, not just the first."""
    assert fields_of({"id": "", "customer": None, "type": "t", "timestamp": "no"}) == [
        "id",
        "customer",
        "timestamp",
    ]


def test_non_object_event_is_rejected() -> None:
    """A batch element that is not an object is rejected with field 'event'."""
    assert fields_of([1, 2]) == ["event"]
    assert fields_of("evt") == ["event"]


def test_fast_path_and_specification_agree_on_common_shapes() -> None:
    """prepare_event and prepare_event_checked give equal answers on typical events."""
    samples = [
        event(1),
        event(2, properties={}),
        event(3, properties={"nested": {"a": [1, Decimal("2.5")]}}),
        event(4, timestamp="2026-11-01T11:00:00+01:00"),
        event(5, source="svc://a"),
        event(6, properties={"flag": True, "none": None, "f": 0.25}),
    ]
    for raw in samples:
        assert prepare_event(raw, FIXED_NOW_US) == prepare_event_checked(raw, FIXED_NOW_US)


def test_misspelled_properties_field_is_rejected_not_dropped() -> None:
    """A typo like 'props' instead of 'properties' is named, never silently discarded."""
    raw = event(1)
    raw["props"] = raw.pop("properties")
    errors = errors_of(raw)
    assert [error.field for error in errors] == ["props"]
    assert "not a field" in errors[0].reason
