"""CPU and wall time of the reads behind the dashboard's credit-customer pages, each
right after one new event of the customer, on a copy of a ledger (the demo's).

Usage: PYTHONPATH=TREE/src python benchmarks/credit_reads_cpu.py DB CUSTOMER [REPEATS]
The journal (``finance.books.build_books``: every credit customer's book up to now), the
customer's credit report (``Billing.credits``) and the unit economics slices
(``finance.economics.usage_slices``, given the books). CPU seconds of the process
(``time.process_time``) move far less with the machine's load than wall time: compare
trees with them. Prints JSON: medians, ms.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from meterline.billing.service import open_billing
from meterline.clock import system_clock_us
from meterline.core.events import format_timestamp
from meterline.finance.books import build_books
from meterline.finance.economics import usage_slices


def main() -> None:
    source, customer = sys.argv[1], sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "copy.db"
        shutil.copyfile(source, db)
        with open_billing(db, system_clock_us) as billing:
            books = build_books(billing)
            usage_slices(billing, books=books)
            reads = {
                "build_books": lambda: build_books(billing),
                "credits": lambda: billing.credits(customer),
                "usage_slices": lambda: usage_slices(billing, books=books),
            }
            for name, read in reads.items():
                cpu, wall = [], []
                for number in range(repeats):
                    now = billing.clock()
                    event = {
                        "id": f"cpu-{now}-{number}",
                        "customer": customer,
                        "type": "llm.completion",
                        "timestamp": format_timestamp(now - 60_000_000),
                        "properties": {"model": "gpt-4o", "input_tokens": 100, "output_tokens": 10},
                    }
                    billing.ledger.ingest([event])
                    started_cpu, started = time.process_time(), time.perf_counter()
                    read()
                    cpu.append(time.process_time() - started_cpu)
                    wall.append(time.perf_counter() - started)
                figures[name] = {
                    "cpu_ms_median": round(sorted(cpu)[repeats // 2] * 1000),
                    "wall_ms_median": round(sorted(wall)[repeats // 2] * 1000),
                }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
