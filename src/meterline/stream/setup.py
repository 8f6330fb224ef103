"""Creating (or bringing up to date) the stream, the partition consumers and the KV bucket.

Owns the JetStream configuration meterline relies on: a file-backed stream over
``<prefix>.*`` that deduplicates on ``Nats-Msg-Id`` inside ``DUPLICATE_WINDOW_S``, one
durable pull consumer per partition with explicit acks and unlimited redelivery (a
message is never dropped: the ledger absorbs the duplicates), and the access KV bucket.
Every function is idempotent: calling it when the object exists with the same
configuration changes nothing; with a different updatable configuration it updates it.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from meterline.stream.settings import StreamSettings

DUPLICATE_WINDOW_S = 120.0
"""Seconds JetStream remembers a message id: a republished message inside it is dropped.
Past it, the ledger's idempotency on ``(customer, id)`` still applies each event once."""

ACK_PENDING_MAX = 256
"""Messages of one partition delivered and not yet acknowledged, at most."""

STREAM_NAME_IN_USE = 10058
"""JetStream's error code for creating a stream or bucket that exists with another config."""

_log = logging.getLogger(__name__)


def stream_config(settings: StreamSettings) -> api.StreamConfig:
    """The stream configuration ``settings`` call for."""
    return api.StreamConfig(
        name=settings.stream,
        description="meterline event batches, one subject per partition",
        subjects=[f"{settings.subject_prefix}.*"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        discard=api.DiscardPolicy.OLD,
        max_age=0,
        max_msgs=-1,
        max_bytes=-1,
        max_consumers=-1,
    )


def consumer_config(settings: StreamSettings, partition: int) -> api.ConsumerConfig:
    """The durable pull consumer configuration of ``partition``."""
    durable = settings.durable(partition)
    return api.ConsumerConfig(
        name=durable,
        durable_name=durable,
        description=f"meterline workers of partition {partition}",
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=ACK_PENDING_MAX,
        filter_subject=settings.subject(partition),
        replay_policy=api.ReplayPolicy.INSTANT,
    )


async def ensure_stream(js: JetStreamContext, settings: StreamSettings) -> api.StreamInfo:
    """Create the stream, or update it when it exists with another configuration."""
    config = stream_config(settings)
    try:
        return await js.add_stream(config)
    except BadRequestError as error:
        if error.err_code != STREAM_NAME_IN_USE:
            raise
    _log.info("updating stream configuration", extra={"stream": settings.stream})
    return await js.update_stream(config)


async def ensure_consumer(
    js: JetStreamContext, settings: StreamSettings, partition: int
) -> api.ConsumerInfo:
    """Create the durable consumer of ``partition``, or update its updatable settings."""
    return await js.add_consumer(settings.stream, consumer_config(settings, partition))


async def ensure_access_bucket(js: JetStreamContext, settings: StreamSettings) -> KeyValue:
    """The access KV bucket (history 1, ``settings.replicas`` replicas), created if missing.

    A bucket that exists with another configuration is used as it is (and logged): its
    replica count is an operator's decision once it holds data.
    """
    config = api.KeyValueConfig(
        bucket=settings.access_bucket,
        description="meterline access documents, one key per customer",
        history=1,
        replicas=settings.replicas,
        storage=api.StorageType.FILE,
    )
    try:
        return await js.create_key_value(config)
    except BadRequestError as error:
        if error.err_code != STREAM_NAME_IN_USE:
            raise
    _log.warning(
        "access bucket exists with another configuration; using it as it is",
        extra={"bucket": settings.access_bucket},
    )
    return await js.key_value(settings.access_bucket)
