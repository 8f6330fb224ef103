"""One configuration of ``meterline bench scale``, measured: its workers, API replicas
and load generators started on a fresh schema and namespace, the load run until the
ledger holds every event (throughput) and the live engines applied them all (CPU per
event, per component), every event checked committed exactly once."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from meterline.api.server import SERVER_START_TIMEOUT_S, free_port
from meterline.bench.children import (
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Child,
    python_command,
    read_line,
    wait_for,
)
from meterline.bench.proc_cpu import (
    Component,
    Snapshot,
    component_cpu_seconds,
    postgres_pids,
    postmasters,
    take_snapshot,
    with_descendants,
)
from meterline.bench.scale_load import LOAD_CONNECTIONS, LOAD_PROCESSES, loader_result
from meterline.bench.scale_probes import KillSwitchProbe, LockSampler
from meterline.bench.scale_setup import (
    APPLICATION,
    Setup,
    benchmark_backends,
    component_command,
    driver_location,
    keeper_folded,
    live_caught_up,
    load_shares,
    partition_text,
    prepare_ledger,
    split_partitions,
    tell,
    worker_counters,
    worker_documents,
)
from meterline.bench.synthetic_pricing import INGEST_SPAN_US, month_start_us
from meterline.billing.service import open_billing
from meterline.clock import system_clock_us
from meterline.ledger.event_reads import event_count
from meterline.stream.keeper import lock_holder

DRAIN_TIMEOUT_MIN_S = 120.0
"""The least time a run has to commit every event; more for larger runs (see ``_deadline``)."""

DRAIN_RATE_FLOOR = 1_000
"""Events/s below which a run is abandoned as stuck (it sets the drain deadline)."""

POLL_S = 0.02
"""How often the ledger head is polled while the events drain."""

LIVE_TIMEOUT_S = 120.0
"""How long the live engines have, after the last commit, to report every event applied
(the CPU figures are then taken at the last commit only: see ``live_seconds``)."""


def run_configuration(
    setup: Setup, label: str, workers: int, profile_dir: Path | None = None
) -> dict[str, Any]:
    """One measured run on a fresh schema and namespace: its figures. With
    ``profile_dir``, every worker and API replica runs under ``run_profiled`` and writes
    ``worker-N.prof`` or ``api-N.prof`` there when stopped."""
    schema, location = setup.schemas.create()
    namespace = f"bench_{label}_{secrets.token_hex(4)}"
    token = prepare_ledger(location, setup.partitions, setup.probes)
    streams = min(setup.streams, setup.partitions)
    stream_options = {"stream": setup.nats_url, "namespace": namespace, "streams": streams}
    launch = _Launch(setup, label, location, stream_options, profile_dir)
    try:
        keeper = launch.keeper()
        worker_children = launch.workers(workers)
        api_children, urls = launch.api_replicas()
        loaders = launch.loaders(urls, token)
        probe = KillSwitchProbe(urls, token, setup.probes) if setup.probes else None
        if probe is not None:
            probe.check_allowed()
        children = _Children(keeper, worker_children, api_children, loaders)
        figures = _measure(setup, namespace, children, schema, probe)
        tell(
            setup.progress,
            f"  {label}: {figures['events_per_s']:,} events/s end to end"
            f" ({figures['seconds']:.2f} s, load answered in {figures['load_seconds']:.2f} s);"
            f" CPU µs/event {figures['cpu_us_per_event']}",
        )
        figures["workers"] = workers
        figures["worker_counters"] = worker_counters(setup, namespace, figures["events_committed"])
        return figures
    finally:
        for child in reversed(launch.children):
            child.stop()


@dataclass
class _Launch:
    """Starts one configuration's components, each ready before the next kind starts;
    ``children`` is everything started, for the caller to stop."""

    setup: Setup
    label: str
    location: str
    stream_options: dict[str, Any]
    profile_dir: Path | None
    children: list[Child] = field(default_factory=list)

    def _start(self, name: str, command: list[str], pipes: bool = False) -> Child:
        log = self.setup.root / f"{self.label}-{name}.log"
        self.setup.logs.append(log)
        child = Child(python_command(*command), log, pipes=pipes)
        self.children.append(child)
        return child

    def _profile(self, name: str) -> Path | None:
        return self.profile_dir and self.profile_dir / f"{name}.prof"

    def keeper(self) -> Child:
        """The ledger's bucket keeper (``meterline keeper``), once it holds the lock."""
        child = self._start("keeper", component_command("keeper", {"db": self.location}))

        def holding() -> bool:
            child.check_alive("the bucket keeper")
            return lock_holder(self.location) is not None

        wait_for(holding, "the bucket keeper's lock", READY_TIMEOUT_S)
        return child

    def workers(self, count: int) -> list[Child]:
        """``count`` workers splitting the partitions, once each reports in the status
        bucket."""
        setup, namespace = self.setup, self.stream_options["namespace"]
        started = []
        for number, owned in enumerate(split_partitions(setup.partitions, count)):
            worker = {"db": self.location, **self.stream_options}
            worker["partitions"] = partition_text(owned)
            worker["name"] = f"{self.label}-w{number}"
            command = component_command("worker", worker, self._profile(f"worker-{number}"))
            started.append(self._start(f"worker-{number}", command))

        def workers_ready() -> bool:
            for child in started:
                child.check_alive("a worker")
            try:
                return len(worker_documents(setup, namespace)) == count
            except Exception:
                return False

        wait_for(workers_ready, f"{count} worker(s) in `meterline status`", READY_TIMEOUT_S)
        return started

    def api_replicas(self) -> tuple[list[Child], list[str]]:
        """The API replicas and their URLs, once each answers its health check."""
        started, urls = [], []
        for number in range(self.setup.api_replicas):
            port = free_port()
            api = {"db": self.location, "port": port, **self.stream_options}
            command = component_command("serve", api, self._profile(f"api-{number}"))
            started.append(self._start(f"api-{number}", command))
            urls.append(f"http://127.0.0.1:{port}")
        for child, url in zip(started, urls, strict=True):

            def healthy(child: Child = child, url: str = url) -> bool:
                child.check_alive("an API replica")
                try:
                    return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(healthy, "an API replica's health", SERVER_START_TIMEOUT_S)
        return started, urls

    def loaders(self, urls: list[str], token: str) -> list[Child]:
        """The load generators, each with its share pre-encoded and ready for ``go``."""
        now_us = system_clock_us()
        end_us = now_us - 2_000_000
        span_us = max(0, min(INGEST_SPAN_US, end_us - month_start_us(now_us)))
        started = []
        for number, share in enumerate(load_shares(self.setup.events, LOAD_PROCESSES)):
            command = ["-m", "meterline.bench.scale", "load", urls[number % len(urls)], token]
            command += [str(share), str(self.setup.batch), str(LOAD_CONNECTIONS), f"s{number}"]
            command += [str(end_us), str(span_us)]
            started.append(self._start(f"load-{number}", command, pipes=True))
        for loader in started:
            assert loader.process.stdout is not None
            line = read_line(loader, READY_TIMEOUT_S)
            if line != "ready":
                raise RuntimeError(f"a load generator did not get ready: {loader.tail()}")
        return started


