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
    long = Decimal("-999999999999999999.9999999999")  # the widest number accepted
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


# -- numbers a meter can always rate (issue 16) ----------------------------------------------

TOO_LARGE = "numbers must be below 10**18"


@pytest.mark.parametrize(
    ("properties", "field", "reason_part"),
    [
        ({"input_tokens": Decimal("1E+400")}, "properties.input_tokens", TOO_LARGE),
        ({"input_tokens": 10**18}, "properties.input_tokens", TOO_LARGE),
        ({"input_tokens": -(10**18)}, "properties.input_tokens", TOO_LARGE),
        ({"input_tokens": 10**5000}, "properties.input_tokens", TOO_LARGE),
        ({"input_tokens": Decimal("1E+18")}, "properties.input_tokens", TOO_LARGE),
        ({"cost": Decimal("1E-11")}, "properties.cost", "11 digits after the decimal point"),
        ({"cost": Decimal("-1E-400")}, "properties.cost", "400 digits after the decimal point"),
        ({"cost": Decimal("1.00000000000")}, "properties.cost", "the limit is 10"),
        ({"cost": 1e300}, "properties.cost", TOO_LARGE),
        ({"cost": 5e-324}, "properties.cost", "digits after the decimal point"),
        ({"cost": Decimal("sNaN")}, "properties.cost", "not a finite number"),
        ({"usage": {"tokens": [1, Decimal("1E+400")]}}, "properties.usage.tokens[1]", TOO_LARGE),
    ],
)
def test_numbers_billing_cannot_carry_exactly_are_rejected_naming_the_path(
    properties: dict[str, object], field: str, reason_part: str
) -> None:
    """A number past the ingest limits is refused, naming its property path and the limit."""
    raw = event(1, properties=properties)
    errors = errors_of(raw)
    assert [error.field for error in errors] == [field]
    assert reason_part in errors[0].reason
    assert prepare_event_checked(raw, FIXED_NOW_US) == errors


@pytest.mark.parametrize(
    "number",
    [
        10**18 - 1,
        -(10**18) + 1,
        Decimal("999999999999999999.9999999999"),
        Decimal("-0.0000000001"),
        Decimal("1.0E+17"),
        Decimal("0E+30"),
        Decimal("0E-10"),
        0.1,
    ],
)
def test_numbers_within_the_limits_are_kept_as_sent(number: int | Decimal | float) -> None:
    """The widest and the most precise numbers the limits allow are accepted unchanged."""
    raw = event(1, properties={"n": number, "deep": [{"n": number}]})
    prepared = prepare_event(raw, FIXED_NOW_US)
    assert isinstance(prepared, PreparedEvent)
    assert prepared == prepare_event_checked(raw, FIXED_NOW_US)
    properties = event_document(prepared.body)["properties"]
    assert properties["n"] == properties["deep"][0]["n"] == Decimal(str(number))


def test_number_limits_are_configurable() -> None:
    """IngestLimits' digit bounds decide what is accepted, on both paths."""
    narrow = IngestLimits(number_integer_digits_max=3, number_decimal_places_max=2)
    assert [e.field for e in errors_of(event(1, properties={"n": 1000}), narrow)] == [
        "properties.n"
    ]
    assert [e.field for e in errors_of(event(1, properties={"n": Decimal("0.001")}), narrow)] == [
        "properties.n"
    ]
    raw = event(1, properties={"n": 999, "m": Decimal("-999.99")})
    assert isinstance(prepare_event(raw, FIXED_NOW_US, narrow), PreparedEvent)
    with pytest.raises(ValueError, match="number_integer_digits_max"):
        IngestLimits(number_integer_digits_max=0)
    with pytest.raises(ValueError, match="number_decimal_places_max"):
        IngestLimits(number_decimal_places_max=-1)


# -- text every store holds the same way (issue 16) ------------------------------------------

CONTROL = "control characters (U+0000-U+001F) are not allowed"


@pytest.mark.parametrize(
    ("overrides", "field", "reason_part"),
    [
        ({"id": "evt\x00-1"}, "id", "U+0000 at position 3; " + CONTROL),
        ({"customer": "acme\x00"}, "customer", "U+0000 at position 4"),
        ({"customer": "acme\n"}, "customer", "U+000A at position 4; " + CONTROL),
        ({"type": "llm\x1fcompletion"}, "type", "U+001F"),
        ({"source": "svc://a\x01"}, "source", "U+0001"),
        ({"id": "evt-\ud800"}, "id", "lone surrogate (U+D800) at position 4"),
        ({"customer": "\udfff"}, "customer", "lone surrogate (U+DFFF)"),
        ({"source": "\ud83d"}, "source", "lone surrogate"),
        ({"properties": {"model": "gpt\x00"}}, "properties.model", "U+0000 at position 3"),
        ({"properties": {"a": {"b": ["ok", "\x00"]}}}, "properties.a.b[1]", "NUL cannot be stored"),
        ({"properties": {"model\x00": "x"}}, "properties", "property name 'model\\x00'"),
        ({"properties": {"model": "\udc00"}}, "properties.model", "lone surrogate (U+DC00)"),
        ({"properties": {"\ud800": 1}}, "properties", "property name '\\ud800'"),
        ({"timestamp": "2026-11-01\ud800"}, "timestamp", "is not an RFC 3339 timestamp"),
        ({"\ud800": 1}, "'\\ud800'", "is not a field of an event"),
    ],
)
def test_text_a_store_could_not_hold_alike_is_rejected_naming_the_field(
    overrides: dict[str, object], field: str, reason_part: str
) -> None:
    """NUL, C0 controls in names and lone surrogates are refused in the core, by field."""
    raw = event(1, **overrides)
    errors = errors_of(raw)
    assert [error.field for error in errors] == [field]
    assert reason_part in errors[0].reason
    assert prepare_event_checked(raw, FIXED_NOW_US) == errors
    errors[0].reason.encode()  # every answer can be sent back as UTF-8


def test_control_characters_inside_property_text_are_kept() -> None:
    """Newlines, tabs and other controls but NUL are data in property strings."""
    text = "line 1\nline 2\tend\x1f\x7f\u2028 \\u0000 literally"
    raw = event(1, properties={"prompt": text, "nested": [{"k\n": text}]}, id="evt\x7f\u00a0")
    prepared = prepare_event(raw, FIXED_NOW_US)
    assert isinstance(prepared, PreparedEvent)
    assert prepared == prepare_event_checked(raw, FIXED_NOW_US)
    assert event_document(prepared.body)["properties"]["prompt"] == text


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_a_timestamp_outside_the_years_in_utc_is_a_field_error(timestamp: str) -> None:
    raw = {"id": "e", "customer": "c", "type": "t", "timestamp": timestamp, "properties": {}}
    for prepare in (prepare_event, prepare_event_checked):
        errors = prepare(raw, 1_800_000_000_000_000)
        assert isinstance(errors, list)
        assert [error.field for error in errors] == ["timestamp"]
        assert "outside years 1 to 9999 in UTC" in errors[0].reason
