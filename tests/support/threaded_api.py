"""The real HTTP API (``create_app``, embedded mode) served by uvicorn in a thread on a
loopback port: a real server for real clients, started in well under a second, where a
test needs no live engine."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from meterline.api.app import create_app
from meterline.ledger.event_ledger import open_ledger
from tests.support.ports import free_port

STARTED_WITHIN_S = 20.0


class ThreadedApi:
    """``create_app(ledger, live=False)`` on 127.0.0.1, with one key per scope in ``keys``."""

    def __init__(self, db: Path | str, keys: dict[str, str]) -> None:
        self.db = db
        self.keys = keys
        self.ledger = open_ledger(db)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            create_app(self.ledger, live=False),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> ThreadedApi:
        self._thread.start()
        deadline = time.monotonic() + STARTED_WITHIN_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.01)
        return self

    def client(self, scope: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def events(self, customer: str) -> list[dict[str, Any]]:
        """The customer's stored events (a first page of up to 1,000), read over HTTP."""
        with self.client("admin") as admin:
            response = admin.get("/v1/events", params={"customer": customer, "limit": 1000})
        if response.status_code != 200:
            raise AssertionError(response.text)
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.ledger.close()
