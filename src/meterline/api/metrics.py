"""Prometheus metrics at ``GET /metrics`` (text exposition format, no key needed).

Only aggregates are exposed, never a customer id. Counted in this process:
``meterline_ingest_events_total{outcome}`` (accepted, duplicate, conflict, rejected; in
stream mode ``accepted`` means stored in JetStream), ``meterline_ingest_batches_total``
and ``meterline_http_request_duration_seconds{route,method}`` (a histogram per route
template: ingest and access latency among them). Read at scrape time from the shared
truth, so every replica reports the same: ``meterline_ledger_head_sequence``,
``meterline_control_firings_total{kind,level}`` (the control records, whichever process
fired them), and in stream mode ``meterline_stream_lag_messages{partition}``,
``meterline_stream_lag_total``, ``meterline_worker_events_per_second{worker}``,
``meterline_worker_events_applied_total{worker}``, ``meterline_blocked_customers``, and
this replica's ingest lag bound (``core.admission``): ``meterline_ingest_lag_seconds
{partition}`` (how long its oldest message no worker has decided on has waited),
``meterline_ingest_lag_bound_seconds`` (0: off) and ``meterline_ingest_refused_batches``.
Each app has its own registry (several apps may live in one process, as in tests).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Receive, Scope, Send

from meterline.core.outcomes import STATUSES, BatchOutcome

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Histogram buckets for request latency: from half a millisecond (an access check) to
seconds (a large batch under load)."""

CONTENT_TYPE = CONTENT_TYPE_LATEST


SPAN_OUTCOMES = ("metered", "rejected", "unmatched")


def _span_counter(registry: CollectorRegistry) -> Counter:
    counter = Counter(
        "meterline_otlp_spans",
        "Spans answered by POST /v1/traces: metered (or already metered), rejected"
        " (usage not metered, named in partial_success), unmatched (not usage)",
        ["outcome"],
        registry=registry,
    )
    for outcome in SPAN_OUTCOMES:
        counter.labels(outcome)
    return counter


class Metrics:
    """One app's metrics and the middleware that times its requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "meterline_ingest_events",
            "Events answered by POST /v1/events, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.batches = Counter(
            "meterline_ingest_batches",
            "Batches answered by POST /v1/events",
            registry=self.registry,
        )
        self.latency = Histogram(
            "meterline_http_request_duration_seconds",
            "Request latency by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.head = Gauge(
            "meterline_ledger_head_sequence", "The ledger's last sequence", registry=self.registry
        )
        self.firings = Gauge(
            "meterline_control_firings_total",
            "Control firings recorded (every process), by policy kind and level",
            ["kind", "level"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "meterline_stream_lag_messages",
            "Messages waiting or unacknowledged per partition consumer (stream mode)",
            ["partition"],
            registry=self.registry,
        )
        self.lag_total = Gauge(
            "meterline_stream_lag_total",
            "Messages waiting or unacknowledged over every partition (stream mode)",
            registry=self.registry,
        )
        self.ingest_lag = Gauge(
            "meterline_ingest_lag_seconds",
            "This replica's oldest message not yet decided by a worker, its age, per"
            " partition (stream mode: the ingest lag bound)",
            ["partition"],
            registry=self.registry,
        )
        self.ingest_lag_bound = Gauge(
            "meterline_ingest_lag_bound_seconds",
            "The ingest lag bound past which batches are refused with 429 (0: off)",
            registry=self.registry,
        )
        self.ingest_refused = Gauge(
            "meterline_ingest_refused_batches",
            "Batches this replica refused (429) since it started: their partition lagged",
            registry=self.registry,
        )
        self.worker_rate = Gauge(
            "meterline_worker_events_per_second",
            "Events each live worker applied per second, as it last reported (stream mode)",
            ["worker"],
            registry=self.registry,
        )
        self.worker_applied = Gauge(
            "meterline_worker_events_applied_total",
            "Events each live worker applied since it started (stream mode)",
            ["worker"],
            registry=self.registry,
        )
        self.blocked = Gauge(
            "meterline_blocked_customers",
            "Customers whose access is denied by a control (stream mode: every worker's)",
            registry=self.registry,
        )
        self.spans = _span_counter(self.registry)
        for outcome in STATUSES:
            self.events.labels(outcome)

    def count_spans(self, metered: int, rejected: int, unmatched: int) -> None:
        for name, value in zip(SPAN_OUTCOMES, (metered, rejected, unmatched), strict=True):
            self.spans.labels(name).inc(value)

    def count(self, outcome: BatchOutcome) -> None:
        self.batches.inc()
        for name in STATUSES:
            value = getattr(outcome, name)
            if value:
                self.events.labels(name).inc(value)

    def set_shared(self, head: int, firings: list[tuple[str, str, int]]) -> None:
        self.head.set(head)
        self.firings.clear()
        for kind, level, count in firings:
            self.firings.labels(kind, level).set(count)

    def set_stream(self, status: dict[str, Any]) -> None:
        self.lag.clear()
        for row in status["partitions"]:
            self.lag.labels(str(row["partition"])).set(row["lag"] or 0)
        self.lag_total.set(status["lag"])
        self.worker_rate.clear()
        self.worker_applied.clear()
        for worker in status["workers"]:
            if worker.get("alive"):
                self.worker_rate.labels(worker["worker"]).set(float(worker["events_per_s"]))
                self.worker_applied.labels(worker["worker"]).set(int(worker["events_applied"]))
        self.blocked.set(len(status["blocked"]))

    def set_ingest_lag(self, lag: dict[str, Any]) -> None:
        """This replica's ingest lag (``StreamFront.lag_status``)."""
        self.ingest_lag_bound.set(lag["bound_ms"] / 1000)
        self.ingest_refused.set(lag["refused_batches"])
        for row in lag["partitions"]:
            self.ingest_lag.labels(str(row["partition"])).set(row["lag_ms"] / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TimingMiddleware:
    """Times every HTTP request by its route template (``/v1/access/{customer}``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.latency = metrics.latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.latency.labels(template, scope["method"]).observe(time.perf_counter() - started)
