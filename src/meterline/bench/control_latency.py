"""``meterline bench controls``: the live controls' latency, access answers, the SDK gate,
and what the controls cost ingest.

One run, on loopback, against real ``meterline serve`` processes (the live engine on):

1. **ingest to block**: a server whose pricing gives each of ``probes`` probe customers a
   monthly contract (started a month before this one) with a small prepaid credit pool
   (``PROBE_POOL_CREDITS``) and a ``balance_exhausted`` control that blocks. Per probe:
   the timer starts, one HTTP batch of ``PROBE_BATCH_EVENTS`` events stamped "now" (one
   credit each: it crosses the pool) is posted, then ``GET /v1/access/{customer}`` is
   polled back to back until it answers ``allowed: false``; the timer stops. Also
   counted: probes already denied on the first poll after the ingest answer.
2. **access check**: ``access_checks`` sequential ``GET /v1/access/{customer}`` over one
   keep-alive ``httpx`` connection (after a warm-up), over a mix of blocked probes,
   unblocked contract customers and customers without a contract.
3. **gate check**: ``meterline.sdk.gate.Gate`` on the same server; ``gate.allowed()``
   timed one call at a time with ``time.perf_counter_ns`` (``gate_checks`` calls over the
   same mix), and the mean of one untimed-per-call loop. ``gate_timer_floor_us`` is the
   median of two back-to-back ``perf_counter_ns`` calls: the part of each sample that is
   the timer, not the gate.
4. **ingest with and without controls**: the HTTP path of ``meterline bench ingest`` (the
   ``meterline.bench.http_client`` load generator in its own process, batches of
   ``HTTP_BATCH_EVENTS`` over ``HTTP_CONNECTIONS`` connections), its ``synthetic_events``
   re-stamped to the last ``INGEST_SPAN_US`` before now so they land in the open period.
   Every configuration has the same pricing: the synthetic meters priced for the 100
   synthetic customers, cost rates, and a prepaid USD pool on every contract. (a)
   without controls, (b) with, on every customer, a ``balance_exhausted`` block, a
   50/80/100 ``spend_threshold`` alert, a ``usage_spike`` alert and a
   ``cost_exceeds_prepayment`` alert; both with the live engine on (its worker process
   beside the server). And (c) the pricing of (a) served by ``create_app(...,
   live=False)`` (``meterline serve`` has no flag for it, so this module serves it
   itself): no live engine at all. ``ingest_ratio_with_controls`` is b / a (what the
   controls cost), ``ingest_ratio_live_engine`` a / c and
   ``ingest_ratio_with_controls_vs_live_off`` b / c (what the whole live path costs).
   Each configuration runs ``rounds`` times on a fresh ledger, in the order a, b, c,
   then c, b, a, ...; its figures are those of its fastest round (every round's rate is
   listed in ``*_rounds``): one disturbed round on a shared machine otherwise decides
   the ratio.

The load generator's rate leaves out work the live engine has not finished when the last
batch is answered (it coalesces what arrives while it is busy), so each live run also
reports ``live_feed_lag_ms_*`` (after the load, until the projection has fed the ledger's
head) and ``applied_events_per_s_*`` (events over load time plus that lag). With controls,
``access_exact_ms_with_controls`` is the time until every access answer shows the exact
balance again (under load the controls may answer from a lower bound; the exact one
returns when the engine goes idle), and ``control_firings_with_controls`` is read after it.

Every server's stderr goes to a log file; its lines are counted and the first few are
reported. Everything is on 127.0.0.1 in a temporary directory removed at the end.

This module owns the run, its servers and the throughput rounds; steps 1 to 3 are
``bench.access_latency``'s, the pricing and the events' timing ``bench.synthetic_pricing``'s.
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import IO, Any

import httpx

from meterline.api.server import SERVER_START_TIMEOUT_S, free_port
from meterline.bench.access_latency import (
    access_allowed,
    customer_mix,
    ingest_to_block,
    time_access_checks,
    time_gate_checks,
)
from meterline.bench.ingest import HTTP_CONNECTIONS
from meterline.bench.synthetic_pricing import (
    INGEST_SPAN_US,
    PROBE_POOL_CREDITS,
    SYNTHETIC_CUSTOMERS,
    contract_start,
    ingest_pricing,
    month_start_us,
    probe_pricing,
    retimed,
)
from meterline.billing.service import open_billing
from meterline.clock import system_clock_us
from meterline.core.cuts import Cut
from meterline.keys import create_key
from meterline.ledger.sqlite import SqliteStore

HTTP_BATCH_EVENTS = 500
"""As ``meterline bench ingest``'s HTTP path (its ``--http-batch`` default)."""

LOG_EXCERPT_LINES = 5


