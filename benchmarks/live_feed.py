"""The stream worker's two per-event costs, in one process: the store's append and the
live engine's cycle (projection feed + controls), fed prepared batches.

Usage: PYTHONPATH=src python benchmarks/live_feed.py [--events 50000] [--batch 1000]
       [--coalesce 1] [--rounds 3] [--postgres URL] [--partitions 2] [--profile]

The ledger (a SQLite file, or a fresh schema in the PostgreSQL database ``--postgres``,
dropped after) gets the pricing of ``meterline bench scale`` (the synthetic meters priced
for 100 customers, a prepaid pool and four controls each: ``bench.control_latency``). Every
batch is the synthetic workload re-stamped into the last half hour and prepared
(``Ledger.prepare_batch``) before any clock starts. Each round then appends its batches
(``store.append``, timed with ``thread_time``) and hands them to a ``LiveEngine`` run
without its thread: ``--coalesce`` batches per ``cycle()`` (timed alike), as a worker's
engine takes what arrived meanwhile. Prints one JSON object: per round and as medians,
the CPU µs per event of the append and of the engine cycle. CPU time, not wall time, so a
busy machine moves the figures less (it still moves them: report medians).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from meterline.bench.synthetic_pricing import contract_start, ingest_pricing, retimed
from meterline.bench.workload import synthetic_events
from meterline.billing.service import open_billing
from meterline.clock import system_clock_us
from meterline.core.events import PreparedEvent
from meterline.ledger.event_ledger import open_store
from meterline.live.service import LiveEngine

SPAN_US = 30 * 60 * 1_000_000
"""The events are stamped evenly over the last half hour (the open period, no late event)."""


def _ledger_location(arguments: argparse.Namespace, folder: Path) -> tuple[str, str | None]:
    """Where the ledger lives, and the schema to drop after (PostgreSQL only)."""
    if arguments.postgres is None:
        return str(folder / "live_feed.db"), None
    schema = f"live_feed_{secrets.token_hex(6)}"
    with psycopg.connect(arguments.postgres, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in arguments.postgres else "?"
    url = f"{arguments.postgres}{separator}options=-csearch_path%3D{schema}"
    open_store(url, partitions=arguments.partitions).close()
    return url, schema


def _round(
    engine: LiveEngine, batches: list[list[tuple[int, PreparedEvent]]], now_us: int, coalesce: int
) -> tuple[float, float]:
    """Append ``batches`` and feed the engine; (append, cycle) CPU seconds."""
    store = engine.billing.ledger.store
    append_s = cycle_s = 0.0
    for start in range(0, len(batches), coalesce):
        for batch in batches[start : start + coalesce]:
            began = time.thread_time()
            outcomes = store.append(batch, now_us)
            append_s += time.thread_time() - began
            engine.on_append(
                [
                    (outcome.sequence, batch[number][1])
                    for number, outcome in enumerate(outcomes)
                    if outcome.status == "accepted" and outcome.sequence is not None
                ]
            )
        began = time.thread_time()
        engine.cycle()
        cycle_s += time.thread_time() - began
    return append_s, cycle_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000, help="events per round")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--coalesce", type=int, default=1, help="batches per engine cycle")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL (else SQLite)")
    parser.add_argument("--partitions", type=int, default=2, help="PostgreSQL only")
    parser.add_argument("--profile", action="store_true", help="cProfile the last round")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        location, schema = _ledger_location(arguments, Path(folder))
        try:
            result = _measure(location, arguments)
        finally:
            if schema is not None:
                with psycopg.connect(arguments.postgres, autocommit=True) as connection:
                    connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    json.dump(result, sys.stdout, indent=1)
    print()


def _measure(location: str, arguments: argparse.Namespace) -> dict[str, Any]:
    now_us = system_clock_us()
    with open_billing(location) as billing:
        billing.apply(ingest_pricing(contract_start(now_us), controls=True))
        engine = LiveEngine(billing, pause_share=0.0)
        engine.start(thread=False)
        try:
            rounds = []
            for number in range(arguments.rounds):
                raws = retimed(
                    synthetic_events(arguments.events, f"round{number}"), now_us, SPAN_US
                )
                batches = [
                    billing.ledger.prepare_batch(raws[start : start + arguments.batch])[0]
                    for start in range(0, len(raws), arguments.batch)
                ]
                profiler = cProfile.Profile() if arguments.profile else None
                if profiler is not None and number == arguments.rounds - 1:
                    profiler.enable()
                append_s, cycle_s = _round(engine, batches, now_us, arguments.coalesce)
                if profiler is not None and number == arguments.rounds - 1:
                    profiler.disable()
                    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(
                        45
                    )
                rounds.append(
                    {
                        "append_us_per_event": round(append_s * 1e6 / arguments.events, 2),
                        "cycle_us_per_event": round(cycle_s * 1e6 / arguments.events, 2),
                    }
                )
                print(json.dumps(rounds[-1]), file=sys.stderr)
        finally:
            engine.stop()
    return {
        "store": "postgresql" if arguments.postgres else "sqlite",
        "events_per_round": arguments.events,
        "batch": arguments.batch,
        "coalesce": arguments.coalesce,
        "rounds": rounds,
        "append_us_per_event_median": statistics.median(r["append_us_per_event"] for r in rounds),
        "cycle_us_per_event_median": statistics.median(r["cycle_us_per_event"] for r in rounds),
    }


if __name__ == "__main__":
    main()