@dataclass(frozen=True)
class _Children:
    """One configuration's started components."""

    keeper: Child
    workers: list[Child]
    apis: list[Child]
    loaders: list[Child]


def _components(
    setup: Setup, children: _Children, mine: set[int], backends: set[int]
) -> list[Component]:
    """The components whose CPU is measured. ``mine`` (the driver's own backends) and
    ``backends`` (the benchmark's) are read at each snapshot: the caller fills them."""

    def postgresql(snapshot: Snapshot) -> set[int]:
        return (backends | postmasters(snapshot)) & (postgres_pids(snapshot) - mine)

    def postgresql_all(snapshot: Snapshot) -> set[int]:
        return postgres_pids(snapshot) - mine

    apis, workers, keeper = children.apis, children.workers, children.keeper
    return [
        Component("api", lambda s: with_descendants(s, [c.pid for c in apis])),
        Component("nats", lambda s: with_descendants(s, [setup.nats.pid])),
        Component("worker", lambda s: with_descendants(s, [c.pid for c in workers])),
        Component("keeper", lambda s: with_descendants(s, [keeper.pid])),
        Component("postgresql", postgresql, lambda pid: pid in backends),
        Component("postgresql_all", postgresql_all),
    ]


@dataclass
class _Observed:
    """What one loaded run saw: the ledger's counts, the instants (``perf_counter``), the
    process snapshots and what the probes and the lock sampler found."""

    components: list[Component]
    before: Snapshot
    started: float
    count: int = 0
    load_done: float | None = None
    finished: float = 0.0
    at_commit: Snapshot = field(default_factory=dict)
    expected: int = 0
    live_seconds: float | None = None
    keeper_seconds: float | None = None
    after: Snapshot = field(default_factory=dict)
    ended: float = 0.0
    stored_count: int = 0
    load_average: tuple[float, float] = (0.0, 0.0)
    lock_waits: Any = None
    kill_switch: Any = None


