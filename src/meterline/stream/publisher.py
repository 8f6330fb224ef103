"""Publishing validated events to JetStream, one subject per partition (async).

Owns the API side of distributed ingest: a batch's events are grouped by their
customer's partition (input order kept within a partition), packed into messages under
the message limit, each published with ``Nats-Msg-Id`` (see ``stream.codec``) to its
partition's subject, expecting its partition's stream (``StreamSettings.stream_of``: a
publisher configured for another stream count is refused by JetStream, never stored in
the wrong stream), and the call returns only when JetStream has acknowledged every
message. Each stream keeps its own duplicate window; a message id is only ever sent to
one subject, hence one stream, so deduplication holds across several streams. Any failure or timeout
raises ``StreamUnavailable``: the API answers 503 and the client retries the batch. The
retry is safe: JetStream drops a message it already holds (inside its duplicate window)
and the ledger answers ``duplicate`` for any event it already applied, so a partial
publish followed by a retry applies each event exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import nats.errors
from nats.aio.client import Client
from nats.js import api

from meterline.core.events import PreparedEvent
from meterline.core.partitions import PartitionMap
from meterline.stream.codec import PackedMessage, pack_messages
from meterline.stream.connection import connect
from meterline.stream.errors import StreamLayoutError, StreamUnavailable
from meterline.stream.settings import StreamSettings
from meterline.stream.setup import ensure_stream

PUBLISH_TIMEOUT_S = 5.0
"""Seconds JetStream has to acknowledge one published message before the batch fails."""

SETUP_TIMEOUT_S = 10.0
"""Seconds connecting, and then ensuring the stream, may each take by default."""

HEADERS_BYTES_MAX = 1024
"""Room kept under the server's ``max_payload`` for a message's headers."""

MESSAGE_ID_HEADER = "Nats-Msg-Id"
"""The header JetStream deduplicates on."""

class StreamPublisher:
    """Publishes batches of prepared events to the partition subjects of one stream."""

    def __init__(self, connection: Client, settings: StreamSettings) -> None:
        self.connection = connection
        self.settings = settings
        self._js = connection.jetstream(timeout=PUBLISH_TIMEOUT_S)
        self._owns_connection = False
        self._messages = 0
        self._duplicate_messages = 0
        self._failed_batches = 0
        self.partition_of = PartitionMap(settings.partitions)
        """customer -> partition, remembered (the count never changes)."""
        self.on_stored: Callable[[int, int], None] | None = None
        """Told (partition, stream sequence) of every message JetStream stored for a
        ``publish`` that succeeded (the ingest lag bound, ``core.admission``)."""

    @classmethod
    async def connect(
        cls,
        settings: StreamSettings,
        create_stream: bool = True,
        timeout_s: float = SETUP_TIMEOUT_S,
    ) -> StreamPublisher:
        """A publisher on its own connection, the streams created or updated first.

        Raises ``StreamUnavailable`` when no server answers within ``timeout_s`` (the
        client keeps retrying every server until then), ``StreamLayoutError`` when the
        streams on NATS are laid out for another stream count.
        """
        try:
            connection = await asyncio.wait_for(connect(settings, "meterline-publisher"), timeout_s)
        except (OSError, TimeoutError, nats.errors.Error) as error:
            raise StreamUnavailable(
                f"cannot reach NATS at {', '.join(settings.servers)}: {error!r}"
            ) from error
        publisher = cls(connection, settings)
        publisher._owns_connection = True
        if create_stream:
            try:
                await asyncio.wait_for(ensure_stream(publisher._js, settings), timeout_s)
            except StreamLayoutError:
                await publisher.close()
                raise
            except (TimeoutError, nats.errors.Error) as error:
                await publisher.close()
                raise StreamUnavailable(
                    f"cannot create or update streams {', '.join(settings.stream_names())}:"
                    f" {error!r}"
                ) from error
        return publisher

    def _message_bytes_max(self) -> int:
        return min(self.settings.max_message_bytes, self.connection.max_payload - HEADERS_BYTES_MAX)

    def pack(
        self, events: Sequence[PreparedEvent], received_at_us: int
    ) -> list[tuple[int, PackedMessage]]:
        """The (partition, message) pairs ``publish`` sends for ``events``, in order."""
        partition_of = self.partition_of
        groups: dict[int, list[PreparedEvent]] = {}
        for event in events:
            partition = partition_of(event.customer)
            group = groups.get(partition)
            if group is None:
                groups[partition] = [event]
            else:
                group.append(event)
        limit = self._message_bytes_max()
        return [
            (partition, message)
            for partition, group in sorted(groups.items())
            for message in pack_messages(group, received_at_us, limit)
        ]

    async def publish(self, events: Sequence[PreparedEvent], received_at_us: int) -> int:
        """Publish ``events`` and wait for JetStream to store every message.

        Returns the number of messages published (a message JetStream already held counts:
        it is stored). Raises ``StreamUnavailable`` if any message is not acknowledged.
        """
        return await self.publish_packed(self.pack(events, received_at_us))

    async def publish_packed(self, messages: Sequence[tuple[int, PackedMessage]]) -> int:
        """``publish`` of messages ``pack`` made (a caller that looks at their partitions
        first, the ingest lag bound, packs once)."""
        if not messages:
            return 0
        results = await asyncio.gather(
            *(self._publish_one(partition, message) for partition, message in messages),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            self._failed_batches += 1
            for failure in failures:
                if not isinstance(failure, Exception):
                    raise failure
            raise StreamUnavailable(
                f"JetStream did not acknowledge {len(failures)} of {len(messages)} messages"
                f" of streams {', '.join(self.settings.stream_names())}: {failures[0]!r}"
            ) from failures[0]
        self._messages += len(messages)
        if self.on_stored is not None:
            for (partition, _), result in zip(messages, results, strict=True):
                assert isinstance(result, api.PubAck)
                self.on_stored(partition, result.seq)
        self._duplicate_messages += sum(
            1 for result in results if isinstance(result, api.PubAck) and result.duplicate
        )
        return len(messages)

    async def _publish_one(self, partition: int, message: PackedMessage) -> api.PubAck:
        return await self._js.publish(
            self.settings.subject(partition),
            message.payload,
            timeout=PUBLISH_TIMEOUT_S,
            stream=self.settings.stream_of(partition),
            headers={MESSAGE_ID_HEADER: message.message_id},
        )

    def stats(self) -> dict[str, int]:
        """Messages stored, of them already held by JetStream, and batches that failed."""
        return {
            "messages": self._messages,
            "duplicate_messages": self._duplicate_messages,
            "failed_batches": self._failed_batches,
        }

    async def close(self) -> None:
        """Close the connection if this publisher opened it."""
        if self._owns_connection and not self.connection.is_closed:
            await self.connection.close()
