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

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

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


def parse_timestamp(value: object) -> datetime | str:
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
    moment = parse_timestamp(raw.get("timestamp"))
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
