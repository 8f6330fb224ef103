"""Request bodies: content-type negotiation and JSON decoding with clear errors.

Which shape a POST carries is decided by its media type alone (and ``ce-*`` headers for
CloudEvents binary mode, whose body is JSON data when no content type is given); the
decoder keeps every decimal digit; malformed JSON is reported with its byte position,
line and column. Nesting deeper than ``JSON_NESTING_LEVELS_MAX`` is refused before
anything decodes it (decoders recurse once per level, and a body of a thousand ``[``
would exhaust the stack). ``prepare_body`` takes a native JSON batch through the compiled
batch path when it can, and answers exactly as ``parse_body`` then ``prepare_batch``.
``valid_event_partition`` answers whether a batch has a valid event in some partitions
(those lagging: stream mode refuses the batch, ``api.stream_front``) deciding only as
few events as it needs; whenever it is not sure it answers None and the batch is
prepared whole, as any other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

import msgspec

from meterline.config.source import YAML_NESTING_LEVELS_MAX, yaml_too_deep
from meterline.core.cloudevents import (
    binary_mode_envelope,
    is_json_content_type,
    prepare_cloudevent,
)
from meterline.core.events import PreparedEvent, decode_exact, prepare_event
from meterline.core.outcomes import EventOutcome
from meterline.errors import MalformedJSON, NestingTooDeep, UnsupportedContentType
from meterline.ledger.event_ledger import Ledger

Shape = Literal["native", "cloudevents"]
NATIVE_TYPES = ("application/json",)
CLOUDEVENT_TYPE = "application/cloudevents+json"
CLOUDEVENT_BATCH_TYPE = "application/cloudevents-batch+json"
ACCEPTED_TYPES = (*NATIVE_TYPES, CLOUDEVENT_TYPE, CLOUDEVENT_BATCH_TYPE)
_BYTE_POSITION = re.compile(r"\(byte (\d+)\)")

JSON_NESTING_LEVELS_MAX = 64
"""The deepest nesting of arrays and objects a JSON body may have, in levels: ``[]`` is one
level, a batch of events with nested properties ``[{"properties": {"a": [1]}}]`` is four."""

_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in b'"[]{}')
_LEVEL_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_SHALLOW_ROUNDS = 4


EARLY_DECISIONS_MAX = 16
"""Events ``valid_event_partition`` prepares at most before it gives up (and the batch is
prepared whole): a batch whose events to lagging partitions are invalid costs little."""


class _Customer(msgspec.Struct, gc=False):
    """Only the ``customer`` of a native event (other fields skipped, any type kept)."""

    customer: Any = None


_CUSTOMERS = msgspec.json.Decoder(list[_Customer])
_ELEMENTS = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A decoded POST body: which shape, and the list of raw events in it."""

    shape: Shape
    events: list[Any]


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _structure(body: bytes) -> bytes:
    """The brackets and braces of ``body`` outside its strings, in order."""
    if b"\\" in body:
        # escapes first: an escaped backslash, then an escaped quote, never end a string
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Keep quotes and brackets only. Two adjacent quotes are an empty string, or the end
    # of one string and the start of the next with nothing between: dropping them changes
    # no bracket's place inside or outside a string.
    kept = body.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[0::2])  # the even parts are outside strings
    return kept


def nesting_levels(body: bytes) -> int:
    """How deeply the arrays and objects of the JSON text ``body`` nest (0 for a scalar),
    read from its bytes without decoding it. Malformed text gives some number; the
    decoder reports what is wrong with it."""
    return max(accumulate(map(_LEVEL_STEP.__getitem__, _structure(body))), default=0)


