"""The child processes ``meterline bench scale`` starts: each logs to a file, dies with
the benchmark, is stopped (SIGTERM, then SIGKILL) by a deadline; waiting with deadlines,
reading a child's answer line, the benchmark's own ``nats-server``, and SIGTERM taken as
Ctrl-C so every cleanup runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from meterline.api.server import free_port

NATS_SERVER = os.environ.get("METERLINE_BENCH_NATS_SERVER", "/usr/sbin/nats-server")
"""The ``nats-server`` executable the benchmark starts."""

READY_TIMEOUT_S = 90.0
"""How long a worker, a server or a load generator may take to be ready."""

STOP_TIMEOUT_S = 30.0
"""How long a stopping child process has before it is killed."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to send the child SIGTERM when the benchmark dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """A child process whose stderr (and stdout unless piped) goes to ``log``."""

    def __init__(
        self, args: Sequence[str], log: Path, pipes: bool = False, env: dict[str, str] | None = None
    ) -> None:
        self.args = list(args)
        self.log = log
        self._log_file: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log_file,
            stderr=self._log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self, what: str) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{what} exited with {self.process.returncode}: {self.tail()}".rstrip()
            )

    def tail(self, characters: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-characters:]
        return ""

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log_file.close()


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_nats(folder: Path, log: Path) -> tuple[Child, str]:
    port = free_port()
    store = folder / "jetstream"
    store.mkdir()
    child = Child([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)], log)

    def ready() -> bool:
        child.check_alive("nats-server")
        return port_open(port)

    try:
        wait_for(ready, "nats-server", READY_TIMEOUT_S)
    except BaseException:
        child.stop()
        raise
    return child, f"nats://127.0.0.1:{port}"


def nats_version() -> str:
    try:
        finished = subprocess.run(
            [NATS_SERVER, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    return (finished.stdout or finished.stderr).strip().removeprefix("nats-server: ")


def read_line(child: Child, timeout_s: float) -> str:
    """The child's next stdout line (stripped), or "" if none came within ``timeout_s``."""
    result: list[bytes] = []
    stdout = child.process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0].decode().strip() if result else ""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Make SIGTERM unwind like Ctrl-C while the benchmark runs (cleanup included)."""

    def interrupt(_number: int, _frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def notable_log_line(line: str) -> bool:
    """Whether a child's log line is worth reporting (not blank, not info or debug)."""
    if not line.strip():
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return True
    return not (isinstance(record, dict) and record.get("level") in ("debug", "info"))