def _measure(
    setup: Setup,
    namespace: str,
    children: _Children,
    schema: str,
    probe: KillSwitchProbe | None = None,
) -> dict[str, Any]:
    """Start the load (and the kill-switch probes and the lock sampler), wait until the
    ledger holds every event (throughput), then until the live engines applied them all
    and the keeper folded them all (CPU, their work included)."""
    events, workers, apis, loaders = setup.events, children.workers, children.apis, children.loaders
    with (
        psycopg.connect(setup.schemas.url, autocommit=True, connect_timeout=10) as connection,
        open_billing(driver_location(setup.schemas.url, schema), create=False) as billing,
    ):
        connection.execute(f'SET search_path TO "{schema}"')
        mine = {(connection.info.backend_pid)}
        backends: set[int] = set()
        components = _components(setup, children, mine, backends)
        head = connection.cursor()
        if event_count(head) != 0:
            raise RuntimeError("the benchmark ledger is not empty before the load")
        backends |= benchmark_backends(connection)
        sampler = LockSampler(setup.schemas.url, APPLICATION)
        sampler.start()
        if sampler.backend_pid is not None:
            mine.add(sampler.backend_pid)
        load_before = os.getloadavg()[0]
        seen = _Observed(components, take_snapshot(), time.perf_counter())
        for loader in loaders:
            assert loader.process.stdin is not None
            loader.process.stdin.write(b"go\n")
            loader.process.stdin.flush()
        if probe is not None:
            probe.load_running = lambda: any(loader.alive() for loader in loaders)
            probe.start()
        _drain(seen, lambda: event_count(head), events, probe, workers, apis, loaders)
        seen.finished = time.perf_counter()
        backends |= benchmark_backends(connection)
        seen.at_commit = take_snapshot()
        seen.lock_waits = sampler.stop()
        seen.kill_switch = probe.finish(STOP_TIMEOUT_S) if probe is not None else None
        seen.expected = events + (probe.events_sent if probe is not None else 0)
        with contextlib.suppress(RuntimeError):
            wait_for(
                lambda: live_caught_up(setup, namespace, workers, seen.expected),
                "the live engines",
                LIVE_TIMEOUT_S,
            )
            seen.live_seconds = time.perf_counter() - seen.finished
        with contextlib.suppress(RuntimeError):
            wait_for(
                lambda: keeper_folded(billing.context) >= seen.expected,
                "the bucket keeper",
                LIVE_TIMEOUT_S,
            )
            seen.keeper_seconds = time.perf_counter() - seen.finished
        backends |= benchmark_backends(connection)
        caught_up = seen.live_seconds is not None and seen.keeper_seconds is not None
        seen.after = take_snapshot() if caught_up else seen.at_commit
        seen.ended = time.perf_counter() if caught_up else seen.finished
        seen.load_average = (load_before, os.getloadavg()[0])
        seen.stored_count = event_count(connection)
    return _figures(seen, events, [loader_result(loader) for loader in loaders])


