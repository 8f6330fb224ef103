"""The compiled batch path (``api.bodies.prepare_body`` -> ``Ledger.prepare_plain`` ->
``core.event_batches.prepare_plain_batch``) answers exactly what the specification does: a JSON
body decoded generically and every event prepared by ``prepare_event_checked``. Checked
over generated JSON text (valid events, invalid ones, odd numbers, lone surrogates, NUL,
long strings, nested properties, offsets, future timestamps) and a few hand-written bodies
(duplicate keys, exponents, whitespace)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.api.bodies import parse_body, prepare_body
from meterline.core.chain import event_hash
from meterline.core.event_batches import prepare_plain_batch
from meterline.core.events import decode_exact, prepare_event_checked
from meterline.core.limits import DEFAULT_LIMITS, IngestLimits
from meterline.ledger.event_ledger import Ledger
from tests.conftest import FIXED_NOW_US
from tests.property.event_strategies import nested_values, tricky_numbers, tricky_texts
from tests.property.test_ingest_laws import raw_events


class NotJson(Exception):
    """A generated value JSON text cannot spell (bytes, NaN, a non-string key)."""


def to_json(value: Any) -> str:
    """JSON text for ``value``: Decimals as exact numbers, strings ASCII-escaped (so a lone
    surrogate and NUL arrive as ``\\ud800`` and ``\\u0000``, as a client would send them)."""
    if value is None or type(value) is bool:
        return json.dumps(value)
    if type(value) is int:
        return str(value)
    if type(value) is Decimal:
        if not value.is_finite():
            raise NotJson(value)
        return str(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise NotJson(value)
        return repr(value)
    if type(value) is str:
        return json.dumps(value)
    if type(value) is list:
        return "[" + ",".join(to_json(item) for item in value) + "]"
    if type(value) is dict:
        if any(type(key) is not str for key in value):
            raise NotJson(value)
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    raise NotJson(value)


def specification(
    body: bytes, only_customer: str | None = None, limits: IngestLimits = DEFAULT_LIMITS
) -> object:
    """The answer of the generic path with ``prepare_event_checked`` per event (or the
    error refusing the body whole)."""
    ledger = Ledger(store=None, clock=lambda: FIXED_NOW_US, limits=limits)  # type: ignore[arg-type]
    try:
        events = parse_body("application/json", {}, body).events
        return ledger.prepare_batch(events, prepare_event_checked, only_customer)
    except Exception as error:
        return (type(error), str(error))


def compiled(
    body: bytes, only_customer: str | None = None, limits: IngestLimits = DEFAULT_LIMITS
) -> object:
    ledger = Ledger(store=None, clock=lambda: FIXED_NOW_US, limits=limits)  # type: ignore[arg-type]
    try:
        return prepare_body(ledger, "application/json", {}, body, only_customer)
    except Exception as error:
        return (type(error), str(error))


plain_texts = st.one_of(
    st.sampled_from(["evt-1", "acme", "llm.completion", "é", "日本", "a b", " x", "\\u0000"]),
    st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=20),
    st.text("ab ", min_size=250, max_size=256),
)
texts = st.one_of(plain_texts, plain_texts, plain_texts, st.text(max_size=20), tricky_texts)
timestamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-01T10:00:00Z",
            "2026-11-01T10:00:00+00:00",
            "2026-11-01T10:00:00-00:00",
            "2026-11-01T10:00:00.5+02:00",
            "2026-11-01T10:00:00.123456789-08:00",
            "2026-11-23T17:34:59+05:30",
            "2026-11-23T12:04:59Z",
            "2026-11-23T12:05:00Z",
            "2026-11-23T12:05:00.000001Z",
            "2099-01-01T00:00:00Z",
            "2026-11-01T10:00:00",
            "2026-11-01 10:00:00Z",
            "2026-11-01t10:00:00z",
            "0001-01-01T00:00:00+01:00",
            "1969-12-31T23:59:59.999999Z",
        ]
    ),
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.text(max_size=30),
)
property_values = st.one_of(
    texts,
    texts,
    st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1),
    st.decimals(-(10**12), 10**12, allow_nan=False, allow_infinity=False, places=4),
    st.integers(min_value=-(10**19), max_value=10**19),
    tricky_numbers,
    st.decimals(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    nested_values,
)


minute_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
plain_timestamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-01T10:00:00Z",
            "2026-11-01T10:00:00+00:00",
            "2026-11-01T10:00:00.5+02:00",
            "2026-11-01T10:00:00.123456789-08:00",
            "2026-11-23T17:34:59+05:30",
            "2026-11-23T12:04:59Z",
        ]
    ),
    st.datetimes(datetime(1, 1, 2), datetime(2026, 11, 22), timezones=minute_offsets).map(
        datetime.isoformat
    ),
)
plain_values = st.one_of(
    plain_texts,
    st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1),
    st.decimals(-(10**12), 10**12, allow_nan=False, allow_infinity=False, places=4),
    st.booleans(),
    st.none(),
)


@st.composite
def plain_events(draw: st.DrawFn) -> dict[str, Any]:
    """A native event: half the time made of plainly valid parts, sometimes with one field
    gone wrong; otherwise of any parts."""
    clean = draw(st.integers(0, 3)) > 0
    names, values = (plain_texts, plain_values) if clean else (texts, property_values)
    event: dict[str, Any] = {
        "id": draw(names),
        "customer": draw(st.one_of(st.sampled_from(["acme", "globex"]), names)),
        "type": draw(names),
        "timestamp": draw(plain_timestamps if clean else timestamps),
        "properties": draw(st.dictionaries(names, values, max_size=5)),
    }
    if draw(st.integers(0, 20)) == 0:
        event["properties"][draw(texts)] = draw(property_values)
    if draw(st.integers(0, 20)) == 0:
        event["properties"]["long"] = "x" * draw(st.integers(60_000, 70_000))
    if draw(st.integers(0, 20)) == 0:
        del event[draw(st.sampled_from(sorted(event)))]
    if draw(st.integers(0, 20)) == 0:
        event[draw(st.sampled_from(["source", "extra", "id"]))] = draw(property_values)
    return event


batches = st.one_of(
    st.lists(plain_events(), max_size=4),
    st.lists(st.one_of(plain_events(), plain_events(), raw_events()), max_size=6),
)


@settings(max_examples=1000, deadline=None)
@given(events=batches, data=st.data())
def test_compiled_batch_path_answers_as_the_specification(
    events: list[Any], data: st.DataObject
) -> None:
    try:
        text = to_json(events)
    except NotJson:
        text = to_json([])
    body = text.encode()
    only_customer = data.draw(st.sampled_from([None, "acme"]))
    answer = compiled(body, only_customer)
    expected = specification(body, only_customer)
    assert answer == expected
    if type(answer) is tuple and type(answer[0]) is list:  # the same bytes, so the same hashes
        assert [event_hash(event.body) for _, event in answer[0]] == [
            event_hash(event.body)
            for _, event in expected[0]  # type: ignore[index]
        ]


limit_sets = st.sampled_from(
    [
        IngestLimits(number_integer_digits_max=3, number_decimal_places_max=2),
        IngestLimits(id_length_max=4, customer_length_max=5, type_length_max=6),
        IngestLimits(event_bytes_max=200, future_skew_us=0),
        IngestLimits(number_integer_digits_max=19),  # past an int64: bounds checked in Python
        IngestLimits(number_integer_digits_max=30),
    ]
)


@settings(max_examples=500, deadline=None)
@given(events=batches, limits=limit_sets)
def test_compiled_batch_path_answers_as_the_specification_under_any_limits(
    events: list[Any], limits: IngestLimits
) -> None:
    """The compiled checks (text lengths, integer bounds) read the limits given."""
    try:
        body = to_json(events).encode()
    except NotJson:
        return
    assert compiled(body, None, limits) == specification(body, None, limits)


@settings(max_examples=500, deadline=None)
@given(events=st.lists(plain_events(), min_size=1, max_size=4))
def test_plain_batch_is_each_event_as_specified_or_none(events: list[Any]) -> None:
    """Whenever the core batch path answers, every event is what the specification gives
    (accepted: the same canonical bytes; the path never answers for a rejected event)."""
    try:
        body = to_json(events).encode()
    except NotJson:
        return
    prepared = prepare_plain_batch(body, FIXED_NOW_US)
    if prepared is not None:
        expected = [prepare_event_checked(raw, FIXED_NOW_US) for raw in decode_exact(body)]
        assert prepared == expected


@pytest.mark.parametrize(
    "properties",
    [
        '{"model":"gpt-4o","tokens":500,"cached":true,"region":null}',
        '{"tokens":999999999999999999,"low":-999999999999999999}',
        '{"price":0.10,"tokens":5}',
        '{"nested":{"a":[1,2]}}',
        "{}",
    ],
)
def test_plain_batch_decides_flat_and_other_properties(properties: str) -> None:
    """Flat properties (checked while decoding) and decimals or nested values (checked
    over the columns) are both decided on the batch path, as specified."""
    body = (
        '[{"id":"e-1","customer":"acme","type":"t","timestamp":"2026-11-01T00:00:00Z",'
        f'"properties":{properties}}}]'
    ).encode()
    prepared = prepare_plain_batch(body, FIXED_NOW_US)
    if "nested" in properties:  # not a plain value: the specification answers
        assert prepared is None
    else:
        assert prepared is not None
        assert prepared == [prepare_event_checked(raw, FIXED_NOW_US) for raw in decode_exact(body)]


def test_plain_batch_takes_the_common_batch() -> None:
    """The batch path answers for a plain batch (else it would only ever fall back)."""
    events = [
        {
            "id": f"e-{number}",
            "customer": "acme",
            "type": "llm.completion",
            "timestamp": "2026-11-23T13:00:00+01:00",
            "properties": {"model": "gpt-4o", "input_tokens": number, "price": Decimal("0.10")},
        }
        for number in range(3)
    ]
    body = to_json(events).encode()
    prepared = prepare_plain_batch(body, FIXED_NOW_US)
    assert prepared is not None and len(prepared) == 3
    assert prepared[0].body == (
        b'{"customer":"acme","id":"e-0","properties":{"input_tokens":0,"model":"gpt-4o",'
        b'"price":0.10},"timestamp":"2026-11-23T12:00:00Z","type":"llm.completion"}'
    )
    assert prepared == [prepare_event_checked(raw, FIXED_NOW_US) for raw in decode_exact(body)]


@pytest.mark.parametrize(
    "body",
    [
        b'[{"id":"a","id":"b","customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z",'
        b'"properties":{}}]',
        b'[{"id":5,"id":"b","customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z",'
        b'"properties":{}}]',
        b'[{"id":"a","id":5,"customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z",'
        b'"properties":{}}]',
        b'[{"id":"a","customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z",'
        b'"properties":{"n":1,"n":"x","e":1E3,"z":-0,"f":-0.0,"g":1e-10,"h":1e-11,'
        b'"big":100000000000000000000,"bigger":1e400}}]',
        b' [ {"id" : "a" , "customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z",'
        b'"properties":{"k\\u0000":1}} ] ',
        b'[{"id":"a","customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z",'
        b'"properties":{"k":"\\ud800"}}]',
        b'[{"id":"a","customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z",'
        b'"properties":{"k":"\\\\u0000"}}]',
        b'[{"id":"a","customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z",'
        b'"properties":null}]',
        b'{"id":"a","customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z","properties":{}}',
        b"[]",
        b"[",
        b"",
        b"[" + b"[" * 70 + b"]" * 71,
    ],
)
def test_odd_bodies_answer_as_the_specification(body: bytes) -> None:
    assert compiled(body) == specification(body)
    assert compiled(body, "c") == specification(body, "c")


def test_a_batch_over_the_event_limit_is_refused_as_specified() -> None:
    event = (
        '{"id":"a","customer":"c","type":"t","timestamp":"2026-11-01T00:00:00Z","properties":{}}'
    )
    body = ("[" + ",".join([event] * (DEFAULT_LIMITS.batch_events_max + 1)) + "]").encode()
    answer = compiled(body)
    assert answer == specification(body)
    assert isinstance(answer, tuple) and answer[0].__name__ == "BatchTooLarge"
