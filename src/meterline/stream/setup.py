"""Creating (or bringing up to date) the streams, the partition consumers and the KV bucket.

Owns the JetStream configuration meterline relies on: file-backed streams (one over
``<prefix>.*``, or several, each over its partition range's subjects: see
``stream.settings``) that deduplicate on ``Nats-Msg-Id`` inside ``DUPLICATE_WINDOW_S``,
one durable pull consumer per partition on its partition's stream, with explicit acks and
unlimited redelivery (a message is never dropped: the ledger absorbs the duplicates), and
the access KV bucket. Every function is idempotent: calling it when the object exists
with the same configuration changes nothing; with a different updatable configuration it
updates it.

Invariant: a stream's subjects are never changed. Before creating or updating anything,
``check_stream_layout`` compares the streams NATS holds for the namespace's subjects with
the settings' layout and raises ``StreamLayoutError`` on any difference (another stream
count, a stream under another name): moving a subject to another stream would strand the
messages stored under it, so changing the stream count is an operator's step (drain,
then remove the old streams; docs/production.md), never done implicitly.
"""

from __future__ import annotations

import json
import logging

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from meterline.stream.errors import StreamLayoutError
from meterline.stream.settings import StreamSettings

DUPLICATE_WINDOW_S = 120.0
"""Seconds JetStream remembers a message id: a republished message inside it is dropped.
Past it, the ledger's idempotency on ``(customer, id)`` still applies each event once."""

ACK_PENDING_MAX = 256
"""Messages of one partition delivered and not yet acknowledged, at most."""

STREAM_NAME_IN_USE = 10058
"""JetStream's error code for creating a stream or bucket that exists with another config."""

SUBJECTS_OVERLAP = 10065
"""JetStream's error code for a stream whose subjects overlap another stream's."""

CHANGING_STREAMS = "docs/production.md, 'Changing the stream count'"
"""Where the safe procedure for another stream count is written down."""

_log = logging.getLogger(__name__)


def stream_config(settings: StreamSettings, index: int = 0) -> api.StreamConfig:
    """The configuration of stream number ``index`` that ``settings`` call for."""
    partitions = settings.stream_partitions(index)
    description = "meterline event batches, one subject per partition"
    if settings.streams > 1:
        description += (
            f"; partitions {partitions[0]}-{partitions[-1]} of {settings.partitions}"
            f" (stream {index} of {settings.streams})"
        )
    return api.StreamConfig(
        name=settings.stream_name(index),
        description=description,
        subjects=settings.stream_subjects(index),
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


async def ensure_stream(js: JetStreamContext, settings: StreamSettings) -> list[api.StreamInfo]:
    """Create every stream of ``settings``, or update one that exists with another
    configuration (never its subjects). Raises ``StreamLayoutError`` when the streams on
    NATS are laid out otherwise (see the module docstring)."""
    await check_stream_layout(js, settings)
    return [await _ensure_one(js, settings, index) for index in range(settings.streams)]


async def _ensure_one(js: JetStreamContext, settings: StreamSettings, index: int) -> api.StreamInfo:
    config = stream_config(settings, index)
    try:
        return await js.add_stream(config)
    except BadRequestError as error:
        if error.err_code == SUBJECTS_OVERLAP:  # another process changed the layout meanwhile
            await check_stream_layout(js, settings)
            raise StreamLayoutError(_layout_message(settings, str(error))) from None
        if error.err_code != STREAM_NAME_IN_USE:
            raise
    existing = await js.stream_info(settings.stream_name(index))
    found = sorted(existing.config.subjects or [])
    if found != sorted(settings.stream_subjects(index)):
        raise StreamLayoutError(
            _layout_message(settings, f"stream {existing.config.name} has subjects {found}")
        )
    _log.info("updating stream configuration", extra={"stream": config.name})
    return await js.update_stream(config)


async def check_stream_layout(js: JetStreamContext, settings: StreamSettings) -> None:
    """Raise ``StreamLayoutError`` unless every stream NATS holds that captures one of the
    namespace's subjects is one of ``settings``' streams with exactly its subjects (streams
    not created yet are fine: ``ensure_stream`` creates them)."""
    # STREAM.NAMES filtered by subject lists the streams whose subjects collide with the
    # filter; nats-py's find_stream_name_by_subject returns only the first of them
    request = json.dumps({"subject": f"{settings.subject_prefix}.*"}).encode()
    reply = await js._api_request(f"{js._prefix}.STREAM.NAMES", request, timeout=js._timeout)
    expected = settings.stream_names()
    for name in sorted(reply.get("streams") or []):
        info = await js.stream_info(name)
        found = sorted(info.config.subjects or [])
        if name not in expected:
            raise StreamLayoutError(
                _layout_message(settings, f"stream {name} exists with subjects {found}")
            )
        wanted = sorted(settings.stream_subjects(expected.index(name)))
        if found != wanted:
            raise StreamLayoutError(
                _layout_message(settings, f"stream {name} has subjects {found}, not {wanted}")
            )


def _layout_message(settings: StreamSettings, finding: str) -> str:
    return (
        f"--streams: {finding}; this process expects {settings.streams} stream(s)"
        f" ({', '.join(settings.stream_names())}) over {settings.partitions} partitions."
        " Give every API replica and worker the --streams the deployment was created with,"
        f" or change it by the safe procedure ({CHANGING_STREAMS})"
    )


async def ensure_consumer(
    js: JetStreamContext, settings: StreamSettings, partition: int
) -> api.ConsumerInfo:
    """Create the durable consumer of ``partition`` on its stream, or update its updatable
    settings."""
    return await js.add_consumer(
        settings.stream_of(partition), consumer_config(settings, partition)
    )


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