def check_nesting(body: bytes, limit: int = JSON_NESTING_LEVELS_MAX) -> None:
    """Refuse (``NestingTooDeep``) a JSON body nested deeper than ``limit`` levels."""
    if len(body) <= limit:
        return  # cannot nest deeper than it has bytes
    structure = _structure(body)
    # Fast path: a shallow document empties in a few rounds of removing innermost pairs
    # (each round removes one or two levels), far cheaper than counting every bracket.
    rest = structure
    for _ in range(min(_SHALLOW_ROUNDS, limit // 2)):
        shorter = rest.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(rest):
            break
        rest = shorter
    if not rest:
        return
    levels = max(accumulate(map(_LEVEL_STEP.__getitem__, structure)), default=0)
    if levels > limit:
        raise NestingTooDeep(
            f"JSON nests arrays and objects {levels} levels deep;"
            f" the limit is {limit} (JSON_NESTING_LEVELS_MAX)"
        )


def check_yaml_nesting(text: str, limit: int = YAML_NESTING_LEVELS_MAX) -> None:
    """Refuse (``NestingTooDeep``) YAML nested deeper than ``limit`` levels
    (``config.source.yaml_too_deep``, which the pricing reader applies too)."""
    too_deep = yaml_too_deep(text, limit)
    if too_deep is not None:
        raise NestingTooDeep(too_deep)


def nul_field(body: bytes) -> str | None:
    """Where the JSON text ``body`` has a string (or key) holding NUL (U+0000), as a path
    like ``reason`` or ``scope[2]``; None if it has none (or is not JSON). PostgreSQL
    cannot store NUL in text, so the API refuses it in every body but the events'
    (``core.events`` answers for those, per event). Call after ``check_nesting``."""
    if b"\\u0000" not in body:
        return None
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return _nul_path(document, "")


def _nul_path(value: Any, path: str) -> str | None:
    if type(value) is str:
        return (path or "body") if "\x00" in value else None
    if type(value) is list:
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    elif type(value) is dict:
        for key, item in value.items():
            name = f"{path}.{key}" if path else key
            if "\x00" in key:
                return name
            found = _nul_path(item, name)
            if found is not None:
                return found
    return None


def decode_json(body: bytes) -> Any:
    """Decode ``body`` exactly, or raise ``MalformedJSON`` with the position
    (``NestingTooDeep`` past ``JSON_NESTING_LEVELS_MAX``)."""
    check_nesting(body)
    try:
        return decode_exact(body)
    except msgspec.DecodeError as error:
        message = str(error)
        found = _BYTE_POSITION.search(message)
        # Truncated or empty input names no byte: the problem is at the end of the body.
        position = int(found.group(1)) if found else len(body)
        line = body.count(b"\n", 0, position) + 1
        column = position - (body.rfind(b"\n", 0, position) + 1) + 1
        message = f"{message} at line {line}, column {column}"
        raise MalformedJSON(message, position) from None


def parse_body(content_type: str | None, headers: Mapping[str, str], body: bytes) -> ParsedBody:
    """The events in a POST body, by its content type; raises on a body refused whole."""
    kind = media_type(content_type)
    if "ce-specversion" in headers:
        # No content type reads as JSON (the data's type defaults to JSON); an empty body
        # is an event without data.
        if not is_json_content_type(kind):
            raise UnsupportedContentType(
                f"CloudEvents binary mode needs JSON data, got content type {kind!r}"
            )
        data = decode_json(body) if body.strip() else None
        return ParsedBody("cloudevents", [binary_mode_envelope(headers, data)])
    if kind not in ACCEPTED_TYPES:
        raise UnsupportedContentType(
            f"content type {kind or 'none'!r} is not accepted; "
            f"use one of {', '.join(ACCEPTED_TYPES)}"
        )
    document = decode_json(body)
    if kind == CLOUDEVENT_TYPE:
        return ParsedBody("cloudevents", [document])
    if kind == CLOUDEVENT_BATCH_TYPE:
        if type(document) is not list:
            raise MalformedJSON("a CloudEvents batch must be a JSON array", None)
        return ParsedBody("cloudevents", document)
    return ParsedBody("native", document if type(document) is list else [document])


def prepare_body(
    ledger: Ledger,
    content_type: str | None,
    headers: Mapping[str, str],
    body: bytes,
    only_customer: str | None,
) -> tuple[list[tuple[int, PreparedEvent]], list[EventOutcome], int]:
    """The events of a POST body validated (``Ledger.prepare_batch``'s answer), or the
    error refusing the body whole, exactly as ``parse_body`` then ``prepare_batch``.

    A native JSON body goes first to the compiled batch path (``Ledger.prepare_plain``);
    any body that path is not sure of is parsed and prepared event by event.
    """
    if "ce-specversion" not in headers and media_type(content_type) in NATIVE_TYPES:
        check_nesting(body)
        prepared = ledger.prepare_plain(body, only_customer)
        if prepared is not None:
            return prepared
    parsed = parse_body(content_type, headers, body)
    native = parsed.shape == "native"
    return ledger.prepare_batch(
        parsed.events,
        prepare_event if native else prepare_cloudevent,
        only_customer,
        "customer" if native else "subject",
    )


def valid_event_partition(
    ledger: Ledger,
    content_type: str | None,
    headers: Mapping[str, str],
    body: bytes,
    only_customer: str | None,
    partition_of: Callable[[str], int],
    partitions: Sequence[int],
) -> int | None:
    """The first of ``partitions`` (in their order) that a valid event of the native JSON
    batch ``body`` goes to, as ``prepare_body`` would find it valid: the batch refused
    whole by nothing before (content type, nesting, JSON, event count), its event
    prepared (``prepare_event``, the customer ``only_customer``'s if given). Events are
    read in order and one is prepared only when it names a customer of a partition
    before the best found so far, at most ``EARLY_DECISIONS_MAX`` of them; the first
    partition found ends the search. None when no event is found, or the body is not
    such a batch, or the count runs out: nothing is known then."""
    if "ce-specversion" in headers or media_type(content_type) not in NATIVE_TYPES:
        return None
    try:
        check_nesting(body)
        customers = _CUSTOMERS.decode(body)
    except (NestingTooDeep, msgspec.DecodeError):
        return None
    if len(customers) > ledger.limits.batch_events_max:
        return None
    rank_of = {partition: rank for rank, partition in enumerate(partitions)}
    best, decisions = len(partitions), 0
    elements: list[msgspec.Raw] | None = None
    now_us = ledger.clock()
    for index, entry in enumerate(customers):
        customer = entry.customer
        if type(customer) is not str or only_customer not in (None, customer):
            continue
        rank = rank_of.get(partition_of(customer), best)
        if rank >= best:
            continue
        if decisions == EARLY_DECISIONS_MAX:
            return None
        decisions += 1
        if elements is None:
            elements = _ELEMENTS.decode(body)
        # a valid event's customer is the text it names, hence this partition
        prepared = prepare_event(decode_exact(elements[index]), now_us, ledger.limits)
        if type(prepared) is PreparedEvent:
            best = rank
            if rank == 0:
                break
    return partitions[best] if best < len(partitions) else None
