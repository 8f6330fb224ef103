"""Where and how meterline's events travel through NATS JetStream (pure configuration).

Owns ``StreamSettings``: the servers (parsed from the ``--stream`` URL list), the stream,
subject and KV bucket names, the partition count, the replica count, the message size
limit and the ack wait of the partition consumers. Invariants: every name is valid for
NATS (no wildcards, dots only between subject tokens), the partition count passes
``check_partition_count`` and a message limit always fits one maximal event and stays
under NATS's default 1 MiB ``max_payload``.
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
