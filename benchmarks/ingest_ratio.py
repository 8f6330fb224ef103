"""The ingest phase of ``meterline bench finance`` alone: ingest events/s without and
with the bucket keeper process, their ratio (``bucket_ingest_ratio``), CPU seconds.

Usage: PYTHONPATH=SRC python benchmarks/ingest_ratio.py EVENTS CUSTOMERS
Runs the bench's own pieces (``close_pricing``, ``close_events``, ``_ingest``,
``start_keeper_process``, ``_until_current``) on a fresh temporary ledger each, without
keeping buckets and then keeping them, and prints one JSON line; none of the bench's
reads, audits or pages (at 300,000 events on a loaded 2-core machine those take most of a
run's 18 minutes). ``ingest_cpu_s_*``: the ingesting process's CPU seconds during the
ingest; ``keeper_cpu_s``: the keeper process's whole life (its folding). Run it with each
source tree in turn (A, B, A, B) to compare.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from meterline.bench import finance
from meterline.billing.buckets import keep_buckets
from meterline.billing.keeper_process import start_keeper_process
from meterline.billing.service import open_billing


def main() -> None:
    events, customers = int(sys.argv[1]), int(sys.argv[2])
    pricing = finance.close_pricing(customers)
    encode = msgspec.json.Encoder().encode
    made = finance.close_events(events, customers, 7, finance.INGEST_BATCH_EVENTS)
    batches = [encode(batch) for batch in made]
    result: dict[str, object] = {"events": events, "customers": customers}
    rates = {}
    with tempfile.TemporaryDirectory(prefix="meterline-ingest-ratio-") as folder:
        for keep in (False, True):
            name = "with" if keep else "without"
            clock = finance._Clock(finance.APPLY_AT_US)
            with open_billing(Path(folder) / f"ledger-{keep}.db", clock) as billing:
                billing.context.keeps_buckets = False
                if keep:
                    keep_buckets(billing.context)
                billing.apply(pricing)
                clock.now_us = finance.OPEN_AT_US
                keeper = start_keeper_process(billing.context)
                started = time.process_time()
                seconds, appends = finance._ingest(billing, batches)
                result[f"ingest_cpu_s_{name}"] = round(time.process_time() - started, 2)
                result[f"ingest_wall_s_{name}"] = round(seconds, 2)
                result[f"append_p99_ms_{name}"] = finance._ms(appends, 0.99)
                rates[keep] = events / seconds
                if keeper is not None:
                    result.update(finance._until_current(billing, keeper, events))
                    keeper.stop()
                    result["bucket_write_lock_p95_ms"] = finance._ms(keeper.held, 0.95)
                    result["bucket_write_lock_max_ms"] = finance._ms(keeper.held, 1.0)
                    child = resource.getrusage(resource.RUSAGE_CHILDREN)
                    result["keeper_cpu_s"] = round(child.ru_utime + child.ru_stime, 2)
    result["ingest_events_per_s_without_buckets"] = round(rates[False])
    result["ingest_events_per_s_with_buckets"] = round(rates[True])
    result["bucket_ingest_ratio"] = round(rates[True] / rates[False], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
