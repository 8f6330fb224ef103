"""Applying the stream to the ledger: one loop per owned partition (async).

Owns the order fetch -> append -> notify -> ack. Each owned partition runs its own loop
(so an idle partition never delays a busy one): fetch a batch, ``store.append`` it in a
thread and hand the accepted ``(sequence, event)`` pairs to ``on_applied`` there (the
worker's commits run one at a time, so ``on_applied`` hears them in ledger order), then
acknowledge its messages, only after the commit. Invariants:

* a message is acknowledged only after the ledger committed its events; a failed append
  keeps the batch in hand, unacknowledged, and retries it before fetching anything newer
  of that partition (so a customer's events keep their order); if the worker stops first,
  JetStream redelivers the batch after the ack wait. Order is kept except across a lost
  delivery (a node killed mid-fetch): JetStream redelivers it after the ack wait, by then
  behind later messages of its partition;
* redelivery is expected: the ledger answers ``duplicate`` (counted, not an error);
  ``conflict`` (same id, different bytes) is counted and logged with customer and id;
* ``on_applied`` runs for every commit, before its ack, so even when the ack then fails
  (the redelivered copies come back as duplicates, which ``on_applied`` never sees);
* a NATS failure (a node down, a leader election) is logged and retried after a backoff;
  a message this version cannot decode stalls its partition (logged, in ``stats()``),
  never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Sequence

import nats.errors
from nats.aio.client import Client

from meterline.clock import Clock
from meterline.core.events import PreparedEvent
from meterline.core.outcomes import EventOutcome
from meterline.ledger.store import LedgerStore
from meterline.stream.connection import connect
from meterline.stream.consumer import PartitionBatch, PartitionConsumer
from meterline.stream.errors import BatchDecodeError, StreamUnavailable
from meterline.stream.settings import StreamSettings
from meterline.stream.setup import ensure_stream

FETCH_MESSAGES_MAX = 64
"""Messages one fetch pulls at most; a fetch is one ledger commit, so larger fetches
spread a commit's fixed costs (round trips, the fsync) over more events: 64 messages of
the usual ~250 events instead of 16 took the 1-worker rate of ``meterline bench scale``
from ~19,000 to ~23,000 events/s on a loaded 2-core machine."""

FETCH_BYTES_MAX = 16 * 1024 * 1024
"""Bytes one fetch aims to pull at most: it asks for this over the partition's last mean
message size (the largest message size before the first), never more than
``FETCH_MESSAGES_MAX``, so large messages make smaller fetches."""

FETCH_WAIT_S = 1.0
"""Seconds one fetch waits for a message; also how long a stop may take to be noticed."""

RETRY_BACKOFF_S = 0.2
"""Seconds before the first retry after a NATS or ledger failure; doubles per failure."""

RETRY_BACKOFF_MAX_S = 5.0
"""The longest pause between two retries."""

SETUP_TIMEOUT_S = 10.0
"""Seconds one attempt to connect or ensure the stream may take."""

SWITCH_INTERVAL_S = 0.0005
"""The interpreter's thread switch interval while a worker runs (Python's default: 5 ms).
A commit waits on PostgreSQL's socket several times (its round trips, the COPY); when
another thread (the live engine's controller) is busy computing, every wake-up waits up
to the switch interval for the interpreter. 0.5 ms keeps the commits, which bound the
worker's throughput, from queueing behind it (``meterline bench scale``)."""

AppliedCallback = Callable[[int, list[tuple[int, PreparedEvent]]], None]
"""Called after each commit with the partition and its accepted (sequence, event) pairs."""

_STREAM_ERRORS = (StreamUnavailable, nats.errors.Error, OSError, TimeoutError)
_log = logging.getLogger(__name__)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _fetch_messages(batch: PartitionBatch) -> int:
    """How many messages the next fetch of ``batch``'s partition asks for."""
    mean = sum(len(message.data) for message in batch.messages) / len(batch.messages)
    return max(1, min(FETCH_MESSAGES_MAX, int(FETCH_BYTES_MAX // max(mean, 1))))


class StreamWorker:
    """Applies the batches of some partitions of the stream to one ledger store."""

    def __init__(
        self,
        store: LedgerStore,
        settings: StreamSettings,
        partitions: Sequence[int],
        clock: Clock,
        on_applied: AppliedCallback | None = None,
        name: str = "meterline-worker",
    ) -> None:
        if not partitions:
            raise ValueError("a worker needs at least one partition")
        self.store = store
        self.settings = settings
        self.partitions = sorted({settings.check_partition(partition) for partition in partitions})
        self.clock = clock
        self.on_applied = on_applied
        self.name = name
        self._counts = dict.fromkeys(
            (
                "events_applied",
                "duplicates",
                "conflicts",
                "batches",
                "messages",
                "store_errors",
                "stream_errors",
                "callback_errors",
            ),
            0,
        )
        self._last_applied_us: dict[int, int] = {}
        self._commit_lock = threading.Lock()
        self._stalled: dict[int, str] = {}

    def stats(self) -> dict[str, object]:
        """Counters since start, per-partition last commit time (µs) and stalled partitions."""
        return {
            **self._counts,
            "last_applied_us": dict(self._last_applied_us),
            "stalled": dict(self._stalled),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Apply the owned partitions until ``stop`` is set; NATS failures are retried."""
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
        try:
            await self._run(stop)
        finally:
            sys.setswitchinterval(switch_interval)

    async def _run(self, stop: asyncio.Event) -> None:
        backoff = RETRY_BACKOFF_S
        while not stop.is_set():
            try:
                connection = await asyncio.wait_for(
                    connect(self.settings, self.name), SETUP_TIMEOUT_S
                )
            except _STREAM_ERRORS as error:
                self._counts["stream_errors"] += 1
                _log.warning(
                    "cannot reach NATS; retrying",
                    extra={"servers": self.settings.servers, "error": repr(error)},
                )
                await _pause(stop, backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                continue
            try:
                await self._run_connected(connection, stop)
            finally:
                await connection.close()

    async def _run_connected(self, connection: Client, stop: asyncio.Event) -> None:
        js = connection.jetstream(timeout=SETUP_TIMEOUT_S)
        backoff = RETRY_BACKOFF_S
        while not stop.is_set():
            try:
                await ensure_stream(js, self.settings)
                break
            except _STREAM_ERRORS as error:
                self._counts["stream_errors"] += 1
                _log.warning(
                    "cannot ensure the stream; retrying",
                    extra={"stream": self.settings.stream, "error": repr(error)},
                )
                await _pause(stop, backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
        async with asyncio.TaskGroup() as group:
            for partition in self.partitions:
                consumer = PartitionConsumer(connection, self.settings, partition)
                group.create_task(self._run_partition(consumer, stop))

    async def _run_partition(self, consumer: PartitionConsumer, stop: asyncio.Event) -> None:
        partition = consumer.partition
        held: PartitionBatch | None = None
        backoff = RETRY_BACKOFF_S
        fetch_messages = max(
            1, min(FETCH_MESSAGES_MAX, FETCH_BYTES_MAX // self.settings.max_message_bytes)
        )
        try:
            while not stop.is_set():
                try:
                    batch = (
                        held
                        if held is not None
                        else await consumer.fetch(fetch_messages, FETCH_WAIT_S)
                    )
                    held = None
                    if batch is None:
                        continue
                    fetch_messages = _fetch_messages(batch)
                    ingested_at_us = self.clock()
                    try:
                        await asyncio.to_thread(self._commit, batch, ingested_at_us)
                    except Exception as error:
                        held = batch
                        self._counts["store_errors"] += 1
                        _log.error(
                            "ledger append failed; the batch stays unacknowledged and is retried",
                            extra={"partition": partition, "error": repr(error)},
                        )
                        await _pause(stop, backoff)
                        backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                        continue
                    await consumer.ack(batch)
                    backoff = RETRY_BACKOFF_S
                except BatchDecodeError as error:
                    self._stalled[partition] = str(error)
                    _log.error(
                        "undecodable message; partition stalled, nothing skipped",
                        extra={"partition": partition, "error": str(error)},
                    )
                    await stop.wait()
                except _STREAM_ERRORS as error:
                    self._counts["stream_errors"] += 1
                    _log.warning(
                        "stream error; retrying",
                        extra={"partition": partition, "error": repr(error)},
                    )
                    await consumer.close()
                    await _pause(stop, backoff)
                    backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
        finally:
            await consumer.close()

    def _commit(self, batch: PartitionBatch, ingested_at_us: int) -> None:
        """Append ``batch`` to the ledger, count its outcomes and tell ``on_applied`` (in
        a worker thread). One commit at a time, so ``on_applied`` hears the commits in
        ledger order: a listener that needs consecutive sequences (the live engine) never
        sees a gap it must read back from the ledger."""
        with self._commit_lock:
            outcomes = self.store.append(list(enumerate(batch.events)), ingested_at_us)
            accepted = self._tally(batch, outcomes, ingested_at_us)
            self._notify(batch.partition, accepted)

    def _tally(
        self, batch: PartitionBatch, outcomes: list[EventOutcome], ingested_at_us: int
    ) -> list[tuple[int, PreparedEvent]]:
        """Count the outcomes of one commit; the accepted (sequence, event) pairs."""
        accepted: list[tuple[int, PreparedEvent]] = []
        for outcome in outcomes:
            event = batch.events[outcome.index]
            if outcome.status == "accepted":
                assert outcome.sequence is not None
                accepted.append((outcome.sequence, event))
            elif outcome.status == "duplicate":
                self._counts["duplicates"] += 1
            elif outcome.status == "conflict":
                self._counts["conflicts"] += 1
                _log.warning(
                    "event conflicts with the stored event of the same id; not applied",
                    extra={
                        "partition": batch.partition,
                        "customer": event.customer,
                        "event_id": event.id,
                        "stored_sequence": outcome.sequence,
                    },
                )
        self._counts["events_applied"] += len(accepted)
        self._counts["batches"] += 1
        self._counts["messages"] += len(batch.messages)
        self._last_applied_us[batch.partition] = ingested_at_us
        return accepted

    def _notify(self, partition: int, accepted: list[tuple[int, PreparedEvent]]) -> None:
        if self.on_applied is None:
            return
        try:
            self.on_applied(partition, accepted)
        except Exception:
            self._counts["callback_errors"] += 1
            _log.exception("on_applied failed", extra={"partition": partition})
