"""A real 3-node JetStream cluster of nats-server processes on loopback, for tests.

Owns the processes: each node has its own client and route ports (free loopback ports,
never 4222 or the other NATS defaults), its own ``-sd`` store directory and log file
under the given directory. ``NatsCluster`` is a context manager that starts every node,
waits until the cluster has a JetStream meta leader (``js.account_info()`` answers), and
always kills every process on exit, and at interpreter exit should a test forget.
``stop(i)`` sends SIGTERM and waits; ``start(i)`` restarts the node on the same ports and
store, so it rejoins with its data.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import nats

from tests.support.ports import free_port

NATS_SERVER = (
    os.environ.get("METERLINE_NATS_SERVER")
    or shutil.which("nats-server")
    or ("/usr/sbin/nats-server")
)
"""The nats-server executable (``METERLINE_NATS_SERVER`` overrides)."""

READY_TIMEOUT_S = 60.0
"""Seconds the cluster has to elect a JetStream meta leader."""

PORT_TIMEOUT_S = 15.0
"""Seconds a started node has to accept client connections."""

STOP_TIMEOUT_S = 15.0
"""Seconds a node has to exit after SIGTERM before it is killed."""

PROBE_INTERVAL_S = 0.2
"""Seconds between two readiness probes."""


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _run_in_own_loop(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` to completion in a fresh event loop on a fresh thread, so a sync
    caller may wait on it whether or not its own thread runs an event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


@dataclass
class NatsNode:
    """One nats-server of the cluster."""

    index: int
    name: str
    client_port: int
    route_port: int
    store_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class NatsCluster:
    """A JetStream cluster of ``size`` nats-server processes under ``directory``."""

    def __init__(self, directory: Path, size: int = 3, name: str = "meterline-test") -> None:
        if not Path(NATS_SERVER).exists():
            raise RuntimeError(
                f"nats-server not found at {NATS_SERVER} (apt-get install nats-server)"
            )
        self.directory = directory
        self.cluster_name = name
        directory.mkdir(parents=True, exist_ok=True)
        self.nodes = [
            NatsNode(
                index,
                f"{name}-n{index}",
                free_port(),
                free_port(),
                directory / f"n{index}" / "jetstream",
                directory / f"n{index}.log",
            )
            for index in range(size)
        ]
        atexit.register(self.close)

    @property
    def urls(self) -> list[str]:
        """The client URL of every node, running or not."""
        return [node.url for node in self.nodes]

    def index_of_port(self, port: int) -> int:
        """The node whose client port is ``port``."""
        for node in self.nodes:
            if node.client_port == port:
                return node.index
        raise KeyError(port)

    def __enter__(self) -> NatsCluster:
        try:
            for node in self.nodes:
                self._spawn(node)
            for node in self.nodes:
                self._wait_port(node)
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self, node: NatsNode) -> None:
        node.store_dir.mkdir(parents=True, exist_ok=True)
        routes = ",".join(
            f"nats://127.0.0.1:{other.route_port}" for other in self.nodes if other is not node
        )
        command = [
            NATS_SERVER,
            "-a", "127.0.0.1",
            "-p", str(node.client_port),
            "-js",
            "-sd", str(node.store_dir),
            "--server_name", node.name,
            "--cluster_name", self.cluster_name,
            "--cluster", f"nats://127.0.0.1:{node.route_port}",
            "--routes", routes,
        ]  # fmt: skip
        with node.log_path.open("ab") as log:
            node.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _wait_port(self, node: NatsNode) -> None:
        deadline = time.monotonic() + PORT_TIMEOUT_S
        while not _port_open(node.client_port):
            if node.process is not None and node.process.poll() is not None:
                raise RuntimeError(
                    f"{node.name} exited with {node.process.returncode}:\n{node.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} did not listen within {PORT_TIMEOUT_S} s")
            time.sleep(0.05)

    def start(self, index: int) -> None:
        """Start node ``index`` again (same ports, same store) and wait for its port."""
        node = self.nodes[index]
        if node.running:
            return
        self._spawn(node)
        self._wait_port(node)

    def stop(self, index: int) -> None:
        """Stop node ``index``: SIGTERM, wait, SIGKILL if it lingers."""
        node = self.nodes[index]
        process, node.process = node.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def kill(self, index: int) -> None:
        """Kill node ``index`` at once (SIGKILL), as a crash would."""
        node = self.nodes[index]
        process, node.process = node.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    async def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until every running node answers JetStream account info (a meta leader)."""
        deadline = time.monotonic() + timeout_s
        last_error: BaseException | None = None
        for node in self.nodes:
            if not node.running:
                continue
            while True:
                try:
                    connection = await nats.connect(
                        node.url, allow_reconnect=False, connect_timeout=2
                    )
                    try:
                        await connection.jetstream(timeout=2).account_info()
                        break
                    finally:
                        await connection.close()
                except Exception as error:
                    last_error = error
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no JetStream meta leader via {node.name} within {timeout_s} s:"
                        f" {last_error!r}\n{node.log_tail()}"
                    )
                await asyncio.sleep(PROBE_INTERVAL_S)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """``ready`` for sync callers (runs on its own thread and event loop)."""
        _run_in_own_loop(self.ready(timeout_s))

    def close(self) -> None:
        """Kill every node; safe to call twice."""
        for node in self.nodes:
            process, node.process = node.process, None
            if process is not None and process.poll() is None:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=STOP_TIMEOUT_S)
        atexit.unregister(self.close)
