"""The bytes of one published batch message (pure).

A message is MessagePack ``[version, received_at_us, events]`` where each event is
``[customer, id, type, timestamp_us, body]`` (the fields of ``PreparedEvent``; ``body``
is the canonical bytes, as binary). Owns encoding, decoding, splitting a partition's
events into messages under a size limit, and the message id JetStream deduplicates on.
Invariants: decoding an encoded batch gives back equal events in the same order; a message
never exceeds its limit; the message id depends only on the format version and the events
(not on ``received_at_us``), so a client's retry of the same batch, received again later,
is dropped by JetStream inside its duplicate window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from meterline.core.events import PreparedEvent
from meterline.stream.errors import BatchDecodeError

BATCH_FORMAT_VERSION = 1
"""The version tag at the head of every message; a reader refuses any other."""

ENVELOPE_BYTES_MAX = 32
"""Bytes a message adds around its events at most: the outer array header, the version,
``received_at_us`` (at most 9 bytes each) and the events array header (at most 5)."""

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(tuple[int, int, list[PreparedEvent]])


class DecodedBatch(NamedTuple):
    """The content of one message: when the API received it and its events, in order."""

    received_at_us: int
    events: list[PreparedEvent]


class PackedMessage(NamedTuple):
    """One message ready to publish, with its ``Nats-Msg-Id``."""

    payload: bytes
    message_id: str


def _message(events_array: bytes, received_at_us: int) -> PackedMessage:
    if type(received_at_us) is not int or received_at_us < 0:
        raise ValueError(f"received_at_us must be a non-negative integer, got {received_at_us!r}")
    raw = msgspec.Raw(events_array)
    payload = _ENCODER.encode((BATCH_FORMAT_VERSION, received_at_us, raw))
    identity = _ENCODER.encode((BATCH_FORMAT_VERSION, raw))
    return PackedMessage(payload, hashlib.sha256(identity).hexdigest())


def encode_batch(events: Sequence[PreparedEvent], received_at_us: int) -> bytes:
    """One message holding every event of ``events``, whatever its size."""
    return _message(_ENCODER.encode(list(events)), received_at_us).payload


def message_id(events: Sequence[PreparedEvent]) -> str:
    """The hex SHA-256 message id of a message holding exactly ``events``."""
    return _message(_ENCODER.encode(list(events)), 0).message_id


def pack_messages(
    events: Sequence[PreparedEvent], received_at_us: int, message_bytes_max: int
) -> list[PackedMessage]:
    """``events`` in order, split into as few messages as fit ``message_bytes_max`` each.

    Greedy and deterministic: the same events and limit always give the same messages,
    hence the same message ids. ValueError if one event alone does not fit.
    """
    if not events:
        return []
    whole = _ENCODER.encode(events if type(events) is list else list(events))
    if ENVELOPE_BYTES_MAX + len(whole) <= message_bytes_max:
        # the usual case, encoded at once: every event fits and so does their sum, so
        # the greedy split below would give this one message, byte for byte
        return [_message(whole, received_at_us)]
    messages: list[PackedMessage] = []
    chunk: list[msgspec.Raw] = []
    chunk_bytes = ENVELOPE_BYTES_MAX
    for event in events:
        encoded = _ENCODER.encode(event)
        if ENVELOPE_BYTES_MAX + len(encoded) > message_bytes_max:
            raise ValueError(
                f"event {event.id!r} of customer {event.customer!r} is {len(encoded)} bytes"
                f" encoded; a message holds at most {message_bytes_max - ENVELOPE_BYTES_MAX}"
            )
        if chunk and chunk_bytes + len(encoded) > message_bytes_max:
            messages.append(_message(_ENCODER.encode(chunk), received_at_us))
            chunk = []
            chunk_bytes = ENVELOPE_BYTES_MAX
        chunk.append(msgspec.Raw(encoded))
        chunk_bytes += len(encoded)
    if chunk:
        messages.append(_message(_ENCODER.encode(chunk), received_at_us))
    return messages


def decode_batch(data: bytes) -> DecodedBatch:
    """The batch in ``data``; BatchDecodeError saying why when it is not one."""
    try:
        version, received_at_us, events = _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise BatchDecodeError(_why_not(data, error)) from None
    if version != BATCH_FORMAT_VERSION:
        raise BatchDecodeError(_version_error(version))
    return DecodedBatch(received_at_us, events)


def _version_error(version: object) -> str:
    return (
        f"batch format version {version!r}; this meterline reads version"
        f" {BATCH_FORMAT_VERSION} (upgrade the workers before the API servers)"
    )


def _why_not(data: bytes, error: Exception) -> str:
    """The clearest reason ``data`` is not a batch this version reads."""
    try:
        loose = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return f"not a meterline batch: {len(data)} bytes of invalid MessagePack ({error})"
    if type(loose) is list and loose and type(loose[0]) is int and loose[0] != BATCH_FORMAT_VERSION:
        return _version_error(loose[0])
    return f"not a meterline batch: {error}"
