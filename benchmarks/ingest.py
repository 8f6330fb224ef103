"""Repeat `meterline bench ingest` and print median, min and max of every figure.

Usage: python benchmarks/ingest.py [--runs 5] [--events 200000] [--batch 1000]
One run varies by about +-5% on the 2-core reference machine, so BENCHMARKS.md
records medians over several runs, with the spread.

Paired against another checkout (each run a fresh process, A, B, A, B, ...; A is
``--against``, B is this file's checkout), medians and the ratio B/A of each figure:

    python benchmarks/ingest.py --runs 3 --against /work/main/src
    python benchmarks/ingest.py --runs 5 --against /work/main/src --cpu

``--cpu`` times the library path alone in CPU seconds of the ingesting thread (fsync
waits and other processes' turns left out), which a busy machine disturbs far less than
the wall-clock figures: on a shared machine it is the comparison to trust, and the
wall-clock target can only be judged on a quiet one.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from meterline.bench import spread

FIGURES = (
    "library_events_per_s",
    "http_events_per_s",
    "baseline_events_per_s",
    "ratio_to_baseline",
)
CPU_FIGURES = ("library_cpu_us_per_event", "library_events_per_cpu_s")


def _library_cpu(events: int, batch: int) -> dict[str, Any]:
    """The library path (``Ledger.ingest`` in batches of ``batch``) in CPU time of the
    ingesting thread, on a fresh ledger file."""
    from meterline.bench.workload import synthetic_events
    from meterline.ledger import open_ledger

    generated = synthetic_events(events)
    with (
        tempfile.TemporaryDirectory(prefix="meterline-bench-") as folder,
        open_ledger(Path(folder) / "library.db") as ledger,
    ):
        gc.collect()
        gc.freeze()
        started = time.thread_time()
        accepted = 0
        for start in range(0, events, batch):
            accepted += ledger.ingest(generated[start : start + batch]).accepted
        seconds = time.thread_time() - started
        gc.unfreeze()
    if accepted != events:
        raise RuntimeError(f"library path accepted {accepted} of {events} events")
    return {
        "library_cpu_us_per_event": round(seconds / events * 1e6, 3),
        "library_events_per_cpu_s": int(events / seconds),
    }


def _one_run(arguments: argparse.Namespace) -> dict[str, Any]:
    if arguments.cpu:
        return _library_cpu(arguments.events, arguments.batch)
    from meterline.bench.ingest import run_ingest_benchmark

    return run_ingest_benchmark(arguments.events, arguments.batch, arguments.http_batch)


def _run_in(source: Path, arguments: argparse.Namespace) -> dict[str, Any]:
    """One run in a fresh process with ``source`` first on the import path."""
    command = [sys.executable, __file__, "--one", "--events", str(arguments.events)]
    command += ["--batch", str(arguments.batch), "--http-batch", str(arguments.http_batch)]
    environment = dict(os.environ, PYTHONPATH=str(source))
    finished = subprocess.run(
        [*command, *(["--cpu"] if arguments.cpu else [])],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


def _paired(arguments: argparse.Namespace, figures: tuple[str, ...]) -> dict[str, Any]:
    """``arguments.runs`` pairs alternating the ``--against`` tree (A) and this one (B)."""
    here = Path(__file__).resolve().parent.parent / "src"
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for pair in range(1, arguments.runs + 1):
        for label, source in (("A", arguments.against), ("B", here)):
            load = os.getloadavg()[0]
            result = _run_in(source, arguments)
            runs[label].append(result)
            shown = ", ".join(f"{figure} {result[figure]}" for figure in figures)
            print(f"pair {pair} {label} (load {load:.1f}): {shown}", file=sys.stderr, flush=True)
    summary: dict[str, Any] = {"A": str(arguments.against), "B": str(here)}
    for figure in figures:
        medians = [statistics.median(run[figure] for run in runs[label]) for label in "AB"]
        summary[figure] = {
            "A": spread([run[figure] for run in runs["A"]]),
            "B": spread([run[figure] for run in runs["B"]]),
            "B/A": round(medians[1] / medians[0], 3),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="runs (pairs with --against)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--http-batch", type=int, default=500)
    parser.add_argument("--against", type=Path, help="A: another checkout's src folder")
    parser.add_argument("--cpu", action="store_true", help="the library path in CPU time")
    parser.add_argument("--one", action="store_true", help="one run, JSON out")
    arguments = parser.parse_args()
    figures = CPU_FIGURES if arguments.cpu else FIGURES
    if arguments.one:
        print(json.dumps(_one_run(arguments)))
        return
    common = {
        "events": arguments.events,
        "batch_events": arguments.batch,
        "http_batch_events": arguments.http_batch,
        "runs": arguments.runs,
    }
    if arguments.against is not None:
        print(json.dumps(common | _paired(arguments, figures), indent=2))
        return
    runs = [_one_run(arguments) for _ in range(arguments.runs)]
    summary: dict[str, Any] = dict(common)
    for figure in figures:
        summary[figure] = spread([run[figure] for run in runs])
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
