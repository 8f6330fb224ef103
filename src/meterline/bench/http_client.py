"""The HTTP benchmark's client process: POST pre-encoded batches, print events/s as JSON.

Runs as its own process so the server's CPU is measured apart from the client's.
Usage: python -m meterline.bench.http_client URL KEY EVENTS BATCH CONNECTIONS
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx
import msgspec

from meterline.bench.workload import synthetic_events


def main(url: str, key: str, count: int, batch: int, connections: int) -> None:
    events = synthetic_events(count, prefix="http")
    bodies = [msgspec.json.encode(events[i : i + batch]) for i in range(0, count, batch)]
    accepted = [0] * connections
    failures: list[str] = []

    def send(worker: int) -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            for body in bodies[worker::connections]:
                response = client.post("/v1/events", content=body)
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                    return
                accepted[worker] += response.json()["accepted"]

    threads = [threading.Thread(target=send, args=(n,)) for n in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    print(json.dumps({"accepted": sum(accepted), "seconds": seconds, "failures": failures[:3]}))


if __name__ == "__main__":
    url, key, count, batch, connections = sys.argv[1:6]
    main(url, key, int(count), int(batch), int(connections))