def _drain(
    seen: _Observed,
    committed: Callable[[], int],
    events: int,
    probe: KillSwitchProbe | None,
    workers: list[Child],
    apis: list[Child],
    loaders: list[Child],
) -> None:
    """Wait until the ledger holds every event sent (the probes' too) and the probes are
    done: ``seen.count`` and ``seen.load_done`` (when the load generators ended)."""

    def total() -> int:
        return events + (probe.events_sent if probe is not None else 0)

    def probing() -> bool:
        return probe is not None and probe.alive()

    started = seen.started
    deadline = started + max(DRAIN_TIMEOUT_MIN_S, events / DRAIN_RATE_FLOOR)
    while True:
        seen.count = committed()
        now = time.perf_counter()
        if seen.count >= total() and not probing():
            return
        if seen.load_done is None and not any(loader.alive() for loader in loaders):
            seen.load_done = now
            failed = [loader for loader in loaders if loader.process.returncode != 0]
            if failed:
                raise RuntimeError(f"a load generator failed: {failed[0].tail()}")
        for child in (*workers, *apis):
            child.check_alive("a worker or an API replica")
        if now > deadline:
            raise RuntimeError(
                f"only {seen.count:,} of {events:,} events committed after {now - started:.0f} s"
            )
        time.sleep(POLL_S)


def _figures(seen: _Observed, events: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's figures from what it saw and the load generators' answers, once every
    event is checked committed exactly once."""
    expected, started, finished = seen.expected, seen.started, seen.finished
    load_done = seen.load_done
    if load_done is None:
        load_done = started + max(result["seconds"] for result in results)
    accepted = sum(result["accepted"] for result in results)
    if accepted != events or seen.stored_count != expected or seen.count != expected:
        raise RuntimeError(
            f"{accepted:,} of {events:,} load events accepted; {seen.stored_count:,} stored,"
            f" head {seen.count:,}: expected {expected:,} (with the probes')"
        )
    seconds = finished - started
    load_cpu = sum(result["cpu_seconds"] for result in results)
    cpu = {c.name: component_cpu_seconds(seen.before, seen.after, c) for c in seen.components}
    cpu["load"] = load_cpu
    cpu_at_commit = {
        c.name: component_cpu_seconds(seen.before, seen.at_commit, c) for c in seen.components
    }
    cpu_at_commit["load"] = load_cpu
    return {
        "events_per_s": int(expected / seconds),
        "seconds": round(seconds, 3),
        "load_seconds": round(max(result["seconds"] for result in results), 3),
        "drain_seconds": round(max(0.0, finished - load_done), 3),
        "events_committed": seen.stored_count,
        "events_sent": accepted + expected - events,
        "probe_events": expected - events,
        "retried_batches": sum(result["retries"] for result in results),
        "refused_batches": sum(result["refusals"] for result in results),
        "live_seconds": None if seen.live_seconds is None else round(seen.live_seconds, 3),
        "keeper_seconds": None if seen.keeper_seconds is None else round(seen.keeper_seconds, 3),
        "cpu_us_per_event": {name: round(value * 1e6 / expected, 2) for name, value in cpu.items()},
        "cpu_us_per_event_at_last_commit": {
            name: round(value * 1e6 / expected, 2) for name, value in cpu_at_commit.items()
        },
        "cpu_cores_busy": {
            name: round(value / (seen.ended - started), 2) for name, value in cpu.items()
        },
        "load_average_1m": [round(seen.load_average[0], 2), round(seen.load_average[1], 2)],
        "lock_waits": seen.lock_waits,
        "kill_switch": seen.kill_switch,
    }
