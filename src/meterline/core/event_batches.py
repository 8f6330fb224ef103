"""The batch paths of event preparation: a whole batch of plain native events decoded
into typed msgspec Structs and checked column by column in compiled code, answering
exactly what ``core.events.prepare_event_checked`` answers event by event (which decides
every event these paths cannot: see ``tests/property/test_event_batch_path.py``). Pure.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain, compress, repeat
from operator import attrgetter, floordiv, sub
from typing import Annotated, Any

import msgspec

from meterline.core.events import (
    CANONICAL_ENCODER,
    EPOCH,
    ESCAPED_NUL,
    ONE_MICROSECOND,
    PreparedEvent,
    decimal_fits,
)
from meterline.core.limits import DEFAULT_LIMITS, IngestLimits

_encode = CANONICAL_ENCODER.encode
_new_tuple = tuple.__new__
_PLAIN_VALUE_TYPES = frozenset((str, int, Decimal, bool, type(None)))
"""The exact types of a property value the batch paths decide (a name must be a ``str``):
scalars the specification accepts once within bounds. A subclass (an ``IntEnum``, a
``str`` subclass), a float, a list or a nested object goes event by event."""
_ONLY_DICTS = {dict}
_ONLY_TEXT = {str}
_ONLY_UTC = {UTC}
_is_int = int.__instancecheck__
_is_decimal = Decimal.__instancecheck__
_ids = attrgetter("id")
_customers = attrgetter("customer")
_types = attrgetter("type")
_properties = attrgetter("properties")
_timestamps = attrgetter("timestamp")
_zones = attrgetter("tzinfo")


PLAIN_DECODERS_MAX = 8
"""Typed batch decoders kept, one per set of text length limits (a process has one or two)."""


@functools.lru_cache(maxsize=PLAIN_DECODERS_MAX)
def plain_event_type(
    id_max: int, customer_max: int, type_max: int, properties: Any = dict[str, Any]
) -> Any:
    """The Struct of one plain native event under these text length limits.

    Exactly the native fields, each present and of its type (texts of 1 to their limit
    in characters, ``properties`` as given: ``Any`` takes a decoded value as it is,
    uncopied and unchecked), nothing else; the fields are in canonical (alphabetical) order, so
    that the canonical encoder (``order="sorted"``) spells one as
    ``prepare_event_checked``'s document. Never collected by the GC (it holds no cycle of
    its own)."""

    def text(length_max: int) -> Any:
        return Annotated[str, msgspec.Meta(min_length=1, max_length=length_max)]

    return msgspec.defstruct(
        "PlainEvent",
        [
            ("customer", text(customer_max)),
            ("id", text(id_max)),
            ("properties", properties),
            ("timestamp", datetime),
            ("type", text(type_max)),
        ],
        forbid_unknown_fields=True,
        gc=False,
    )


INT64_BOUND = 2**63
"""Integers a compiled bound check can compare with: msgspec's integer constraints must
fit an int64, so a bound past it leaves the check to Python."""


def _scalar_properties(integer_bound: int) -> Any:
    """The ``properties`` type whose decoding checks them all in C: names are texts and
    every value is a text, a bool, null or an integer below ``integer_bound`` in absolute
    value (exactly the flat properties the specification accepts but for text holding NUL
    or a lone surrogate, which the encoded bytes show). None past an int64."""
    if integer_bound > INT64_BOUND:
        return None
    integer = Annotated[int, msgspec.Meta(gt=-integer_bound, lt=integer_bound)]
    return dict[str, str | integer | bool | None]


@functools.lru_cache(maxsize=PLAIN_DECODERS_MAX)
def _plain_batch_decoders(
    id_max: int, customer_max: int, type_max: int, integer_bound: int
) -> tuple[msgspec.json.Decoder[list[Any]] | None, msgspec.json.Decoder[list[Any]]]:
    """The typed decoders of a JSON array of plain native events (``plain_event_type``):
    one whose properties are checked while decoding (``_scalar_properties``; None when
    the integer bound does not fit an int64), and one taking any properties object."""
    scalar = _scalar_properties(integer_bound)
    scalar_decoder = None
    if scalar is not None:
        scalar_event = plain_event_type(id_max, customer_max, type_max, scalar)
        scalar_decoder = msgspec.json.Decoder(list[scalar_event], float_hook=Decimal)  # type: ignore[valid-type]
    plain_event = plain_event_type(id_max, customer_max, type_max)
    any_decoder = msgspec.json.Decoder(list[plain_event], float_hook=Decimal)  # type: ignore[valid-type]
    return scalar_decoder, any_decoder


def prepare_plain_batch(
    body: bytes, now_us: int, limits: IngestLimits = DEFAULT_LIMITS
) -> list[PreparedEvent] | None:
    """Every event of the JSON array ``body`` prepared, in order, when each is a plainly
    valid native event; None as soon as anything is not (the caller then decodes the body
    generically and prepares it event by event, down to ``prepare_event_checked``).

    The batch path of ``prepare_event``: one typed decode in C (types, required and
    unknown fields, timestamps; flat properties of texts, bools, nulls and integers within
    bounds too), then the checks left over columns of the whole batch
    (``prepare_plain_structs``). A body whose properties that decode refuses (a decimal,
    a nested value, an integer out of bounds) is decoded again with any properties, which
    the columns then check. Whatever it returns is exactly what ``prepare_event_checked``
    gives for each event (tested). Call it on a body whose nesting is already bounded
    (``api.bodies.check_nesting``).
    """
    scalar_decoder, any_decoder = _plain_batch_decoders(
        limits.id_length_max,
        limits.customer_length_max,
        limits.type_length_max,
        limits.number_integer_bound,
    )
    events = None if scalar_decoder is None else _decode_or_none(scalar_decoder, body)
    properties_checked = events is not None
    if events is None:
        events = _decode_or_none(any_decoder, body)
        if events is None:
            return None
    # a NUL in a decoded text arrives escaped as \u0000: a body without it holds none
    return prepare_plain_structs(events, now_us, limits, ESCAPED_NUL in body, properties_checked)


def _decode_or_none(decoder: msgspec.json.Decoder[list[Any]], body: bytes) -> list[Any] | None:
    """``body`` decoded by ``decoder``, or None when it does not decode to that type."""
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, UnicodeEncodeError):
        return None


def prepare_plain_structs(
    events: list[Any],
    now_us: int,
    limits: IngestLimits,
    nul_possible: bool = True,
    properties_checked: bool = False,
) -> list[PreparedEvent] | None:
    """Every event of ``events`` (``plain_event_type`` Structs, decoded or converted, so
    their fields, text types and lengths are checked) prepared, in order, when each is a
    plainly valid native event; None as soon as a check over the batch fails.

    Each check left is made once over a column of the whole batch (``map``, ``join`` and
    sets, in C) rather than once per event in Python. An offset timestamp is moved to UTC
    on its Struct (so it encodes as the specification's document does). With
    ``nul_possible`` false (the JSON text held no escaped NUL) the encoded bytes are not
    searched for one. With ``properties_checked`` the decoder has already checked the
    properties (``_scalar_properties``).
    """
    if not events:
        return []
    ids = list(map(_ids, events))
    customers = list(map(_customers, events))
    types = list(map(_types, events))
    if not _plain_texts([*ids, *customers, *types]):
        return None
    if not properties_checked:
        properties = list(map(_properties, events))
        if set(map(type, properties)) != _ONLY_DICTS or not _plain_properties(properties, limits):
            return None
    moments = list(map(_timestamps, events))
    if set(map(_zones, moments)) != _ONLY_UTC and not _to_utc(events, moments):
        return None
    timestamps_us = list(map(floordiv, map(sub, moments, repeat(EPOCH)), repeat(ONE_MICROSECOND)))
    if max(timestamps_us) > now_us + limits.future_skew_us:
        return None
    try:
        bodies = list(map(_encode, events))
    except UnicodeEncodeError:  # a lone surrogate in a property (not from JSON text)
        return None
    # a NUL anywhere in the properties is escaped as \u0000 (as in prepare_event)
    if max(map(len, bodies)) > limits.event_bytes_max or (
        nul_possible and ESCAPED_NUL in b"".join(bodies)
    ):
        return None
    rows = zip(customers, ids, types, timestamps_us, bodies, strict=True)
    return list(map(_new_tuple, repeat(PreparedEvent), rows))


def _to_utc(events: list[Any], moments: list[datetime]) -> bool:
    """Move every timestamp with an offset to UTC, on its Struct and in ``moments``, as
    the specification does (``parse_timestamp``); False for a naive one or one before
    year 1 in UTC (the specification answers those)."""
    for position, moment in enumerate(moments):
        if moment.tzinfo is UTC:
            continue
        offset = moment.utcoffset()
        if offset is None:
            return False
        if offset:
            try:
                moment = (moment - offset).replace(tzinfo=UTC)
            except OverflowError:
                return False
        else:
            moment = moment.replace(tzinfo=UTC)
        moments[position] = events[position].timestamp = moment
    return True


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
