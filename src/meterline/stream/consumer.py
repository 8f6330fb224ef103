"""Pulling one partition's batches from its durable consumer, and acknowledging them (async).

Owns the worker side of one partition (its durable consumer lives on the partition's
stream, ``StreamSettings.stream_of``): ``fetch`` pulls up to N messages in stream order
and decodes them into one ``PartitionBatch``; ``ack`` acknowledges every message of a
batch and waits for the server to confirm each ack. The caller acks only after its ledger
commit: a batch never acked (crash, database error) is redelivered after the consumer's
ack wait, and the ledger answers ``duplicate`` for what it already holds.

Also how much a fetch asks for (``first_fetch_size``, then ``next_fetch_size`` from the
last batch's mean message size) and ``nak``, handing a batch back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from meterline.core.events import PreparedEvent
from meterline.stream.codec import decode_batch
from meterline.stream.errors import BatchDecodeError, StreamUnavailable
from meterline.stream.settings import StreamSettings
from meterline.stream.setup import consumer_config, ensure_consumer

ACK_TIMEOUT_S = 5.0
"""Seconds the server has to confirm one ack."""

API_TIMEOUT_S = 5.0
"""Seconds one JetStream API request (consumer create, info) may take."""

FETCH_MESSAGES_MAX = 64
"""Messages one fetch pulls at most; a fetch is one ledger commit, so larger fetches
spread a commit's fixed costs (round trips, the fsync) over more events: 64 messages of
the usual ~250 events instead of 16 took the 1-worker rate of ``meterline bench scale``
from ~19,000 to ~23,000 events/s on a loaded 2-core machine."""

FETCH_BYTES_MAX = 16 * 1024 * 1024
"""Bytes one fetch aims to pull at most: it asks for this over the partition's last mean
message size (the largest message size before the first), never more than
``FETCH_MESSAGES_MAX``, so large messages make smaller fetches."""


@dataclass(frozen=True, slots=True)
class PartitionBatch:
    """The events of one or more consecutive messages of a partition, in stream order."""

    partition: int
    events: list[PreparedEvent]
    messages: list[Msg]
    received_at_us: int
    """When the API received the earliest of the messages (microseconds, UTC)."""

    @property
    def stream_sequences(self) -> tuple[int, int]:
        """The first and last stream sequence of the batch's messages."""
        return (
            self.messages[0].metadata.sequence.stream,
            self.messages[-1].metadata.sequence.stream,
        )


class PartitionConsumer:
    """The pull subscription of one partition's durable consumer."""

    def __init__(self, connection: Client, settings: StreamSettings, partition: int) -> None:
        self.settings = settings
        self.partition = settings.check_partition(partition)
        self._js: JetStreamContext = connection.jetstream(timeout=API_TIMEOUT_S)
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def open(self) -> None:
        """Create (or update) the durable consumer and subscribe to it; idempotent."""
        if self._subscription is not None:
            return
        await ensure_consumer(self._js, self.settings, self.partition)
        self._subscription = await self._js.pull_subscribe(
            self.settings.subject(self.partition),
            durable=self.settings.durable(self.partition),
            stream=self.settings.stream_of(self.partition),
            config=consumer_config(self.settings, self.partition),
        )

    async def fetch(self, max_messages: int, timeout_s: float) -> PartitionBatch | None:
        """The next up to ``max_messages`` messages as one batch, or None if none came
        within ``timeout_s``. Raises ``BatchDecodeError`` (nothing acked) if a message is
        not a batch this version reads, and the client's errors if NATS is unreachable."""
        await self.open()
        assert self._subscription is not None
        try:
            messages = await self._subscription.fetch(max_messages, timeout=timeout_s)
        except TimeoutError:  # nats-py raises both its own and asyncio's: no message came
            return None
        if not messages:
            return None
        events: list[PreparedEvent] = []
        received_at_us: int | None = None
        for message in messages:
            try:
                decoded = decode_batch(message.data)
            except BatchDecodeError as error:
                sequence = message.metadata.sequence.stream
                raise BatchDecodeError(
                    f"stream {self.settings.stream_of(self.partition)} partition {self.partition}"
                    f" sequence {sequence}: {error}"
                ) from None
            events.extend(decoded.events)
            if received_at_us is None or decoded.received_at_us < received_at_us:
                received_at_us = decoded.received_at_us
        assert received_at_us is not None
        return PartitionBatch(self.partition, events, messages, received_at_us)

    async def ack(self, batch: PartitionBatch) -> None:
        """Acknowledge every message of ``batch`` and wait for the server to confirm.

        Raises ``StreamUnavailable`` if any ack is not confirmed; the unconfirmed
        messages may be redelivered (the ledger answers ``duplicate`` for them).
        """
        results = await asyncio.gather(
            *(message.ack_sync(timeout=ACK_TIMEOUT_S) for message in batch.messages),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        if failures:
            raise StreamUnavailable(
                f"{len(failures)} of {len(batch.messages)} acks of partition {self.partition}"
                f" not confirmed: {failures[0]!r}"
            ) from failures[0]

    async def pending(self) -> int:
        """Messages of the partition not yet acknowledged: waiting plus delivered."""
        info = await self._js.consumer_info(
            self.settings.stream_of(self.partition),
            self.settings.durable(self.partition),
            timeout=API_TIMEOUT_S,
        )
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    async def close(self) -> None:
        """Drop the subscription (the durable consumer stays); safe to call twice."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()


async def nak(batch: PartitionBatch) -> None:
    """Hand ``batch``'s messages back for redelivery now (to the partition's new owner)
    instead of after the ack wait; best effort (unacknowledged, they come back anyway)."""
    for message in batch.messages:
        with contextlib.suppress(Exception):
            await message.nak()


def next_fetch_size(batch: PartitionBatch) -> int:
    """How many messages the next fetch of ``batch``'s partition asks for."""
    mean = sum(len(message.data) for message in batch.messages) / len(batch.messages)
    return max(1, min(FETCH_MESSAGES_MAX, int(FETCH_BYTES_MAX // max(mean, 1))))


def first_fetch_size(max_message_bytes: int) -> int:
    """How many messages a partition's first fetch asks for (no message size known yet:
    the largest a message may be)."""
    return max(1, min(FETCH_MESSAGES_MAX, FETCH_BYTES_MAX // max_message_bytes))