def _prepare(db: Path, pricing: str) -> str:
    """Apply ``pricing`` to a fresh ledger at ``db``; return an admin token for it."""
    with open_billing(db) as billing:
        billing.apply(pricing)
    store = SqliteStore(db)
    try:
        _, token = create_key(store, "admin", system_clock_us(), name="bench-controls")
    finally:
        store.close()
    return token


class _Server:
    """A server child process on 127.0.0.1 whose stderr goes to ``log``."""

    def __init__(self, module_args: Sequence[str], log: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *module_args],
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not answer health in time")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def _serve(db: Path, log: Path, live: bool = True) -> _Server:
    """``meterline serve`` (the live engine on), or the app with ``live=False``."""
    port = free_port()
    if live:
        args = ["meterline", "serve", "--db", str(db), "--port", str(port)]
    else:
        args = ["meterline.bench.control_latency", "serve-static", str(db), str(port)]
    return _Server(args, log, port)


def _serve_static(db: str, port: int) -> None:
    """The API over ``db`` without the live engine (``create_app(ledger, live=False)``)."""
    import uvicorn

    from meterline.api import create_app
    from meterline.ledger import open_ledger

    ledger = open_ledger(db)
    try:
        app = create_app(ledger, live=False)
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        ledger.close()


def _client(url: str, token: str, count: int, batch: int, end_us: int, span_us: int) -> None:
    """``meterline.bench.http_client`` unchanged, but for its events: re-stamped into the
    open period (its own are in October 2026, a period the live projection does not hold,
    and every late event would send the customer back to the ledger)."""
    from meterline.bench import http_client
    from meterline.bench.workload import synthetic_events

    def now_events(count: int, prefix: str = "bench", customers: int = 100) -> list[dict[str, Any]]:
        return retimed(synthetic_events(count, prefix, customers), end_us, span_us)

    vars(http_client)["synthetic_events"] = now_events
    http_client.main(url, token, count, batch, HTTP_CONNECTIONS)


def _throughput(url: str, token: str, count: int) -> float:
    """Seconds the load generator took to have ``count`` events accepted."""
    now_us = system_clock_us()
    end_us = now_us - 2_000_000
    span_us = max(0, min(INGEST_SPAN_US, end_us - month_start_us(now_us)))
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "meterline.bench.control_latency",
            "client",
            url,
            token,
            str(count),
            str(HTTP_BATCH_EVENTS),
            str(end_us),
            str(span_us),
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    result = json.loads(finished.stdout)
    if result["failures"] or result["accepted"] != count:
        raise RuntimeError(f"HTTP ingest failed: {result}")
    return float(result["seconds"])


def _firings(client: httpx.Client) -> int:
    response = client.get("/v1/controls/firings")
    response.raise_for_status()
    return len(response.json()["firings"])


def _feed_lag_s(client: httpx.Client, timeout_s: float = 120.0) -> float:
    """Seconds until the live projection has fed the ledger's cut (polled; NaN if never)."""
    started = time.perf_counter()
    head = Cut.from_json(client.get("/v1/health").json()["through"])
    while time.perf_counter() - started < timeout_s:
        fed = Cut.from_json(client.get("/v1/live/customer-0000").json()["through"])
        if fed.includes(head):
            return time.perf_counter() - started
        time.sleep(0.002)
    return math.nan


def _exact_s(client: httpx.Client, timeout_s: float = 120.0) -> float:
    """Seconds until every synthetic customer's access answer carries the remaining balance
    its live figures show (polled; NaN if never). Under load the controls answer from a
    lower bound of the balance; the exact one comes back when the engine goes idle."""
    started = time.perf_counter()
    pending = [f"customer-{index:04d}" for index in range(SYNTHETIC_CUSTOMERS)]
    while pending and time.perf_counter() - started < timeout_s:
        live = client.get(f"/v1/live/{pending[0]}").json()["remaining"]
        if client.get(f"/v1/access/{pending[0]}").json()["remaining"] == live:
            pending.pop(0)
        else:
            time.sleep(0.005)
    return time.perf_counter() - started if not pending else math.nan


def _log_lines(logs: Sequence[Path]) -> list[str]:
    lines = []
    for log in logs:
        if log.exists():
            lines += [f"{log.stem}: {line}" for line in log.read_text().splitlines() if line]
    return lines


def _ingest_round(
    db: Path, log: Path, start: date, events: int, controls: bool, live: bool
) -> dict[str, Any]:
    """One throughput measurement on a fresh ledger and server: its figures."""
    token = _prepare(db, ingest_pricing(start, controls))
    server = _serve(db, log, live=live)
    try:
        seconds = _throughput(server.url, token, events)
        figures: dict[str, Any] = {"events_per_s": int(events / seconds)}
        if live:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                lag = _feed_lag_s(client)
                figures["live_feed_lag_ms"] = round(lag * 1e3, 1)
                figures["applied_events_per_s"] = int(events / (seconds + lag))
                if controls:
                    figures["access_exact_ms"] = round(_exact_s(client) * 1e3, 1)
                    figures["control_firings"] = _firings(client)
        return figures
    finally:
        server.stop()


