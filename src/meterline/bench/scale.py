"""``meterline bench scale``: the whole distributed path, per partition and worker count.

One run, on loopback, of API -> JetStream -> worker -> PostgreSQL per configuration:
every partition count of ``partitions`` (default 1, 2, 8) with every worker count of
``workers`` (default 1, 2; the workers split the partitions, and a configuration with
more workers than partitions is skipped, ``skipped``), each on a fresh schema and
namespace. Each configuration also reports its lock waits and the kill switch under load
(``scale_probes``: ``lock_waits``, ``kill_switch``), its events/s per partition and its
``ratio_to_floor``: the path's CPU µs/event (API + NATS + worker + keeper + PostgreSQL,
``cpu_us_per_event_path``) over the floor's (``bench.floor``: decode, canonical encoding,
leaf hash and binary ``COPY`` of the same events in one process, measured in the same
run). ``two_writers`` (``bench.writers``) is 1 then 2 partition-writer processes fed
prepared batches, without NATS or API. ``--quick`` (the test) measures partitions 1, 2
with 10,000 events and 3 probes. Everything the path needs is started here, so each
component's CPU can be attributed:

* its own ``nats-server`` (JetStream, file storage in a temporary directory) on a free
  port, stopped at the end;
* per configuration, a fresh PostgreSQL schema ``bench_<random>`` in the benchmark
  database (dropped at the end), holding the ledger with ``partitions`` chains, the
  pricing of ``meterline bench controls``' "with controls" run (the synthetic meters
  priced for the 100 synthetic customers, a prepaid pool and four controls on every
  contract, so the workers' live engines do real work), and an ingest key;
* the ledger's bucket keeper (``meterline keeper``, once it holds the ledger's keeper
  lock), then the workers (``meterline worker``), then ``api_replicas`` API replicas
  (``meterline serve --stream``), then ``LOAD_PROCESSES`` load-generator processes, each
  with ``LOAD_CONNECTIONS`` keep-alive connections, posting pre-encoded batches of
  ``batch`` events (the synthetic workload re-stamped into the last half hour) as fast
  as they are answered (a ``503`` is retried). Load generator ``i`` posts to replica
  ``i % api_replicas``.

**Throughput** is end to end: events committed in the ledger over the seconds from the
first post until the ledger holds every event (its head, polled; sequences are gap-free,
so the head is the count; the time to drain counts). Every event must be committed
exactly once: the count of the events table is checked afterwards.

**CPU per event**, per component, is utime + stime from ``/proc/<pid>/stat`` (with the
reaped children's cutime + cstime) taken just before the first post and again once every
worker reports that its live engine has applied the last event (the engines trail the
ledger under load, and their work is part of the path: ``live_seconds`` is how long after
the last commit, at the workers' 1 s status interval; ``cpu_us_per_event_at_last_commit``
stops at the last commit instead) and the keeper has folded the last event into the
rated-usage buckets (``keeper_seconds`` after the last commit: it folds once the ledger
stands still, or past its backlog bound; the driver reads the watermark on connections
of its own, counted in ``postgresql_all`` only), divided by the events: ``api`` (the replicas),
``nats`` (this benchmark's server), ``worker`` (the workers), ``keeper`` (the bucket
keeper, a component of its own: the workers no longer fold) and ``load`` (the load
generators, measured by themselves over their posting). PostgreSQL is shared with
whatever else runs on the machine, so it is reported twice: ``postgresql`` counts the
backends of this benchmark's components (found by their ``application_name``), the
postmaster's own time and the server's background processes (WAL writer, checkpointer,
background writer, autovacuum); ``postgresql_all`` counts every process whose ``comm``
starts with ``postgres``, reaped backends included (exact on a quiet machine, inflated by
any other client of the server otherwise). ``bound_by`` names the component with the
most CPU per event in the 1-worker run.

**Profile**: with ``profile``, a third run repeats the 1-worker configuration with the
worker and the API replica under ``cProfile`` (every thread: the event loop, the ledger
appends of ``asyncio.to_thread``, the live engine's controller), timing each thread's CPU
(``thread_time``, so waiting costs nothing), and the top ``PROFILE_TOP`` functions by
internal and by cumulative time are printed and returned (``worker_profile``,
``api_profile``; µs per event of the run). cProfile's overhead is per call, so small
functions weigh more than they do unprofiled; the run is slower for it, and its rate is
reported apart (``events_per_s_profiled``), never as a figure.

Everything started is stopped, and every schema dropped, on success, failure, Ctrl-C or
SIGTERM; every wait has a deadline, so the benchmark always ends by itself.

This module owns the run as a whole (its configurations, the floor, the writers, the
profiled run, the summary) and the children's entry points. One configuration is
``scale_run``'s, its layout and PostgreSQL side ``scale_setup``'s, the load generators
``scale_load``'s, the profiler ``scale_profile``'s, ``two_writers`` ``scale_writers``';
the child processes are ``children``'s and their CPU ``proc_cpu``'s.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from meterline.bench.children import (
    STOP_TIMEOUT_S,
    nats_version,
    notable_log_line,
    start_nats,
    terminate_as_interrupt,
    wait_for,
)
from meterline.bench.floor import run_floor
from meterline.bench.quantiles import quantiles
from meterline.bench.scale_load import (
    LOAD_CONNECTIONS,
    LOAD_PROCESSES,
    floor_bodies,
    run_load_generator,
)
from meterline.bench.scale_profile import print_profile, profile_top, run_profiled
from meterline.bench.scale_run import run_configuration
from meterline.bench.scale_setup import Schemas, Setup, postgres_version, tell
from meterline.bench.scale_writers import two_writers
from meterline.core.admission import LAG_MAX_MS_DEFAULT

POSTGRES_URL = os.environ.get(
    "METERLINE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The database the benchmark's schemas are created in (``--postgres``)."""

