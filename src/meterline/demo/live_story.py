"""The demo's live chapter: the kill switches, happening now.

The live engine runs over the demo ledger (the same one the API serves) in this process.
Two things happen in the current billing period, with events stamped with the real time:

1. hooli-search's agents work steadily for half an hour; then one agent goes rogue and
   sends a burst of huge prompts. Its ``usage_spike`` control blocks the customer; the
   demo times how long after the batch was acknowledged the access answer said "denied".
2. cyberdyne-ops burns through its prepaid pool of agent-tool credits; its
   ``balance_exhausted`` control blocks the ``agent-tools`` feature only and finalizes a
   true-up invoice for the unbilled usage, at once.

It then prints the timeline from the control records (what fired, on which observed
values, caused by which ledger sequence, what each action did), live margin, and a
reconcile of the live figures against a full re-rating. Event ids carry the date, so a
rerun the same day adds nothing: the timeline is read from the records.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from rich import box
from rich.console import Console
from rich.table import Table

from meterline.billing.service import Billing
from meterline.clock import Clock, system_clock_us
from meterline.core.events import format_timestamp, timestamp_to_us
from meterline.demo.calendar import month_of
from meterline.live.reconcile import reconcile
from meterline.live.service import LiveEngine
from meterline.live.stack import live_stack
from meterline.live.webhook_service import SIGNATURE_HEADER, Dispatcher
from meterline.sdk.webhook_signatures import WebhookSignatureError, verify_signature

SPIKE_CUSTOMER = "hooli-search"
POOL_CUSTOMER = "cyberdyne-ops"
BASELINE_MINUTES = 30
BURST_EVENTS = 150
POOL_CALLS = 8_400
"""Tool calls at 2 credits each: more than this month's pool (15,000 + 1,000 rolled over)."""
BLOCK_WAIT_S = 5.0


