"""Usage events: validation and canonical bytes.

Owns the native event shape ``{id, customer, type, timestamp, properties}`` (plus an
optional CloudEvents ``source``) and turns one raw event into either a ``PreparedEvent``
or the list of ``FieldError`` saying why not. Invariants: the canonical bytes of an
accepted event are a deterministic function of its content (keys sorted at every depth,
timestamp in UTC, numbers with exactly the decimal digits they arrived with), so the same
event always hashes the same; no non-finite number, naive timestamp or non-object
properties is ever accepted. Everything accepted can be stored and billed the same way on
every store: numbers fit ``IngestLimits``' digits (so rating stays exact), no text holds
NUL or a lone surrogate (PostgreSQL text cannot hold NUL, UTF-8 cannot hold a surrogate),
and ``id``, ``customer``, ``type`` and ``source`` hold no control character at all. This
module is on the ingest hot path: it is written for speed (type identity checks, one
pass) and stays pure. Its fast paths, ``prepare_event`` (one decoded event),
``prepare_plain_batch`` (a whole JSON body, decoded typed) and
``core.dict_batches.prepare_dict_batch`` (a list of decoded events), answer only what
``prepare_event_checked``, the specification, would; anything else goes to it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain, compress, repeat
from operator import attrgetter, floordiv, sub
from typing import Annotated, Any, NamedTuple

import msgspec

from meterline.core.limits import DEFAULT_LIMITS, IngestLimits

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The instant timestamps count from: ``(moment - EPOCH) // ONE_MICROSECOND``."""
ONE_MICROSECOND = timedelta(microseconds=1)
CANONICAL_ENCODER = msgspec.json.Encoder(order="sorted", decimal_format="number")
"""The encoder of canonical bytes: sorted keys, no whitespace, Decimals as exact numbers."""
_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_encode = CANONICAL_ENCODER.encode
_convert = msgspec.convert
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
_NATIVE_FIELDS = frozenset(("id", "customer", "type", "timestamp", "properties", "source"))
_NAME_FORBIDDEN = re.compile("[\x00-\x1f\ud800-\udfff]")
"""What ``id``, ``customer``, ``type`` and ``source`` may not contain: C0 control
characters (U+0000-U+001F) and lone surrogates."""
_TEXT_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
"""What no property name or string value may contain: NUL and lone surrogates."""
ESCAPED_NUL = b"\\u0000"
"""How canonical bytes spell a NUL in a text; bytes without it hold no NUL (they may hold
it and no NUL: a text spelling a backslash and "u0000" is escaped to contain it too)."""


class FieldError(msgspec.Struct, frozen=True):
    """Why one field of one event was refused."""

    field: str
    reason: str


class PreparedEvent(NamedTuple):
    """A validated event with its canonical bytes, ready to be appended to the ledger."""

    customer: str
    id: str
    type: str
    timestamp_us: int
    body: bytes


def encode_canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, Decimals as exact JSON numbers."""
    return CANONICAL_ENCODER.encode(value)


def decode_exact(data: bytes) -> Any:
    """Decode JSON keeping every decimal digit: non-integer numbers become ``Decimal``."""
    return _DECODER.decode(data)


def timestamp_to_us(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch (UTC)."""
    if moment.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    return (moment - EPOCH) // ONE_MICROSECOND