API_REPLICAS = 1
"""API replicas by default: on 2 cores one replica keeps one worker busy (see
BENCHMARKS.md); a second one only takes CPU from the workers."""

LOG_EXCERPT_LINES = 5

QUICK = {"events": 10_000, "partitions": (1, 2), "workers": (1, 2), "probes": 3}
"""``--quick`` (the test): fewer, smaller runs."""

COMPONENTS = ("api", "nats", "worker", "keeper", "postgresql")
"""The path's components: their CPU per event adds up to ``cpu_us_per_event_path``."""


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _pooled_kill_switch(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    latencies = [ms for run in runs if run["kill_switch"] for ms in run["kill_switch"]["ms"]]
    if not latencies:
        return {"probes": 0}
    p50, p99 = quantiles(latencies, 1.0, 1)
    return {
        "probes": len(latencies),
        "kill_switch_ms_p50": p50,
        "kill_switch_ms_p99": p99,
        "kill_switch_ms_max": round(max(latencies), 1),
    }


def _parse_counts(value: str | Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            counts = tuple(int(part) for part in value.split(",") if part.strip())
        except ValueError:
            raise ValueError(f"{name}: comma-separated counts, like 1,2,8") from None
    else:
        counts = tuple(value)
    if not counts or min(counts) < 1:
        raise ValueError(f"{name}: at least one count, each >= 1")
    return counts


def run_scale_benchmark(
    events: int | None = None,
    partitions: str | Sequence[int] = (1, 2, 8),
    batch: int = 1000,
    progress: Any = None,
    api_replicas: int = API_REPLICAS,
    profile: bool = False,
    postgres_url: str = POSTGRES_URL,
    workers: str | Sequence[int] = (1, 2),
    quick: bool = False,
    probes: int | None = None,
    writers: bool = True,
    command: str | None = None,
    streams: int = 1,
) -> dict[str, Any]:
    """Run every configuration (partitions x workers; a configuration with more workers
    than partitions is skipped: a partition has one worker), the floor, the partition
    writers and (with ``profile``) the profiled run; return the figures (see the module
    docstring)."""
    partition_counts = _parse_counts(partitions, "partitions")
    worker_counts = _parse_counts(workers, "workers")
    events, probes = _sizes(events, probes, quick, batch, api_replicas, streams)

    def say(message: str) -> None:
        tell(progress, message)

    result: dict[str, Any] = {
        "command": command or "meterline bench scale",
        "quick": quick,
        "events": events,
        "partition_counts": list(partition_counts),
        "worker_counts": list(worker_counts),
        "batch": batch,
        "api_replicas": api_replicas,
        "load_processes": LOAD_PROCESSES,
        "load_connections": LOAD_PROCESSES * LOAD_CONNECTIONS,
        "kill_switch_probes": probes,
        "streams": streams,
        "lag_max_ms": os.environ.get("METERLINE_LAG_MAX_MS", str(LAG_MAX_MS_DEFAULT)),
    }
    with (
        terminate_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="meterline-bench-scale-") as folder,
        contextlib.ExitStack() as cleanup,
    ):
        root = Path(folder)
        schemas = Schemas(postgres_url)
        cleanup.callback(schemas.drop_all)
        result["machine"] = _machine(postgres_url)
        say(f"starting nats-server ({result['machine']['nats_server']}) with JetStream")
        nats, nats_url = start_nats(root, root / "nats-server.log")
        cleanup.callback(nats.stop)
        base = Setup(
            root, nats, nats_url, schemas, events, partition_counts[0], batch, api_replicas,
            progress, probes=probes, streams=streams,
        )  # fmt: skip
        base.logs.append(root / "nats-server.log")
        runs, skipped = _configurations(base, partition_counts, worker_counts, say)
        result["floor"] = _floor(schemas, events, batch, say)
        if writers:
            say("partition writers fed prepared batches: 1 process, then 2")
            result["two_writers"] = two_writers(base, quick, batch)
            say(f"  {json.dumps({k: v for k, v in result['two_writers'].items() if k != 'runs'})}")
        if profile:
            say("1 worker and the API under cProfile (CPU time, every thread): what bounds it")
            result.update(_profiled_run(replace(base, partitions=max(partition_counts), probes=0)))
        log_lines = [
            f"{log.stem}: {line}"
            for log in base.logs
            if log.exists() and log.stem != "nats-server"
            for line in log.read_text(errors="replace").splitlines()
            if notable_log_line(line)
        ]
    result.update(_summary(runs, skipped, result["floor"]["floor_us_per_event"]))
    result["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["log_lines"] = len(log_lines)
    result["log_excerpt"] = log_lines[:LOG_EXCERPT_LINES]
    return result


def _sizes(
    events: int | None,
    probes: int | None,
    quick: bool,
    batch: int,
    api_replicas: int,
    streams: int,
) -> tuple[int, int]:
    """The events and probes per configuration (``quick``'s or the full run's by
    default), once every size is checked."""
    if events is None:
        events = QUICK["events"] if quick else 200_000  # type: ignore[assignment]
    assert events is not None
    if probes is None:
        probes = QUICK["probes"] if quick else 10  # type: ignore[assignment]
    assert probes is not None
    if events < LOAD_PROCESSES or batch < 1 or api_replicas < 1 or probes < 0 or streams < 1:
        raise ValueError(
            f"events must be at least {LOAD_PROCESSES}; batch, api_replicas and streams >= 1;"
            " probes >= 0"
        )
    return events, probes


def _floor(schemas: Schemas, events: int, batch: int, say: Callable[[str], None]) -> dict[str, Any]:
    """The floor (``bench.floor``) on a fresh schema, over the load generators' batches."""
    say("floor: decode + canonical encoding + leaf hash + binary COPY, one process")
    _, floor_location = schemas.create()
    floor = run_floor(floor_location, floor_bodies(events, batch))
    say(f"  floor: {floor['floor_events_per_s']:,} events/s, {floor['floor_us_per_event']} µs")
    return floor


def _machine(postgres_url: str) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "postgresql": postgres_version(postgres_url),
        "nats_server": nats_version(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def _configurations(
    base: Setup,
    partition_counts: tuple[int, ...],
    worker_counts: tuple[int, ...],
    say: Callable[[str], None],
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Every configuration's run, by label, and the configurations skipped."""
    events, batch, api_replicas, probes = base.events, base.batch, base.api_replicas, base.probes
    runs: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, Any]] = []
    for count in partition_counts:
        setup = replace(base, partitions=count)
        for workers_count in worker_counts:
            label = f"p{count}_w{workers_count}"
            if workers_count > count:
                skipped.append(
                    {
                        "label": label,
                        "partitions": count,
                        "workers": workers_count,
                        "reason": "each partition has exactly one worker",
                    }
                )
                continue
            say(
                f"{label}: {events:,} events, {count} partition(s), {workers_count}"
                f" worker(s), batches of {batch}, {api_replicas} API replica(s),"
                f" {LOAD_PROCESSES} load processes x {LOAD_CONNECTIONS} connections,"
                f" {probes} kill-switch probes"
            )
            gc.collect()
            run = run_configuration(setup, label, workers_count)
            run["partitions"] = count
            runs[label] = run
    return runs, skipped


def _profiled_run(setup: Setup) -> dict[str, Any]:
    """The 1-worker configuration again, the worker and the API under cProfile: its rate
    and each one's top functions (printed too)."""
    profiles = setup.root / "profiles"
    profiles.mkdir()
    profiled = run_configuration(setup, "profiled", 1, profile_dir=profiles)
    found: dict[str, Any] = {"events_per_s_profiled": profiled["events_per_s"]}
    for component in ("worker", "api"):
        path = profiles / f"{component}-0.prof"
        wait_for(path.exists, f"the {component}'s profile", STOP_TIMEOUT_S)
        top = profile_top(path, setup.events)
        keep = os.environ.get("METERLINE_BENCH_KEEP_PROFILES")
        if keep:  # for a closer look with pstats
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        print_profile(setup.progress, component, top)
        found[f"{component}_profile"] = top
    return found


def _summary(
    runs: dict[str, dict[str, Any]], skipped: list[dict[str, Any]], floor_us: float
) -> dict[str, Any]:
    """The figures across configurations: each one's row (and its path's CPU and ratio to
    the floor, added to its run), the pooled kill switch and issue 7's figures."""
    configurations = []
    for label, run in runs.items():
        path_us = round(sum(run["cpu_us_per_event"][name] for name in COMPONENTS), 2)
        run["cpu_us_per_event_path"] = path_us
        run["events_per_s_per_partition"] = int(run["events_per_s"] / run["partitions"])
        run["ratio_to_floor"] = round(path_us / floor_us, 2)
        configurations.append(
            {
                "label": label,
                "partitions": run["partitions"],
                "workers": run["workers"],
                "events_per_s": run["events_per_s"],
                "events_per_s_per_partition": run["events_per_s_per_partition"],
                "cpu_us_per_event": {
                    name: run["cpu_us_per_event"][name]
                    for name in (*COMPONENTS, "load", "postgresql_all")
                },
                "cpu_us_per_event_path": path_us,
                "ratio_to_floor": run["ratio_to_floor"],
                "lock_wait_samples": run["lock_waits"]["lock_wait_samples"],
                "lock_wait_fraction_of_active": run["lock_waits"]["lock_wait_fraction_of_active"],
                "kill_switch_ms_p50": (run["kill_switch"] or {}).get("kill_switch_ms_p50"),
                "kill_switch_ms_p99": (run["kill_switch"] or {}).get("kill_switch_ms_p99"),
                "refused_batches": run["refused_batches"],
                "retried_batches": run["retried_batches"],
                "probe_refusals": (run["kill_switch"] or {}).get("probe_refusals"),
                "events_sent": run["events_sent"],
                "events_committed": run["events_committed"],
            }
        )
    summary: dict[str, Any] = {
        "configurations": configurations,
        "skipped": skipped,
        "kill_switch": _pooled_kill_switch(runs.values()),
    }
    # the figures of issue 7, for the largest partition count measured with 1 and 2 workers
    most = max(run["partitions"] for run in runs.values())
    one, two = runs.get(f"p{most}_w1"), runs.get(f"p{most}_w2")
    if one is not None:
        summary["partitions"] = most
        summary["events_per_s_1_worker"] = one["events_per_s"]
        summary["cpu_us_per_event"] = {"1_worker": one["cpu_us_per_event"]}
        summary["bound_by"] = max(COMPONENTS, key=lambda name: one["cpu_us_per_event"][name])
        if two is not None:
            summary["events_per_s_2_workers"] = two["events_per_s"]
            summary["scaling"] = round(two["events_per_s"] / one["events_per_s"], 3)
            summary["cpu_us_per_event"]["2_workers"] = two["cpu_us_per_event"]
    summary["runs"] = runs
    return summary


def _main(argv: list[str]) -> None:
    command, *args = argv
    if command == "load":
        url, token, count, batch, connections, prefix, end_us, span_us = args
        run_load_generator(
            url, token, int(count), int(batch), int(connections), prefix, int(end_us), int(span_us)
        )
    elif command == "profile":
        output, component, options = args
        run_profiled(output, component, options)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
