"""Shared fixtures: temporary ledgers, a fixed clock, and a real server process."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from meterline.clock import system_clock_us
from meterline.keys import create_key
from meterline.ledger import Ledger, open_ledger
from meterline.ledger.sqlite import SqliteStore
from meterline.server import spawn_server

# 2026-11-23T12:00:00Z: a fixed "now" so future-skew checks are deterministic.
FIXED_NOW_US = 1_795_435_200_000_000


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh ledger on a SQLite file, with the clock fixed at FIXED_NOW_US."""
    with open_ledger(tmp_path / "ledger.db", clock=lambda: FIXED_NOW_US) as opened:
        yield opened


def event(number: int = 1, customer: str = "acme", **overrides: object) -> dict[str, object]:
    """A valid native event; ``overrides`` replace or add fields."""
    base: dict[str, object] = {
        "id": f"evt-{number}",
        "customer": customer,
        "type": "llm.completion",
        "timestamp": "2026-11-01T10:00:00Z",
        "properties": {"model": "gpt-4o", "input_tokens": 1200 + number, "output_tokens": 300},
    }
    base.update(overrides)
    return base


@dataclass
class RunningServer:
    """A ``meterline serve`` process on loopback with one key per scope."""

    url: str
    db: Path
    process: subprocess.Popen[bytes]
    keys: dict[str, str]

    def client(self, scope: str | None = "admin", **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start_server(db: Path, port: int | None = None) -> RunningServer:
    """Start ``python -m meterline serve`` on ``db`` and wait until it answers health."""
    process, url = spawn_server(db, port)
    return RunningServer(url, db, process, {})


def make_keys(db: Path) -> dict[str, str]:
    """One key per scope, plus an ingest and a read key bound to customer 'acme'."""
    store = SqliteStore(db)
    now = system_clock_us()
    keys = {
        scope: create_key(store, scope, now, name=scope)[1] for scope in ("ingest", "read", "admin")
    }
    keys["ingest-acme"] = create_key(store, "ingest", now, customer="acme")[1]
    keys["read-acme"] = create_key(store, "read", now, customer="acme")[1]
    store.close()
    return keys


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A real server process on a fresh ledger, keys in ``server.keys`` by scope."""
    db = tmp_path / "served.db"
    keys = make_keys(db)
    running = start_server(db)
    running.keys = keys
    try:
        yield running
    finally:
        running.stop()
