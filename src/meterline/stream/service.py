"""``meterline worker``: one process applying some partitions of the stream.

It gathers what ``StreamWorker`` needs and adds the live side: each committed batch goes to
a ``LiveEngine`` that keeps only the customers of this worker's partitions (their
projection, controls, true-ups and webhooks), and every access decision the controls
take is published to the JetStream access bucket, from which every API replica answers
``GET /v1/access``. A customer lives in exactly one partition and a partition is owned by
one worker at a time, so each customer's controls are decided in one place.
After each engine cycle the worker tells the API replicas how far each partition is
decided (``stream.progress``, once that cycle's changed decisions are in the bucket): the
ingest lag bound (``core.admission``) of the replicas rests on it. The worker does not
fold the rated-usage buckets: that projection is the ledger's one keeper's
(``meterline keeper``, ``stream.keeper``), a component of its own.

On start the engine rebuilds its customers from the ledger and the control records (as
after a crash: nothing is kept in memory that the ledger cannot give back) and publishes
each one's decision; a worker started while NATS cannot serve the buckets (no server
reachable, a node down, an election) retries until it can. Every ``STATUS_INTERVAL_S``
the worker puts its counters into the status bucket for ``meterline status``. SIGTERM or
SIGINT stops it after the batch in hand; SIGKILL loses nothing acknowledged:
unacknowledged messages come back and the ledger's idempotency absorbs what was already
committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from meterline.billing.buckets import keep_buckets_if_wanted
from meterline.billing.service import Billing
from meterline.clock import Clock, system_clock_us
from meterline.core.events import PreparedEvent, encode_canonical
from meterline.core.live_documents import LiveFigures
from meterline.core.partitions import parse_partitions, partition_of
from meterline.errors import MeterlineError
from meterline.ledger.billing_records import BillingStore
from meterline.ledger.checkpoints import start_checkpointer
from meterline.ledger.event_ledger import Ledger, open_store
from meterline.ledger.location import describe, is_postgres
from meterline.live.control_documents import PushedDecision
from meterline.live.service import LiveEngine
from meterline.live.stack import live_stack
from meterline.stream.access import API_TIMEOUT_S as ACCESS_API_TIMEOUT_S
from meterline.stream.access import AccessBoard
from meterline.stream.access_entries import access_entry
from meterline.stream.connection import connect
from meterline.stream.naming import stream_settings
from meterline.stream.partition_leases import LEASE_SECONDS
from meterline.stream.progress import DecidedProgress, Progress, encode_progress, progress_subject
from meterline.stream.settings import StreamSettings
from meterline.stream.setup import ensure_access_bucket
from meterline.stream.status import StatusBoard, worker_document
from meterline.stream.worker import StreamWorker

STATUS_INTERVAL_S = 1.0
"""How often a worker publishes its counters (events/s is measured over this interval)."""
PEER_STALE_S = 3.0
"""Auto mode: a worker whose status is older than this is not counted among the live
workers sharing the partitions (its unexpired leases still are)."""
BALANCE_PUT_INTERVAL_S = 0.25
"""How often access documents that changed only in their remaining balances are put in
the bucket (the latest per customer); a changed decision (a block, a lift) is put at
once. Under load every cycle changes the balances of every customer it touched: putting
them all each cycle made small commits (the ingest lag bound's) cost the worker a
JetStream round trip per customer per cycle."""
SETUP_TIMEOUT_S = 30.0
"""How long one attempt to connect to NATS (or to open the status bucket) may take."""
SETUP_RETRY_S = 0.5
"""Seconds before the first retry of a failed start (a NATS node down); doubles each time."""
SETUP_RETRY_MAX_S = 5.0
"""The longest pause between two start attempts."""
GC_YOUNG_OBJECTS_MAX = 20_000
"""Objects the collector lets a running worker allocate (net) before it collects the
young generation (Python's default: 700): a few batches' worth, so the objects a batch
holds while it is applied are mostly freed (by reference counting) before a collection
walks and promotes them."""

_log = logging.getLogger(__name__)


class WorkerError(MeterlineError):
    """The worker cannot run as asked (the store, the partitions)."""

    code = "worker_error"


def figures_subject(settings: StreamSettings, partition: int) -> str:
    """Where the owner of ``partition`` answers live figures requests."""
    return f"{settings.subject_prefix}.figures.{settings.check_partition(partition)}"


@dataclass
class _Publishing:
    """Access changes waiting to be put in the bucket (the latest per customer)."""

    loop: asyncio.AbstractEventLoop
    waiting: dict[str, dict[str, Any]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    progress: dict[int, int] = field(default_factory=dict)
    """Partitions whose decided stream sequence moved (``stream.progress``), published
    after the access documents offered before them are in the bucket."""
    balances: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Documents that changed only in their balances, put every ``BALANCE_PUT_INTERVAL_S``."""
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """customer -> the last document put, without its balances (``_gate``)."""
    offered: dict[str, dict[str, Any]] = field(default_factory=dict)
    offered_progress: dict[int, int] = field(default_factory=dict)
    """What other threads offered (documents, progress), not yet handed to the loop; one
    hand-over, while ``handing``, takes all of it."""
    handing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sort(self, waiting: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The documents of ``waiting`` to put now (a decision changed, or a customer not
        put yet); the others wait in ``balances``."""
        urgent = {}
        for customer, document in waiting.items():
            if self.gates.get(customer) == _gate(document):
                self.balances[customer] = document
            else:
                urgent[customer] = document
                self.balances.pop(customer, None)
        return urgent

    def offer(self, customer: str, document: dict[str, Any]) -> None:
        """From any thread: publish ``document`` as ``customer``'s next."""
        with self.lock:
            self.offered[customer] = document
            self._schedule()

    def offer_progress(self, moved: dict[int, int]) -> None:
        """From any thread: these partitions' messages are decided through these sequences
        (handed over with, or after, every document offered before)."""
        with self.lock:
            for partition, sequence in moved.items():
                self.offered_progress[partition] = max(
                    sequence, self.offered_progress.get(partition, 0)
                )
            self._schedule()

    def _schedule(self) -> None:
        """Under ``lock``: a hand-over to the loop, unless one is scheduled already."""
        if not self.handing:
            self.loop.call_soon_threadsafe(self._hand_over)
            self.handing = True

    def _hand_over(self) -> None:
        """On the loop: take all that was offered (one wake-up per burst of offers)."""
        with self.lock:
            offered, self.offered = self.offered, {}
            moved, self.offered_progress = self.offered_progress, {}
            self.handing = False
        self.waiting.update(offered)
        for partition, sequence in moved.items():
            self.progress[partition] = max(sequence, self.progress.get(partition, 0))
        self.wake.set()


def _gate(document: dict[str, Any]) -> dict[str, Any]:
    """An access document without its remaining balances: what denies or allows."""
    decision = document.get("decision")
    return {
        **document,
        "remaining": None,
        "decision": {**decision, "remaining": None} if isinstance(decision, dict) else decision,
    }


class WorkerService:
    """A ``meterline worker``: stream -> ledger -> live engine -> access bucket."""

    def __init__(
        self,
        db: str,
        settings: StreamSettings,
        partitions: list[int] | None,
        clock: Clock = system_clock_us,
        name: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        """``partitions`` None: ``--partitions auto``, the worker takes its share of the
        partitions by lease handover with the other workers (see ``stream.worker``)."""
        self.db = db
        self.settings = settings
        self.auto = partitions is None
        self.clock = clock
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.store = open_store(db)
        ledger = Ledger(self.store, clock=clock)
        self.billing_store = BillingStore(db)
        self.billing = Billing(ledger, self.billing_store, clock)
        # rated-usage buckets: kept (their tables exist, reads catch them up), but folded
        # by the ledger's one keeper (``meterline keeper``, ``stream.keeper``), not here
        keep_buckets_if_wanted(self.billing.context)
        self.stack = live_stack(self.billing)
        self.webhooks = self.stack.webhooks
        self.engine = self._new_engine([] if partitions is None else partitions)
        self.worker = StreamWorker(
            self.store,
            settings,
            partitions,
            clock,
            self._applied,
            name=f"worker-{self.name}",
            owner=self.name,
            lease_seconds=lease_seconds,
            peers=self._peers if partitions is None else None,
            on_partitions=self._partitions_changed if partitions is None else None,
            on_committed=self._committed,
        )
        self.progress = DecidedProgress()
        """Which stream sequence of each partition the live engine has decided on (the
        ingest lag bound's progress, published to the API replicas)."""
        self.started_at_us = clock()
        self._publishing: _Publishing | None = None
        self._status: StatusBoard | None = None
        self._connection: Client | None = None
        self._figures_subscriptions: dict[int, Any] = {}
        self._engine_started = False

    @property
    def partitions(self) -> list[int]:
        """The partitions this worker applies now."""
        return self.worker.partitions if self.auto else list(self.worker.wanted)

    def _new_engine(self, partitions: list[int]) -> LiveEngine:
        return self.stack.engine(pause_share=0.0, partitions=partitions)

    @classmethod
    def open(
        cls,
        db: str,
        stream_url: str,
        partitions_text: str,
        name: str | None = None,
        namespace: str = "meterline",
        replicas: int = 1,
        streams: int = 1,
    ) -> WorkerService:
        """A worker over the PostgreSQL ledger ``db`` and the NATS servers of
        ``stream_url``, owning the partitions named by ``partitions_text`` (``0-3,6``,
        ``all``); the partition count is the ledger's, split over ``streams`` streams
        (checked against the streams on NATS when the worker starts)."""
        if not is_postgres(db):
            raise WorkerError(
                f"--db: {describe(db)} is a SQLite file; the distributed worker needs the"
                " PostgreSQL store (a postgresql:// URL)"
            )
        store = open_store(db)
        count = store.partitions
        store.close()
        try:
            settings = stream_settings(stream_url, count, namespace, replicas, streams)
        except ValueError as error:
            message = str(error)
            prefix = "" if message.startswith("--") else "--stream: "
            raise WorkerError(prefix + message) from None
        if partitions_text.strip().lower() == "auto":
            return cls(db, settings, None, name=name)
        try:
            partitions = parse_partitions(partitions_text, count)
        except ValueError as error:
            raise WorkerError(f"--{error}") from None
        return cls(db, settings, partitions, name=name)

    def _applied(self, _partition: int, pairs: list[tuple[int, PreparedEvent]]) -> None:
        self.engine.on_append(pairs)

    def _committed(
        self, partition: int, stream_sequence: int, accepted: list[tuple[int, PreparedEvent]]
    ) -> None:
        # in the commit thread, before the engine hears of ``accepted``
        if accepted:
            event = accepted[-1][1]
            ledger_partition = partition_of(event.customer, self.store.partitions)
            last = max(number for number, _ in accepted)
            self.progress.committed(partition, stream_sequence, last, ledger_partition)
        else:
            self.progress.committed(partition, stream_sequence)
            self._decide()

    def _decide(self, _engine: LiveEngine | None = None) -> None:
        """Release the progress the live engine's last cycle decided (controller thread)."""
        moved = self.progress.decide(self.engine.applied.heads)
        if moved and self._publishing is not None:
            self._publishing.offer_progress(moved)

    def _on_access(self, _version: int, customer: str, _decision: PushedDecision | None) -> None:
        # called under the controls' lock: the state read here is the one decided
        if self._publishing is not None:
            self._publishing.offer(customer, access_entry(self.engine, customer, self.name))

    # -- running ------------------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM or SIGINT."""
        asyncio.run(self.run_async())

    async def run_async(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(number, stop.set)
        opened = await self._open_buckets(stop)
        if opened is None:  # stopped before NATS could be reached
            await asyncio.to_thread(self.close)
            return
        self._checkpointer = start_checkpointer(self.store, self.clock)
        connection, board, status = opened
        self._connection, self._status = connection, status
        self._publishing = _Publishing(loop)
        if not self.auto:
            await asyncio.to_thread(self._start_engine)
            self._engine_started = True
            await self._subscribe_figures(self.partitions)
        tasks = [
            asyncio.create_task(self._publish_access(board, stop), name="access"),
            asyncio.create_task(self._publish_status(status, stop), name="status"),
        ]
        _log.info(
            "worker started",
            extra={
                "worker": self.name,
                "partitions": "auto" if self.auto else self.partitions,
                "db": describe(self.db),
            },
        )
        # The objects of startup (the clients, the pricing, the engine's loaded customers)
        # live as long as the process: moved out of the collector's generations, a full
        # collection no longer walks them while batches' garbage comes and goes; and the
        # young generation is collected every few batches, not every 700 objects
        # (BENCHMARKS.md, "Worker CPU per event, third session").
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_OBJECTS_MAX, *thresholds[1:])
        try:
            await self.worker.run(stop)
        finally:
            gc.set_threshold(*thresholds)
            stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await task
            await asyncio.to_thread(self.close)
            with contextlib.suppress(Exception):
                await status.remove(self.name)
            await board.close()
            await connection.close()

    async def _open_buckets(
        self, stop: asyncio.Event
    ) -> tuple[Client, AccessBoard, StatusBoard] | None:
        """The access connection and the access and status buckets, retried with a backoff
        until they open or ``stop`` is set (None): a worker started while a NATS node is
        down or a leader is being elected waits for it, as the running worker does."""
        backoff = SETUP_RETRY_S
        while not stop.is_set():
            connection: Client | None = None
            try:
                connection = await asyncio.wait_for(
                    connect(self.settings, f"meterline-{self.name}-access"), SETUP_TIMEOUT_S
                )
                board = await _put_only_board(connection, self.settings)
                try:
                    status = await asyncio.wait_for(
                        StatusBoard.open(connection, self.settings), SETUP_TIMEOUT_S
                    )
                except BaseException:
                    await board.close()
                    raise
                return connection, board, status
            except (MeterlineError, nats.errors.Error, OSError, TimeoutError) as error:
                _log.warning(
                    "cannot open the access and status buckets; retrying",
                    extra={"servers": self.settings.servers, "error": repr(error)},
                )
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, SETUP_RETRY_MAX_S)
        return None

    async def _subscribe_figures(self, partitions: list[int]) -> None:
        """Answer the figures requests of exactly ``partitions``."""
        assert self._connection is not None
        for partition in set(self._figures_subscriptions) - set(partitions):
            with contextlib.suppress(Exception):
                await self._figures_subscriptions.pop(partition).unsubscribe()
        for partition in sorted(set(partitions) - set(self._figures_subscriptions)):
            self._figures_subscriptions[partition] = await self._connection.subscribe(
                figures_subject(self.settings, partition),
                queue="figures",
                cb=self._answer_figures,
            )

    async def _peers(self) -> set[str]:
        """The workers that reported into the status bucket lately (auto mode)."""
        if self._status is None:
            return set()
        now_us = self.clock()
        return {
            str(document["worker"])
            for document in await asyncio.wait_for(self._status.workers(), SETUP_TIMEOUT_S)
            if now_us - int(document.get("reported_at_us", 0)) <= PEER_STALE_S * 1_000_000
        }

    async def _partitions_changed(self, partitions: list[int]) -> None:
        """Auto mode: the held partitions changed; the live engine is rebuilt for them
        (from the ledger, as after a restart) and the figures subscriptions follow."""
        _log.info(
            "worker partitions changed", extra={"worker": self.name, "partitions": partitions}
        )
        await asyncio.to_thread(self._swap_engine, partitions)
        await self._subscribe_figures(partitions)

    def _swap_engine(self, partitions: list[int]) -> None:
        with self.worker.commits_paused():  # no commit is fed to an engine being replaced
            old = self.engine
            if self._on_access in old.controls.listeners:
                old.controls.listeners.remove(self._on_access)
            if self._engine_started:
                old.stop()
            self.engine = self._new_engine(partitions)
            self.progress.keep(partitions)
            self._engine_started = False
            if partitions:
                self._start_engine()
                self._engine_started = True

    async def _answer_figures(self, message: Msg) -> None:
        """A replica asks for a customer's live figures (``AccessMirror.figures``)."""
        customer = message.data.decode()
        document = await asyncio.to_thread(self._figures, customer)
        await message.respond(encode_canonical({"figures": document}))

    def _figures(self, customer: str) -> LiveFigures | None:
        figures = self.engine.projection.figures(customer)
        if figures is None:
            return None
        return figures.document(self.engine.controls.access(customer))

    def _start_engine(self) -> None:
        engine = self.engine
        engine.start()
        controls = engine.controls
        engine.cycle_listeners.append(self._decide)
        with controls.lock:
            controls.listeners.append(self._on_access)
            customers = set(engine.projection.customers) | set(controls.state)
            for customer in customers:
                self._on_access(0, customer, None)

    async def _publish_access(self, board: AccessBoard, stop: asyncio.Event) -> None:
        publishing = self._publishing
        assert publishing is not None
        repeated = balanced = time.monotonic()
        sent: dict[int, int] = {}
        while not (stop.is_set() and not publishing.waiting and not publishing.balances):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    publishing.wake.wait(),
                    BALANCE_PUT_INTERVAL_S if publishing.balances else STATUS_INTERVAL_S,
                )
            publishing.wake.clear()
            waiting = publishing.sort(publishing.waiting)
            publishing.waiting = {}
            progress, publishing.progress = publishing.progress, {}
            if publishing.balances and (
                stop.is_set() or time.monotonic() - balanced >= BALANCE_PUT_INTERVAL_S
            ):
                balanced = time.monotonic()
                waiting.update(publishing.balances)
                publishing.balances = {}
            # every document of the round in flight at once: a crossing never queues
            # behind the round trips of the other customers' balance updates
            results = await asyncio.gather(
                *(board.put(customer, document) for customer, document in waiting.items()),
                return_exceptions=True,
            )
            failed = False
            for (customer, document), result in zip(waiting.items(), results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, MeterlineError):
                        raise result
                    _log.warning("access publish failed; retrying", extra={"customer": customer})
                    publishing.waiting.setdefault(customer, document)
                    failed = True
                else:
                    publishing.gates[customer] = _gate(document)
            if failed:
                # the decisions are not all out: their progress waits for the retry
                for partition, sequence in progress.items():
                    publishing.progress[partition] = max(
                        sequence, publishing.progress.get(partition, 0)
                    )
                await asyncio.sleep(STATUS_INTERVAL_S)
            else:
                sent.update(progress)
                if time.monotonic() - repeated >= STATUS_INTERVAL_S:
                    # every partition's last progress again: a lost message or a replica
                    # started since catches up within the interval
                    repeated = time.monotonic()
                    held = set(self.partitions)
                    sent = {number: last for number, last in sent.items() if number in held}
                    progress = sent
                await self._publish_progress(progress)
            if stop.is_set() and publishing.waiting:
                await asyncio.sleep(0.05)

    async def _publish_progress(self, progress: dict[int, int]) -> None:
        """Tell the API replicas how far each partition is decided (core NATS, no ack:
        the last value is repeated every ``STATUS_INTERVAL_S`` while idle)."""
        connection = self._connection
        if connection is None or not progress:
            return
        for partition, sequence in sorted(progress.items()):
            message = encode_progress(Progress(partition, sequence, self.name))
            with contextlib.suppress(nats.errors.Error, OSError):
                await connection.publish(progress_subject(self.settings, partition), message)

    async def _publish_status(self, status: StatusBoard, stop: asyncio.Event) -> None:
        last_applied = 0
        last_time = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_INTERVAL_S)
            now = time.monotonic()
            stats = self.worker.stats()
            applied = int(stats["events_applied"])  # type: ignore[call-overload]
            rate = (applied - last_applied) / max(now - last_time, 1e-6)
            last_applied, last_time = applied, now
            document = worker_document(
                self.name, self.partitions, stats, rate, self.engine.status(), self.clock()
            )
            with contextlib.suppress(MeterlineError):
                await status.put(self.name, document)

    def close(self) -> None:
        checkpointer = getattr(self, "_checkpointer", None)
        if checkpointer is not None:
            checkpointer.stop()
        if self._engine_started:
            self.engine.stop()
        self.stack.close()
        self.billing_store.close()
        self.store.close()


async def _put_only_board(connection: Client, settings: StreamSettings) -> AccessBoard:
    """The access bucket, to put documents only: the board is not started, so it follows
    nothing. A worker never reads the bucket; a following board decoded every document
    every worker put (``AccessBoard._follow``), per customer and cycle."""
    js = connection.jetstream(timeout=ACCESS_API_TIMEOUT_S)
    key_value = await asyncio.wait_for(ensure_access_bucket(js, settings), SETUP_TIMEOUT_S)
    return AccessBoard(key_value)


async def open_connection(settings: StreamSettings, name: str) -> Client:
    return await asyncio.wait_for(connect(settings, name), SETUP_TIMEOUT_S)
