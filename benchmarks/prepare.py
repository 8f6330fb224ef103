"""The API replica's per-batch CPU without HTTP or NATS: events/s and µs per event.

Times what ``meterline serve --stream`` does for one POSTed batch of 1,000 events between
reading the body and handing messages to NATS, on ``meterline bench scale``'s own load
events (``bench.scale_load.floor_bodies``: the load generators' batches, stamped like theirs):
the body decoded, the batch validated and canonicalized (``Ledger.prepare_batch``, or the
compiled batch path ``Ledger.prepare_body`` where the checkout has it), packed into
JetStream messages (``StreamPublisher.pack``), and the 202 answer built and encoded.

    PYTHONPATH=src python3 benchmarks/prepare.py                  # this checkout
    python3 benchmarks/prepare.py --against /work/main/src        # A/B against another
    python3 benchmarks/prepare.py --against /work/main/src --heap # with a replica's heap

``--heap`` first builds the app over a ledger, so the garbage collector walks a heap like a
replica's (about 100,000 objects) on each collection, and freezes it when the checkout's
``StreamFront.start`` does (``gc.freeze()``).

With ``--against``, runs alternate between the two source trees (A, B, A, B, ...; each a
fresh process, best of its passes) and the medians and the ratio B/A of µs per event are
printed: A is ``--against``, B is this file's checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EVENTS = 20_000
"""Events per pass (20 batches of 1,000)."""

BATCH = 1_000
"""Events per batch, as the load generators post them."""

PASSES = 5
"""Passes per process; a process reports its best."""

PARTITIONS = 2
"""Partitions the publisher groups events by (as ``bench scale --partitions 2``)."""


class _FakeConnection:
    """What ``StreamPublisher`` reads of a NATS connection before publishing."""

    max_payload = 1024 * 1024

    def jetstream(self, timeout: float) -> object:
        return object()


def _one_process(heap: bool) -> dict[str, Any]:
    from meterline.api import bodies as request_bodies
    from meterline.api.bodies import parse_body
    from meterline.bench.scale_load import floor_bodies
    from meterline.core.outcomes import EventOutcome
    from meterline.ledger.event_ledger import Ledger, merge_outcomes
    from meterline.stream.publisher import StreamPublisher
    from meterline.stream.settings import StreamSettings

    bodies = floor_bodies(EVENTS, BATCH)
    frozen = heap and _replica_heap()
    ledger = Ledger(store=None)  # type: ignore[arg-type]  # prepare only, never stores
    settings = StreamSettings(servers=("nats://127.0.0.1:4222",), partitions=PARTITIONS)
    publisher = StreamPublisher(_FakeConnection(), settings)  # type: ignore[arg-type]
    headers = {"content-type": "application/json"}
    compiled = hasattr(request_bodies, "prepare_body")

    def one_batch(body: bytes) -> bytes:
        if compiled:
            valid, rejected, now_us = request_bodies.prepare_body(
                ledger, headers["content-type"], headers, body, None
            )
        else:
            parsed = parse_body(headers["content-type"], headers, body)
            valid, rejected, now_us = ledger.prepare_batch(parsed.events)
        publisher.pack([event for _, event in valid], now_us)
        queued = [EventOutcome(position, "accepted", event.id) for position, event in valid]
        return _encode(merge_outcomes(queued, rejected))

    answer = one_batch(bodies[0])
    assert json.loads(answer)["accepted"] == BATCH, answer[:300]
    best = float("inf")
    for _ in range(PASSES):
        started = time.process_time()
        for body in bodies:
            one_batch(body)
        best = min(best, time.process_time() - started)
    return {
        "compiled": compiled,
        "frozen": frozen,
        "us_per_event": best / EVENTS * 1e6,
        "events_per_s": EVENTS / best,
    }


def _replica_heap() -> bool:
    """Build what an API replica holds (the app over a ledger) so that the collector has
    a replica's heap to walk, then freeze it if the checkout's replica does so at start;
    whether it did."""
    import gc
    import inspect
    import tempfile

    from meterline.api import stream_front
    from meterline.api.app import create_app
    from meterline.ledger.event_ledger import open_ledger

    folder = tempfile.mkdtemp()
    _HELD.append(create_app(open_ledger(Path(folder) / "heap.db")))
    freezes = "gc.freeze()" in inspect.getsource(stream_front.StreamFront.start)
    if freezes:
        gc.freeze()
    return freezes


_HELD: list[object] = []
"""What ``_replica_heap`` built, kept alive for the run."""


def _encode(outcome: object) -> bytes:
    import msgspec

    return msgspec.json.Encoder(decimal_format="number").encode(outcome)


def _run(source: Path, heap: bool) -> dict[str, Any]:
    environment = dict(os.environ, PYTHONPATH=str(source))
    output = subprocess.run(
        [sys.executable, __file__, "--one", *(["--heap"] if heap else [])],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--one", action="store_true", help="one process, JSON out")
    parser.add_argument("--against", type=Path, help="A: another checkout's src folder")
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds")
    parser.add_argument(
        "--heap", action="store_true", help="with a replica's heap (the app built first)"
    )
    arguments = parser.parse_args()
    if arguments.one:
        print(json.dumps(_one_process(arguments.heap)))
        return
    here = Path(__file__).resolve().parent.parent / "src"
    if arguments.against is None:
        result = _run(here, arguments.heap)
        print(f"{result['events_per_s']:,.0f} events/s  {result['us_per_event']:.2f} us/event")
        return
    figures: dict[str, list[float]] = {"A": [], "B": []}
    for round_number in range(arguments.rounds):
        for label, source in (("A", arguments.against), ("B", here)):
            result = _run(source, arguments.heap)
            figures[label].append(result["us_per_event"])
            print(
                f"round {round_number + 1} {label}: {result['us_per_event']:.2f} us/event"
                f" ({result['events_per_s']:,.0f} events/s, compiled={result['compiled']},"
                f" frozen={result['frozen']})",
                flush=True,
            )
    median_a, median_b = (statistics.median(figures[label]) for label in ("A", "B"))
    print(
        f"median A {median_a:.2f} us/event ({1e6 / median_a:,.0f} events/s),"
        f" B {median_b:.2f} us/event ({1e6 / median_b:,.0f} events/s);"
        f" B/A {median_b / median_a:.3f}"
    )


if __name__ == "__main__":
    main()
