"""How long the finance view takes on the demo's month (130k events, 12 invoices).

Usage: python benchmarks/finance.py [--db PATH] [--runs 3] [--scale 1.0]
Builds the demo ledger once (``meterline demo --no-serve``) unless ``--db`` names one,
then times, best of ``--runs``, each derivation from the raw ledger, against the baseline
measured in the same run: ``audit`` (re-derive every finalized invoice from the events).
Prints JSON: seconds per step and its ratio to the audit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meterline.billing.service import Billing, open_billing
from meterline.finance.books import build_books
from meterline.finance.economics import usage_slices
from meterline.finance.export import export_tables
from meterline.finance.general_ledger_files import journal_beancount
from meterline.finance.truth import one_truth


def best(runs: int, step: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(billing: Billing, runs: int, out: Path) -> dict[str, Any]:
    steps: dict[str, Callable[[], object]] = {
        "audit (baseline)": billing.audit,
        "journal (build_books)": lambda: build_books(billing),
        "journal as Beancount": lambda: journal_beancount(build_books(billing)),
        "unit economics (usage_slices)": lambda: usage_slices(billing),
        "one truth (reconcile chain)": lambda: one_truth(billing),
        "export all tables to Parquet": lambda: export_tables(billing, out),
    }
    seconds = {name: best(runs, step) for name, step in steps.items()}
    baseline = seconds["audit (baseline)"]
    head, _ = billing.ledger.head()
    return {
        "events": head,
        "invoices": len(billing.store.invoices()),
        "journal_entries": len(build_books(billing).entries),
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "ratio_to_audit": {name: round(value / baseline, 2) for name, value in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        db = arguments.db
        if db is None:
            db = Path(directory) / "demo.db"
            subprocess.run(
                [sys.executable, "-m", "meterline", "demo", "--db", str(db), "--no-serve",
                 "--scale", str(arguments.scale)],
                check=True,
                capture_output=True,
            )  # fmt: skip
        with open_billing(db) as billing:
            figures = measure(billing, arguments.runs, Path(directory) / "parquet")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
