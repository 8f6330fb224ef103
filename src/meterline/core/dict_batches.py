"""The batch path of decoded native events: a whole list of Python dicts checked at once.

Owns ``prepare_dict_batch``, what ``Ledger.ingest`` of Python dicts runs. One
``msgspec.convert`` of the list into ``core.event_batches.plain_event_type`` Structs checks in C
what it can (exactly the native fields, the texts' types and lengths, the timestamps
parsed; the properties are taken as they are, uncopied); every check left is then made
once over a column of the whole batch (``core.event_batches.prepare_plain_structs``, which the
JSON batch path shares) instead of once per event in Python. It answers only when every
event of the batch is plainly valid. Any other batch is prepared event by event by
``core.events.prepare_event``, whose own fast path hands whatever it is not sure of to
``prepare_event_checked``, the specification; so the answer, errors included, is always
the specification's
(tests/property/test_dict_batch_path.py). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from meterline.core.event_batches import plain_event_type, prepare_plain_structs
from meterline.core.events import FieldError, PreparedEvent, prepare_event
from meterline.core.limits import DEFAULT_LIMITS, IngestLimits

_ONLY_DICTS = {dict}


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
    return prepare_plain_structs(structs, now_us, limits)
