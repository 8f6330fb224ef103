"""Loopback ports for the servers tests start, never the same in two test processes.

A port picked by binding port 0 and closing the probe is free only at that moment: two
pytest-xdist workers starting servers at once could be handed the same one, and a test
would then talk to the other worker's server. Here each worker takes ports in turn from a
block of its own, below the kernel's ephemeral range (where port 0 binds and outgoing
connections land), skipping any port something already holds.
"""

from __future__ import annotations

import itertools
import os
import socket

FIRST_PORT = 20_000
"""Where the blocks start (the kernel's ephemeral ports begin at 32768 by default)."""

BLOCK_SIZE = 1_500
"""Ports in each test process's block: eight workers' blocks end below 32,768."""

RESERVED_PORTS = frozenset((4222, 6222, 7422, 7522, 8222))
"""NATS's default ports: a test never takes them (a shared server may run there)."""


def _block_index() -> int:
    """0 for a run without workers, N + 1 for xdist worker ``gwN``."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0


_BLOCK_START = FIRST_PORT + _block_index() * BLOCK_SIZE
_turns = itertools.count()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """The next port of this process's block that nothing holds now (wrapping around)."""
    for _ in range(BLOCK_SIZE):
        port = _BLOCK_START + next(_turns) % BLOCK_SIZE
        if port not in RESERVED_PORTS and _bindable(port):
            return port
    raise RuntimeError(f"no free port in {_BLOCK_START}-{_BLOCK_START + BLOCK_SIZE - 1}")
