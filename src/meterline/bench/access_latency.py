"""The latency measurements of ``meterline bench controls`` against one probe server:
ingest to block (a crossing batch per probe, then access polled until denied), access
answers over HTTP, and the SDK gate's answers in process (timed against the timer's own
floor). The steps are the module docstring of ``bench.control_latency``'s 1 to 3."""

from __future__ import annotations

import gc
import math
import time
from typing import Any

import httpx
import msgspec

from meterline.bench.quantiles import quantiles
from meterline.bench.synthetic_pricing import open_customer, probe_customer, unknown_customer
from meterline.clock import system_clock_us
from meterline.core.events import format_timestamp

PROBE_BATCH_EVENTS = 20
"""Events in a probe's one batch: twice its pool, so the batch crosses it."""
PROBE_TIMEOUT_S = 10.0
"""A probe not denied this long after its batch is counted as never denied."""
ACCESS_WARMUP = 500

_ENCODER = msgspec.json.Encoder()


def probe_body(customer: str) -> bytes:
    now_us = system_clock_us()
    return _ENCODER.encode(
        [
            {
                "id": f"{customer}-{number:03d}",
                "customer": customer,
                "type": "probe.call",
                "timestamp": format_timestamp(now_us - PROBE_BATCH_EVENTS + number),
            }
            for number in range(PROBE_BATCH_EVENTS)
        ]
    )


def access_allowed(client: httpx.Client, customer: str) -> bool:
    response = client.get(f"/v1/access/{customer}")
    if response.status_code != 200:
        raise RuntimeError(f"access for {customer} answered {response.status_code}")
    return bool(response.json()["allowed"])


def ingest_to_block(client: httpx.Client, probes: int) -> dict[str, Any]:
    """Per probe: ns from posting the crossing batch to the first denied access answer."""
    for index in range(probes):  # every probe starts allowed (and the connection is warm)
        if not access_allowed(client, probe_customer(index)):
            raise RuntimeError(f"{probe_customer(index)} was denied before any usage")
    latencies: list[int] = []
    responses: list[int] = []
    polls = first_poll_denied = 0
    never: list[str] = []
    clock = time.perf_counter_ns
    for index in range(probes):
        customer = probe_customer(index)
        body = probe_body(customer)
        started = clock()
        response = client.post("/v1/events", content=body)
        answered = clock()
        if response.status_code != 200 or response.json()["accepted"] != PROBE_BATCH_EVENTS:
            raise RuntimeError(f"probe batch for {customer}: {response.text[:300]}")
        deadline = answered + int(PROBE_TIMEOUT_S * 1e9)
        first = True
        while True:
            polls += 1
            denied = not access_allowed(client, customer)
            if denied:
                latencies.append(clock() - started)
                first_poll_denied += first
                break
            first = False
            if clock() > deadline:
                never.append(customer)
                break
        responses.append(answered - started)
    p50, p99 = quantiles(latencies, 1e6, 3) if latencies else (math.nan, math.nan)
    r50, r99 = quantiles(responses, 1e6, 3)
    return {
        "probes": probes,
        "probes_denied": len(latencies),
        "probes_denied_on_first_poll": first_poll_denied,
        "probes_never_denied": never[:10],
        "ingest_to_block_ms_p50": p50,
        "ingest_to_block_ms_p99": p99,
        "ingest_to_block_ms_max": round(max(latencies) / 1e6, 3) if latencies else math.nan,
        "probe_ingest_response_ms_p50": r50,
        "probe_ingest_response_ms_p99": r99,
        "probe_polls_mean": round(polls / probes, 2),
    }


def customer_mix(probes: int) -> list[str]:
    """Blocked probes, unblocked contract customers and strangers, interleaved."""
    names = []
    for index in range(probes):
        names += [probe_customer(index), open_customer(index), unknown_customer(index)]
    return names


def time_access_checks(client: httpx.Client, names: list[str], count: int) -> dict[str, Any]:
    for number in range(min(ACCESS_WARMUP, count)):
        access_allowed(client, names[number % len(names)])
    samples = [0] * count
    clock = time.perf_counter_ns
    get = client.get
    paths = [f"/v1/access/{names[n % len(names)]}" for n in range(count)]
    gc.collect()
    for number, path in enumerate(paths):
        started = clock()
        response = get(path)
        samples[number] = clock() - started
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}")
    p50, p99 = quantiles(samples, 1e6, 3)
    return {"access_checks": count, "access_check_ms_p50": p50, "access_check_ms_p99": p99}


def time_gate_checks(url: str, token: str, answers: dict[str, bool], count: int) -> dict[str, Any]:
    """``answers``: the server's own answer for each customer checked."""
    from meterline.sdk.gate import Gate

    with Gate(url, token, fail_mode="closed").start(wait_s=10.0) as gate:
        if gate.status != "live":
            raise RuntimeError(f"gate not live: {gate.status} ({gate.last_error})")
        # the gate must agree with the server before its speed means anything
        wrong = [name for name, allowed in answers.items() if gate.allowed(name) != allowed]
        if wrong:
            raise RuntimeError(f"gate answers disagree with the server for {wrong[:5]}")
        names = list(answers)
        checks = [names[n % len(names)] for n in range(count)]
        allowed = gate.allowed
        clock = time.perf_counter_ns
        samples = [0] * count
        floor = [0] * count
        gc.collect()
        gc.disable()
        try:
            for number in range(count):
                started = clock()
                floor[number] = clock() - started
            for number, customer in enumerate(checks):
                started = clock()
                allowed(customer)
                samples[number] = clock() - started
            started = clock()
            for customer in checks:
                allowed(customer)
            loop_ns = clock() - started
        finally:
            gc.enable()
    p50, p99 = quantiles(samples, 1e3, 3)
    return {
        "gate_checks": count,
        "gate_check_us_p50": p50,
        "gate_check_us_p99": p99,
        "gate_check_us_mean_loop": round(loop_ns / count / 1e3, 4),
        "gate_timer_floor_us": quantiles(floor, 1e3, 3)[0],
    }
