"""The demo's story, printed step by step: ingest a month, prove exactly-once, verify.

Every figure printed is read back from the ledger, not from the generator, so the story
shows what meterline holds.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from meterline.clock import Clock, system_clock_us
from meterline.core.events import event_document
from meterline.core.outcomes import BatchOutcome
from meterline.core.partitions import partition_of
from meterline.demo.billing_story import tell_billing
from meterline.demo.calendar import add_months, demo_month, month_of
from meterline.demo.finance_story import tell_finance
from meterline.demo.otel_story import tell_otel
from meterline.demo.proofs_story import tell_proofs
from meterline.demo.workload import CUSTOMERS, generate_month
from meterline.demo.workspace_story import tell_workspace
from meterline.ledger import Ledger, open_ledger

DEMO_BATCH_EVENTS = 1000


def _ingest_month(ledger: Ledger, events: list[dict[str, Any]], console: Console) -> dict[str, int]:
    counts = {"accepted": 0, "duplicate": 0, "conflict": 0, "rejected": 0}
    columns = (TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("ingest", total=len(events))
        for start in range(0, len(events), DEMO_BATCH_EVENTS):
            outcome = ledger.ingest(events[start : start + DEMO_BATCH_EVENTS])
            for status in counts:
                counts[status] += getattr(outcome, status)
            progress.advance(task, len(outcome.results))
    counts["seconds_ms"] = int((time.perf_counter() - started) * 1000)
    return counts


def _usage_from_ledger(
    ledger: Ledger, month: date
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
    """The month's usage per customer and model, read back from the ledger (events of
    other months, such as a rerun's live chapter, are not the month's)."""
    per_customer: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    per_model: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record in ledger.store.records():
        if month_of(record.timestamp_us) != month:
            continue
        event = event_document(record.body)
        row = per_customer[event["customer"]]
        row["events"] += 1
        properties = event["properties"]
        if event["type"] == "llm.completion":
            row["requests"] += 1
            row["input_tokens"] += properties["input_tokens"]
            row["output_tokens"] += properties["output_tokens"]
            model = per_model[properties["model"]]
            model["requests"] += 1
            model["input_tokens"] += properties["input_tokens"]
            model["output_tokens"] += properties["output_tokens"]
        elif event["type"] == "agent.tool_call":
            row["tool_calls"] += 1
        elif event["type"] == "gpu.runtime":
            row["gpu_seconds"] += properties["seconds"]
        elif event["type"] == "embedding.create":
            row["embedding_tokens"] += properties["tokens"]
    return per_customer, per_model


def _compact(value: int | Decimal) -> str:
    """A count for a narrow table: 25.1M, 363.2k, 912."""
    number = Decimal(value)
    for threshold, suffix in ((Decimal(10**9), "G"), (Decimal(10**6), "M"), (Decimal(10**3), "k")):
        if abs(number) >= threshold:
            return f"{number / threshold:.1f}{suffix}"
    return f"{number:,.0f}"


def _customer_table(per_customer: dict[str, dict[str, Any]], month: date) -> Table:
    table = Table(
        title=f"What the ledger holds, per customer ({month:%B %Y})",
        caption="calls: LLM completions; tokens: input, output, embeddings",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("customer", no_wrap=True)
    for column in ("events", "calls", "in tok", "out tok", "embed", "tools", "GPU-s"):
        table.add_column(column, justify="right", no_wrap=True)
    for name in sorted(per_customer, key=lambda n: -per_customer[n]["events"]):
        row = per_customer[name]
        table.add_row(
            name,
            f"{row['events']:,}",
            f"{row['requests']:,}",
            _compact(row["input_tokens"]),
            _compact(row["output_tokens"]),
            _compact(row["embedding_tokens"]),
            f"{row['tool_calls']:,}",
            _compact(row["gpu_seconds"]),
        )
    return table


def _model_table(per_model: dict[str, dict[str, int]]) -> Table:
    table = Table(title="Per model", box=box.SIMPLE_HEAD)
    for column in ("model", "requests", "input tokens", "output tokens"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in sorted(per_model, key=lambda n: -per_model[n]["input_tokens"]):
        row = per_model[name]
        table.add_row(
            name, f"{row['requests']:,}", f"{row['input_tokens']:,}", f"{row['output_tokens']:,}"
        )
    return table


def _outcome_lines(outcome: BatchOutcome) -> list[str]:
    lines = []
    for result in outcome.results:
        reasons = "; ".join(f"[bold]{e.field}[/bold] {e.reason}" for e in result.errors or [])
        where = f" at sequence {result.sequence}" if result.sequence else ""
        lines.append(f"  {result.status:>9}  {result.id or '(no id)'}{where}  {reasons}")
    return lines


def _exactly_once(
    ledger: Ledger, events: list[dict[str, Any]], month: date, console: Console
) -> None:
    console.rule("Exactly once")
    replay = ledger.ingest(events[:DEMO_BATCH_EVENTS])
    console.print(
        f"A producer retries {len(replay.results):,} events it already sent: "
        f"{replay.accepted} accepted, [green]{replay.duplicate:,} duplicate[/green]; "
        "nothing counted twice."
    )
    changed = dict(events[0], properties={**events[0]["properties"], "output_tokens": 1})
    last_day = add_months(month, 1) - timedelta(days=1)
    noon = f"{last_day.isoformat()}T12:00:00"
    bad = [
        changed,
        {
            "id": "evt-no-customer",
            "type": "llm.completion",
            "timestamp": noon + "Z",
            "properties": {},
        },
        {
            "id": "evt-bad-time",
            "customer": "acme-copilot",
            "type": "llm.completion",
            "timestamp": f"{last_day:%d/%m/%Y} 12:00",
            "properties": {},
        },
        {
            "id": "evt-naive-time",
            "customer": "acme-copilot",
            "type": "llm.completion",
            "timestamp": noon,
            "properties": {},
        },
        {
            "id": "evt-future",
            "customer": "acme-copilot",
            "type": "llm.completion",
            "timestamp": "2099-01-01T00:00:00Z",
            "properties": {},
        },
        {
            "id": "evt-list-properties",
            "customer": "acme-copilot",
            "type": "llm.completion",
            "timestamp": noon + "Z",
            "properties": [1, 2],
        },
        {
            "id": "evt-beyond-exact",
            "customer": "acme-copilot",
            "type": "llm.completion",
            "timestamp": noon + "Z",
            "properties": {"model": "gpt-4o", "input_tokens": Decimal("1E+400")},
        },
    ]
    outcome = ledger.ingest(bad)
    console.print(
        "The same id with a changed payload, and six malformed events (one with a number no"
        " invoice could carry exactly), in one batch:"
    )
    for line in _outcome_lines(outcome):
        console.print(line)


def _partitions(ledger: Ledger, console: Console) -> None:
    """How the ledger is partitioned: one chain here, one per partition on PostgreSQL,
    where each partition is applied by one worker of the distributed path."""
    store = ledger.store
    if store.partitions == 1:
        console.print(
            "One partition in this SQLite file: its events are committed in batches, each "
            "batch a Merkle root chained to the one before. On PostgreSQL (--db "
            "postgresql://...) every partition has its own sequence, chain and writer, each "
            "customer's events in one, so "
            "`meterline worker --partitions` processes can apply them in parallel from NATS "
            "JetStream (see README, Production)."
        )
        return
    table = Table(title=f"{store.partitions} partitions, each its own sequence and chain")
    for column in ("partition", "customers", "events", "chain head"):
        table.add_column(column, justify="right" if column == "events" else "left")
    counts: dict[int, list[int]] = {}
    for customer, events in _customers_of(ledger).items():
        entry = counts.setdefault(partition_of(customer, store.partitions), [0, 0])
        entry[0] += 1
        entry[1] += events
    for partition, head in sorted(store.partition_heads().items()):
        customers, events = counts.get(partition, [0, 0])
        digest = head.chain_hash.hex()[:16] + "…"
        table.add_row(str(partition), str(customers), f"{events:,}", digest)
    console.print(table)
    console.print(
        "Each partition is one subject of the stream and one worker's share: "
        "[bold]meterline serve --stream nats://...[/bold] publishes, "
        "[bold]meterline worker --partitions 0-3[/bold] applies exactly once."
    )


def _customers_of(ledger: Ledger) -> dict[str, int]:
    events: dict[str, int] = {}
    for record in ledger.store.records():
        events[record.customer] = events.get(record.customer, 0) + 1
    return events


def told_month(ledger: Ledger) -> date | None:
    """The month a demo ledger already holds (its first event's), or None when the ledger
    holds no demo events."""
    records = ledger.store.records()
    try:
        first = next(records, None)
    finally:
        records.close()  # type: ignore[attr-defined]
    if first is None or first.customer not in {profile.name for profile in CUSTOMERS}:
        return None
    return month_of(first.timestamp_us)


def run_demo(
    db: str | Path,
    console: Console,
    seed: int = 7,
    scale: float = 1.0,
    serve_port: int | None = None,
    clock: Clock = system_clock_us,
) -> None:
    """Tell the story on the ledger at ``db``; serve the API afterwards if ``serve_port``.

    The story's month is the last full month before ``clock()`` (or, on a rerun, the month
    the ledger already holds); its live chapter happens now."""
    with open_ledger(db, clock=clock) as ledger:
        month = told_month(ledger) or demo_month(clock())
        console.print(
            Panel.fit(
                f"[bold]meterline demo[/bold]: {len(CUSTOMERS)} AI companies, one month of"
                f" usage ({month:%B %Y})\nledger: {db}",
                border_style="cyan",
            )
        )
        events = generate_month(seed, scale, month)
        console.print(
            f"Generated {len(events):,} usage events: LLM completions, embeddings, "
            "agent tool calls and GPU jobs."
        )
        counts = _ingest_month(ledger, events, console)
        rate = len(events) / max(counts["seconds_ms"], 1) * 1000
        console.print(
            f"{counts['accepted']:,} accepted, {counts['duplicate']:,} already in the "
            f"ledger, {counts['rejected']} rejected, in {counts['seconds_ms']:,} ms "
            f"({rate:,.0f} events/s, every batch fsync'd before it was acknowledged)"
        )
        per_customer, per_model = _usage_from_ledger(ledger, month)
        console.print(_customer_table(per_customer, month))
        console.print(_model_table(per_model))
        _exactly_once(ledger, events, month, console)
        console.rule("Tamper-evident")
        report = ledger.verify()
        state = (
            "[green]intact[/green]"
            if report.intact
            else f"[red]BROKEN at {report.bad_sequence}[/red]"
        )
        console.print(
            f"Ledger {state}: {report.records:,} events in Merkle-rooted batches, chained"
            f" per partition; head hash {report.head_hash.hex()}"
        )
        console.print(f"Re-check any time with: [bold]meterline verify --db {db}[/bold]")
        tell_proofs(ledger, db, console, clock)
        _partitions(ledger, console)
        tell_billing(ledger, console, month)
    tell_finance(db, console, month, clock)
    tell_otel(db, console, month, clock)
    tell_workspace(db, console, clock)
    if serve_port is None:
        console.print(
            f"The dashboard: [bold]meterline serve --db {db}[/bold], then open "
            "http://127.0.0.1:8787/dashboard and sign in with a read key "
            f"(meterline keys create --scope read --db {db})."
        )
    else:
        from meterline.demo.serving import serve_demo

        serve_demo(db, serve_port, console)
