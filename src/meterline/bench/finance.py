"""``meterline bench finance``: finance reads from rated-usage buckets, and what keeping
them costs ingest.

The workload is ``bench close``'s (synthetic AI usage over October 2026, its pricing for
M contracts), ingested twice in the same run into fresh SQLite ledgers, with the clock at
the month's last microsecond (the month still open): once keeping buckets (a keeper
process, ``billing.keeper_process``, folding what is committed in the background while
the appends go on, as the embedded server runs it) and once without;
``bucket_ingest_ratio`` is the first throughput over the second (the batches are made
before the clock starts, so only the appends run in the ingesting process).
``bucket_backlog_events`` is what the keeper had not folded when the last append
returned, ``bucket_current_after_ms`` how long after that the keeper, still running,
had folded every event, and ``bucket_fold_events_per_s`` the rate it folded that
backlog at (less the ``KEEPER_IDLE_S`` it waits for a pause when under its bound).
``bucket_write_lock_p95_ms`` and ``_max_ms``: how long the keeper's write
transactions held the store's one writer (which appends wait for);
``append_p99_ms_with_buckets``/``_without_buckets`` and ``append_max_ms_...``: each
append's time in either ingest.
Then, on the ledger with buckets, each read is repeated and its p95 reported: unit
economics by customer and model as the dashboard server keeps them
(``finance.kept_economics``: each read after one new event, ``_p95_ms``; the first, cold
read as ``economics_by_customer_model_first_ms``; one read without the kept result,
``usage_slices(days=False)``, as ``economics_uncached_ms``), a customer's draft from buckets
(``Billing.draft(from_buckets=True)``), the revenue reports (``finance.books`` +
``finance.reports``: the journal, which reads invoices and credit books, not buckets),
and the fast reconcile check (buckets against a re-derivation). The same run times unit
economics and a draft on the ledger without buckets (re-rated from raw events: the
baseline). Last, ``audit`` of the whole ledger, as events per second: with the month
open (``audit_events_per_s``: the chains), then with October closed
(``audit_closed_events_per_s``: the chains, and every invoice re-rated from the raw
events), and the worker processes it could use (``audit_workers``).
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from meterline.bench import finance_pages
from meterline.bench.close import (
    CLOSE_AT_US,
    MONTH_END_US,
    close_events,
    close_pricing,
    customer_name,
)
from meterline.bench.quantiles import percentile
from meterline.billing.buckets import keep_buckets
from meterline.billing.keeper_process import KeeperProcess, start_keeper_process
from meterline.billing.service import Billing, open_billing
from meterline.core.events import timestamp_to_us
from meterline.ledger import bucket_records
from meterline.ledger.location import bucket_file
from meterline.ledger.parallel_verify import audit_workers

OPEN_AT_US = MONTH_END_US - 1
"""The clock of the run: every event is in, the month is still open."""
APPLY_AT_US = timestamp_to_us(datetime(2026, 10, 1, tzinfo=UTC))
INGEST_BATCH_EVENTS = 1_000
"""Events per append: the size a server's request or a stream message commits."""
CURRENT_POLL_S = 0.01
"""How often the run looks whether the keeper has folded every event."""
DRAFT_CUSTOMERS_MAX = 20
"""Customers whose drafts are timed (spread over the customers)."""


class _Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def _ingest(billing: Billing, batches: list[bytes]) -> tuple[float, list[float]]:
    """Decode and append every batch (JSON text, as the embedded server parses a request's
    body and appends it); the seconds from the first decode to the last append's return,
    and each append's seconds."""
    decode = msgspec.json.Decoder().decode
    appends = []
    clock = time.perf_counter
    started = clock()
    for body in batches:
        batch = decode(body)
        appended = clock()
        accepted = billing.ledger.ingest(batch).accepted
        appends.append(clock() - appended)
        if accepted != len(batch):
            raise RuntimeError(f"ingest accepted {accepted} of {len(batch)} events")
    return clock() - started, appends


def _ms(seconds: list[float], share: float) -> float:
    """The ``share`` quantile of ``seconds``, in milliseconds (0 when none)."""
    return round(percentile(sorted(seconds), share) * 1000, 1) if seconds else 0.0


def _folded(billing: Billing) -> int:
    """Events the current revision's buckets hold (their watermark; 0 when none)."""
    mark = bucket_records.watermark(billing.context.connection, billing.context.current().revision)
    return 0 if mark is None else mark.through.events


