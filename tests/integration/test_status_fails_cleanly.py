"""``meterline status`` fails in one clear line, exit 2 and no traceback: no stream of the
namespace on the shared NATS at 127.0.0.1:4222, NATS unreachable, NATS without JetStream,
no ledger. A look creates nothing (no bucket, no ledger file)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import nats
import pytest
from nats.js.errors import BucketNotFoundError

from meterline.ledger.event_ledger import open_store
from tests.conftest import Location
from tests.integration.test_distributed import LOCAL_NATS, delete_namespace, require_local_nats
from tests.support.nats_cluster import NATS_SERVER
from tests.support.ports import free_port

NewDb = Callable[..., Location]
COMMAND_TIMEOUT_S = 60.0


def status(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``meterline status`` with ``args``, and the seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "meterline", "status", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    return done, time.monotonic() - started


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line on stderr (and nothing on stdout)."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def ledger(new_db: NewDb) -> str:
    """An empty ledger (status reads its head)."""
    db = new_db("status")
    open_store(db).close()
    return str(db)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace nothing on the shared server has used (anything made is deleted)."""
    require_local_nats()
    name = f"t{uuid4().hex[:8]}"
    try:
        yield name
    finally:
        asyncio.run(delete_namespace(name))


async def bucket_exists(bucket: str) -> bool:
    connection = await nats.connect(LOCAL_NATS, allow_reconnect=False, connect_timeout=5)
    try:
        with contextlib.suppress(BucketNotFoundError):
            await connection.jetstream().key_value(bucket)
            return True
        return False
    finally:
        await connection.close()


def test_no_stream_is_one_line_and_creates_nothing(ledger: str, namespace: str) -> None:
    """NATS up, no stream of the namespace: one line naming the stream and the server,
    exit 2; the access and status buckets were not created by looking."""
    done, _ = status("--db", ledger, "--stream", LOCAL_NATS, "--namespace", namespace)
    assert one_line(done) == (
        f"error: no stream {namespace.upper()}_EVENTS at {LOCAL_NATS}: start a worker or"
        " `meterline serve --stream` first"
    )
    assert not asyncio.run(bucket_exists(f"{namespace}_access"))
    assert not asyncio.run(bucket_exists(f"{namespace}_access_status"))


def test_unreachable_nats_is_one_line_and_quick(ledger: str) -> None:
    """Nothing listening: each server tried twice, then one line naming them and why."""
    servers = f"nats://127.0.0.1:{free_port()},nats://127.0.0.1:{free_port()}"
    done, seconds = status("--db", ledger, "--stream", servers)
    line = one_line(done)
    assert line.startswith(f"error: --stream: cannot reach NATS at {servers} (")
    assert "Connect call failed" in line
    assert line.endswith("start nats-server -js there, or point --stream at it")
    assert seconds < 30


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def test_nats_without_jetstream_is_one_line(ledger: str, tmp_path: Path) -> None:
    """A private nats-server without -js (started and stopped here): one line saying so."""
    port = free_port()
    with (tmp_path / "nats.log").open("wb") as log:
        server = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 15
        while not listening(port):
            assert time.monotonic() < deadline, "nats-server did not listen"
            time.sleep(0.05)
        done, _ = status("--db", ledger, "--stream", f"nats://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert one_line(done) == (
        f"error: no JetStream at nats://127.0.0.1:{port}: run nats-server with -js (JetStream"
        " enabled)"
    )


def test_a_missing_ledger_is_one_line_and_not_created(tmp_path: Path) -> None:
    """--db naming nothing: said so, and no empty ledger file is left behind."""
    missing = tmp_path / "none.db"
    done, _ = status("--db", str(missing), "--stream", "nats://127.0.0.1:1")
    assert one_line(done) == f"error: --db: {missing} does not exist"
    assert not missing.exists()
