"""The batch path of decoded events (``core.dict_batches.prepare_dict_batch``, what
``Ledger.ingest`` runs) answers exactly what the specification does: each event prepared
by ``prepare_event_checked``, the same canonical bytes for an accepted event and the same
errors for a rejected one. Checked over generated batches of plainly valid events with
now and then one gone wrong, events of any parts, and values only Python can hold
(datetimes, subclasses of str, int and dict, floats, tuples)."""

from __future__ import annotations

import enum
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.bench.workload import synthetic_events
from meterline.core.dict_batches import prepare_dict_batch
from meterline.core.events import prepare_event_checked
from meterline.core.limits import DEFAULT_LIMITS, IngestLimits
from meterline.ledger.event_ledger import Ledger
from tests.conftest import FIXED_NOW_US
from tests.property.test_event_batch_path import plain_events
from tests.property.test_ingest_laws import raw_events


class Text(str):
    """A str subclass: the specification refuses it as a name and as a value."""


class Level(enum.IntEnum):
    LOW = 1


python_values = st.one_of(
    st.sampled_from(
        [
            Text("acme"),
            Level.LOW,
            True,
            None,
            1.5,
            float("nan"),
            (1, 2),
            10**18 - 1,
            -(10**18) + 1,
            Decimal("0.0000000001"),
            Decimal("NaN"),
        ]
    ),
    st.floats(),
)
python_timestamps = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.sampled_from([timezone(timedelta(hours=2)), UTC])),
    st.datetimes(),
)


@st.composite
def python_events(draw: st.DrawFn) -> Any:
    """A plain event with, now and then, one part only a Python caller could send."""
    event = draw(plain_events())
    if type(event) is not dict:
        return event
    choice = draw(st.integers(0, 7))
    if choice == 0:
        event["properties"] = dict(event.get("properties") or {}, odd=draw(python_values))
    elif choice == 1:
        event["timestamp"] = draw(python_timestamps)
    elif choice == 2:
        event[draw(st.sampled_from(["id", "customer", "type"]))] = Text("x")
    elif choice == 3:
        event = OrderedDict(event)
    elif choice == 4:
        event["properties"] = {Text("name"): 1}
    return event


names = st.one_of(
    st.sampled_from(["evt-1", "acme", "llm.completion", "é", "日本", "a b", " x", "\\u0000"]),
    st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=12),
)
utc_timestamps = st.datetimes(datetime(1, 1, 2), datetime(2026, 11, 22), timezones=st.just(UTC))


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A plainly valid event as a Python caller builds it (a timestamp spelled in UTC or
    an aware datetime), its property values any scalar the batch path decides."""
    moment = draw(utc_timestamps)
    return {
        "id": draw(names),
        "customer": draw(st.one_of(st.just("acme"), names)),
        "type": draw(names),
        "timestamp": draw(st.sampled_from([moment, moment.isoformat(), f"{moment:%FT%T.%fZ}"])),
        "properties": draw(
            st.dictionaries(
                names,
                st.one_of(
                    names,
                    st.integers(-(10**18), 10**18),
                    st.decimals(allow_nan=False, places=draw(st.integers(8, 11))),
                    st.booleans(),
                    st.none(),
                ),
                max_size=4,
            )
        ),
    }


batches = st.one_of(
    st.lists(valid_events(), max_size=6),
    st.lists(st.one_of(valid_events(), valid_events(), valid_events(), python_events())),
    st.lists(python_events(), max_size=6),
    st.lists(plain_events(), max_size=6),
    st.lists(st.one_of(plain_events(), python_events(), raw_events()), max_size=6),
)


def specification(events: list[Any], limits: IngestLimits = DEFAULT_LIMITS) -> list[Any]:
    return [prepare_event_checked(event, FIXED_NOW_US, limits) for event in events]


@settings(max_examples=1500, deadline=None)
@given(events=batches)
def test_the_dict_batch_path_answers_as_the_specification(events: list[Any]) -> None:
    assert prepare_dict_batch(events, FIXED_NOW_US) == specification(events)


@settings(max_examples=300, deadline=None)
@given(events=batches, only_customer=st.sampled_from([None, "acme"]))
def test_ledger_prepare_batch_answers_as_with_the_specification(
    events: list[Any], only_customer: str | None
) -> None:
    ledger = Ledger(store=None, clock=lambda: FIXED_NOW_US)  # type: ignore[arg-type]
    assert ledger.prepare_batch(events, only_customer=only_customer) == ledger.prepare_batch(
        events, prepare_event_checked, only_customer
    )


def test_the_batch_path_takes_the_common_batch() -> None:
    """A batch of plainly valid events is decided at once (else the path would only ever
    fall back), with the specification's bytes."""
    from meterline.core import dict_batches

    events = synthetic_events(50)
    events[0]["properties"].update(price=Decimal("0.10"), cached=True, region=None)
    prepared = dict_batches._plain_batch(events, FIXED_NOW_US, DEFAULT_LIMITS)
    assert prepared is not None and prepared == specification(events)


def test_tighter_limits_are_the_limits_checked() -> None:
    """The batch path reads its bounds from the limits given, as the specification does."""
    limits = IngestLimits(id_length_max=4, number_integer_digits_max=3)
    events = [
        {
            "id": "e-1",
            "customer": "acme",
            "type": "t",
            "timestamp": datetime(2026, 11, 1, tzinfo=UTC),
            "properties": {"n": 999},
        },
        {
            "id": "e-12",
            "customer": "acme",
            "type": "t",
            "timestamp": "2026-11-01T00:00:00Z",
            "properties": {"n": -999},
        },
    ]
    assert prepare_dict_batch(events, FIXED_NOW_US, limits) == specification(events, limits)
    events[1]["id"] = "e-123"
    events[0]["properties"]["n"] = 1000
    answer = prepare_dict_batch(events, FIXED_NOW_US, limits)
    assert answer == specification(events, limits)
    assert all(type(item) is list for item in answer)
