"""Each dashboard page's p95 on a copy of a ledger, in process (``bench.finance_pages``:
the server's ASGI app, a read key signed in, one new event before each timed load).

Usage: PYTHONPATH=TREE/src python benchmarks/dashboard_pages_in_process.py --db PATH
       --customer NAME [--repeats 5] [--now-us US] [--page PATH ...]
Times the tree on ``PYTHONPATH`` (A/B: run it with /work/base/src and with a branch's
src alternately); ``bench/finance_pages.py`` is loaded from this checkout's file, so a
tree without it can be timed too. ``--now-us``: a fixed clock (the bench ledger's
``CLOSE_AT_US`` for its kept ledger); default the system clock. Prints JSON, ms.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from meterline.billing.service import open_billing
from meterline.clock import system_clock_us

HERE = Path(__file__).resolve().parent.parent / "src/meterline/bench/finance_pages.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--customer", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--now-us", type=int, default=0)
    parser.add_argument("--page", action="append")
    arguments = parser.parse_args()
    spec = importlib.util.spec_from_file_location("finance_pages_here", HERE)
    assert spec is not None and spec.loader is not None
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)
    if arguments.page:
        pages.dashboard_pages = lambda customer, invoice, line: arguments.page
    now = arguments.now_us
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "copy.db"
        shutil.copyfile(arguments.db, db)
        with open_billing(db, (lambda: now) if now else system_clock_us) as billing:
            invoice = pages.first_invoice(billing, arguments.customer)
            figures = pages.time_pages(
                billing, arguments.customer, arguments.repeats, "page_", invoice
            )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
