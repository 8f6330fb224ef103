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

**Writer leases** (``ledger.heads``). A partition's batches are appended only while the
worker holds its lease, and every append is fenced with it (``leases={p: lease}``): a
worker whose lease was taken over (it stalled past the expiry) has its commit refused
(``LeaseLost``), stops that partition's loop at once, acknowledges nothing of the batch
(JetStream hands it to the new owner) and counts it in ``leases_lost``. Leases last
``LEASE_SECONDS`` and are renewed every ``LEASE_RENEW_S``; a clean stop releases them.

**Rebalancing** (``partitions=None``, ``meterline worker --partitions auto``). Every
``LEASE_RENEW_S`` the worker reads the live workers (the distinct unexpired lease owners,
the ``peers`` callback's names and itself) and computes its fair share: the partitions
split as evenly as possible, the workers sorted by name taking the larger shares (so no
worker holds more than ceil(partitions / live workers)). It acquires free or expired
partitions up to its share and, holding more (a worker joined), drains the extras: stops
fetching them, commits and acknowledges the batch in hand, then releases the lease, which
the newcomer acquires on its next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import nats.errors
from nats.aio.client import Client

from meterline.clock import Clock
from meterline.core.events import PreparedEvent
from meterline.core.outcomes import EventOutcome
from meterline.ledger.heads import Lease, LeaseLost
from meterline.ledger.store import LedgerStore
from meterline.stream.connection import connect
from meterline.stream.consumer import (
    PartitionBatch,
    PartitionConsumer,
    first_fetch_size,
    nak,
    next_fetch_size,
)
from meterline.stream.errors import BatchDecodeError, StreamUnavailable
from meterline.stream.partition_leases import (
    LEASE_RENEW_S,
    LEASE_SECONDS,
    LeasedStore,
    fair_share,
    free_partitions,
    lease_owners,
)
from meterline.stream.settings import StreamSettings
from meterline.stream.setup import ensure_stream

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


PeersCallback = Callable[[], Awaitable[set[str]]]
"""The names of the other live workers (auto mode), e.g. from the status bucket."""

PartitionsCallback = Callable[[list[int]], Awaitable[None]]
"""Told the partitions the worker holds whenever they change (auto mode)."""

AppliedCallback = Callable[[int, list[tuple[int, PreparedEvent]]], None]
"""Called after each commit with the partition and its accepted (sequence, event) pairs."""

CommittedCallback = Callable[[int, int, list[tuple[int, PreparedEvent]]], None]
"""Called after each commit, before ``on_applied``, with the partition, the stream
sequence of the commit's last message and its accepted pairs (the ingest lag bound's
progress, ``stream.progress``)."""

_STREAM_ERRORS = (StreamUnavailable, nats.errors.Error, OSError, TimeoutError)
_log = logging.getLogger(__name__)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@dataclass
class _Hand:
    """One partition loop's state between rounds: how many messages the next fetch asks
    for, the batch kept after a failed commit, and the pause before the next retry."""

    fetch_messages: int
    held: PartitionBatch | None = None
    backoff: float = RETRY_BACKOFF_S


class StreamWorker:
    """Applies the batches of some partitions of the stream to one ledger store."""

    def __init__(
        self,
        store: LedgerStore,
        settings: StreamSettings,
        partitions: Sequence[int] | None,
        clock: Clock,
        on_applied: AppliedCallback | None = None,
        name: str = "meterline-worker",
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        renew_s: float = LEASE_RENEW_S,
        peers: PeersCallback | None = None,
        on_partitions: PartitionsCallback | None = None,
        on_committed: CommittedCallback | None = None,
    ) -> None:
        """``partitions`` None: rebalance by lease handover with the other workers."""
        if partitions is not None and not partitions:
            raise ValueError("a worker needs at least one partition")
        self.store = store
        self.settings = settings
        self.auto = partitions is None
        self.wanted = (
            list(range(settings.partitions))
            if partitions is None
            else sorted({settings.check_partition(partition) for partition in partitions})
        )
        """The partitions this worker may hold (every one in auto mode)."""
        self.clock = clock
        self.on_applied = on_applied
        self.name = name
        self.owner = owner or name
        """The lease owner name (unique per worker)."""
        self.lease_seconds = lease_seconds
        self.renew_s = renew_s
        self.peers = peers
        self.on_partitions = on_partitions
        self.on_committed = on_committed
        self.fenced = (
            "leases" in inspect.signature(store.append).parameters
            and getattr(store, "partitions", None) == settings.partitions
        )
        """Whether appends are fenced with leases: the store takes them and its partitions
        are the stream's (a lease is on a ledger partition). Otherwise (a SQLite ledger
        of one partition fed by a partitioned stream, test doubles) the worker runs
        unleased, on the partitions it was given."""
        if partitions is None and not self.fenced:
            raise ValueError(
                "automatic partitions need a store with writer leases and the stream's"
                " partition count"
            )
        self._leased = cast(LeasedStore, store)
        self._leases: dict[int, Lease] = {}
        self._draining: set[int] = set()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._reported: list[int] | None = None
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
                "leases_acquired",
                "leases_released",
                "leases_lost",
            ),
            0,
        )
        self._last_applied_us: dict[int, int] = {}
        self._commit_locks: dict[int, threading.Lock] = {}
        """One lock per partition: a partition's commits and their ``on_applied`` run one at
        a time, in its ledger order; different partitions commit in parallel (each on its
        own store connection when fenced)."""
        self._commit_locks_guard = threading.Lock()
        self._counts_lock = threading.Lock()
        self._stalled: dict[int, str] = {}

    def _count(self, name: str, amount: int = 1) -> None:
        """Add to a counter (commit threads of several partitions count at once)."""
        with self._counts_lock:
            self._counts[name] += amount

    @property
    def partitions(self) -> list[int]:
        """The partitions this worker applies now (those whose lease it holds; all it
        was given when the store does not fence)."""
        if not self.fenced:
            return list(self.wanted)
        return sorted(self._leases)

    def stats(self) -> dict[str, object]:
        """Counters since start, per-partition last commit time (µs), stalled partitions
        and the leases held (partition -> epoch)."""
        return {
            **self._counts,
            "last_applied_us": dict(self._last_applied_us),
            "stalled": dict(self._stalled),
            "leases": {p: lease.epoch for p, lease in sorted(self._leases.items())},
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
                self._count("stream_errors")
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
        await self._release_all()

    async def _run_connected(self, connection: Client, stop: asyncio.Event) -> None:
        js = connection.jetstream(timeout=SETUP_TIMEOUT_S)
        backoff = RETRY_BACKOFF_S
        while not stop.is_set():
            try:
                await ensure_stream(js, self.settings)
                break
            except _STREAM_ERRORS as error:
                self._count("stream_errors")
                _log.warning(
                    "cannot ensure the streams; retrying",
                    extra={"streams": self.settings.stream_names(), "error": repr(error)},
                )
                await _pause(stop, backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
        async with asyncio.TaskGroup() as group:
            if not self.fenced:
                for partition in self.wanted:
                    consumer = PartitionConsumer(connection, self.settings, partition)
                    group.create_task(self._run_partition(consumer, stop))
                return
            while not stop.is_set():
                await self._renew()
                await self._balance(connection, stop, group)
                await _pause(stop, self.renew_s)

    # -- leases --------------------------------------------------------------------------------

    async def _renew(self) -> None:
        """Extend every lease held; a lease taken over stops its partition at once."""
        for partition, lease in list(self._leases.items()):
            try:
                renewed = await asyncio.to_thread(
                    self._leased.renew_lease, lease, self.clock(), self.lease_seconds
                )
            except Exception as error:
                self._count("store_errors")
                _log.warning(
                    "lease renewal failed; retrying",
                    extra={"partition": partition, "error": repr(error)},
                )
                continue
            if self._leases.get(partition) is not lease:
                continue  # released or lost meanwhile
            if renewed is None:
                self._lost(partition, lease, "renewal refused")
                task = self._tasks.pop(partition, None)
                if task is not None:
                    task.cancel()
            else:
                self._leases[partition] = renewed

    def _lost(self, partition: int, lease: Lease, why: str) -> None:
        if self._leases.get(partition) is lease:
            del self._leases[partition]
        self._draining.discard(partition)
        self._count("leases_lost")
        _log.error(
            "partition lease taken over; stopped applying it, its batch stays unacknowledged",
            extra={"partition": partition, "epoch": lease.epoch, "reason": why},
        )

    async def _balance(
        self, connection: Client, stop: asyncio.Event, group: asyncio.TaskGroup
    ) -> None:
        """Acquire free or expired partitions up to this worker's share; drain extras."""
        try:
            rows = await asyncio.to_thread(self._leased.head_rows)
            now_us = self.clock()
            share = len(self.wanted)
            if self.auto:
                owners = lease_owners(rows, now_us)
                if self.peers is not None:
                    owners |= await self.peers()
                share = fair_share(len(self.wanted), owners, self.owner)
            held = [p for p in sorted(self._leases) if p not in self._draining]
            if len(held) > share:
                for partition in held[share:]:
                    self._draining.add(partition)
                    _log.info(
                        "draining a partition for another worker", extra={"partition": partition}
                    )
            taken = self._leases.keys() | self._tasks.keys()
            free = free_partitions(rows, self.wanted, taken, self.owner, now_us)
            for partition in free[: max(0, share - len(held))]:
                lease = await asyncio.to_thread(
                    self._leased.acquire_lease,
                    partition,
                    self.owner,
                    self.clock(),
                    self.lease_seconds,
                )
                if lease is None:
                    continue
                self._leases[partition] = lease
                self._count("leases_acquired")
                _log.info(
                    "partition lease acquired", extra={"partition": partition, "epoch": lease.epoch}
                )
                consumer = PartitionConsumer(connection, self.settings, partition)
                self._tasks[partition] = group.create_task(
                    self._run_partition(consumer, stop, lease)
                )
        except _STREAM_ERRORS as error:
            self._count("stream_errors")
            _log.warning("cannot read the live workers; retrying", extra={"error": repr(error)})
        except Exception as error:
            self._count("store_errors")
            _log.warning("cannot read or take leases; retrying", extra={"error": repr(error)})
        await self._report()

    async def _report(self) -> None:
        held = self.partitions
        if held != self._reported and self.on_partitions is not None:
            self._reported = held
            try:
                await self.on_partitions(held)
            except Exception:
                self._count("callback_errors")
                _log.exception("on_partitions failed")

    async def _release(self, partition: int, lease: Lease) -> None:
        if self._leases.get(partition) is lease:
            del self._leases[partition]
        self._draining.discard(partition)
        try:
            await asyncio.to_thread(self._leased.release_lease, lease)
            self._count("leases_released")
        except Exception as error:
            _log.warning(
                "lease release failed (it expires by itself)",
                extra={"partition": partition, "error": repr(error)},
            )

    async def _release_all(self) -> None:
        for partition, lease in list(self._leases.items()):
            await self._release(partition, lease)

    async def _run_partition(
        self, consumer: PartitionConsumer, stop: asyncio.Event, lease: Lease | None = None
    ) -> None:
        """Apply one partition until ``stop``; with a ``lease``, also until the lease is
        lost (at once) or the partition is drained (after the batch in hand), then the
        lease is released."""
        partition = consumer.partition
        hand = _Hand(first_fetch_size(self.settings.max_message_bytes))
        lost = False
        try:
            while not stop.is_set():
                if lease is not None:
                    if self._leases.get(partition) is None:
                        lost = True
                        break
                    if partition in self._draining and hand.held is None:
                        break
                try:
                    if not await self._apply_next(consumer, stop, lease, hand):
                        lost = True
                        break
                except BatchDecodeError as error:
                    self._stalled[partition] = str(error)
                    _log.error(
                        "undecodable message; partition stalled, nothing skipped",
                        extra={"partition": partition, "error": str(error)},
                    )
                    await stop.wait()
                except _STREAM_ERRORS as error:
                    self._count("stream_errors")
                    _log.warning(
                        "stream error; retrying",
                        extra={"partition": partition, "error": repr(error)},
                    )
                    await consumer.close()
                    await _pause(stop, hand.backoff)
                    hand.backoff = min(hand.backoff * 2, RETRY_BACKOFF_MAX_S)
        finally:
            await consumer.close()
            if lease is not None and self._tasks.get(partition) is asyncio.current_task():
                del self._tasks[partition]
        if lease is not None and not lost:
            current = self._leases.get(partition)
            if current is not None and current.epoch == lease.epoch:
                await self._release(partition, current)
                _log.info("partition lease released", extra={"partition": partition})

    async def _apply_next(
        self,
        consumer: PartitionConsumer,
        stop: asyncio.Event,
        lease: Lease | None,
        hand: _Hand,
    ) -> bool:
        """Fetch a batch (or take the one in hand again), commit it and acknowledge it;
        False when the partition's lease is lost (the batch is handed back). A failed
        commit keeps the batch in ``hand``, unacknowledged, for the next round."""
        partition = consumer.partition
        batch = (
            hand.held
            if hand.held is not None
            else await consumer.fetch(hand.fetch_messages, FETCH_WAIT_S)
        )
        hand.held = None
        if batch is None:
            return True
        hand.fetch_messages = next_fetch_size(batch)
        ingested_at_us = self.clock()
        leases = None
        if lease is not None:
            current = self._leases.get(partition)
            if current is None:
                await nak(batch)
                return False
            leases = {partition: current}
        try:
            await asyncio.to_thread(self._commit, batch, ingested_at_us, leases)
        except LeaseLost as error:
            if lease is not None:
                self._lost(partition, self._leases.get(partition, lease), repr(error))
            await nak(batch)
            return False
        except Exception as error:
            hand.held = batch
            self._count("store_errors")
            _log.error(
                "ledger append failed; the batch stays unacknowledged and is retried",
                extra={"partition": partition, "error": repr(error)},
            )
            await _pause(stop, hand.backoff)
            hand.backoff = min(hand.backoff * 2, RETRY_BACKOFF_MAX_S)
            return True
        await consumer.ack(batch)
        hand.backoff = RETRY_BACKOFF_S
        return True

    def _commit_lock(self, partition: int) -> threading.Lock:
        with self._commit_locks_guard:
            lock = self._commit_locks.get(partition)
            if lock is None:
                lock = self._commit_locks[partition] = threading.Lock()
            return lock

    @contextlib.contextmanager
    def commits_paused(self) -> Iterator[None]:
        """Hold every partition's commit lock (in partition order): no commit runs or is
        told to a listener meanwhile (the service swaps its live engine under it)."""
        with contextlib.ExitStack() as stack:
            for partition in range(self.settings.partitions):
                stack.enter_context(self._commit_lock(partition))
            yield

    def _commit(
        self,
        batch: PartitionBatch,
        ingested_at_us: int,
        leases: dict[int, Lease] | None = None,
    ) -> None:
        """Append ``batch`` to the ledger, count its outcomes and tell ``on_applied`` (in
        a worker thread). A partition's commits run one at a time, so ``on_applied`` hears
        each partition's commits in its ledger order: a listener that needs consecutive
        sequences per partition (the live engine) never sees a gap it must read back from
        the ledger. Other partitions' commits run meanwhile."""
        with self._commit_lock(batch.partition):
            events = list(enumerate(batch.events))
            if leases is None:
                outcomes = self.store.append(events, ingested_at_us)
            else:
                outcomes = self.store.append(events, ingested_at_us, leases=leases)
            accepted = self._tally(batch, outcomes, ingested_at_us)
            if self.on_committed is not None:
                try:
                    self.on_committed(batch.partition, batch.stream_sequences[1], accepted)
                except Exception:
                    self._count("callback_errors")
                    _log.exception("on_committed failed", extra={"partition": batch.partition})
            self._notify(batch.partition, accepted)

    def _tally(
        self, batch: PartitionBatch, outcomes: list[EventOutcome], ingested_at_us: int
    ) -> list[tuple[int, PreparedEvent]]:
        """Count the outcomes of one commit; the accepted (sequence, event) pairs."""
        events = batch.events
        accepted: list[tuple[int, PreparedEvent]] = [
            (outcome.sequence, events[outcome.index])  # type: ignore[misc]
            for outcome in outcomes
            if outcome.status == "accepted"
        ]
        # The rest, one by one (a replay: rare): duplicates and conflicts.
        for outcome in outcomes if len(accepted) != len(outcomes) else ():
            event = events[outcome.index]
            if outcome.status == "duplicate":
                self._count("duplicates")
            elif outcome.status == "conflict":
                self._count("conflicts")
                _log.warning(
                    "event conflicts with the stored event of the same id; not applied",
                    extra={
                        "partition": batch.partition,
                        "customer": event.customer,
                        "event_id": event.id,
                        "stored_sequence": outcome.sequence,
                    },
                )
        self._count("events_applied", len(accepted))
        self._count("batches")
        self._count("messages", len(batch.messages))
        self._last_applied_us[batch.partition] = ingested_at_us
        return accepted

    def _notify(self, partition: int, accepted: list[tuple[int, PreparedEvent]]) -> None:
        if self.on_applied is None:
            return
        try:
            self.on_applied(partition, accepted)
        except Exception:
            self._count("callback_errors")
            _log.exception("on_applied failed", extra={"partition": partition})
