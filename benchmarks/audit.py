"""``audit`` of the close benchmark's ledger, month open and October closed, A/B between
source trees in one run.

Usage: python benchmarks/audit.py [--events 1000000] [--customers 100] [--rounds 2]
                                  [--dir DIR] [TREE=SRC ...]
Builds two SQLite ledgers once (kept in ``--dir``; the workload of ``bench/close.py``
ingested in appends of 1,000, one copy with October closed), then, per round, per ledger,
runs ``Billing.audit()`` in a fresh process for each source tree in turn (``PYTHONPATH``
= SRC; default: this checkout's ``src`` as ``this``), so trees alternate under the same
load. Prints one line per audit (wall events/s, and the CPU seconds of the process and
the helpers it waited for: the chain walk's forkserver workers are not counted, so run
with ``METERLINE_AUDIT_WORKERS=1`` for the whole CPU cost; ``METERLINE_*`` variables pass
through) and a JSON summary. The audit must pass.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from meterline.bench.close import (
    APPLY_AT_US,
    CLOSE_AT_US,
    MONTH_END_US,
    close_events,
    close_pricing,
)
from meterline.billing.service import open_billing

AUDIT = r"""
import sys, time, gc
from meterline.billing.service import open_billing
from meterline.bench.close import CLOSE_AT_US
if __name__ == "__main__":
    with open_billing(sys.argv[1], lambda: CLOSE_AT_US, create=False) as billing:
        gc.collect()
        started = time.perf_counter()
        report = billing.audit()
        seconds = time.perf_counter() - started
    assert report.passed, report.mismatches
    print(seconds)
"""


def build(folder: Path, events: int, customers: int) -> dict[str, Path]:
    """The two ledgers (reused when present)."""
    opened, closed = (
        folder / f"open-{events}-{customers}.db",
        folder / f"closed-{events}-{customers}.db",
    )
    if not opened.exists():
        now = [APPLY_AT_US]
        with open_billing(opened, lambda: now[0]) as billing:
            billing.context.keeps_buckets = False
            billing.apply(close_pricing(customers))
            now[0] = MONTH_END_US - 1
            for batch in close_events(events, customers, 7, 1_000):
                assert billing.ledger.ingest(batch).accepted == len(batch)
    if not closed.exists():
        shutil.copy(opened, closed)
        with open_billing(closed, lambda: CLOSE_AT_US) as billing:
            billing.context.keeps_buckets = False
            billing.close(MONTH_END_US)
    return {"open": opened, "closed": closed}


def audit(tree: str, ledger: Path, events: int) -> tuple[float, float]:
    """(events/s, CPU seconds of the audit's process and its workers)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-c", AUDIT, str(ledger)],
        env={
            "PYTHONPATH": tree,
            "PATH": "/usr/bin:/bin",
            **{k: v for k, v in os.environ.items() if k.startswith("METERLINE_")},
        },
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return events / float(done.stdout.split()[-1]), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/meterline-bench-audit"))
    parser.add_argument("trees", nargs="*", help="NAME=SRC (PYTHONPATH of a source tree)")
    arguments = parser.parse_args()
    trees = dict(tree.split("=", 1) for tree in arguments.trees) or {
        "this": str(Path(__file__).resolve().parents[1] / "src")
    }
    arguments.dir.mkdir(parents=True, exist_ok=True)
    ledgers = build(arguments.dir, arguments.events, arguments.customers)
    summary: dict[str, list[int]] = {}
    for number in range(1, arguments.rounds + 1):
        for kind, ledger in ledgers.items():
            for name, tree in trees.items():
                rate, cpu = audit(tree, ledger, arguments.events)
                summary.setdefault(f"{name} {kind}", []).append(round(rate))
                print(
                    f"round {number} {name:>8} {kind:>6}: {rate:,.0f} events/s,"
                    f" CPU {cpu:.1f} s ({cpu / arguments.events * 1e6:.1f} µs/event)",
                    flush=True,
                )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
