"""``meterline status``: the distributed path's state, read once (sync face over
``stream.status``)."""

from __future__ import annotations

import asyncio
from typing import Any

from meterline.clock import system_clock_us
from meterline.ledger.ledger import open_store
from meterline.stream.access import AccessBoard
from meterline.stream.connection import connect
from meterline.stream.errors import StreamUnavailable
from meterline.stream.naming import stream_settings
from meterline.stream.settings import StreamSettings
from meterline.stream.status import cluster_status

CONNECT_TIMEOUT_S = 10.0
ACCESS_READY_TIMEOUT_S = 30.0
"""How long the access bucket has to load. Longer than a replica's: its watcher is an
ephemeral consumer, which a cluster with a node down may place on that node (nats-server
2.9 answers nothing then); the board retries every few seconds, and this lets it."""


def read_status(db: str, stream_url: str, namespace: str = "meterline") -> dict[str, Any]:
    """Partitions, lag, workers, rates and blocked customers, with the ledger's head."""
    store = open_store(db)
    try:
        head_sequence, head_hash = store.head()
        partitions = store.partitions
    finally:
        store.close()
    settings = stream_settings(stream_url, partitions, namespace)
    status = asyncio.run(_gather(settings))
    status["ledger"] = {
        "head_sequence": head_sequence,
        "head_hash": head_hash.hex(),
        "partitions": partitions,
    }
    return status


async def _gather(settings: StreamSettings) -> dict[str, Any]:
    try:
        connection = await asyncio.wait_for(
            connect(settings, "meterline-status"), CONNECT_TIMEOUT_S
        )
    except (TimeoutError, OSError, Exception) as error:
        raise StreamUnavailable(f"--stream: cannot reach {settings.servers}: {error!r}") from None
    try:
        board = await AccessBoard.open(connection, settings, ACCESS_READY_TIMEOUT_S)
        try:
            return await cluster_status(connection, settings, system_clock_us(), dict(board.mirror))
        finally:
            await board.close()
    finally:
        await connection.close()
