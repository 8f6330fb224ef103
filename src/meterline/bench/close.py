"""``meterline bench close``: rate and finalize one month of N events across M customers.

What is timed is ``Billing.close`` alone: one scan of the ledger rating every customer's
October 2026 (meters, prices, a streaming Merkle root per line), the invoice documents,
and their atomic store. Generating the events and ingesting them are measured too, but
separately (``generate_seconds``, ``ingest_seconds``), since the issue's target excludes
them.

The workload is synthetic AI usage, deterministic for a seed: ~85% ``llm.completion``
(``model``, ``input_tokens``, ``output_tokens``, ``feature``), ~10% ``embedding.create``
(``tokens``) and ~5% ``agent.tool_call`` (``agent``, ``tool``), at ascending instants
spread evenly over the month, each for a customer drawn uniformly. The pricing file is
the demo's meters and its team and enterprise plans (graduated and matrix token prices
by model, a platform fee, tool calls in credits), with M contracts: most on team, every
tenth on enterprise, every 25th upgraded from team to enterprise mid-month (two
segments). Pricing is applied as of the start of the month; the close runs with the clock
at 2026-11-23, through 2026-11-01.

With ``directory``, the ingested ledger is kept there under a name that encodes the
workload (``close-v1-<events>-<customers>-<seed>.db``) and reused by later runs; each run
then finalizes into a fresh billing file beside it, so runs repeat the same close.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meterline.billing.scan import scan_workers
from meterline.billing.service import Billing
from meterline.core.events import timestamp_to_us
from meterline.ledger.billing_records import BillingStore
from meterline.ledger.event_ledger import open_ledger

WORKLOAD_VERSION = 1
"""Bump when the generated events or the pricing change, so kept ledgers are not reused."""

INGEST_BATCH_EVENTS = 10_000
MONTH_START_US = timestamp_to_us(datetime(2026, 10, 1, tzinfo=UTC))
MONTH_END_US = timestamp_to_us(datetime(2026, 11, 1, tzinfo=UTC))
APPLY_AT_US = MONTH_START_US
CLOSE_AT_US = timestamp_to_us(datetime(2026, 11, 23, tzinfo=UTC))

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku-4", "llama-3.1-70b")
FEATURES = ("chat", "code-complete", "search", "summarize")
TOOLS = ("search", "browser", "sql", "python")
AGENTS_PER_CUSTOMER = 8


def customer_name(index: int) -> str:
    return f"customer-{index:05d}"


def close_events(
    count: int, customers: int, seed: int = 7, batch: int = INGEST_BATCH_EVENTS
) -> Iterator[list[dict[str, Any]]]:
    """The benchmark's events, in batches of ``batch``; same arguments, same events.

    One 64-bit draw per event decides its customer, type and properties; instants ascend
    evenly over October 2026 (distinct microseconds for any ``count`` up to 2.6e12).
    """
    draw = random.Random(seed).getrandbits
    names = [customer_name(index) for index in range(customers)]
    span_us = MONTH_END_US - MONTH_START_US
    models, features, tools = MODELS, FEATURES, TOOLS
    for first in range(0, count, batch):
        events = []
        for number in range(first, min(first + batch, count)):
            bits = draw(64)
            offset_us = number * span_us // count
            seconds, micros = divmod(offset_us, 1_000_000)
            day, second = divmod(seconds, 86_400)
            kind = (bits >> 20) % 100
            if kind < 85:
                event_type = "llm.completion"
                properties: dict[str, Any] = {
                    "model": models[(bits >> 27) % 5],
                    "input_tokens": 200 + (bits >> 30) % 4_000,
                    "output_tokens": 20 + (bits >> 42) % 1_200,
                    "feature": features[(bits >> 54) % 4],
                }
            elif kind < 95:
                event_type = "embedding.create"
                properties = {"tokens": 100 + (bits >> 30) % 8_000}
            else:
                event_type = "agent.tool_call"
                properties = {
                    "agent": f"agent-{(bits >> 30) % AGENTS_PER_CUSTOMER}",
                    "tool": tools[(bits >> 40) % 4],
                }
            events.append(
                {
                    "id": f"evt-{number:010d}",
                    "customer": names[bits % customers],
                    "type": event_type,
                    "timestamp": (
                        f"2026-10-{day + 1:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:"
                        f"{second % 60:02d}.{micros:06d}Z"
                    ),
                    "properties": properties,
                }
            )
        yield events


_PRICING_HEAD = """\
# meterline bench close: the demo's meters and plans, one contract per customer.
credit_types:
  - {key: credits, name: Agent credits, currency: USD, unit_value: "0.01"}

