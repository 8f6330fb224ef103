"""``meterline status``: the distributed path's state, read once (sync face over
``stream.status``).

A look changes nothing and fails in one line: NATS unreachable (each server tried twice,
then ``StreamUnavailable`` naming the servers and the cause), no JetStream there, streams
laid out for another ``--streams`` (``StreamLayoutError``), or no stream of the namespace
yet (checked before the access bucket is opened, which would create it)."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from meterline.clock import system_clock_us
from meterline.ledger.event_ledger import open_store
from meterline.stream.access import AccessBoard
from meterline.stream.errors import StreamUnavailable
from meterline.stream.naming import stream_settings
from meterline.stream.settings import StreamSettings
from meterline.stream.setup import check_stream_layout
from meterline.stream.status import API_TIMEOUT_S, cluster_status

CONNECT_TIMEOUT_S = 10.0
ACCESS_READY_TIMEOUT_S = 30.0
"""How long the access bucket has to load. Longer than a replica's: its watcher is an
ephemeral consumer, which a cluster with a node down may place on that node (nats-server
2.9 answers nothing then); the board retries every few seconds, and this lets it."""


def read_status(
    db: str, stream_url: str, namespace: str = "meterline", streams: int = 1
) -> dict[str, Any]:
    """Partitions, lag, workers, rates and blocked customers, with the ledger's head."""
    store = open_store(db)
    try:
        head_sequence, head_hash = store.head()
        partitions = store.partitions
    finally:
        store.close()
    settings = stream_settings(stream_url, partitions, namespace, streams=streams)
    status = asyncio.run(_gather(settings))
    status["ledger"] = {
        "head_sequence": head_sequence,
        "head_hash": head_hash.hex(),
        "partitions": partitions,
    }
    return status


async def _connect_once(settings: StreamSettings) -> Client:
    """One connection for one look: each server tried twice, quickly, then give up (the
    shared ``connect`` retries forever, as a long-running process should); failures are
    kept for the message rather than logged one per attempt."""
    failures: list[Exception] = []

    async def on_error(error: Exception) -> None:
        failures.append(error)

    try:
        client: Client = await asyncio.wait_for(
            nats.connect(
                servers=list(settings.servers),
                name="meterline-status",
                connect_timeout=CONNECT_TIMEOUT_S / 2,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=on_error,
            ),
            CONNECT_TIMEOUT_S,
        )
    except (TimeoutError, OSError, nats.errors.Error) as error:
        cause = failures[-1] if failures else error
        reason = str(cause) or type(cause).__name__
        raise StreamUnavailable(
            f"--stream: cannot reach NATS at {_servers(settings)} ({reason}): start"
            " nats-server -js there, or point --stream at it"
        ) from None
    return client


def _servers(settings: StreamSettings) -> str:
    return ",".join(settings.servers)


async def _gather(settings: StreamSettings) -> dict[str, Any]:
    connection = await _connect_once(settings)
    servers = _servers(settings)
    try:
        js = connection.jetstream(timeout=API_TIMEOUT_S)
        # the stream first: opening the access board would create its bucket, and a look
        # must not build what a worker or `serve --stream` is meant to
        name = settings.stream_names()[0]
        try:
            await check_stream_layout(js, settings)
            for name in settings.stream_names():
                await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            raise StreamUnavailable(
                f"no stream {name} at {servers}: start a worker or `meterline serve --stream` first"
            ) from None
        except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            raise StreamUnavailable(
                f"no JetStream at {servers}: run nats-server with -js (JetStream enabled)"
            ) from None
        board = await AccessBoard.open(connection, settings, ACCESS_READY_TIMEOUT_S)
        try:
            return await cluster_status(connection, settings, system_clock_us(), dict(board.mirror))
        finally:
            await board.close()
    except (TimeoutError, nats.errors.Error) as error:
        raise StreamUnavailable(f"--stream: {servers}: {str(error) or repr(error)}") from None
    finally:
        await connection.close()
