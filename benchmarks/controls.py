"""Repeat `meterline bench controls --json` and print median, min and max of every figure.

Usage: python benchmarks/controls.py [--runs 3] [--probes 200] [--events 200000] [--rounds 3]
Each run is its own `python -m meterline bench controls --json` process (fresh servers,
ledgers and gate), so no run inherits another's threads or warm caches. Progress and each
run's figures go to stderr; the summary (JSON) to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from meterline.bench import spread

FIGURES = (
    "ingest_to_block_ms_p50",
    "ingest_to_block_ms_p99",
    "ingest_to_block_ms_max",
    "probes_denied_on_first_poll",
    "probe_ingest_response_ms_p50",
    "probe_ingest_response_ms_p99",
    "access_check_ms_p50",
    "access_check_ms_p99",
    "gate_check_us_p50",
    "gate_check_us_p99",
    "gate_check_us_mean_loop",
    "ingest_events_per_s_without_controls",
    "ingest_events_per_s_with_controls",
    "ingest_events_per_s_live_off",
    "ingest_ratio_with_controls",
    "ingest_ratio_live_engine",
    "ingest_ratio_with_controls_vs_live_off",
    "applied_events_per_s_without_controls",
    "applied_events_per_s_with_controls",
    "live_feed_lag_ms_with_controls",
    "access_exact_ms_with_controls",
    "control_firings_with_controls",
)
TARGETS = {
    "ingest_to_block_ms_p99": ("<=", 50),
    "access_check_ms_p99": ("<=", 2),
    "gate_check_us_p50": ("<=", 5),
    "ingest_ratio_with_controls": (">=", 0.80),
    "ingest_ratio_with_controls_vs_live_off": (">=", 0.80),
}
"""The issue's bars; the last also holds the controls *and* the live engine to 80% of
ingest without any live path."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    runs: list[dict[str, Any]] = []
    for number in range(arguments.runs):
        finished = subprocess.run(
            [
                sys.executable,
                "-m",
                "meterline",
                "bench",
                "controls",
                "--json",
                "--probes",
                str(arguments.probes),
                "--events",
                str(arguments.events),
                "--rounds",
                str(arguments.rounds),
            ],
            capture_output=True,
            check=True,
            text=True,
        )
        if finished.stderr.strip():
            print(finished.stderr.rstrip(), file=sys.stderr)
        runs.append(json.loads(finished.stdout))
        print(f"# run {number + 1}: {finished.stdout.strip()}", file=sys.stderr, flush=True)
    first = runs[0]
    summary: dict[str, Any] = {
        "probes": arguments.probes,
        "events": arguments.events,
        "rounds": arguments.rounds,
        "runs": len(runs),
        "probes_denied": min(run["probes_denied"] for run in runs),
        "server_log_lines": sum(run["server_log_lines"] for run in runs),
        "cpus": first["cpus"],
        "python": first["python"],
    }
    for figure in FIGURES:
        values = [run[figure] for run in runs if run.get(figure) is not None]
        if values:
            summary[figure] = spread(values)
    met = {}
    for figure, (sense, bound) in TARGETS.items():
        median = summary[figure]["median"]
        met[figure] = median <= bound if sense == "<=" else median >= bound
    summary["targets_met_by_median"] = met
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
