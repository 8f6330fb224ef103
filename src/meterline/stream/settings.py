"""Where and how meterline's events travel through NATS JetStream (pure configuration).

Owns ``StreamSettings``: the servers (parsed from the ``--stream`` URL list), the stream,
subject and KV bucket names, the partition and stream counts, the replica count, the
message size limit and the ack wait of the partition consumers. Invariants: every name is
valid for NATS (no wildcards, dots only between subject tokens), the partition count
passes ``check_partition_count`` and a message limit always fits one maximal event and
stays under NATS's default 1 MiB ``max_payload``.

**Streams by partition range.** The partitions are split over ``streams`` JetStream
streams (1 to ``STREAMS_MAX``, at most the partition count), so that no one stream leader
carries all traffic. Partition ``p`` lives in stream ``k = p * streams // partitions``:
every partition in exactly one stream, each stream a contiguous, non-empty range of
partitions whose sizes differ by at most one. One stream keeps the single-stream layout
exactly: name ``stream``, subjects ``<prefix>.*``. Several streams are named
``<stream>-<k>`` for ``k`` in ``0..streams-1`` and each lists exactly its partitions'
subjects, so no two streams' subjects overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from meterline.core.limits import DEFAULT_LIMITS
from meterline.core.partitions import DEFAULT_PARTITIONS, check_partition_count

DEFAULT_STREAM = "METERLINE_EVENTS"
"""The JetStream stream holding published event batches unless told otherwise."""

DEFAULT_SUBJECT_PREFIX = "meterline.events"
"""Subjects are ``<prefix>.<partition>`` unless told otherwise."""

DEFAULT_ACCESS_BUCKET = "meterline_access"
"""The KV bucket of per-customer access documents unless told otherwise."""

REPLICAS_MAX = 5
"""The most replicas JetStream keeps of a stream or bucket."""

MESSAGE_BYTES_MAX = 960 * 1024
"""The largest message payload meterline publishes: 64 KiB under NATS's default 1 MiB
``max_payload``, leaving room for the headers."""

MESSAGE_BYTES_MIN = 2 * DEFAULT_LIMITS.event_bytes_max
"""The smallest message limit allowed: one maximal event with its fields always fits."""

ACK_WAIT_S = 30.0
"""Seconds a worker has to acknowledge a delivered message before JetStream redelivers it."""

ACK_WAIT_S_MAX = 3600.0
"""The longest ack wait allowed: an hour."""

STREAMS_MAX = 64
"""The most streams one deployment's partitions are split over. Each stream is one Raft
group with its own leader; past a few per server more of them only add bookkeeping."""

DEFAULT_NATS_PORT = 4222
"""The port of a ``nats://`` URL that names none."""

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_OPTION = "--stream"


def parse_servers(url: str) -> tuple[str, ...]:
    """The server URLs of ``nats://h:p,nats://h:p``; ValueError naming ``--stream`` if not."""
    servers: list[str] = []
    for part in url.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"{_OPTION}: empty server in {url!r} (e.g. nats://127.0.0.1:4222)")
        try:
            parsed = urlsplit(part)
            port = parsed.port
        except ValueError as error:
            raise ValueError(f"{_OPTION}: {part!r} is not a valid URL: {error}") from None
        if parsed.scheme != "nats":
            raise ValueError(
                f"{_OPTION}: {part!r} is not a nats:// URL (scheme {parsed.scheme!r});"
                " give nats://host:port, several separated by commas"
            )
        if not parsed.hostname:
            raise ValueError(f"{_OPTION}: {part!r} names no host (e.g. nats://127.0.0.1:4222)")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
            raise ValueError(f"{_OPTION}: {part!r} must be only nats://host:port")
        servers.append(part if port is not None else f"{part.rstrip('/')}:{DEFAULT_NATS_PORT}")
    return tuple(servers)