meters:
  - {key: input_tokens, event_type: llm.completion, aggregation: sum,
     property: input_tokens, group_by: [model]}
  - {key: output_tokens, event_type: llm.completion, aggregation: sum,
     property: output_tokens, group_by: [model]}
  - {key: embedding_tokens, event_type: embedding.create, aggregation: sum, property: tokens}
  - {key: tool_calls, event_type: agent.tool_call, aggregation: count}
  - {key: active_agents, event_type: agent.tool_call, aggregation: unique_count,
     property: agent}

plans:
  - key: team
    name: Team
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        billing: {cycle: monthly, anchor: calendar, proration: day}
        fees:
          - {key: platform, name: Team platform fee, amount: "500.00", timing: advance}
        prices:
          - meter: input_tokens
            description: GPT-4o input tokens
            where: {model: gpt-4o}
            model: graduated
            tiers:
              - {up_to: 20000000, unit_amount: "0.0000025"}
              - {up_to: 100000000, unit_amount: "0.000002"}
              - {unit_amount: "0.0000015"}
          - meter: input_tokens
            description: Input tokens
            model: matrix
            matrix:
              - {values: {model: gpt-4o-mini}, unit_amount: "0.00000015"}
              - {values: {model: claude-sonnet-4}, unit_amount: "0.000003"}
              - {values: {model: claude-haiku-4}, unit_amount: "0.0000008"}
            default: "0.000001"
          - meter: output_tokens
            description: Output tokens
            model: matrix
            matrix:
              - {values: {model: gpt-4o}, unit_amount: "0.00001"}
              - {values: {model: gpt-4o-mini}, unit_amount: "0.0000006"}
              - {values: {model: claude-sonnet-4}, unit_amount: "0.000015"}
              - {values: {model: claude-haiku-4}, unit_amount: "0.000004"}
            default: "0.000003"
          - {meter: embedding_tokens, model: package, description: Embedding tokens,
             size: 1000000, amount: "0.02"}
          - {meter: tool_calls, model: per_unit, description: Agent tool calls,
             unit_amount: "2", credit_type: credits}
  - key: enterprise
    name: Enterprise
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees:
          - {key: platform, name: Enterprise platform fee, amount: "5000.00", timing: advance}
          - {key: support, name: Premium support, amount: "1000.00", timing: arrears}
        prices:
          - meter: input_tokens
            description: Input tokens (volume)
            model: volume
            tiers:
              - {up_to: 50000000, unit_amount: "0.000002"}
              - {unit_amount: "0.0000012"}
          - meter: output_tokens
            description: Output tokens (volume)
            model: volume
            tiers:
              - {up_to: 10000000, unit_amount: "0.000008"}
              - {unit_amount: "0.000005"}
          - {meter: embedding_tokens, model: package, description: Embedding tokens,
             size: 1000000, amount: "0.01"}
          - {meter: tool_calls, model: per_unit, description: Agent tool calls,
             unit_amount: "1", credit_type: credits}
          - {meter: active_agents, model: per_unit, description: Active agents,
             unit_amount: "25.00"}

