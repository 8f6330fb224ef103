"""An API replica in stream mode (``meterline serve --stream``): validate, publish, answer.

The replica validates a batch exactly as the embedded path does (``Ledger.prepare_batch``),
publishes the valid events to JetStream and answers only once JetStream has stored every
message: ``202`` with ``accepted`` for each valid event (its ledger sequence is assigned
by the worker that applies it, exactly once) and the rejected ones with their errors.
If the stream cannot take the batch the answer is ``503`` with ``Retry-After``: nothing
was acknowledged, and the retry is absorbed by JetStream's duplicate window and the
ledger's idempotency. Access answers come from the access bucket's mirror
(``stream.mirror.AccessMirror``), the same on every replica.

The ingest lag bound (``core.admission``, ``lag_max_ms``): the replica remembers when
JetStream stored each message it published and follows the workers' progress
(``stream.progress``); a batch touching a partition whose oldest undecided message has
waited longer than the bound is refused whole, before it is published (``IngestLagging``:
429 with ``Retry-After``), so nothing refused is acknowledged; the replica notes when each
progress report arrives, and a refusal's hint is when the partition's next report is due
(``LagBook.next_report_ms``: retrying sooner is only refused again). While a partition lags, a
batch is first looked at only as far as needed to find one valid event going to a lagging
partition (``bodies.valid_event_partition``): refused then without preparing the rest,
with the answer the whole preparation would have given at that moment (``LagBook.lagging``);
otherwise it is prepared whole and the bound checked on its valid events, as always.
A refused batch was a full preparation's CPU before, and refusals are most frequent
exactly when the replica's cores are needed elsewhere.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import nats.errors
from anyio import to_thread
from nats.aio.client import Client
from nats.aio.msg import Msg

from meterline.api.bodies import prepare_body, valid_event_partition
from meterline.core.admission import LAG_MAX_MS_DEFAULT, LagBook, Refusal
from meterline.core.events import PreparedEvent, decode_exact
from meterline.core.outcomes import BatchOutcome, EventOutcome
from meterline.core.partitions import partition_of
from meterline.ledger.event_ledger import Ledger, merge_outcomes
from meterline.live.link import WorkerUnavailable
from meterline.stream.access import AccessBoard
from meterline.stream.connection import connect
from meterline.stream.errors import IngestLagging
from meterline.stream.mirror import AccessMirror
from meterline.stream.progress import decode_progress, progress_subjects
from meterline.stream.publisher import StreamPublisher
from meterline.stream.service import figures_subject
from meterline.stream.settings import StreamSettings
from meterline.stream.status import cluster_status

FIGURES_TIMEOUT_S = 5.0
"""How long the owning worker has to answer a live figures request."""

GC_YOUNG_OBJECTS_MAX = 20_000
"""Objects a started replica allocates (net) before the collector walks the young
generation (Python's default: 700): a few batches' worth, so a batch's objects are mostly
freed by reference counting before a collection walks and promotes them (as the worker,
``stream.service``)."""

ACCESS_READY_TIMEOUT_S = 30.0
"""How long the access bucket has to load at start. Its watcher is an ephemeral consumer,
which a cluster with a node down may place on that node (nats-server 2.9 then answers
nothing); the board retries every few seconds, and this lets it rather than fail."""

_log = logging.getLogger(__name__)


Prepared = tuple[list[tuple[int, PreparedEvent]], list[EventOutcome], int]
"""A batch validated (``Ledger.prepare_batch``'s answer)."""


def _prepare_unless_lagging(
    ledger: Ledger,
    request: tuple[str | None, Mapping[str, str], bytes, str | None],
    partition_of: Callable[[str], int],
    lagging: list[Refusal],
) -> Prepared | Refusal:
    """The refusal of ``lagging`` (the worst first) of the first partition a valid event
    of the batch goes to, or the batch prepared (``prepare_body``) when none is found."""
    content_type, headers, body, only_customer = request
    if lagging:
        partitions = [refusal.partition for refusal in lagging]
        found = valid_event_partition(
            ledger, content_type, headers, body, only_customer, partition_of, partitions
        )
        if found is not None:
            return lagging[partitions.index(found)]
    return prepare_body(ledger, content_type, headers, body, only_customer)


def _monotonic_us() -> int:
    """The replica's own clock for the lag bound (both ends of every comparison)."""
    return time.monotonic_ns() // 1000


class StreamFront:
    """The publisher, the access mirror and their NATS connection, for one replica."""

    def __init__(
        self, settings: StreamSettings, mirror: AccessMirror, lag_max_ms: int = LAG_MAX_MS_DEFAULT
    ) -> None:
        if type(lag_max_ms) is not int or lag_max_ms < 0:
            raise ValueError(f"--lag-max-ms must be a whole number >= 0, got {lag_max_ms!r}")
        self.settings = settings
        self.mirror = mirror
        self.lag_max_ms = lag_max_ms
        """The ingest lag bound in milliseconds (0: off)."""
        self.lag = LagBook(settings.partitions)
        self.refused_batches = 0
        self.connection: Client | None = None
        self.publisher: StreamPublisher | None = None
        self.board: AccessBoard | None = None
        self._gc_thresholds: tuple[int, int, int] | None = None
        """The collector's thresholds before ``start`` (restored by ``stop``)."""

    async def start(self) -> None:
        self.publisher = await StreamPublisher.connect(self.settings)
        self.publisher.on_stored = self._stored
        self.connection = await connect(self.settings, "meterline-api-access")
        await self.connection.subscribe(progress_subjects(self.settings), cb=self._progress)
        self.board = await AccessBoard.open(self.connection, self.settings, ACCESS_READY_TIMEOUT_S)
        self.mirror.load(dict(self.board.mirror))
        self.board.watch(self.mirror.apply)
        loop = asyncio.get_running_loop()

        def ask(customer: str) -> dict[str, Any] | None:
            future = asyncio.run_coroutine_threadsafe(self._figures(customer), loop)
            return future.result(FIGURES_TIMEOUT_S + 1)

        self.mirror.ask_figures = ask
        # The objects of startup (the app, its routes, the clients) live as long as the
        # process: moved out of the collector's generations, a collection no longer walks
        # them, and each batch's garbage is cheap to collect (measured: BENCHMARKS.md,
        # "API CPU per event"). The young generation is then collected every
        # GC_YOUNG_OBJECTS_MAX objects, not every 700 (a 1,000-event batch made a few
        # collections each; "API CPU per event: fewer refusals and collections").
        self._gc_thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_OBJECTS_MAX, *self._gc_thresholds[1:])

    def _stored(self, partition: int, sequence: int) -> None:
        self.lag.stored(partition, sequence, _monotonic_us())

    async def _progress(self, message: Msg) -> None:
        progress = decode_progress(message.data, self.settings.partitions)
        if progress is not None:
            self.lag.decided(progress.partition, progress.sequence, _monotonic_us())

    def _admit(self, partitions: set[int]) -> None:
        """Raise ``IngestLagging`` when one of ``partitions`` (those a packed batch would
        publish to) lags past the bound. Checked before publishing: a refused batch
        publishes nothing. Stream sequences are per stream and a partition's subject lives
        in one stream, so the lag is kept per partition."""
        if self.lag_max_ms <= 0:
            return
        # in partition order: of partitions lagging equally, the lowest is named
        refusal = self.lag.admit(sorted(partitions), _monotonic_us(), self.lag_max_ms)
        if refusal is not None:
            self._refuse(refusal)

    async def prepare(
        self,
        ledger: Ledger,
        content_type: str | None,
        headers: Mapping[str, str],
        body: bytes,
        only_customer: str | None,
    ) -> Prepared:
        """``prepare_body`` in a worker thread, unless a partition lags past the bound and
        a valid event of the batch goes to it: then ``IngestLagging`` at once, the
        refusal ``_admit`` would give for the prepared batch at this moment."""
        assert self.publisher is not None, "the stream front is not started"
        lagging = self.lag.lagging(_monotonic_us(), self.lag_max_ms)
        answer = await to_thread.run_sync(
            _prepare_unless_lagging,
            ledger,
            (content_type, headers, body, only_customer),
            self.publisher.partition_of,
            lagging,
        )
        if isinstance(answer, Refusal):
            self._refuse(answer)
        return answer

    def _refuse(self, refusal: Refusal) -> NoReturn:
        """Count the refusal and raise it as ``IngestLagging``."""
        self.refused_batches += 1
        raise IngestLagging(
            f"events not accepted: partition {refusal.partition} is {refusal.lag_ms:.0f} ms"
            f" behind (the ingest lag bound is {refusal.bound_ms} ms); retry after"
            f" {refusal.retry_after_ms} ms",
            refusal.partition,
            refusal.lag_ms,
            refusal.bound_ms,
            refusal.retry_after_ms,
        )

    def lag_status(self) -> dict[str, Any]:
        """The bound, each partition's lag (ms) and outstanding messages, the refusals."""
        now_us = _monotonic_us()
        return {
            "bound_ms": self.lag_max_ms,
            "refused_batches": self.refused_batches,
            "partitions": [
                {
                    "partition": partition,
                    "lag_ms": round(self.lag.lag_us(partition, now_us) / 1000, 1),
                    "outstanding_messages": self.lag.outstanding(partition),
                }
                for partition in range(self.settings.partitions)
            ],
        }

    async def _figures(self, customer: str) -> dict[str, Any] | None:
        assert self.connection is not None
        partition = partition_of(customer, self.settings.partitions)
        try:
            reply = await self.connection.request(
                figures_subject(self.settings, partition), customer.encode(), FIGURES_TIMEOUT_S
            )
        except (TimeoutError, nats.errors.Error) as error:
            raise WorkerUnavailable(
                f"no worker answered for partition {partition} ({error!r})"
            ) from None
        document: dict[str, Any] | None = decode_exact(reply.data)["figures"]
        return document

    async def stop(self) -> None:
        if self._gc_thresholds is not None:
            gc.set_threshold(*self._gc_thresholds)
            self._gc_thresholds = None
        if self.board is not None:
            await self.board.close()
        if self.publisher is not None:
            await self.publisher.close()
        if self.connection is not None:
            await self.connection.close()
        self.mirror.stop()

    async def ingest(self, ledger: Ledger, prepared: Prepared) -> BatchOutcome:
        """Publish the valid events of a prepared batch; raises ``IngestLagging`` (nothing
        published) when a partition they go to lags past the bound, ``StreamUnavailable``
        when JetStream does not store them."""
        valid, rejected, now_us = prepared
        assert self.publisher is not None, "the stream front is not started"
        if valid:
            messages = self.publisher.pack([event for _, event in valid], now_us)
            self._admit({partition for partition, _ in messages})
            await self.publisher.publish_packed(messages)
        queued = [EventOutcome(position, "accepted", event.id) for position, event in valid]
        if not rejected:  # every event accepted: the counts need no pass over them
            return BatchOutcome(len(queued), 0, 0, 0, queued)
        return merge_outcomes(queued, rejected)

    async def status(self, now_us: int) -> dict[str, Any]:
        assert self.connection is not None
        status = await cluster_status(
            self.connection, self.settings, now_us, dict(self.mirror_documents())
        )
        status["ingest_lag"] = self.lag_status()
        return status

    def mirror_documents(self) -> dict[str, dict[str, Any]]:
        return {} if self.board is None else dict(self.board.mirror)
