"""What ``meterline bench scale`` watches while a configuration runs under full load.

* ``LockSampler``: every ``LOCK_SAMPLE_S``, one query of ``pg_stat_activity`` for the
  backends of the benchmark's components (their ``application_name``): how many are
  active and how many wait on a heavyweight lock (``wait_event_type = 'Lock'``, by
  ``wait_event``: ``tuple``, ``transactionid``, ``relation``, ``advisory``..., and by
  the first characters of the waiting statement). Head rows locked
  ``FOR UPDATE`` by two appends to the same partition show up here; appends to different
  partitions should not.
* ``KillSwitchProbe``: the kill switch at scale. Probe customers (``bench controls``'
  probes: a 10-credit prepaid pool and a ``balance_exhausted`` block) are in the
  benchmark's pricing. While the load runs, per probe: one batch of
  ``PROBE_BATCH_EVENTS`` events (it crosses the pool) is posted to one replica; from the
  moment that replica acknowledges it (``202``), every replica is polled
  (``GET /v1/access/{customer}``, ``POLL_PAUSE_S`` apart) until each has answered
  ``allowed: false``; the time until the last one did is the probe's latency. A probe
  batch refused by the ingest lag bound (``429``) or the stream (``503``) is posted again
  after ``retry_pause_s`` (counted in ``probe_refusals``); the latency runs from the
  ``202`` that finally acknowledged it.
* ``retry_pause_s``: the load generators' and the probes' bounded backoff on a refusal.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

import httpx
import msgspec
import psycopg
import yaml

from meterline.bench.access_latency import PROBE_BATCH_EVENTS, probe_body
from meterline.bench.quantiles import quantiles
from meterline.bench.synthetic_pricing import probe_customer, probe_pricing

LOCK_SAMPLE_S = 0.01
"""How often ``pg_stat_activity`` is sampled."""
POLL_PAUSE_S = 0.002
"""Pause between two rounds of access polls of a probe."""
PROBE_TIMEOUT_S = 60.0
"""A probe not denied by every replica this long after its batch counts as never denied."""
PROBE_SPACING_S = 0.25
"""Pause between two probes (spreads them over the load)."""
RETRY_PAUSE_S = 0.05
"""The pause after a refusal that gives no hint (a ``503``)."""
RETRY_PAUSE_MAX_S = 1.0
"""The longest pause before posting a refused batch again."""
RETRY_BACKOFF = 1.5
"""Each further refusal of the same batch waits this many times longer (up to the max)."""
RETRY_STATUSES = (429, 503)
"""Answers after which a batch is posted again: nothing of it was acknowledged."""


class _Hint(msgspec.Struct):
    retry_after_ms: int | None = None


class _Refusal(msgspec.Struct):
    error: _Hint = msgspec.field(default_factory=_Hint)


_refusal = msgspec.json.Decoder(_Refusal)


def retry_pause_s(retry_after: str | None, body: bytes, attempt: int) -> float:
    """Seconds to wait before posting a refused batch again, the ``attempt``-th time
    (1 first): the server's hint (``retry_after_ms`` in the body, else ``Retry-After``
    seconds, else ``RETRY_PAUSE_S``), times ``RETRY_BACKOFF`` per earlier attempt, at
    most ``RETRY_PAUSE_MAX_S``."""
    hint: float = RETRY_PAUSE_S
    try:
        milliseconds = _refusal.decode(body).error.retry_after_ms
    except (msgspec.DecodeError, ValueError):
        milliseconds = None
    if milliseconds is not None and milliseconds >= 0:
        hint = milliseconds / 1000
    elif retry_after is not None and retry_after.strip().isdigit():
        hint = float(retry_after.strip())
    return float(min(RETRY_PAUSE_MAX_S, hint * RETRY_BACKOFF ** max(0, attempt - 1)))

_SAMPLE = (
    "SELECT state, wait_event_type, wait_event, left(query, 48) FROM pg_stat_activity"
    " WHERE application_name = %s"
)


def merged_pricing(ingest: str, probes: int, start: Any) -> str:
    """``ingest`` (a pricing document) with ``probes`` probe customers (and as many open
    ones) of ``controls.probe_pricing`` added: one document (an apply replaces the whole
    pricing), as YAML."""
    base = yaml.safe_load(ingest)
    extra = yaml.safe_load(probe_pricing(probes, start))
    for key, value in extra.items():
        if isinstance(value, list):
            base[key] = [*base.get(key, []), *value]
        else:
            base[key] = value
    return str(yaml.safe_dump(base, sort_keys=False))


class LockSampler:
    """Samples the lock waits of the backends named ``application`` in a thread."""

    def __init__(self, url: str, application: str) -> None:
        self._url = url
        self._application = application
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-sampler", daemon=True)
        self.samples = 0
        self.active = 0
        self.waiting = 0
        self.samples_with_wait = 0
        self.by_event: Counter[str] = Counter()
        self.by_query: Counter[str] = Counter()
        self.backend_pid: int | None = None
        self.error: str | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        try:
            with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as connection:
                self.backend_pid = connection.info.backend_pid
                self._ready.set()
                cursor = connection.cursor()
                while not self._stop.is_set():
                    rows = cursor.execute(_SAMPLE, (self._application,)).fetchall()
                    self.samples += 1
                    waits = 0
                    for state, wait_type, wait_event, query in rows:
                        if state == "active":
                            self.active += 1
                        if wait_type == "Lock":
                            waits += 1
                            self.by_event[str(wait_event)] += 1
                            self.by_query[" ".join(str(query).split())] += 1
                    self.waiting += waits
                    self.samples_with_wait += waits > 0
                    self._stop.wait(LOCK_SAMPLE_S)
        except Exception as error:  # reported, never fatal
            self.error = repr(error)
        finally:
            self._ready.set()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(10)
        return {
            "samples": self.samples,
            "sample_interval_ms": LOCK_SAMPLE_S * 1e3,
            "active_backend_samples": self.active,
            "lock_wait_samples": self.waiting,
            "samples_with_a_lock_wait": self.samples_with_wait,
            "lock_wait_fraction_of_active": (
                round(self.waiting / self.active, 4) if self.active else 0.0
            ),
            "lock_waits_by_event": dict(self.by_event),
            "lock_waits_by_query": dict(self.by_query.most_common(5)),
            "error": self.error,
        }


class KillSwitchProbe:
    """Probes the kill switch across ``urls`` (every API replica) in a thread."""

    def __init__(self, urls: list[str], token: str, probes: int) -> None:
        self.urls = urls
        self.probes = probes
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._clients = [httpx.Client(base_url=url, headers=headers, timeout=30) for url in urls]
        self._thread = threading.Thread(target=self._run, name="kill-switch", daemon=True)
        self.latencies_ns: list[int] = []
        self.events_sent = 0
        self.never: list[str] = []
        self.polls = 0
        self.error: str | None = None
        self.load_running: Any = None
        self.under_load = 0
        self.refusals = 0
        """Probe batches answered 429 or 503 (posted again)."""

    def _allowed(self, client: httpx.Client, customer: str) -> bool:
        response = client.get(f"/v1/access/{customer}")
        if response.status_code != 200:
            raise RuntimeError(f"access for {customer} answered {response.status_code}")
        return bool(response.json()["allowed"])

    def check_allowed(self) -> None:
        """Every probe starts allowed on every replica (and the connections are warm)."""
        for index in range(self.probes):
            for client in self._clients:
                if not self._allowed(client, probe_customer(index)):
                    raise RuntimeError(f"{probe_customer(index)} denied before any usage")

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            for index in range(self.probes):
                self._probe(index)
                time.sleep(PROBE_SPACING_S)
        except Exception as error:
            self.error = repr(error)

    def _probe(self, index: int) -> None:
        customer = probe_customer(index)
        poster = self._clients[index % len(self._clients)]
        body = probe_body(customer)
        attempt = 0
        while True:
            response = poster.post("/v1/events", content=body)
            if response.status_code not in RETRY_STATUSES:
                break
            attempt += 1
            self.refusals += 1
            hint = response.headers.get("retry-after")
            time.sleep(retry_pause_s(hint, response.content, attempt))
        acknowledged = time.perf_counter_ns()
        if response.status_code not in (200, 202) or (
            response.json().get("accepted") != PROBE_BATCH_EVENTS
        ):
            raise RuntimeError(f"probe batch for {customer}: {response.text[:300]}")
        self.events_sent += PROBE_BATCH_EVENTS
        if self.load_running is not None and self.load_running():
            self.under_load += 1
        pending = set(range(len(self._clients)))
        deadline = acknowledged + int(PROBE_TIMEOUT_S * 1e9)
        while pending:
            for number in sorted(pending):
                self.polls += 1
                if not self._allowed(self._clients[number], customer):
                    pending.discard(number)
            if not pending:
                self.latencies_ns.append(time.perf_counter_ns() - acknowledged)
                return
            if time.perf_counter_ns() > deadline:
                self.never.append(customer)
                return
            time.sleep(POLL_PAUSE_S)

    def finish(self, timeout_s: float) -> dict[str, Any]:
        self._thread.join(timeout_s)
        for client in self._clients:
            client.close()
        if self._thread.is_alive():
            raise RuntimeError("the kill-switch probes did not finish")
        if self.error is not None:
            raise RuntimeError(f"a kill-switch probe failed: {self.error}")
        latencies = self.latencies_ns
        p50, p99 = quantiles(latencies, 1e6, 1) if latencies else (math.nan, math.nan)
        return {
            "probes": self.probes,
            "replicas": len(self.urls),
            "probes_denied_everywhere": len(latencies),
            "probes_under_load": self.under_load,
            "probe_refusals": self.refusals,
            "probes_never_denied": self.never[:10],
            "kill_switch_ms_p50": p50,
            "kill_switch_ms_p99": p99,
            "kill_switch_ms_max": round(max(latencies) / 1e6, 1) if latencies else math.nan,
            "access_polls": self.polls,
            "ms": [round(value / 1e6, 2) for value in latencies],
        }