def _until_current(billing: Billing, keeper: KeeperProcess, events: int) -> dict[str, Any]:
    """What the keeper had not folded when the last append returned, how long after that
    it had folded every event, and the rate it folded that backlog at."""
    ended = time.perf_counter()
    backlog = events - _folded(billing)
    while _folded(billing) < events:
        keeper.nudge()
        time.sleep(CURRENT_POLL_S)
    current_s = time.perf_counter() - ended
    # below its bound the keeper waits for the pause first
    folding_s = current_s - (keeper.pace.idle_s if backlog <= keeper.pace.backlog_max else 0)
    return {
        "bucket_backlog_events": backlog,
        "bucket_current_after_ms": round(current_s * 1000, 1),
        "bucket_fold_events_per_s": round(backlog / folding_s) if backlog and folding_s > 0 else 0,
    }


def _p95_ms(read: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        read()
        samples.append(time.perf_counter() - started)
    return round(percentile(sorted(samples), 0.95) * 1000, 1)


def _reads(billing: Billing, customers: int, repeats: int) -> dict[str, Any]:
    from meterline.billing import bucket_checks
    from meterline.finance.books import build_books
    from meterline.finance.reports import revenue_reports

    step = max(1, customers // DRAFT_CUSTOMERS_MAX)
    sample = [customer_name(index) for index in range(0, customers, step)]
    position = iter(range(10**9))

    def one_draft() -> object:
        customer = sample[next(position) % len(sample)]
        return billing.draft(customer, from_buckets=True)

    return {
        **_economics_reads(billing, customers, repeats),
        "draft_from_buckets_p95_ms": _p95_ms(one_draft, max(repeats, len(sample))),
        "revenue_p95_ms": _p95_ms(lambda: revenue_reports(build_books(billing)), repeats),
        "reconcile_buckets_check_p95_ms": _p95_ms(
            lambda: bucket_checks.check_buckets(billing.context), repeats
        ),
    }


def _economics_reads(billing: Billing, customers: int, repeats: int) -> dict[str, Any]:
    """Unit economics by customer and model as a long-lived process reads them
    (``finance.kept_economics``): the first (cold) read, then each read after one new
    event (of a customer spread over them, inside the open period), its p95; and the
    read without a kept result (``usage_slices(days=False)``, once)."""
    from meterline.core.economics import summarize
    from meterline.finance.economics import usage_slices
    from meterline.finance.kept_economics import KeptEconomics

    by = ["customer", "model"]
    started = time.perf_counter()
    summarize(usage_slices(billing, days=False), by)
    uncached_s = time.perf_counter() - started
    kept = KeptEconomics(billing)
    started = time.perf_counter()
    summarize(kept.lines(), by)
    cold_s = time.perf_counter() - started
    samples = []
    step = max(1, customers // DRAFT_CUSTOMERS_MAX)
    for number in range(repeats):
        customer = customer_name((number * step) % customers)
        event = finance_pages.new_event(customer, billing.clock(), number, "bench-economics")
        if billing.ledger.ingest([event]).accepted != 1:
            raise RuntimeError("the new event was not accepted")
        started = time.perf_counter()
        summarize(kept.lines(), by)
        samples.append(time.perf_counter() - started)
    return {
        "economics_by_customer_model_p95_ms": _ms(samples, 0.95),
        "economics_by_customer_model_first_ms": round(cold_s * 1000, 1),
        "economics_uncached_ms": round(uncached_s * 1000, 1),
    }


def _baseline(billing: Billing, repeats: int) -> dict[str, Any]:
    """Unit economics and a draft on the ledger that keeps no buckets: re-rated."""
    from meterline.core.economics import summarize
    from meterline.finance.economics import usage_slices

    customer = customer_name(0)
    return {
        "economics_rerated_p95_ms": _p95_ms(
            lambda: summarize(usage_slices(billing), ["customer", "model"]), repeats
        ),
        "draft_rerated_p95_ms": _p95_ms(lambda: billing.draft(customer), repeats),
    }


def _audit_rate(billing: Billing, events: int) -> int:
    """``Billing.audit()`` of the whole ledger, as events per second (it must pass)."""
    gc.collect()
    started = time.perf_counter()
    report = billing.audit()
    seconds = time.perf_counter() - started
    if not report.passed:
        raise RuntimeError(f"audit failed: {report.mismatches[:3]}")
    return round(events / seconds)


def _audits(billing: Billing, clock: _Clock, events: int, say: Any) -> dict[str, Any]:
    """Audit with the month open (the chains alone), then close October and audit again
    (the chains, and every invoice re-rated from the raw events)."""
    say("auditing (the month open)")
    figures: dict[str, Any] = {"audit_events_per_s": _audit_rate(billing, events)}
    clock.now_us = CLOSE_AT_US
    say("closing October, auditing (every invoice re-derived)")
    billing.close(MONTH_END_US)
    figures["audit_closed_events_per_s"] = _audit_rate(billing, events)
    figures["audit_workers"] = audit_workers()
    return figures


def _closed_pages(billing: Billing, repeats: int) -> dict[str, Any]:
    """The dashboard's pages after the close, an invoice of the first customer's too."""
    customer = customer_name(0)
    invoice = finance_pages.first_invoice(billing, customer)
    return finance_pages.time_pages(billing, customer, repeats, "closed_page_", invoice)


def run_finance_benchmark(
    events: int,
    customers: int,
    repeats: int = 5,
    seed: int = 7,
    progress: Any = None,
    baseline_repeats: int | None = None,
    keep_db: Path | None = None,
) -> dict[str, Any]:
    """Ingest with and without buckets, time the reads and the audit (see the module).
    ``baseline_repeats``: times each re-rated baseline read is timed (default
    ``repeats``; 0 skips them: at millions of events one re-rating takes minutes).
    ``keep_db``: where to keep a copy of the ledger with buckets (to serve its dashboard)."""
    if events < 1 or customers < 1 or repeats < 1:
        raise ValueError("events, customers and repeats must be positive")
    baseline_repeats = repeats if baseline_repeats is None else baseline_repeats
    if baseline_repeats < 0:
        raise ValueError("baseline_repeats must not be negative")

    def say(message: str) -> None:
        if progress is not None:
            progress.print(message)

    pricing = close_pricing(customers)
    result: dict[str, Any] = {"events": events, "customers": customers, "repeats": repeats}
    encode = msgspec.json.Encoder().encode  # text, not dicts: 10M events fit in memory
    made = close_events(events, customers, seed, INGEST_BATCH_EVENTS)
    batches = [encode(batch) for batch in made]
    with tempfile.TemporaryDirectory(prefix="meterline-bench-finance-") as folder:
        rates = {}
        for keep in (False, True):
            clock = _Clock(APPLY_AT_US)
            with open_billing(Path(folder) / f"ledger-{keep}.db", clock) as billing:
                billing.context.keeps_buckets = False  # the baseline keeps none
                if keep:
                    keep_buckets(billing.context)
                billing.apply(pricing)
                clock.now_us = OPEN_AT_US
                say(f"ingesting {events:,} events {'with' if keep else 'without'} buckets")
                keeper = start_keeper_process(billing.context)
                try:
                    seconds, appends = _ingest(billing, batches)
                    rates[keep] = events / seconds
                    name = "with" if keep else "without"
                    result[f"append_p99_ms_{name}_buckets"] = _ms(appends, 0.99)
                    result[f"append_max_ms_{name}_buckets"] = _ms(appends, 1.0)
                    if keeper is not None:
                        result.update(_until_current(billing, keeper, events))
                finally:
                    if keeper is not None:
                        keeper.stop()
                if keeper is not None:
                    result["bucket_write_lock_p95_ms"] = _ms(keeper.held, 0.95)
                    result["bucket_write_lock_max_ms"] = _ms(keeper.held, 1.0)
                if not keep:
                    if baseline_repeats:
                        say("timing the reads by re-rating (the baseline)")
                        result.update(_baseline(billing, baseline_repeats))
                    continue
                say("timing the reads")
                result.update(_reads(billing, customers, repeats))
                say("timing the dashboard's pages (the month open)")
                result.update(finance_pages.time_pages(billing, customer_name(0), repeats))
                result.update(_audits(billing, clock, events, say))
                say("timing the dashboard's pages (October closed)")
                result.update(_closed_pages(billing, repeats))
        if keep_db is not None:
            shutil.copyfile(Path(folder) / "ledger-True.db", keep_db)
            kept_buckets = Path(bucket_file(Path(folder) / "ledger-True.db"))
            if kept_buckets.exists():  # the buckets go with it (else rebuilt on first use)
                shutil.copyfile(kept_buckets, bucket_file(keep_db))
        result["ingest_events_per_s_without_buckets"] = round(rates[False])
        result["ingest_events_per_s_with_buckets"] = round(rates[True])
        result["bucket_ingest_ratio"] = round(rates[True] / rates[False], 3)
    result["cpus"] = os.cpu_count()
    result["python"] = sys.version.split()[0]
    return result
