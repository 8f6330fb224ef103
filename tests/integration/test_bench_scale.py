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

EVENTS = 10_000
"""``--quick``'s events per configuration."""
COMPONENTS = ("api", "nats", "worker", "keeper", "postgresql", "load")
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
            if MARKER.encode() in command or (
                b"meterline.bench.scale" in command or b"meterline.bench.writers" in command
            ):
                found.add(int(entry.name))
    return found


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_scale_quick_reports_every_figure_and_commits_every_event() -> None:
    schemas_before = _bench_schemas()
    processes_before = _benchmark_processes()
    finished = subprocess.run(
        [sys.executable, "-m", "meterline", "bench", "scale", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=840,
        env={**os.environ, "METERLINE_BENCH_POSTGRES": POSTGRES_URL},
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout)

    assert result["quick"] is True
    assert result["command"].startswith("meterline bench scale") and "--quick" in result["command"]
    assert result["events"] == EVENTS
    assert result["partition_counts"] == [1, 2]
    assert result["worker_counts"] == [1, 2]
    assert result["batch"] == 1000
    probes = result["kill_switch_probes"]
    assert probes >= 1
    machine = result["machine"]
    assert machine["cpus"] >= 1
    for fact in ("cpu_model", "python", "postgresql", "nats_server"):
        assert machine[fact] and "unknown" not in machine[fact], machine

    # the floor, measured on the same events
    floor = result["floor"]
    assert floor["events"] == EVENTS
    for name in ("floor_events_per_s", "floor_us_per_event", "floor_us_per_event_process"):
        assert _positive(floor[name]), floor
    assert floor["floor_us_per_event"] == pytest.approx(
        floor["floor_us_per_event_process"] + floor["floor_us_per_event_postgresql"], abs=0.02
    )

    # partitions x workers: a configuration with more workers than partitions is skipped
    labels = [configuration["label"] for configuration in result["configurations"]]
    assert labels == ["p1_w1", "p2_w1", "p2_w2"]
    assert [row["label"] for row in result["skipped"]] == ["p1_w2"]
    for row in result["configurations"]:
        run = result["runs"][row["label"]]
        assert run["workers"] == row["workers"] and run["partitions"] == row["partitions"]
        assert _positive(row["events_per_s"])
        assert row["events_per_s_per_partition"] == int(row["events_per_s"] / row["partitions"])
        cpu = row["cpu_us_per_event"]
        assert all(_positive(cpu[name]) for name in COMPONENTS), cpu
        # the bucket keeper is a component of its own, in the path's total
        path = sum(cpu[name] for name in ("api", "nats", "worker", "keeper", "postgresql"))
        assert row["cpu_us_per_event_path"] == pytest.approx(path, abs=0.02)
        assert row["ratio_to_floor"] == pytest.approx(
            row["cpu_us_per_event_path"] / floor["floor_us_per_event"], abs=0.01
        )
        # every event sent (load and probes) was committed exactly once and applied
        probe_events = run["probe_events"]
        assert probe_events == probes * 20
        assert row["events_sent"] == row["events_committed"] == EVENTS + probe_events
        assert run["worker_counters"] == {
            "events_applied": EVENTS + probe_events,
            "duplicates": 0,
            "conflicts": 0,
        }
        assert run["seconds"] >= run["load_seconds"] > 0
        assert run["live_seconds"] is not None and run["live_seconds"] >= 0
        assert run["keeper_seconds"] is not None and run["keeper_seconds"] >= 0  # all folded
        # lock waits are sampled (their count may well be 0: partitions do not wait)
        locks = run["lock_waits"]
        assert locks["error"] is None and locks["samples"] > 0
        assert locks["lock_wait_samples"] == row["lock_wait_samples"] >= 0
        assert locks["lock_wait_samples"] == sum(locks["lock_waits_by_event"].values())
        # the kill switch: every probe denied by every replica
        kill = run["kill_switch"]
        assert kill["probes"] == kill["probes_denied_everywhere"] == probes
        assert kill["replicas"] == result["api_replicas"]
        assert len(kill["ms"]) == probes and all(_positive(ms) for ms in kill["ms"])
        assert 0 < kill["kill_switch_ms_p50"] <= kill["kill_switch_ms_p99"]
        assert kill["kill_switch_ms_p99"] <= kill["kill_switch_ms_max"]
        # refusals of the ingest lag bound are counted, and retried until taken (above:
        # every event committed once, no duplicate: a refused batch was never published)
        assert row["refused_batches"] == run["refused_batches"] >= 0
        assert row["retried_batches"] >= row["refused_batches"]
        assert row["probe_refusals"] == kill["probe_refusals"] >= 0
    assert result["lag_max_ms"] == os.environ.get("METERLINE_LAG_MAX_MS", "50")
    pooled = result["kill_switch"]
    assert pooled["probes"] == probes * len(labels)
    assert 0 < pooled["kill_switch_ms_p50"] <= pooled["kill_switch_ms_p99"]

    # partition writers fed prepared batches, 1 then 2 processes
    writers = result["two_writers"]
    for name in ("events_per_s_1_writer", "events_per_s_2_writers", "ratio"):
        assert _positive(writers[name]), writers
    assert writers["ratio"] == pytest.approx(
        writers["events_per_s_2_writers"] / writers["events_per_s_1_writer"], abs=0.001
    )
    for label, count in (("1_writer", 1), ("2_writers", 2)):
        run = writers["runs"][label]
        assert [process["partition"] for process in run["processes"]] == list(range(count))
        assert run["events"] == sum(process["events"] for process in run["processes"]) > 0
        for process in run["processes"]:
            assert _positive(process["cpu_cores_busy"]) and _positive(process["cpu_us_per_event"])

    # issue 7's figures, from the largest partition count
    assert result["partitions"] == 2
    assert result["events_per_s_1_worker"] == result["runs"]["p2_w1"]["events_per_s"]
    assert result["scaling"] == pytest.approx(
        result["events_per_s_2_workers"] / result["events_per_s_1_worker"], abs=0.001
    )
    assert result["bound_by"] in ("api", "nats", "worker", "postgresql")
    assert result["log_lines"] == 0, result["log_excerpt"]

    # everything it started is gone: its schemas, its nats-server, workers, replicas, load
    assert _bench_schemas() <= schemas_before
    assert _benchmark_processes() <= processes_before
