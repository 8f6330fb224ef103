"""The stream message codec: round trips, splitting under the limit, message ids, errors."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.events import PreparedEvent, prepare_event
from meterline.stream.codec import (
    BATCH_FORMAT_VERSION,
    ENVELOPE_BYTES_MAX,
    decode_batch,
    encode_batch,
    message_id,
    pack_messages,
)
from meterline.stream.errors import BatchDecodeError
from tests.conftest import FIXED_NOW_US, event

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
EVENTS = st.lists(
    st.builds(
        PreparedEvent,
        customer=st.text(min_size=1, max_size=40),
        id=st.text(min_size=1, max_size=40),
        type=st.text(min_size=1, max_size=20),
        timestamp_us=INT64,
        body=st.binary(max_size=300),
    ),
    max_size=40,
)


def prepared(number: int, customer: str = "acme") -> PreparedEvent:
    result = prepare_event(event(number, customer), FIXED_NOW_US)
    assert isinstance(result, PreparedEvent)
    return result


def test_round_trip_keeps_every_field_and_the_order() -> None:
    events = [prepared(number, customer) for number in range(5) for customer in ("acme", "été")]
    decoded = decode_batch(encode_batch(events, 1_795_435_200_000_123))
    assert decoded.received_at_us == 1_795_435_200_000_123
    assert decoded.events == events
    assert all(type(item) is PreparedEvent for item in decoded.events)


def test_the_wire_format_is_version_time_and_event_arrays() -> None:
    one = prepared(1)
    assert msgspec.msgpack.decode(encode_batch([one], 7)) == [BATCH_FORMAT_VERSION, 7, [list(one)]]


@settings(max_examples=200, deadline=None)
@given(events=EVENTS, received_at_us=st.integers(min_value=0, max_value=2**63 - 1))
def test_any_events_round_trip(events: list[PreparedEvent], received_at_us: int) -> None:
    decoded = decode_batch(encode_batch(events, received_at_us))
    assert decoded.received_at_us == received_at_us
    assert decoded.events == events


@settings(max_examples=200, deadline=None)
@given(events=EVENTS, limit=st.integers(min_value=400, max_value=4000))
def test_packing_splits_under_the_limit_and_keeps_order(
    events: list[PreparedEvent], limit: int
) -> None:
    messages = pack_messages(events, 42, limit)
    assert all(len(message.payload) <= limit for message in messages)
    assert all(decode_batch(message.payload).events for message in messages)
    rejoined = [item for message in messages for item in decode_batch(message.payload).events]
    assert rejoined == events
    assert [message.message_id for message in messages] == [
        message.message_id for message in pack_messages(events, 42, limit)
    ]
    if messages and len(messages) > 1:  # greedy: the next event would not have fitted
        first = decode_batch(messages[0].payload).events
        grown = [*first, events[len(first)]]
        assert ENVELOPE_BYTES_MAX + sum(len(msgspec.msgpack.encode(item)) for item in grown) > limit


def test_a_batch_that_fits_is_one_message_equal_to_encode_batch() -> None:
    events = [prepared(number) for number in range(10)]
    (message,) = pack_messages(events, 99, 1 << 20)
    assert message.payload == encode_batch(events, 99)
    assert message.message_id == message_id(events)


def test_the_message_id_ignores_receipt_time_but_not_content_or_order() -> None:
    events = [prepared(number) for number in range(3)]
    first = pack_messages(events, 1, 1 << 20)[0].message_id
    assert pack_messages(events, 2, 1 << 20)[0].message_id == first
    assert message_id(list(reversed(events))) != first
    changed = events[0]._replace(body=events[0].body.replace(b"1200", b"1999"))
    assert changed != events[0]
    assert message_id([changed, *events[1:]]) != first
    assert len(first) == 64 and int(first, 16) >= 0


def test_an_event_larger_than_a_message_is_refused_naming_it() -> None:
    big = PreparedEvent("acme", "huge-1", "t", 0, b"x" * 1000)
    with pytest.raises(ValueError, match=r"'huge-1' of customer 'acme' is \d+ bytes"):
        pack_messages([big], 0, 500)


def test_no_events_is_no_message() -> None:
    assert pack_messages([], 0, 1000) == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "invalid MessagePack"),
        (b"\xc1", "invalid MessagePack"),
        (msgspec.msgpack.encode({"version": 1}), "not a meterline batch: Expected `array`"),
        (msgspec.msgpack.encode([1, 5]), "not a meterline batch"),
        (msgspec.msgpack.encode([1, 5, [["acme", "1"]]]), r"\$\[2\]\[0\]"),
        (msgspec.msgpack.encode([1, 5, [["a", "1", "t", "x", b""]]]), "Expected `int`"),
        (msgspec.msgpack.encode([2, 5, []]), "batch format version 2; this meterline reads 1"),
        (msgspec.msgpack.encode([9, 5, "anything"]), "batch format version 9"),
    ],
)
def test_decoding_errors_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(BatchDecodeError, match=reason.replace("reads 1", "reads version 1")):
        decode_batch(data)


def test_receipt_time_must_be_a_non_negative_integer() -> None:
    with pytest.raises(ValueError, match="received_at_us"):
        encode_batch([], -1)
