"""Repeat `meterline bench ingest` and print median, min and max of every figure.

Usage: python benchmarks/ingest.py [--runs 5] [--events 200000] [--batch 1000]
One run varies by about +-5% on the 2-core reference machine, so BENCHMARKS.md
records medians over several runs, with the spread.
"""

from __future__ import annotations

import argparse
import json

from meterline.bench import spread
from meterline.bench.ingest import run_ingest_benchmark

FIGURES = (
    "library_events_per_s",
    "http_events_per_s",
    "baseline_events_per_s",
    "ratio_to_baseline",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--http-batch", type=int, default=500)
    arguments = parser.parse_args()
    runs = [
        run_ingest_benchmark(arguments.events, arguments.batch, arguments.http_batch)
        for _ in range(arguments.runs)
    ]
    summary = {
        "events": arguments.events,
        "batch_events": arguments.batch,
        "http_batch_events": arguments.http_batch,
        "runs": arguments.runs,
    }
    for figure in FIGURES:
        summary[figure] = spread([run[figure] for run in runs])
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
