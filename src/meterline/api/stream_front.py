"""An API replica in stream mode (``meterline serve --stream``): validate, publish, answer.

The replica validates a batch exactly as the embedded path does (``Ledger.prepare_batch``),
publishes the valid events to JetStream and answers only once JetStream has stored every
message: ``202`` with ``accepted`` for each valid event (its ledger sequence is assigned
by the worker that applies it, exactly once) and the rejected ones with their errors.
If the stream cannot take the batch the answer is ``503`` with ``Retry-After``: nothing
was acknowledged, and the retry is absorbed by JetStream's duplicate window and the
ledger's idempotency. Access answers come from the access bucket's mirror
(``stream.mirror.AccessMirror``), the same on every replica.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import nats.errors
from nats.aio.client import Client

from meterline.core.events import decode_exact
from meterline.core.outcomes import BatchOutcome, EventOutcome
from meterline.core.partitions import partition_of
from meterline.ledger.ledger import Ledger, merge_outcomes
from meterline.live.link import WorkerUnavailable
from meterline.stream.access import AccessBoard
from meterline.stream.connection import connect
from meterline.stream.mirror import AccessMirror
from meterline.stream.publisher import StreamPublisher
from meterline.stream.service import figures_subject
from meterline.stream.settings import StreamSettings
from meterline.stream.status import cluster_status

FIGURES_TIMEOUT_S = 5.0
"""How long the owning worker has to answer a live figures request."""

ACCESS_READY_TIMEOUT_S = 30.0
"""How long the access bucket has to load at start. Its watcher is an ephemeral consumer,
which a cluster with a node down may place on that node (nats-server 2.9 then answers
nothing); the board retries every few seconds, and this lets it rather than fail."""

_log = logging.getLogger(__name__)


class StreamFront:
    """The publisher, the access mirror and their NATS connection, for one replica."""

    def __init__(self, settings: StreamSettings, mirror: AccessMirror) -> None:
        self.settings = settings
        self.mirror = mirror
        self.connection: Client | None = None
        self.publisher: StreamPublisher | None = None
        self.board: AccessBoard | None = None

    async def start(self) -> None:
        self.publisher = await StreamPublisher.connect(self.settings)
        self.connection = await connect(self.settings, "meterline-api-access")
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
        # "API CPU per event").
        gc.freeze()

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
        if self.board is not None:
            await self.board.close()
        if self.publisher is not None:
            await self.publisher.close()
        if self.connection is not None:
            await self.connection.close()
        self.mirror.stop()

    async def ingest(
        self, ledger: Ledger, prepared: tuple[list[Any], list[EventOutcome], int]
    ) -> BatchOutcome:
        """Publish the valid events of a prepared batch; raises ``StreamUnavailable``."""
        valid, rejected, now_us = prepared
        assert self.publisher is not None, "the stream front is not started"
        if valid:
            await self.publisher.publish([event for _, event in valid], now_us)
        queued = [EventOutcome(position, "accepted", event.id) for position, event in valid]
        if not rejected:  # every event accepted: the counts need no pass over them
            return BatchOutcome(len(queued), 0, 0, 0, queued)
        return merge_outcomes(queued, rejected)

    async def status(self, now_us: int) -> dict[str, Any]:
        assert self.connection is not None
        return await cluster_status(
            self.connection, self.settings, now_us, dict(self.mirror_documents())
        )

    def mirror_documents(self) -> dict[str, dict[str, Any]]:
        return {} if self.board is None else dict(self.board.mirror)