contracts:
"""


_CREDIT_TERMS = (
    ", credits: {grants: [{key: pool, credit_type: credits, amount: 20000, paid: '180.00',"
    " recurrence: period, scope: [tool_calls], rollover: {percent: 50, maximum: 1000}}],"
    " commits: [{kind: prepaid, key: commit, amount: '5000.00'}]}"
)
"""With ``credits``: each contract's monthly credit pool with capped rollover and a
prepaid commit paying its currency usage, so every line is drawn per day."""


def close_pricing(customers: int, credits: bool = False) -> str:
    """The benchmark's pricing file for ``customers`` contracts (``credits``: each with a
    credit pool and a prepaid commit)."""
    lines = [_PRICING_HEAD]
    terms = _CREDIT_TERMS if credits else ""
    for index in range(customers):
        name = customer_name(index)
        if index % 10 == 9:
            lines.append(f"  - {{customer: {name}, plan: enterprise, start: 2026-10-01{terms}}}\n")
        elif index % 25 == 3:
            lines.append(
                f"  - {{customer: {name}, plan: team, start: 2026-10-01,"
                f" amendments: [{{effective: 2026-10-15, plan: enterprise}}]{terms}}}\n"
            )
        else:
            lines.append(f"  - {{customer: {name}, plan: team, start: 2026-10-01{terms}}}\n")
    return "".join(lines)


@dataclass
class CloseBenchmark:
    """The figures of one close run (``seconds`` is the close alone)."""

    events: int
    customers: int
    credits: bool
    """Every contract had a credit pool and a prepaid commit (per-day credit ledger)."""
    invoices: int
    lines: int
    seconds: float
    events_per_s: int
    generate_seconds: float | None
    """Making the events (None when a kept ledger was reused)."""
    ingest_seconds: float | None
    """``Ledger.ingest`` of all events, generation excluded (None when reused)."""
    ledger_reused: bool
    scan_workers: int
    """Processes the close's ledger scan could use (``meterline.billing.scan``)."""
    cpus: int | None
    python: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _ingest(path: Path, events: int, customers: int, seed: int) -> tuple[float, float]:
    """Generate and ingest the workload into a fresh ledger: (generate s, ingest s)."""
    generate_seconds = ingest_seconds = 0.0
    with open_ledger(path, clock=lambda: CLOSE_AT_US) as ledger:
        batches = close_events(events, customers, seed)
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            generate_seconds += time.perf_counter() - started
            if batch is None:
                break
            started = time.perf_counter()
            accepted = ledger.ingest(batch).accepted
            ingest_seconds += time.perf_counter() - started
            if accepted != len(batch):
                raise RuntimeError(f"ingest accepted {accepted} of {len(batch)} events")
    return generate_seconds, ingest_seconds


def _head(path: Path) -> int:
    """How many events the ledger at ``path`` holds (every partition)."""
    with open_ledger(path) as ledger:
        return ledger.store.cut().events


def run_close_benchmark(
    events: int,
    customers: int,
    directory: Path | None = None,
    seed: int = 7,
    progress: Any = None,
    credits: bool = False,
) -> CloseBenchmark:
    """Ingest the workload (untimed), apply its pricing, time ``Billing.close``."""
    if events < 1 or customers < 1:
        raise ValueError("events and customers must be positive")

    def say(message: str) -> None:
        if progress is not None:
            progress.print(message)

    with tempfile.TemporaryDirectory(prefix="meterline-close-") as scratch:
        root = Path(scratch) if directory is None else Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        ledger_path = root / f"close-v{WORKLOAD_VERSION}-{events}-{customers}-{seed}.db"
        generate_seconds: float | None = None
        ingest_seconds: float | None = None
        reused = ledger_path.exists() and _head(ledger_path) == events
        if not reused:
            _remove(ledger_path)
            say(f"generating and ingesting {events:,} events for {customers:,} customers")
            generate_seconds, ingest_seconds = _ingest(ledger_path, events, customers, seed)
        run = 1
        while (root / f"close-billing-{run}.db").exists():
            run += 1
        billing_path = root / f"close-billing-{run}.db"
        ledger = open_ledger(ledger_path, clock=lambda: CLOSE_AT_US)
        store = BillingStore(billing_path)
        try:
            say("applying pricing (as of 2026-10-01)")
            Billing(ledger, store, clock=lambda: APPLY_AT_US).apply(
                close_pricing(customers, credits)
            )
            billing = Billing(ledger, store, clock=lambda: CLOSE_AT_US)
            say("closing October 2026")
            gc.collect()
            started = time.perf_counter()
            invoices = billing.close(MONTH_END_US)
            seconds = time.perf_counter() - started
        finally:
            store.close()
            ledger.close()
        if directory is not None:
            _remove(billing_path)
    lines = sum(len(invoice.record.lines) for invoice in invoices)
    return CloseBenchmark(
        events=events,
        customers=customers,
        credits=credits,
        invoices=len(invoices),
        lines=lines,
        seconds=round(seconds, 3),
        events_per_s=int(events / seconds),
        generate_seconds=None if generate_seconds is None else round(generate_seconds, 3),
        ingest_seconds=None if ingest_seconds is None else round(ingest_seconds, 3),
        ledger_reused=reused,
        scan_workers=scan_workers(),
        cpus=os.cpu_count(),
        python=sys.version.split()[0],
    )