def _check_name(field: str, value: str) -> None:
    if type(value) is not str or _NAME.fullmatch(value) is None:
        raise ValueError(f"{field} must be letters, digits, '_' or '-', got {value!r}")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Everything the publisher, the workers and the access board agree on."""

    servers: tuple[str, ...]
    stream: str = DEFAULT_STREAM
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX
    partitions: int = DEFAULT_PARTITIONS
    streams: int = 1
    """How many streams the partitions are split over (see the module docstring)."""
    replicas: int = 1
    access_bucket: str = DEFAULT_ACCESS_BUCKET
    max_message_bytes: int = MESSAGE_BYTES_MAX
    ack_wait_s: float = ACK_WAIT_S

    def __post_init__(self) -> None:
        if type(self.servers) is not tuple or not self.servers:
            raise ValueError("servers must be a non-empty tuple of nats:// URLs")
        for server in self.servers:
            parse_servers(server)
        _check_name("stream", self.stream)
        _check_name("access_bucket", self.access_bucket)
        for token in self.subject_prefix.split("."):
            _check_name(f"subject_prefix token of {self.subject_prefix!r}", token)
        check_partition_count(self.partitions)
        if type(self.streams) is not int or not 1 <= self.streams <= STREAMS_MAX:
            raise ValueError(
                f"streams must be an integer from 1 to {STREAMS_MAX}, got {self.streams!r}"
            )
        if self.streams > self.partitions:
            raise ValueError(
                f"streams ({self.streams}) must be at most the partition count"
                f" ({self.partitions}): each stream holds at least one partition"
            )
        if type(self.replicas) is not int or not 1 <= self.replicas <= REPLICAS_MAX:
            raise ValueError(f"replicas must be an integer from 1 to {REPLICAS_MAX}")
        if (
            type(self.max_message_bytes) is not int
            or not MESSAGE_BYTES_MIN <= self.max_message_bytes <= MESSAGE_BYTES_MAX
        ):
            raise ValueError(
                f"max_message_bytes must be from {MESSAGE_BYTES_MIN} to {MESSAGE_BYTES_MAX}"
            )
        if not 0 < self.ack_wait_s <= ACK_WAIT_S_MAX:
            raise ValueError(f"ack_wait_s must be above 0 and at most {ACK_WAIT_S_MAX}")

    @classmethod
    def from_url(cls, url: str, **options: Any) -> StreamSettings:
        """Settings for the comma-separated ``nats://`` servers of ``url`` (the ``--stream``
        option); ``options`` set the other fields."""
        return cls(servers=parse_servers(url), **options)

    def subject(self, partition: int) -> str:
        """The subject carrying the batches of ``partition``."""
        self.check_partition(partition)
        return f"{self.subject_prefix}.{partition}"

    def stream_index(self, partition: int) -> int:
        """The number ``k`` of the stream holding ``partition``: ``p * streams // partitions``."""
        return self.check_partition(partition) * self.streams // self.partitions

    def stream_of(self, partition: int) -> str:
        """The name of the stream holding ``partition``."""
        return self.stream_name(self.stream_index(partition))

    def stream_name(self, index: int) -> str:
        """The name of stream number ``index``: ``stream`` alone, else ``<stream>-<index>``."""
        self._check_stream_index(index)
        return self.stream if self.streams == 1 else f"{self.stream}-{index}"

    def stream_names(self) -> tuple[str, ...]:
        """Every stream's name, in stream order."""
        return tuple(self.stream_name(index) for index in range(self.streams))

    def stream_partitions(self, index: int) -> range:
        """The contiguous partitions of stream number ``index`` (never empty)."""
        self._check_stream_index(index)
        count, streams = self.partitions, self.streams
        # the p with p * streams // count == index: from ceil(index * count / streams)
        return range(-(-index * count // streams), -(-(index + 1) * count // streams))

    def stream_subjects(self, index: int) -> list[str]:
        """The subjects stream number ``index`` captures: ``<prefix>.*`` for the only
        stream, else exactly its partitions' subjects."""
        if self.streams == 1:
            self._check_stream_index(index)
            return [f"{self.subject_prefix}.*"]
        return [self.subject(partition) for partition in self.stream_partitions(index)]

    def _check_stream_index(self, index: int) -> None:
        if type(index) is not int or not 0 <= index < self.streams:
            raise ValueError(f"stream index must be from 0 to {self.streams - 1}, got {index!r}")

    def durable(self, partition: int) -> str:
        """The durable consumer that workers of ``partition`` share."""
        self.check_partition(partition)
        return f"meterline-worker-p{partition}"

    def check_partition(self, partition: int) -> int:
        """``partition`` if it is one of these settings' partitions, else ValueError."""
        if type(partition) is not int or not 0 <= partition < self.partitions:
            raise ValueError(
                f"partition must be from 0 to {self.partitions - 1}, got {partition!r}"
            )
        return partition
