"""prepare_event on 20,000 demo events: events/s and µs per event, best of five passes.

Run as `PYTHONPATH=src python3 benchmarks/prepare_events.py`; compare two checkouts by
pointing PYTHONPATH at each (the same events, the same machine, one after the other).
"""

import time

from meterline.core.events import prepare_event
from meterline.demo.workload import generate_month

events = generate_month(scale=0.2)[:20000]
now = 1_795_435_200_000_000
best = None
for _ in range(5):
    t = time.perf_counter()
    for e in events:
        prepare_event(e, now)
    d = time.perf_counter() - t
    best = d if best is None or d < best else best
print(f"{len(events) / best:,.0f} events/s  {best / len(events) * 1e6:.2f} us/event")
