"""Repeat `meterline bench close` and print median, min and max of every figure.

Usage: python benchmarks/close.py [--runs 3] [--events 1000000] [--customers 100]
       [--keep DIR] [--json]
Only the close is timed (generation and ingest are reported apart). With --keep, the
ingested ledger stays in DIR and every run (and every later invocation with the same
workload) closes it afresh into a new billing file, so a 10M-event ledger is ingested
once; without it, each run ingests into its own temporary directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from meterline.bench import spread
from meterline.bench.close import CloseBenchmark, run_close_benchmark

FIGURES = ("seconds", "events_per_s", "generate_seconds", "ingest_seconds")


class _Progress:
    def print(self, message: str) -> None:
        print(f"# {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="keep the ledger in this folder")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    parser.add_argument(
        "--credits",
        action="store_true",
        help="also close with a credit pool and a prepaid commit on every contract, each run"
        " beside a plain close, and report the ratio",
    )
    arguments = parser.parse_args()
    progress = None if arguments.json else _Progress()
    runs: list[CloseBenchmark] = []
    credit_runs: list[CloseBenchmark] = []
    for number in range(arguments.runs):
        for credits in (False, True) if arguments.credits else (False,):
            result = run_close_benchmark(
                arguments.events,
                arguments.customers,
                directory=arguments.keep,
                seed=arguments.seed,
                progress=progress,
                credits=credits,
            )
            (credit_runs if credits else runs).append(result)
            if progress is not None:
                progress.print(f"run {number + 1}: {json.dumps(result.as_dict())}")
    first = runs[0]
    summary: dict[str, Any] = {
        "events": first.events,
        "customers": first.customers,
        "invoices": first.invoices,
        "lines": first.lines,
        "runs": len(runs),
        "cpus": first.cpus,
        "python": first.python,
    }
    for figure in FIGURES:
        values = [getattr(run, figure) for run in runs if getattr(run, figure) is not None]
        if values:
            summary[figure] = spread(values)
    if credit_runs:
        with_credits = [run.seconds for run in credit_runs]
        summary["credits"] = {
            "seconds": spread(with_credits),
            "events_per_s": spread([run.events_per_s for run in credit_runs]),
            "lines": credit_runs[0].lines,
            "seconds_ratio_to_plain": round(
                statistics.median(with_credits) / statistics.median(r.seconds for r in runs), 3
            ),
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