def run_controls_benchmark(
    probes: int = 200,
    events: int = 200_000,
    access_checks: int = 5_000,
    gate_checks: int = 100_000,
    live_off: bool = True,
    rounds: int = 3,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the four measurements (see the module docstring) and return the figures."""
    if min(probes, events, access_checks, gate_checks, rounds) < 1:
        raise ValueError("probes, events, access_checks, gate_checks and rounds must be positive")

    def say(message: str) -> None:
        if progress is not None:
            progress.print(message)

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="meterline-bench-controls-") as folder:
        root = Path(folder)
        logs: list[Path] = []
        start = contract_start(system_clock_us())
        say(f"probe server: {probes} probe customers with a {PROBE_POOL_CREDITS}-credit pool")
        token = _prepare(root / "probes.db", probe_pricing(probes, start))
        logs.append(root / "probes.log")
        server = _serve(root / "probes.db", logs[-1])
        try:
            result.update(_latencies(server, token, probes, access_checks, gate_checks, say))
        finally:
            server.stop()
        configurations = [("without_controls", False, True), ("with_controls", True, True)]
        if live_off:
            configurations.append(("live_off", False, False))
        result.update(_ingest(root, logs, start, events, rounds, configurations, say))
        lines = _log_lines(logs)
    result["ingest_ratio_with_controls"] = round(
        result["ingest_events_per_s_with_controls"]
        / result["ingest_events_per_s_without_controls"],
        3,
    )
    if live_off:
        result["ingest_ratio_live_engine"] = round(
            result["ingest_events_per_s_without_controls"] / result["ingest_events_per_s_live_off"],
            3,
        )
        result["ingest_ratio_with_controls_vs_live_off"] = round(
            result["ingest_events_per_s_with_controls"] / result["ingest_events_per_s_live_off"],
            3,
        )
    result.update(
        {
            "events": events,
            "ingest_rounds": rounds,
            "http_batch_events": HTTP_BATCH_EVENTS,
            "http_connections": HTTP_CONNECTIONS,
            "server_log_lines": len(lines),
            "server_log_excerpt": lines[:LOG_EXCERPT_LINES],
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        }
    )
    return result


def _latencies(
    server: _Server,
    token: str,
    probes: int,
    access_checks: int,
    gate_checks: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Measurements 1 to 3 on the probe server: ingest to block, access checks, the gate."""
    result: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        gc.collect()
        say("ingest to block: one crossing batch per probe, then poll access")
        result.update(ingest_to_block(client, probes))
        names = customer_mix(probes)
        say(f"access check: {access_checks:,} GET /v1/access/{{customer}}, keep-alive")
        result.update(time_access_checks(client, names, access_checks))
        answers = {name: access_allowed(client, name) for name in names}
    result["customers_checked_blocked"] = sum(not a for a in answers.values())
    say(f"gate check: {gate_checks:,} Gate.allowed() calls")
    result.update(time_gate_checks(server.url, token, answers, gate_checks))
    return result


def _ingest(
    root: Path,
    logs: list[Path],
    start: date,
    events: int,
    rounds: int,
    configurations: list[tuple[str, bool, bool]],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Measurement 4: every configuration ``rounds`` times, alternating the order; each
    one's figures from its fastest round."""
    result: dict[str, Any] = {}
    rounds_of: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in configurations}
    for number in range(rounds):
        order = configurations if number % 2 == 0 else configurations[::-1]
        for name, controls, live in order:
            label = f"ingest-{name}-{number + 1}"
            logs.append(root / f"{label}.log")
            say(f"ingest {name.replace('_', ' ')} (round {number + 1}): {events:,} events")
            db = root / f"{label}.db"
            rounds_of[name].append(_ingest_round(db, logs[-1], start, events, controls, live))
    for name, _, _ in configurations:
        # the least disturbed round of each configuration (the machine is shared)
        best = max(rounds_of[name], key=lambda figures: figures["events_per_s"])
        result[f"ingest_events_per_s_{name}"] = best["events_per_s"]
        result[f"ingest_events_per_s_{name}_rounds"] = [
            figures["events_per_s"] for figures in rounds_of[name]
        ]
        result.update(
            {f"{key}_{name}": value for key, value in best.items() if key != "events_per_s"}
        )
    return result


def _main(argv: list[str]) -> None:
    """The benchmark's child processes: ``client`` (load) and ``serve-static`` (no live)."""
    command, *args = argv
    if command == "client":
        url, token, count, batch, end_us, span_us = args
        _client(url, token, int(count), int(batch), int(end_us), int(span_us))
    elif command == "serve-static":
        db, port = args
        _serve_static(db, int(port))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
