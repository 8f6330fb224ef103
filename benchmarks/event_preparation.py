"""Event preparation alone, CPU µs per event: the compiled batch path against the
reference, in one process on the same events.

The events are ``meterline bench scale``'s load batches (``bench.scale_load.floor_bodies``:
1,000 events a body, stamped like the load generators'), and the same batches with a
decimal property (``"price": 0.0125``), which the compiled decode leaves to the column
checks. Each way is timed in the process's CPU time, the ways interleaved pass by pass,
best of ``--passes``:

- ``reference``: the body decoded generically and each event prepared by
  ``prepare_event_checked``, the specification (what answers every error);
- ``per event``: the body decoded generically and each event prepared by ``prepare_event``
  (its straight-line fast path);
- ``compiled batch``: ``prepare_plain_batch``, one typed decode and column checks (what
  the API runs on a native JSON body).

    PYTHONPATH=src python3 benchmarks/event_preparation.py [--events 20000] [--passes 7]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from decimal import Decimal

import msgspec

from meterline.bench.scale_load import floor_bodies
from meterline.clock import system_clock_us
from meterline.core.event_batches import prepare_plain_batch
from meterline.core.events import decode_exact, prepare_event, prepare_event_checked

BATCH = 1_000
"""Events per body, as the load generators post them."""


def _with_price(bodies: list[bytes]) -> list[bytes]:
    """The same batches with a decimal property on every event."""
    encoder = msgspec.json.Encoder(decimal_format="number")
    priced = []
    for body in bodies:
        events = decode_exact(body)
        for event in events:
            event["properties"]["price"] = Decimal("0.0125")
        priced.append(encoder.encode(events))
    return priced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=7)
    arguments = parser.parse_args()
    now_us = system_clock_us()
    ways: dict[str, Callable[[bytes], object]] = {
        "reference": lambda body: [
            prepare_event_checked(event, now_us) for event in decode_exact(body)
        ],
        "per event": lambda body: [prepare_event(event, now_us) for event in decode_exact(body)],
        "compiled batch": lambda body: prepare_plain_batch(body, now_us),
    }
    plain = floor_bodies(arguments.events, BATCH)
    for label, bodies in (("plain", plain), ("with a decimal", _with_price(plain))):
        events = sum(len(decode_exact(body)) for body in bodies)
        first = bodies[0]
        assert prepare_plain_batch(first, now_us) == ways["reference"](first), label
        best = dict.fromkeys(ways, float("inf"))
        for _ in range(arguments.passes):
            for name, way in ways.items():
                started = time.process_time()
                for body in bodies:
                    way(body)
                best[name] = min(best[name], time.process_time() - started)
        reference_us = best["reference"] / events * 1e6
        print(f"{label} ({events:,} events, {len(bodies)} bodies):")
        for name, seconds in best.items():
            us = seconds / events * 1e6
            print(f"  {name:15s} {us:6.3f} µs/event  {us / reference_us:5.2f}x the reference")


if __name__ == "__main__":
    main()
