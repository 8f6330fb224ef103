"""The load generators of ``meterline bench scale``: the child process that posts its
share of the synthetic events as fast as the API answers (``run_load_generator``, run by
``python -m meterline.bench.scale load``), the parent's reading of its answer, and the
same batches for the floor."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec

from meterline.bench.children import STOP_TIMEOUT_S, Child
from meterline.bench.scale_probes import RETRY_STATUSES, retry_pause_s
from meterline.bench.scale_setup import load_shares
from meterline.bench.synthetic_pricing import INGEST_SPAN_US, month_start_us, retimed
from meterline.bench.workload import synthetic_events
from meterline.clock import system_clock_us

LOAD_PROCESSES = 2
"""Load-generator processes (each pre-encodes its share of the events)."""
LOAD_CONNECTIONS = 2
"""Keep-alive connections (threads) per load-generator process."""


class _Answer(msgspec.Struct):
    accepted: int = 0


def run_load_generator(
    url: str,
    token: str,
    count: int,
    batch: int,
    connections: int,
    prefix: str,
    end_us: int,
    span_us: int,
) -> None:
    """A load generator: pre-encode ``count`` events in batches, print ``ready``, wait for
    ``go`` on stdin, post every batch over ``connections`` keep-alive connections (a 429
    of the ingest lag bound or a 503 is posted again after ``retry_pause_s``: counted in
    ``refusals`` and ``retries``), then print one JSON line with what it measured."""
    import http.client

    events = retimed(synthetic_events(count, prefix=prefix), end_us, span_us)
    encoder = msgspec.json.Encoder()
    bodies = [encoder.encode(events[n : n + batch]) for n in range(0, count, batch)]
    del events
    gc.collect()
    gc.freeze()
    address = urlsplit(url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    decoder = msgspec.json.Decoder(_Answer)
    accepted = [0] * connections
    retries = [0] * connections
    refusals = [0] * connections
    failures: list[str] = []

    def send(number: int) -> None:
        connection = http.client.HTTPConnection(
            address.hostname or "127.0.0.1", address.port, timeout=60
        )
        try:
            for body in bodies[number::connections]:
                attempt = 0
                while True:
                    connection.request("POST", "/v1/events", body, headers)
                    response = connection.getresponse()
                    data = response.read()
                    if response.status in RETRY_STATUSES:
                        attempt += 1
                        retries[number] += 1
                        refusals[number] += response.status == 429
                        time.sleep(retry_pause_s(response.getheader("Retry-After"), data, attempt))
                        continue
                    break
                if response.status not in (200, 202):
                    failures.append(f"{response.status}: {data[:300]!r}")
                    return
                accepted[number] += decoder.decode(data).accepted
        except Exception as error:
            failures.append(repr(error))
        finally:
            connection.close()

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    threads = [threading.Thread(target=send, args=(n,)) for n in range(connections)]
    cpu_started, started = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    answer = {
        "accepted": sum(accepted),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "retries": sum(retries),
        "refusals": sum(refusals),
        "failures": failures[:3],
    }
    print(json.dumps(answer), flush=True)


def loader_result(loader: Child) -> dict[str, Any]:
    try:
        loader.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            "a load generator did not finish after every event was committed"
        ) from None
    assert loader.process.stdout is not None
    output = loader.process.stdout.read().decode().strip().splitlines()
    if loader.process.returncode != 0 or not output:
        raise RuntimeError(f"a load generator failed: {loader.tail()}")
    result: dict[str, Any] = json.loads(output[-1])
    if result["failures"]:
        raise RuntimeError(f"a load generator's batches failed: {result['failures']}")
    return result


def floor_bodies(events: int, batch: int) -> list[bytes]:
    """The load generators' batches (their shares, their prefixes, stamped like theirs)."""
    now_us = system_clock_us()
    end_us = now_us - 2_000_000
    span_us = max(0, min(INGEST_SPAN_US, end_us - month_start_us(now_us)))
    encoder = msgspec.json.Encoder()
    bodies = []
    for number, share in enumerate(load_shares(events, LOAD_PROCESSES)):
        share_events = retimed(synthetic_events(share, prefix=f"s{number}"), end_us, span_us)
        bodies += [encoder.encode(share_events[n : n + batch]) for n in range(0, share, batch)]
    return bodies