def _stamp(now_us: int, offset_us: int) -> str:
    """``now_us + offset_us``, kept inside the current month (in a month's first half hour
    the steady baseline is squeezed rather than billed to the closed month)."""
    month = month_of(now_us)
    month_start_us = timestamp_to_us(datetime(month.year, month.month, 1, tzinfo=UTC))
    moment = datetime.fromtimestamp(max(now_us + offset_us, month_start_us) / 1_000_000, tz=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _llm(event_id: str, customer: str, timestamp: str, tokens: int, agent: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "customer": customer,
        "type": "llm.completion",
        "timestamp": timestamp,
        "properties": {
            "model": "gpt-4o",
            "feature": "search-agent",
            "agent": agent,
            "input_tokens": tokens,
            "output_tokens": tokens // 20,
        },
    }


def _wait_denied(engine: LiveEngine, customer: str, feature: str | None) -> float | None:
    """Seconds until the access answer is "denied" (None if not within the wait)."""
    started = time.perf_counter()
    while time.perf_counter() - started < BLOCK_WAIT_S:
        if not engine.controls.access(customer, feature).allowed:
            return time.perf_counter() - started
        time.sleep(0.0005)
    return None


class _Receiver(BaseHTTPRequestHandler):
    """The product's webhook endpoint: verifies each signature, counts kinds."""

    secret = ""
    received: ClassVar[list[tuple[str, bool]]] = []
    clock: ClassVar[Clock] = system_clock_us
    """The product's clock: the demo's (a product reads the wall clock; see METERLINE_NOW)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            envelope = verify_signature(
                self.secret,
                self.headers.get(SIGNATURE_HEADER, ""),
                body,
                now_s=type(self).clock() // 1_000_000,
            )
            self.received.append((str(envelope["kind"]), True))
        except WebhookSignatureError:
            self.received.append(("?", False))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def tell_live(billing: Billing, console: Console) -> None:
    """Run the live chapter over ``billing`` (the demo ledger, pricing applied)."""
    console.rule("Kill switches that talk back to the product")
    # the demo's receiver is on 127.0.0.1: a private destination, allowed explicitly
    stack = live_stack(billing, allow_private=True)
    webhooks = stack.webhooks
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint, _Receiver.secret = webhooks.subscribe(
        f"http://127.0.0.1:{receiver.server_address[1]}/hooks", ["*"], "demo receiver"
    )
    _Receiver.received = []
    _Receiver.clock = billing.clock
    dispatcher = Dispatcher(webhooks, poll_s=0.05).start()
    engine = stack.engine().start()
    try:
        _tell(billing, engine, console)
        engine.controls.drain()
        deadline = time.monotonic() + BLOCK_WAIT_S
        while time.monotonic() < deadline and webhooks.deliveries(endpoint.endpoint_id, "pending"):
            time.sleep(0.05)
        kinds = sorted({kind for kind, _ in _Receiver.received})
        good = sum(1 for _, verified in _Receiver.received if verified)
        console.print(
            f"Webhooks: the product's endpoint received {len(_Receiver.received)} signed"
            f" deliveries ({', '.join(kinds) or 'none'}); {good} verified with"
            " meterline.sdk.verify_signature (HMAC-SHA256 over timestamp and body)."
        )
    finally:
        engine.stop()
        dispatcher.stop()
        webhooks.disable(endpoint.endpoint_id)
        stack.close()
        receiver.shutdown()
        receiver.server_close()


def _tell(billing: Billing, engine: LiveEngine, console: Console) -> None:
    now_us = billing.clock()
    day = format_timestamp(now_us)[:10].replace("-", "")
    _tell_spike(billing, engine, console, now_us, day)
    _tell_pool(billing, engine, console, now_us, day)
    _timeline(engine, billing, console)
    _margins(engine, console)
    _tell_reconcile(billing, console)


def _tell_spike(
    billing: Billing, engine: LiveEngine, console: Console, now_us: int, day: str
) -> None:
    """A steady half hour of hooli-search, then a rogue agent's burst, and how soon the
    access answer said "denied"."""
    ledger = billing.ledger
    baseline = [
        _llm(
            f"demo-live-{day}-steady-{n}",
            SPIKE_CUSTOMER,
            _stamp(now_us, -(BASELINE_MINUTES * 60 - n * 30) * 1_000_000),
            20_000,
            f"agent-{n % 4}",
        )
        for n in range(BASELINE_MINUTES * 2 - 2)
    ]
    ledger.ingest(baseline)
    console.print(
        f"{SPIKE_CUSTOMER}: {len(baseline)} steady calls over the last {BASELINE_MINUTES}"
        " minutes (20k prompt tokens each); its usage_spike control compares each minute"
        " with that baseline (factor 11 = +1000%, at least 2M tokens)."
    )
    burst = [
        _llm(
            f"demo-live-{day}-rogue-{n}",
            SPIKE_CUSTOMER,
            _stamp(now_us, -(BURST_EVENTS - n) * 100_000),
            60_000,
            "agent-rogue",
        )
        for n in range(BURST_EVENTS)
    ]
    sent = time.perf_counter()
    outcome = ledger.ingest(burst)
    acknowledged = time.perf_counter() - sent
    blocked_after = _wait_denied(engine, SPIKE_CUSTOMER, None)
    answer = engine.controls.access(SPIKE_CUSTOMER)
    if outcome.accepted and blocked_after is not None:
        console.print(
            f"A rogue agent sends {len(burst)} calls of 60k tokens: acknowledged in"
            f" {acknowledged * 1000:.1f} ms; the access answer said [bold red]denied[/bold red]"
            f" {(acknowledged + blocked_after) * 1000:.1f} ms after the batch was sent."
        )
    else:
        console.print(f"The rogue agent's burst is in the ledger already (rerun): {answer.reason}")
    console.print(f"  GET /v1/access/{SPIKE_CUSTOMER} -> allowed={answer.allowed}: {answer.reason}")


def _tell_pool(
    billing: Billing, engine: LiveEngine, console: Console, now_us: int, day: str
) -> None:
    """cyberdyne-ops's chats and tool calls, until its pool runs out for agent-tools."""
    ledger = billing.ledger
    calls = [
        {
            "id": f"demo-live-{day}-tool-{n}",
            "customer": POOL_CUSTOMER,
            "type": "agent.tool_call",
            "timestamp": _stamp(now_us, -(POOL_CALLS - n) * 10_000),
            "properties": {"agent": f"ops-{n % 12}", "tool": "kubectl", "feature": "agent-tools"},
        }
        for n in range(POOL_CALLS)
    ]
    chats = [
        _llm(
            f"demo-live-{day}-chat-{n}",
            POOL_CUSTOMER,
            _stamp(now_us, -n * 7_000_000),
            120_000,
            f"ops-{n % 12}",
        )
        for n in range(40)
    ]
    ledger.ingest(chats)
    for start in range(0, len(calls), 250):
        ledger.ingest(calls[start : start + 250])
        engine.wait_applied(ledger.store.cut())  # one batch a beat, as an agent fleet sends
    _wait_denied(engine, POOL_CUSTOMER, "agent-tools")
    engine.controls.drain()
    tools = engine.controls.access(POOL_CUSTOMER, "agent-tools")
    chat = engine.controls.access(POOL_CUSTOMER, "chat")
    console.print(
        f"{POOL_CUSTOMER} chats (40 GPT-4o calls, billed in dollars) and makes"
        f" {POOL_CALLS:,} agent tool calls (2 credits each) against its"
        f" {month_of(now_us):%B} pool: agent-tools allowed={tools.allowed},"
        f" chat allowed={chat.allowed}"
        f" (only the feature is blocked); remaining {tools.remaining}."
    )


def _tell_reconcile(billing: Billing, console: Console) -> None:
    report = reconcile(billing)
    verdict = "[green]live == batch[/green]" if report.passed else "[red]DIFFERENT[/red]"
    console.print(
        f"Reconcile: {verdict} for {len(report.customers)} customers"
        f" (ledger replayed in {report.batches} committed batches vs a full re-rating;"
        " [bold]meterline reconcile --db ...[/bold])"
    )
    for check in report.customers:
        for difference in check.differences:
            console.print(f"  [red]{check.customer}: {difference}[/red]")


def _timeline(engine: LiveEngine, billing: Billing, console: Console) -> None:
    from meterline.core.money import display_figure

    results = engine.store.results()
    table = Table(title="Control timeline (from the records)", box=box.SIMPLE_HEAD)
    for column in ("firing", "at", "customer", "control", "observed", "caused by", "actions"):
        table.add_column(column)
    for firing in engine.store.firings():
        observed = ", ".join(
            f"{k} {display_figure(v)}" for k, v in firing.observed.items() if k != "unit"
        )
        outcomes = []
        for action in firing.actions:
            result = results.get((firing.number, action)) or {}
            detail = result.get("invoice") or result.get("grant") or ""
            if action == "alert":
                detail = f"{len(result.get('webhooks', []))} webhook(s) queued"
            outcomes.append(f"{action} {detail}".strip())
        level = "" if firing.level == "crossed" else f" {firing.level}"
        table.add_row(
            firing.firing_id,
            format_timestamp(firing.at_us)[11:23],
            firing.customer,
            f"{firing.policy}{level}",
            observed,
            f"seq {firing.sequence}",
            "; ".join(outcomes),
        )
    console.print(table)
    for invoice in billing.store.invoices(POOL_CUSTOMER):
        if invoice.kind == "threshold":
            console.print(
                f"  true-up {invoice.invoice_id} finalized at"
                f" {format_timestamp(invoice.finalized_at_us)}; the"
                f" {month_of(invoice.finalized_at_us):%B} invoice will net"
                " it as billed early."
            )


def _margins(engine: LiveEngine, console: Console) -> None:
    from meterline.core.money import display_amount, display_quantity

    table = Table(title="Live unit economics, this period", box=box.SIMPLE_HEAD)
    for column in ("customer", "spend", "cost (COGS)", "margin", "margin %", "access"):
        table.add_column(column, justify="left" if column in ("customer", "access") else "right")
    for customer in (SPIKE_CUSTOMER, POOL_CUSTOMER):
        figures = engine.projection.figures(customer)
        if figures is None:
            continue
        spend, cost = figures.spend, figures.cost
        percent = f"{display_quantity((spend - cost) / spend * 100, 1)}%" if spend else "-"
        decision = engine.controls.decision_document(customer)
        access = "allowed"
        if decision.blocked:
            access = "blocked: " + (", ".join(decision.features) or "everything")
        table.add_row(
            customer,
            display_amount(spend, figures.currency),
            display_amount(cost, figures.currency),
            display_amount(spend - cost, figures.currency),
            percent,
            access,
        )
    console.print(table)
