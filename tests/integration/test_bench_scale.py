"""``meterline bench scale`` end to end, small: every figure is there and sane, every event
was committed exactly once, and nothing the benchmark started is left behind.

It starts its own nats-server and uses the PostgreSQL test database; no wall-clock bar is
asserted (the figures are BENCHMARKS.md's business).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import POSTGRES_URL

EVENTS = 20_000
COMPONENTS = ("api", "nats", "worker", "postgresql", "load")
MARKER = "meterline-bench-scale-"
"""In the command line of the nats-server the benchmark starts (its storage folder)."""


def _bench_schemas() -> set[str]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'"
        ).fetchall()
    return {row[0] for row in rows}


def _benchmark_processes() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if MARKER.encode() in command or b"meterline.bench.scale" in command:
                found.add(int(entry.name))
    return found


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_scale_reports_every_figure_and_commits_every_event() -> None:
    schemas_before = _bench_schemas()
    processes_before = _benchmark_processes()
    finished = subprocess.run(
        [sys.executable, "-m", "meterline", "bench", "scale", "--json", "--events", str(EVENTS)],
        capture_output=True,
        text=True,
        timeout=840,
        env={**os.environ, "METERLINE_BENCH_POSTGRES": POSTGRES_URL},
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout)

    assert result["events"] == EVENTS
    assert result["partitions"] == 4
    assert result["batch"] == 1000
    assert result["api_replicas"] >= 1
    for name in ("events_per_s_1_worker", "events_per_s_2_workers", "scaling"):
        assert _positive(result[name]), (name, result[name])
    assert result["scaling"] == pytest.approx(
        result["events_per_s_2_workers"] / result["events_per_s_1_worker"], abs=0.001
    )
    for label in ("1_worker", "2_workers"):
        figures = result["cpu_us_per_event"][label]
        assert set(COMPONENTS) <= set(figures), figures
        assert all(_positive(figures[name]) for name in COMPONENTS), figures
        run = result["runs"][label]
        assert run["events_committed"] == EVENTS
        assert run["worker_counters"] == {
            "events_applied": EVENTS,
            "duplicates": 0,
            "conflicts": 0,
        }
        assert run["seconds"] >= run["load_seconds"] > 0
        assert run["live_seconds"] is not None and run["live_seconds"] >= 0
        at_commit = run["cpu_us_per_event_at_last_commit"]
        assert all(_positive(at_commit[name]) for name in COMPONENTS), at_commit
    assert result["runs"]["2_workers"]["workers"] == 2
    assert result["bound_by"] in ("api", "nats", "worker", "postgresql")
    machine = result["machine"]
    assert machine["cpus"] >= 1
    for fact in ("python", "postgresql", "nats_server"):
        assert machine[fact] and "unknown" not in machine[fact], machine
    for component in ("worker", "api"):
        profile = result[f"{component}_profile"]
        for ordering in ("by_internal_time", "by_cumulative_time"):
            rows = profile[ordering]
            assert 0 < len(rows) <= 15
            assert all(row["function"] and row["calls"] > 0 for row in rows)
    assert _positive(result["events_per_s_profiled"])
    assert result["log_lines"] == 0, result["log_excerpt"]

    # everything it started is gone: its schemas, its nats-server, workers, replicas, load
    assert _bench_schemas() <= schemas_before
    assert _benchmark_processes() <= processes_before
