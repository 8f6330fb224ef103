"""Workers' progress for the ingest lag bound (``core.admission``): the NATS side.

A worker publishes, on core NATS (fire and forget, one small message per live-engine
cycle that decided something, not per event), ``<subject_prefix>.progress.<partition>``
with the newest stream sequence of that partition whose events its live engine has
decided on (and whose access decisions are in the access bucket); it repeats the last
one every status interval, so a lost message or a replica started later catches up.
Every API replica subscribes to all partitions' progress and feeds its ``LagBook``.

Invariants:

* progress names stream sequences only (no clock), so replicas never compare another
  machine's clock with their own;
* a partition's progress only moves forward at a replica (``LagBook.decided`` keeps the
  highest), so a late or repeated message, or two workers during a handover, change
  nothing wrong;
* ``DecidedProgress`` releases a stream sequence only after the live engine has applied
  every ledger sequence committed with it and every sequence committed before it (in
  order per partition); a commit that added nothing (redelivered duplicates) is decided
  as soon as what came before it is.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence

import msgspec

from meterline.stream.settings import StreamSettings


class Progress(msgspec.Struct, frozen=True):
    """One progress message: ``partition``'s messages through ``sequence`` are decided."""

    partition: int
    sequence: int
    worker: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Progress)


def progress_subject(settings: StreamSettings, partition: int) -> str:
    """Where the progress of ``partition`` is published (outside the stream's subjects,
    ``<prefix>.*``, so JetStream never stores it)."""
    return f"{settings.subject_prefix}.progress.{settings.check_partition(partition)}"


def progress_subjects(settings: StreamSettings) -> str:
    """The wildcard subject of every partition's progress."""
    return f"{settings.subject_prefix}.progress.*"


def encode_progress(progress: Progress) -> bytes:
    return _encoder.encode(progress)


def decode_progress(data: bytes, partitions: int) -> Progress | None:
    """The progress in ``data``, or None when it is not one (or names no partition of
    ``partitions``): a stray message is ignored, never fatal."""
    try:
        progress = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if not 0 <= progress.partition < partitions or progress.sequence < 0:
        return None
    return progress


class DecidedProgress:
    """The worker side: which stream sequence of each partition is decided (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, collections.deque[tuple[int, int, int]]] = {}
        """partition -> (ledger partition, ledger sequence to be applied, stream sequence),
        in commit order."""
        self._decided: dict[int, int] = {}

    def committed(
        self,
        partition: int,
        stream_sequence: int,
        ledger_sequence: int = 0,
        ledger_partition: int | None = None,
    ) -> None:
        """A commit of stream ``partition`` took its messages through ``stream_sequence``;
        the live engine must apply ``ledger_partition`` (default: the same number)
        through ``ledger_sequence`` (0: nothing new) to decide it."""
        target = partition if ledger_partition is None else ledger_partition
        with self._lock:
            self._waiting.setdefault(partition, collections.deque()).append(
                (target, ledger_sequence, stream_sequence)
            )

    def decide(self, applied: Sequence[int]) -> dict[int, int]:
        """The stream partitions whose decided sequence moved, now that the live engine
        applied each ledger partition through ``applied[partition]``: partition ->
        stream sequence."""
        moved: dict[int, int] = {}
        with self._lock:
            for partition, waiting in self._waiting.items():
                while waiting:
                    target, needed, sequence = waiting[0]
                    if needed > (applied[target] if target < len(applied) else 0):
                        break
                    waiting.popleft()
                    moved[partition] = sequence
            self._decided.update(moved)
        return moved

    def latest(self) -> dict[int, int]:
        """Every partition's decided stream sequence, as released by ``decide``."""
        with self._lock:
            return dict(self._decided)

    def keep(self, partitions: Sequence[int]) -> None:
        """Forget the partitions this worker no longer holds (a handover)."""
        with self._lock:
            for partition in set(self._waiting) - set(partitions):
                del self._waiting[partition]
            for partition in set(self._decided) - set(partitions):
                del self._decided[partition]
