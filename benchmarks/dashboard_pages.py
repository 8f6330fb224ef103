"""How long each dashboard page takes on the demo ledger, over HTTP against `meterline
serve`.

Usage: python benchmarks/dashboard_pages.py --db PATH [--warm 10] [--after-event 5]
       [--customer acme-copilot] [--page PATH ...]
Serves a copy of ``--db`` (a demo ledger: ``meterline demo --no-serve``; or the ledger
``meterline bench finance --keep-db PATH`` keeps, with ``--customer customer-00000`` and
its pages given by ``--page``) on a free port,
signs in with a read key, and times each page: its first load after the server starts,
the p50/p95 of ``--warm`` loads that follow (the dashboard's cached figures), and the
p50/max of ``--after-event`` loads each right after one new event is ingested (the ledger
moved, so the cached figures are derived again: what a page costs under live ingest).
Prints JSON, milliseconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from meterline.bench.quantiles import percentile

PAGES = (
    "/dashboard",
    "/dashboard/customers",
    "/dashboard/customers/acme-copilot",
    "/dashboard/invoices/INV-000001",
    "/dashboard/invoices/INV-000001/lines/3",
    "/dashboard/revenue",
    "/dashboard/controls",
    "/dashboard/unbillable",
)
STARTUP_S = 60.0
"""How long the server may take to answer its first request."""


def _key(db: Path, scope: str) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "meterline", "keys", "create", "--scope", scope, "--db", str(db)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return created.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _milliseconds(times: list[float]) -> dict[str, float]:
    """Nearest-rank p50 and p95 (``bench.quantiles``) and the slowest, in ms."""
    ordered = sorted(times)
    return {
        "p50": round(percentile(ordered, 0.50) * 1000, 1),
        "p95": round(percentile(ordered, 0.95) * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def _timed(client: httpx.Client, page: str) -> float:
    started = time.perf_counter()
    answer = client.get(page)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    return elapsed


def measure(
    base: str,
    read: str,
    ingest: str,
    warm: int,
    after_event: int,
    pages: tuple[str, ...] = PAGES,
    customer: str = "acme-copilot",
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=600) as client:
        signed_in = client.post(
            "/dashboard/login", data={"key": read, "next": "/dashboard"}, headers={"origin": base}
        )
        if signed_in.status_code not in (302, 303):
            raise SystemExit(f"sign-in refused: {signed_in.status_code}")
        for page in pages:
            first = _timed(client, page)
            figures[page] = {
                "first_ms": round(first * 1000, 1),
                "warm_ms": _milliseconds([_timed(client, page) for _ in range(warm)]),
            }
        now = datetime.now(UTC)
        for page in pages:
            times = []
            for index in range(after_event):
                stamp = (now - timedelta(seconds=60 - index)).isoformat().replace("+00:00", "Z")
                event = {
                    "id": f"bench-{time.time_ns()}",
                    "customer": customer,
                    "type": "llm.completion",
                    "timestamp": stamp,
                    "properties": {"model": "gpt-4o", "input_tokens": 100, "output_tokens": 10},
                }
                client.post(
                    "/v1/events", json=[event], headers={"Authorization": f"Bearer {ingest}"}
                ).raise_for_status()
                times.append(_timed(client, page))
            figures[page]["after_a_new_event_ms"] = _milliseconds(times)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--warm", type=int, default=10)
    parser.add_argument("--after-event", type=int, default=5)
    parser.add_argument("--customer", default="acme-copilot", help="whose new events are sent")
    parser.add_argument("--page", action="append", help="a page to time (default: the demo's)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        db = Path(directory) / "dashboard.db"
        shutil.copyfile(arguments.db, db)
        read, ingest = _key(db, "read"), _key(db, "ingest")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "meterline", "serve", "--db", str(db), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + STARTUP_S
            while True:
                try:
                    httpx.get(f"{base}/dashboard/login", timeout=5).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            figures = measure(
                base,
                read,
                ingest,
                arguments.warm,
                arguments.after_event,
                tuple(arguments.page or PAGES),
                arguments.customer,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
