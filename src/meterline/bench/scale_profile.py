"""The profiled run of ``meterline bench scale``: the child that runs a worker or an API
replica under cProfile, every thread timed by its own CPU (``run_profiled``, run by
``python -m meterline.bench.scale profile``), and the parent's reading and printing of
the top functions."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meterline.core.admission import LAG_MAX_MS_DEFAULT

PROFILE_TOP = 15
"""Functions listed per ordering of the worker's profile."""


def profile_top(path: Path, events: int) -> dict[str, list[dict[str, Any]]]:
    import pstats

    stats = pstats.Stats(str(path))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (calls, _, tottime, cumtime, _) in table.items():
        short = filename
        for marker in ("/site-packages/", "/src/", "/lib/python3"):
            if marker in filename:
                short = filename.split(marker, 1)[1]
                break
        rows.append(
            {
                "function": f"{short}:{line}({function})",
                "calls": calls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
                "tottime_us_per_event": round(tottime * 1e6 / events, 2),
                "cumtime_us_per_event": round(cumtime * 1e6 / events, 2),
            }
        )
    by = {
        "by_internal_time": sorted(rows, key=lambda row: -row["tottime_s"])[:PROFILE_TOP],
        "by_cumulative_time": sorted(rows, key=lambda row: -row["cumtime_s"])[:PROFILE_TOP],
    }
    return by


def print_profile(progress: Any, component: str, top: dict[str, list[dict[str, Any]]]) -> None:
    if progress is None:
        return
    from rich.table import Table

    for ordering, rows in top.items():
        table = Table(
            "function", "calls", "tottime s", "cumtime s", "µs/event (tot)",
            title=f"{component} profile (CPU), {ordering.replace('_', ' ')}",
        )  # fmt: skip
        for row in rows:
            table.add_row(
                row["function"],
                f"{row['calls']:,}",
                str(row["tottime_s"]),
                str(row["cumtime_s"]),
                str(row["tottime_us_per_event"]),
            )
        progress.print(table)


def _serve_profiled(db: str, port: int, stream: str, namespace: str, streams: int) -> None:
    """What ``meterline serve`` runs, in stream mode (the lag bound from
    METERLINE_LAG_MAX_MS, as the command reads it)."""
    from meterline.api.server import serve
    from meterline.core.admission import parse_lag_bound

    lag = parse_lag_bound(os.environ.get("METERLINE_LAG_MAX_MS", str(LAG_MAX_MS_DEFAULT)))
    serve(db, port=port, stream=stream, namespace=namespace, streams=streams, lag_max_ms=lag)


def _work_profiled(
    db: str, stream: str, namespace: str, streams: int, partitions: str, name: str
) -> None:
    """What ``meterline worker`` runs: a worker service until SIGTERM."""
    from meterline.logs import configure_logging
    from meterline.stream.service import WorkerService

    configure_logging("meterline-worker")
    WorkerService.open(db, stream, partitions, name, namespace, 1, streams).run()


PROFILED_COMPONENTS: dict[str, Callable[..., None]] = {
    "serve": _serve_profiled,
    "worker": _work_profiled,
}
"""What ``run_profiled`` can run, by the name ``_profiling`` gives it."""


def run_profiled(output: str, component: str, options: str) -> None:
    """Run ``component`` (a ``PROFILED_COMPONENTS`` name) with ``options`` (JSON) under
    cProfile, every thread included, timing CPU (each thread's own ``thread_time``:
    waiting for I/O, a lock or the interpreter costs nothing), and write the merged
    statistics to ``output`` when it returns."""
    run = PROFILED_COMPONENTS[component]
    arguments = json.loads(options)
    import cProfile
    import pstats

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def new_profile() -> cProfile.Profile:
        profiler = cProfile.Profile(time.thread_time_ns, 1e-9)
        with lock:
            profiles.append(profiler)
        return profiler

    def start_thread_profile(*_: object) -> None:
        new_profile().enable()  # replaces this hook for the thread

    # SIGTERM ends the command by its own handlers (the worker's loop, uvicorn's), which
    # re-raise it once done: ignore that last one so the profile is written
    signal.signal(signal.SIGTERM, lambda _number, _frame: None)
    threading.setprofile(start_thread_profile)
    main = new_profile()
    main.enable()
    try:
        run(**arguments)
    finally:
        main.disable()
        threading.setprofile(None)
        with lock:
            stats = pstats.Stats(profiles[0])
            for profiler in profiles[1:]:
                with contextlib.suppress(Exception):
                    stats.add(profiler)
        temporary = f"{output}.partial"
        stats.dump_stats(temporary)
        os.replace(temporary, output)