def us_to_timestamp(instant_us: int) -> datetime:
    """Integer microseconds since the Unix epoch as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=instant_us)


def format_timestamp(instant_us: int) -> str:
    """RFC 3339 text for an instant, as the canonical bytes spell it."""
    return encode_canonical(us_to_timestamp(instant_us)).decode()[1:-1]


def _parse_timestamp(value: object) -> datetime | str:
    """A timestamp value as an aware UTC datetime, or the reason it is not one."""
    if type(value) is str:
        try:
            moment = msgspec.convert(value, datetime)
        except (msgspec.ValidationError, UnicodeEncodeError):
            return f"{value[:64]!r} is not an RFC 3339 timestamp (e.g. 2026-11-23T14:05:00Z)"
    elif isinstance(value, datetime):
        moment = value
    elif value is None:
        return "is required"
    else:
        return f"must be an RFC 3339 string, got {type(value).__name__}"
    offset = moment.utcoffset()
    if offset is None:
        return "must include a time zone offset (Z or +hh:mm)"
    if offset:
        try:
            moment = (moment - offset).replace(tzinfo=UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            return f"{str(value)[:64]!r} is outside years 1 to 9999 in UTC"
    elif moment.tzinfo is not UTC:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _forbidden_text(found: re.Match[str], allowed: str) -> str:
    """Why text holding ``found`` (a forbidden character) is refused."""
    character = found.group()
    code = f"U+{ord(character):04X}"
    if "\ud800" <= character <= "\udfff":
        return f"holds a lone surrogate ({code}) at position {found.start()}: not Unicode text"
    return f"holds the control character {code} at position {found.start()}; {allowed}"


def decimal_fits(value: Decimal, limits: IngestLimits) -> bool:
    """Whether a Decimal is finite and within the digits ``limits`` allow (one predicate
    for both paths, so they agree)."""
    if not value.is_finite():
        return False
    if value.as_tuple().exponent < -limits.number_decimal_places_max:  # type: ignore[operator]
        return False
    return not value or value.adjusted() < limits.number_integer_digits_max


def _number_error(value: int | Decimal, limits: IngestLimits) -> str | None:
    """Why a number cannot be billed exactly, or None when it can (the reasons behind
    ``decimal_fits`` and the integer bound)."""
    integer_digits = limits.number_integer_digits_max
    too_large = (
        f"is too large: numbers must be below 10**{integer_digits} in absolute value"
        f" (at most {integer_digits} digits before the decimal point)"
    )
    if type(value) is int:
        bound = limits.number_integer_bound
        return None if -bound < value < bound else too_large
    assert type(value) is Decimal
    if not value.is_finite():
        return f"{value} is not a finite number"
    places = -value.as_tuple().exponent  # type: ignore[operator]
    if places > limits.number_decimal_places_max:
        return (
            f"has {places} digits after the decimal point,"
            f" the limit is {limits.number_decimal_places_max}"
        )
    return None if decimal_fits(value, limits) else too_large


def _value_error(value: object, path: str, depth: int, limits: IngestLimits) -> str | None:
    """Why a property value cannot be stored and billed exactly (``path: reason``), or
    None when it can."""
    kind = type(value)
    if kind is str:
        found = _TEXT_FORBIDDEN.search(value)  # type: ignore[call-overload]
        if found is None:
            return None
        return f"{path}: {_forbidden_text(found, 'NUL cannot be stored')}"
    if kind is bool or value is None:
        return None
    if kind is int or kind is Decimal:
        reason = _number_error(value, limits)  # type: ignore[arg-type]
        return None if reason is None else f"{path}: {reason}"
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            return f"{path}: {value} is not a finite number"
        # Judged as stored: the text the canonical bytes spell it with, read back exactly.
        reason = _number_error(Decimal(_encode(value).decode()), limits)
        return None if reason is None else f"{path}: {reason}"
    if depth >= 8:
        return f"{path}: nested deeper than 8 levels"
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                return f"{path}: property names must be strings, got {type(key).__name__}"
            found = _TEXT_FORBIDDEN.search(key)
            if found is not None:
                reason = _forbidden_text(found, "NUL cannot be stored")
                return f"{path}: property name {key!r} {reason}"
            error = _value_error(item, f"{path}.{key}", depth + 1, limits)
            if error is not None:
                return error
        return None
    if kind is list:
        for position, item in enumerate(value):  # type: ignore[arg-type]
            error = _value_error(item, f"{path}[{position}]", depth + 1, limits)
            if error is not None:
                return error
        return None
    return f"{path}: {kind.__name__} is not a JSON value (use str, int or Decimal)"


def _text_error(value: object, length_max: int) -> str | None:
    if type(value) is not str:
        return "is required" if value is None else f"must be a string, got {type(value).__name__}"
    if not value or value.isspace():
        return "must not be empty"
    if len(value) > length_max:
        return f"is {len(value)} characters, the limit is {length_max}"
    found = _NAME_FORBIDDEN.search(value)
    if found is not None:
        return _forbidden_text(found, "control characters (U+0000-U+001F) are not allowed")
    return None


def event_type_error(value: object, limits: IngestLimits = DEFAULT_LIMITS) -> str | None:
    """Why ``value`` cannot be an event's ``type`` (the rule ingest applies), or None: for
    a type declared elsewhere (the pricing file's ``otel:`` block) to be checked the same."""
    return _text_error(value, limits.type_length_max)


def _field_name(key: object) -> str:
    """An unknown field's name as an error may quote it (a lone surrogate escaped)."""
    name = str(key)
    return name if _TEXT_FORBIDDEN.search(name) is None else repr(name)


def prepare_event(
    raw: object, now_us: int, limits: IngestLimits = DEFAULT_LIMITS
) -> PreparedEvent | list[FieldError]:
    """Validate one native event against ``now_us`` and return it in canonical form.

    A straight-line fast path accepts the common, plainly valid event; anything it is not
    sure of goes to ``prepare_event_checked``, which is the specification and reports every
    problem found, each naming its field. Both always give the same answer (tested).
    """
    if type(raw) is not dict or len(raw) > 5:
        return prepare_event_checked(raw, now_us, limits)
    event_id = raw.get("id")
    customer = raw.get("customer")
    event_type = raw.get("type")
    timestamp = raw.get("timestamp")
    properties = raw.get("properties")
    if (
        type(event_id) is not str
        or type(customer) is not str
        or type(event_type) is not str
        or type(timestamp) is not str
        or type(properties) is not dict
        or "source" in raw
        or not 0 < len(event_id) <= limits.id_length_max
        or not 0 < len(customer) <= limits.customer_length_max
        or not 0 < len(event_type) <= limits.type_length_max
        or event_id.isspace()
        or customer.isspace()
        or event_type.isspace()
        # printable text holds no control character and no lone surrogate
        or not event_id.isprintable()
        or not customer.isprintable()
        or not event_type.isprintable()
    ):
        return prepare_event_checked(raw, now_us, limits)
    bound = limits.number_integer_bound
    for key, value in properties.items():
        kind = type(value)
        if type(key) is not str:
            return prepare_event_checked(raw, now_us, limits)
        if kind is int:
            if not -bound < value < bound:
                return prepare_event_checked(raw, now_us, limits)
        elif kind is Decimal:
            if not decimal_fits(value, limits):
                return prepare_event_checked(raw, now_us, limits)
        elif kind is not str:
            return prepare_event_checked(raw, now_us, limits)
    try:
        moment = _convert(timestamp, datetime)
    except (msgspec.ValidationError, UnicodeEncodeError):
        return prepare_event_checked(raw, now_us, limits)
    if moment.tzinfo is not UTC:
        return prepare_event_checked(raw, now_us, limits)
    timestamp_us = (moment - EPOCH) // ONE_MICROSECOND
    if timestamp_us > now_us + limits.future_skew_us:
        return prepare_event_checked(raw, now_us, limits)
    try:
        body = _encode(
            {
                "customer": customer,
                "id": event_id,
                "properties": properties,
                "timestamp": moment,
                "type": event_type,
            }
        )
    except UnicodeEncodeError:  # a lone surrogate in a property
        return prepare_event_checked(raw, now_us, limits)
    # A NUL anywhere in the properties is escaped as \u0000 (a property that spells a
    # backslash and "u0000" also matches; the specification accepts it).
    if len(body) > limits.event_bytes_max or ESCAPED_NUL in body:
        return prepare_event_checked(raw, now_us, limits)
    return _new_tuple(PreparedEvent, (customer, event_id, event_type, timestamp_us, body))


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
    the specification does (``_parse_timestamp``); False for a naive one or one before
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


def prepare_event_checked(
    raw: object, now_us: int, limits: IngestLimits = DEFAULT_LIMITS
) -> PreparedEvent | list[FieldError]:
    """The specification of a valid event: check every field, report every problem."""
    if not isinstance(raw, Mapping):
        return [FieldError("event", f"must be a JSON object, got {type(raw).__name__}")]
    errors: list[FieldError] = []
    event_id = raw.get("id")
    customer = raw.get("customer")
    event_type = raw.get("type")
    for field, value, length_max in (
        ("id", event_id, limits.id_length_max),
        ("customer", customer, limits.customer_length_max),
        ("type", event_type, limits.type_length_max),
    ):
        reason = _text_error(value, length_max)
        if reason is not None:
            errors.append(FieldError(field, reason))
    moment = _parse_timestamp(raw.get("timestamp"))
    timestamp_us = 0
    if type(moment) is str:
        errors.append(FieldError("timestamp", moment))
    else:
        timestamp_us = (moment - EPOCH) // ONE_MICROSECOND  # type: ignore[operator]
        if timestamp_us > now_us + limits.future_skew_us:
            skew_s = limits.future_skew_us // 1_000_000
            errors.append(
                FieldError("timestamp", f"is more than {skew_s} s in the future (clock skew limit)")
            )
    properties = raw.get("properties")
    if properties is None:
        properties = {}
    elif type(properties) is not dict:
        if isinstance(properties, Mapping):
            properties = dict(properties)
        else:
            errors.append(
                FieldError("properties", f"must be an object, got {type(properties).__name__}")
            )
    if not errors:
        reason = _value_error(properties, "properties", 0, limits)
        if reason is not None:
            field, _, detail = reason.partition(": ")
            errors.append(FieldError(field, detail))
    source = raw.get("source")
    if source is not None:
        reason = _text_error(source, limits.source_length_max)
        if reason is not None:
            errors.append(FieldError("source", reason))
    if not _NATIVE_FIELDS.issuperset(raw):
        unknown = sorted(_field_name(key) for key in raw if key not in _NATIVE_FIELDS)
        errors.append(FieldError(unknown[0], "is not a field of an event (put it in properties)"))
    if errors:
        return errors
    document = {
        "customer": customer,
        "id": event_id,
        "properties": properties,
        "timestamp": moment,
        "type": event_type,
    }
    if source is not None:
        document["source"] = source
    body = CANONICAL_ENCODER.encode(document)
    if len(body) > limits.event_bytes_max:
        return [
            FieldError(
                "event", f"is {len(body)} bytes encoded, the limit is {limits.event_bytes_max}"
            )
        ]
    return PreparedEvent(customer, event_id, event_type, timestamp_us, body)  # type: ignore[arg-type]


TIMESTAMP_ORIGIN = "timestamp_origin"
"""The canonical field saying where an event's timestamp came from: ``"receipt"`` when the
ledger stamped it with the batch's clock reading (a CloudEvent without ``time``); absent
when the producer gave it."""
RECEIPT = "receipt"
_RECEIPT_MARK = b'"timestamp_origin":"receipt"'


def stamp_receipt_time(
    prepared: PreparedEvent, limits: IngestLimits = DEFAULT_LIMITS
) -> PreparedEvent | list[FieldError]:
    """``prepared`` (whose timestamp is the receipt time) with ``timestamp_origin:
    "receipt"`` in its canonical bytes, or the size error if that no longer fits."""
    document = _DECODER.decode(prepared.body)
    document[TIMESTAMP_ORIGIN] = RECEIPT
    body = _encode(document)
    if len(body) > limits.event_bytes_max:
        return [
            FieldError(
                "event", f"is {len(body)} bytes encoded, the limit is {limits.event_bytes_max}"
            )
        ]
    return prepared._replace(body=body)


def same_event(stored: bytes, arriving: bytes) -> bool:
    """Whether ``arriving`` replays the event stored as ``stored`` (a ``duplicate``, not a
    ``conflict``): the same canonical bytes or, when both were stamped at receipt, the
    same bytes but for the receipt time (a re-sent CloudEvent without ``time``)."""
    if stored == arriving:
        return True
    if _RECEIPT_MARK not in arriving or _RECEIPT_MARK not in stored:
        return False
    first, again = _DECODER.decode(stored), _DECODER.decode(arriving)
    if first.get(TIMESTAMP_ORIGIN) != RECEIPT or again.get(TIMESTAMP_ORIGIN) != RECEIPT:
        return False
    first.pop("timestamp", None)
    again.pop("timestamp", None)
    return bool(_encode(first) == _encode(again))


class _Source(msgspec.Struct):
    source: str = ""


_SOURCE_DECODER = msgspec.json.Decoder(_Source)


def source_idempotency_key(customer: str, event_id: str, source: str) -> tuple[str, str, str]:
    """An event's idempotency key on a ledger keyed by ``(source, id)``: ``(source, "",
    id)``; an event without a source (``""``, a native event) keeps its customer's
    namespace, ``("", customer, id)``, so two customers' native events never merge (a
    source is never empty, so the two kinds cannot collide)."""
    return (source, "", event_id) if source else ("", customer, event_id)


def event_source(body: bytes) -> str:
    """The ``source`` in an event's canonical bytes; ``""`` for an event without one."""
    return _SOURCE_DECODER.decode(body).source


def event_document(body: bytes) -> dict[str, Any]:
    """The event stored as ``body`` (canonical bytes), numbers decoded exactly."""
    document = _DECODER.decode(body)
    if type(document) is not dict:
        raise ValueError("canonical event body is not a JSON object")
    return document
