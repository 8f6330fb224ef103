"""Running the HTTP API in a process: open the ledger, build the app, serve with uvicorn.

Also the one way another process starts a server and waits for it to answer health, used
by the benchmarks and the test fixtures alike.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import uvicorn

from meterline.api.app import create_app
from meterline.clock import NOW_VARIABLE, clock_offset_us, system_clock_us
from meterline.core.admission import LAG_MAX_MS_DEFAULT
from meterline.core.events import format_timestamp
from meterline.ledger import open_ledger

if TYPE_CHECKING:
    from meterline.stream.settings import StreamSettings


def serve(
    db: str | Path,
    host: str = "127.0.0.1",
    port: int = 8787,
    stream: str | None = None,
    namespace: str = "meterline",
    replicas: int = 1,
    webhooks_allow_private: bool | None = None,
    streams: int = 1,
    lag_max_ms: int = LAG_MAX_MS_DEFAULT,
    fd: int | None = None,
) -> None:
    """Serve the API over the ledger at ``db`` until interrupted; with ``stream`` (the
    NATS servers), in stream mode: events go to JetStream for ``meterline worker``, over
    ``streams`` streams (``--streams``; the workers must be given the same).
    ``webhooks_allow_private``, ``lag_max_ms``: see ``create_app``. ``fd``: an inherited
    socket that already listens, served instead of binding ``host``/``port``."""
    from meterline.logs import configure_logging

    configure_logging("meterline-api")
    if clock_offset_us():
        logging.getLogger("meterline.api").warning(
            "%s is set: the clock reads %s, not the system's time",
            NOW_VARIABLE,
            format_timestamp(system_clock_us()),
        )
    ledger = open_ledger(db)
    settings = None
    if stream is not None:
        from meterline.stream.naming import stream_settings

        try:
            settings = stream_settings(
                stream, ledger.store.partitions, namespace, replicas, streams
            )
        except ValueError:
            ledger.close()
            raise
        try:
            _check_stream_layout(settings)
        except BaseException:
            ledger.close()
            raise
    from meterline.ledger.checkpoints import start_checkpointer

    checkpointer = None if settings is not None else start_checkpointer(ledger.store, ledger.clock)
    try:
        uvicorn.run(
            create_app(
                ledger,
                stream=settings,
                webhooks_allow_private=webhooks_allow_private,
                lag_max_ms=lag_max_ms,
            ),
            host=host,
            port=port,
            fd=fd,
            log_level="warning",
            access_log=False,
            # open access streams never end by themselves: give them this long, then close
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
    finally:
        if checkpointer is not None:
            checkpointer.stop()
        ledger.close()


LAYOUT_CHECK_TIMEOUT_S = 3.0
"""How long ``serve`` tries NATS before starting, to refuse a wrong ``--streams`` at once."""


def _check_stream_layout(settings: StreamSettings) -> None:
    """Raise ``StreamLayoutError`` when NATS answers and holds the namespace's streams laid
    out otherwise than ``settings`` (a ``--streams`` that differs from the workers'), so
    the command fails with one line instead of the app's startup traceback. NATS not
    answering is not an error here: the replica starts and keeps retrying it."""
    import asyncio

    from meterline.stream.connection import connect
    from meterline.stream.setup import check_stream_layout

    async def check() -> None:
        try:
            connection = await asyncio.wait_for(
                connect(settings, "meterline-api-layout-check"), LAYOUT_CHECK_TIMEOUT_S
            )
        except Exception:
            return
        try:
            await check_stream_layout(connection.jetstream(), settings)
        finally:
            await connection.close()

    asyncio.run(check())


SHUTDOWN_GRACE_S = 2
"""Seconds a stopping server waits for open requests (an access stream never ends)."""

SERVER_START_TIMEOUT_S = 30.0
"""How long ``spawn_server`` waits for a new server to answer ``/v1/health``."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn_server(
    db: str | Path, port: int | None = None, stream_args: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m meterline serve`` on ``db`` in a child process.

    Returns the process and its base URL once it answers health; raises (and kills it)
    if it exits or does not answer within ``SERVER_START_TIMEOUT_S``. Without ``port``,
    this process binds a free loopback port and hands the listening socket to the child:
    a port picked free and bound later could be taken in between by another server
    starting at the same moment, whose health answer would then pass for this one's.
    """
    listener: socket.socket | None = None
    if port:
        place = ("--port", str(port))
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(LISTEN_BACKLOG)
        port = int(listener.getsockname()[1])
        place = ("--fd", str(listener.fileno()))
    url = f"http://127.0.0.1:{port}"
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "meterline", "serve", "--db", str(db), *place, *stream_args],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            pass_fds=() if listener is None else (listener.fileno(),),
        )
    finally:
        if listener is not None:
            listener.close()  # the child holds its own copy
    wait_for_health(process, url)
    return process, url


LISTEN_BACKLOG = 2048
"""Connections a handed-over listening socket queues (uvicorn's own default)."""


def wait_for_health(
    process: subprocess.Popen[bytes], url: str, timeout_s: float = SERVER_START_TIMEOUT_S
) -> None:
    """Return once the server ``process`` at ``url`` answers health; raise (and kill it)
    if it exits first or does not answer within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError("server did not answer health in time")
