"""The batch path of decoded native events: a whole list of Python dicts checked at once.

Owns ``prepare_dict_batch``, what ``Ledger.ingest`` of Python dicts runs. One
``msgspec.convert`` of the list into ``core.events.plain_event_type`` Structs checks in C
what it can (exactly the native fields, the texts' types and lengths, the timestamps
parsed; the properties are taken as they are, uncopied); every check left is then made
once over a column of the whole batch (``map``, ``join`` and sets, in C) instead of once
per event in Python. It answers only when every event of the batch is plainly valid. Any
other batch is prepared event by event by ``core.events.prepare_event``, whose own fast
path hands whatever it is not sure of to ``prepare_event_checked``, the specification; so
the answer, errors included, is always the specification's
(tests/property/test_dict_batch_path.py). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal
from itertools import chain, compress, repeat
from operator import attrgetter, floordiv, sub
from typing import Any

import msgspec

from meterline.core.events import (
    CANONICAL_ENCODER,
    EPOCH,
    ESCAPED_NUL,
    ONE_MICROSECOND,
    FieldError,
    PreparedEvent,
    decimal_fits,
    plain_event_type,
    prepare_event,
)
from meterline.core.limits import DEFAULT_LIMITS, IngestLimits

_PLAIN_VALUE_TYPES = frozenset((str, int, Decimal, bool, type(None)))
"""The exact types of a property value the batch path decides (a name must be a ``str``):
scalars the specification accepts once within bounds. A subclass (an ``IntEnum``, a
``str`` subclass), a float, a list or a nested object goes event by event."""
_ONLY_DICTS = {dict}
_ONLY_TEXT = {str}
_ONLY_UTC = {UTC}
_encode = CANONICAL_ENCODER.encode
_new_tuple = tuple.__new__
_is_int = int.__instancecheck__
_is_decimal = Decimal.__instancecheck__
_ids = attrgetter("id")
_customers = attrgetter("customer")
_types = attrgetter("type")
_properties = attrgetter("properties")
_timestamps = attrgetter("timestamp")
_zones = attrgetter("tzinfo")


def prepare_dict_batch(
    events: Sequence[object], now_us: int, limits: IngestLimits = DEFAULT_LIMITS
) -> list[PreparedEvent | list[FieldError]]:
    """Every event of ``events`` validated against ``now_us``, in order: its
    ``PreparedEvent`` or the errors refusing it, exactly as ``prepare_event_checked``
    answers each (the batch at once when all are plainly valid, else event by event)."""
    prepared = _plain_batch(events, now_us, limits)
    if prepared is None:
        return [prepare_event(event, now_us, limits) for event in events]
    return prepared  # type: ignore[return-value]


def _plain_batch(
    events: Sequence[object], now_us: int, limits: IngestLimits
) -> list[PreparedEvent] | None:
    """Every event prepared when each is a plainly valid native event; None as soon as a
    check over the batch fails (the caller then prepares the events one by one)."""
    if not events:
        return []
    if set(map(type, events)) != _ONLY_DICTS:  # a Mapping or a dict subclass: one by one
        return None
    plain_event = plain_event_type(
        limits.id_length_max, limits.customer_length_max, limits.type_length_max, Any
    )
    try:
        structs = msgspec.convert(events, list[plain_event])  # type: ignore[valid-type]
    except (msgspec.ValidationError, UnicodeEncodeError):
        return None
    ids = list(map(_ids, structs))
    customers = list(map(_customers, structs))
    types = list(map(_types, structs))
    if not _plain_texts([*ids, *customers, *types]):
        return None
    properties = list(map(_properties, structs))
    if set(map(type, properties)) != _ONLY_DICTS or not _plain_properties(properties, limits):
        return None
    moments = list(map(_timestamps, structs))
    if set(map(_zones, moments)) != _ONLY_UTC:  # an offset or a naive datetime
        return None
    timestamps_us = list(map(floordiv, map(sub, moments, repeat(EPOCH)), repeat(ONE_MICROSECOND)))
    if max(timestamps_us) > now_us + limits.future_skew_us:
        return None
    try:
        bodies = list(map(_encode, structs))
    except UnicodeEncodeError:  # a lone surrogate in a property
        return None
    # a NUL anywhere in the properties is escaped as \u0000 (as in prepare_event)
    if max(map(len, bodies)) > limits.event_bytes_max or ESCAPED_NUL in b"".join(bodies):
        return None
    rows = zip(customers, ids, types, timestamps_us, bodies, strict=True)
    return list(map(_new_tuple, repeat(PreparedEvent), rows))


def _plain_texts(texts: list[Any]) -> bool:
    """Whether every ``id``, ``customer`` and ``type`` (already 1 to their limit long) is
    a ``str`` that is printable (no control character, no lone surrogate) and not blank."""
    return (
        set(map(type, texts)) == _ONLY_TEXT
        and "".join(texts).isprintable()
        and not any(map(str.isspace, texts))
    )


def _plain_properties(properties: list[dict[str, Any]], limits: IngestLimits) -> bool:
    """Whether every property name is a ``str`` and every value a scalar the
    specification accepts: text (NUL and lone surrogates are caught on the encoded
    bytes), a bool, null, or a number within ``limits``' digits."""
    names = set(map(type, chain.from_iterable(properties)))
    if names and names != _ONLY_TEXT:
        return False
    values = list(chain.from_iterable(map(dict.values, properties)))
    kinds = set(map(type, values))
    if not kinds <= _PLAIN_VALUE_TYPES:
        return False
    if int in kinds:  # bools are ints too, and always within the bound
        integers = list(compress(values, map(_is_int, values)))
        bound = limits.number_integer_bound
        if max(integers) >= bound or min(integers) <= -bound:
            return False
    if Decimal in kinds:
        for value in compress(values, map(_is_decimal, values)):
            if not decimal_fits(value, limits):
                return False
    return True
