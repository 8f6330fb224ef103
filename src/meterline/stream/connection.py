"""Opening the NATS connection every stream component uses.

Owns the client options: a connection never gives up reconnecting (an API replica or a
worker outlives any one NATS node), fails over across every configured server, notices a
dead peer within ``PING_INTERVAL_S * (PINGS_OUTSTANDING_MAX + 1)`` and logs each
disconnect and reconnect. What to do while disconnected (answer 503, retry a fetch) is
the caller's business.
"""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client

from meterline.stream.settings import StreamSettings

CONNECT_TIMEOUT_S = 5.0
"""Seconds one attempt to reach one server may take."""

RECONNECT_WAIT_S = 0.5
"""Seconds between two reconnect attempts to the same server."""

PING_INTERVAL_S = 5.0
"""Seconds between the client's liveness pings."""

PINGS_OUTSTANDING_MAX = 2
"""Unanswered pings after which the client drops the connection and fails over."""

PENDING_BYTES_MAX = 32 * 1024 * 1024
"""Bytes the client buffers while reconnecting before publishes fail at once."""

_log = logging.getLogger(__name__)


async def connect(settings: StreamSettings, name: str) -> Client:
    """A connection to any server of ``settings``, reconnecting forever once established.

    Raises the client's error (``nats.errors.NoServersError``, ``OSError``, a timeout)
    when no server answers the first time.
    """

    async def on_error(error: Exception) -> None:
        _log.warning("nats error", extra={"connection": name, "error": repr(error)})

    async def on_disconnected() -> None:
        if not client.is_closed:  # closing on purpose is not worth a warning
            _log.warning("nats disconnected", extra={"connection": name})

    async def on_reconnected() -> None:
        url = client.connected_url
        server = url.geturl() if url is not None else None
        _log.warning("nats reconnected", extra={"connection": name, "server": server})

    client: Client = await nats.connect(
        servers=list(settings.servers),
        name=name,
        connect_timeout=CONNECT_TIMEOUT_S,
        reconnect_time_wait=RECONNECT_WAIT_S,
        max_reconnect_attempts=-1,
        ping_interval=PING_INTERVAL_S,
        max_outstanding_pings=PINGS_OUTSTANDING_MAX,
        pending_size=PENDING_BYTES_MAX,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
    return client
