"""What the distributed path is doing: workers, partitions, lag, rates, blocked customers.

Each worker puts a document of its counters into the status bucket every second (one key
per worker, kept ``WORKER_STALE_S`` after it stops talking). ``cluster_status`` gathers,
for ``meterline status`` and the API's ``/metrics``: every partition's consumer (messages
waiting, delivered but unacknowledged, redeliveries), its stream and its owner, the
streams' sizes (``stream`` sums them, keeping the single-stream shape, with the first
stream's cluster; ``streams`` lists each with its partition range and its leader),
each worker's events/s and totals, the ledger's head, and the customers whose access is
denied (from the access bucket every replica mirrors).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from meterline.core.events import decode_exact, encode_canonical
from meterline.stream.access import customer_key, key_customer
from meterline.stream.errors import StreamUnavailable
from meterline.stream.settings import StreamSettings

STATUS_BUCKET_SUFFIX = "_status"
"""The status bucket is the access bucket's name plus this."""
WORKER_STALE_S = 10.0
"""A worker silent this long is shown as gone (its partitions as unowned)."""
API_TIMEOUT_S = 5.0


def worker_document(
    name: str,
    partitions: list[int],
    stats: dict[str, Any],
    events_per_s: float,
    engine: dict[str, Any],
    now_us: int,
) -> dict[str, Any]:
    """What a worker reports about itself."""
    return {
        "worker": name,
        "partitions": list(partitions),
        "events_per_s": round(events_per_s, 1),
        "events_applied": stats.get("events_applied", 0),
        "duplicates": stats.get("duplicates", 0),
        "conflicts": stats.get("conflicts", 0),
        "batches": stats.get("batches", 0),
        "store_errors": stats.get("store_errors", 0),
        "stream_errors": stats.get("stream_errors", 0),
        "stalled": {str(k): v for k, v in dict(stats.get("stalled", {})).items()},
        "live_applied": engine.get("applied", []),
        "live_customers": engine.get("customers", 0),
        "reported_at_us": now_us,
    }


class StatusBoard:
    """The workers' status bucket."""

    def __init__(self, key_value: KeyValue, js: JetStreamContext, bucket: str) -> None:
        self.key_value = key_value
        self._js = js
        self._bucket = bucket

    @classmethod
    async def open(cls, connection: Client, settings: StreamSettings) -> StatusBoard:
        js = connection.jetstream(timeout=API_TIMEOUT_S)
        bucket = settings.access_bucket + STATUS_BUCKET_SUFFIX
        try:
            key_value = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            key_value = await js.create_key_value(
                api.KeyValueConfig(
                    bucket=bucket,
                    description="meterline worker status, one key per worker",
                    history=1,
                    replicas=settings.replicas,
                    storage=api.StorageType.MEMORY,
                )
            )
        return cls(key_value, js, bucket)

    async def put(self, worker: str, document: dict[str, Any]) -> None:
        try:
            await self.key_value.put(customer_key(worker), encode_canonical(document))
        except (TimeoutError, nats.errors.Error) as error:
            raise StreamUnavailable(f"status put failed: {error!r}") from error

    async def remove(self, worker: str) -> None:
        await self.key_value.delete(customer_key(worker))

    async def workers(self) -> list[dict[str, Any]]:
        """Every worker's last document. The keys are read from the bucket's stream info,
        not with ``KeyValue.keys()``: that creates an ephemeral consumer, which a cluster
        with a node down may place on that node and never answer (nats-server 2.9), so
        ``meterline status`` would fail just when it is needed."""
        documents = []
        prefix = f"$KV.{self._bucket}."
        info = await self._js.stream_info(f"KV_{self._bucket}", subjects_filter=f"{prefix}>")
        keys = sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))
        for key in keys:
            with contextlib.suppress(
                nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError
            ):
                entry = await self.key_value.get(key)
                if entry.value:
                    document = decode_exact(entry.value)
                    document["worker"] = key_customer(key)
                    documents.append(document)
        return sorted(documents, key=lambda document: str(document["worker"]))


async def cluster_status(
    connection: Client, settings: StreamSettings, now_us: int, access: dict[str, Any]
) -> dict[str, Any]:
    """The whole picture (see the module docstring); ``access`` is the access mirror."""
    js = connection.jetstream(timeout=API_TIMEOUT_S)
    streams = [await js.stream_info(name) for name in settings.stream_names()]
    board = await StatusBoard.open(connection, settings)
    workers = await board.workers()
    fresh = [
        worker
        for worker in workers
        if now_us - int(worker.get("reported_at_us", 0)) <= WORKER_STALE_S * 1_000_000
    ]
    owners = {int(p): str(worker["worker"]) for worker in fresh for p in worker["partitions"]}

    async def consumer(partition: int) -> dict[str, Any]:
        try:
            info = await js.consumer_info(
                settings.stream_of(partition), settings.durable(partition)
            )
        except nats.js.errors.NotFoundError:
            return {
                "partition": partition,
                "stream": settings.stream_of(partition),
                "consumer": None,
                "lag": None,
            }
        waiting = info.num_pending or 0
        unacknowledged = info.num_ack_pending or 0
        return {
            "partition": partition,
            "stream": settings.stream_of(partition),
            "consumer": settings.durable(partition),
            "waiting": waiting,
            "unacknowledged": unacknowledged,
            "redelivered": info.num_redelivered or 0,
            "lag": waiting + unacknowledged,
            "owner": owners.get(partition),
        }

    partitions = await asyncio.gather(*(consumer(p) for p in range(settings.partitions)))
    blocked = sorted(
        (customer, document.get("decision", {}))
        for customer, document in access.items()
        if document.get("decision", {}).get("blocked")
    )
    return {
        "stream": {
            "name": settings.stream,
            "count": settings.streams,
            "messages": sum(stream.state.messages for stream in streams),
            "bytes": sum(stream.state.bytes for stream in streams),
            "replicas": streams[0].config.num_replicas,
            "cluster": _cluster(streams[0]),
        },
        "streams": [
            {
                "name": stream.config.name,
                "partitions": _range_text(settings.stream_partitions(index)),
                "messages": stream.state.messages,
                "bytes": stream.state.bytes,
                "replicas": stream.config.num_replicas,
                "cluster": _cluster(stream),
            }
            for index, stream in enumerate(streams)
        ],
        "partitions": list(partitions),
        "lag": sum(p["lag"] or 0 for p in partitions),
        "workers": [{**worker, "alive": worker in fresh} for worker in workers],
        "events_per_s": round(sum(float(w.get("events_per_s", 0)) for w in fresh), 1),
        "blocked": [
            {
                "customer": customer,
                "reason": decision.get("reason"),
                "policy": decision.get("policy"),
            }
            for customer, decision in blocked
        ],
    }


def _cluster(stream: api.StreamInfo) -> dict[str, Any] | None:
    """The stream's leader and replicas, None outside a cluster."""
    if stream.cluster is None:
        return None
    return {
        "leader": stream.cluster.leader,
        "replicas": [
            {"name": peer.name, "current": peer.current, "lag": peer.lag}
            for peer in (stream.cluster.replicas or [])
        ],
    }


def _range_text(partitions: range) -> str:
    return f"{partitions[0]}-{partitions[-1]}" if len(partitions) > 1 else str(partitions[0])
