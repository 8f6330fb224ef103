"""The demo's billing chapter: pricing declared in YAML, the demo's month closed into invoices,
a late event, lineage proven down to one event, an audit, and a pricing change previewed.

Everything printed comes from the library calls the CLI makes (``apply``, ``close``,
``draft``, ``explain``, ``proof``, ``audit``); rerunning the demo finalizes nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib.resources import files

from rich import box
from rich.console import Console
from rich.table import Table

from meterline.billing.render import (
    audit_lines,
    changes_table,
    credit_totals_table,
    credits_table,
    invoice_table,
    simulation_table,
)
from meterline.billing.service import Billing
from meterline.core import money
from meterline.core.documents import MeterUsageLine
from meterline.core.events import timestamp_to_us
from meterline.core.lineage import verify_proof
from meterline.demo.calendar import REFERENCE_MONTH, add_months, month_of, moved_text
from meterline.demo.commerce_story import tell_commerce
from meterline.demo.live_story import tell_live
from meterline.ledger import Ledger
from meterline.ledger.billing_records import BillingStore, StoredInvoice

PRICING_FILE = "pricing.yaml"
LATE_EVENT = {
    "id": "demo-late-gpt4o-batch",
    "customer": "wayne-analytics",
    "type": "llm.completion",
    "timestamp": "2026-10-30T16:45:00Z",
    "properties": {
        "model": "gpt-4o",
        "feature": "sql-copilot",
        "input_tokens": 2_400_000,
        "output_tokens": 180_000,
        "latency_ms": 61_000,
    },
}
NEW_TIER = """\
      - version: 2
        effective_from: {effective}
        currency: USD
        billing: {cycle: monthly, anchor: calendar, proration: day}
        fees:
          - {key: platform, name: Team platform fee, amount: "450.00", timing: advance}
        prices:
          - meter: input_tokens
            description: Input tokens (new volume tier)
            model: volume
            tiers:
              - {up_to: 10000000, unit_amount: "0.000003"}
              - {unit_amount: "0.000002"}
          - meter: output_tokens
            description: Output tokens
            model: per_unit
            unit_amount: "0.000009"
"""


def pricing_text(month: date = REFERENCE_MONTH) -> str:
    """The demo's pricing file, its dates moved to ``month``."""
    return moved_text(files("meterline.demo").joinpath(PRICING_FILE).read_text(), month)


def with_new_tier(text: str, effective: date = date(2026, 12, 1)) -> str:
    """The demo pricing with one edit: a Team version 2 from ``effective`` (the first day
    of the next month, so that no finalized invoice changes)."""
    tier = NEW_TIER.replace("{effective}", effective.isoformat())
    return text.replace("  - key: enterprise\n", tier + "\n  - key: enterprise\n", 1)


def late_event(month: date = REFERENCE_MONTH) -> dict[str, object]:
    """An event of ``month``'s 30th (or last day) that arrives after the month is closed."""
    return dict(LATE_EVENT, timestamp=moved_text(str(LATE_EVENT["timestamp"]), month))


def _invoices_table(billing: Billing) -> Table:
    table = Table(title="Finalized invoices", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("invoice", "customer", "period", "terms", "lines", "total", "sha256"):
        table.add_column(column, justify="right" if column in ("lines", "total") else "left")
    for stored in billing.store.invoices():
        if stored.kind != "period":
            continue
        document = stored.record
        terms = " → ".join(t.plan + ("*" if t.overrides else "") for t in document.terms or [])
        table.add_row(
            stored.invoice_id,
            stored.customer,
            document.period_span().label,
            terms,
            str(len(document.lines)),
            f"{money.display_amount(document.total, document.currency)} {document.currency}",
            stored.document_sha256.hex()[:12] + "…",
        )
    table.caption = "* with negotiated overrides; → a mid-period amendment"
    return table


def tell_billing(ledger: Ledger, console: Console, month: date = REFERENCE_MONTH) -> None:
    """Pricing, invoices, lineage and audit over the demo ledger, ``month`` closed."""
    store = BillingStore(ledger.store.path)
    billing = Billing(ledger, store, ledger.clock)
    try:
        _tell(billing, console, month)
    finally:
        store.close()


def _tell(billing: Billing, console: Console, month: date) -> None:
    current = month_of(billing.clock())
    text = _tell_pricing(billing, console, month)
    acme = _tell_close(billing, console, month)
    _tell_credits(billing, console, month, current)
    tell_commerce(billing, console)
    _tell_late_event(billing, console, month, current)
    _tell_lineage(billing, console, acme)
    tell_live(billing, console)
    console.rule("Audit")
    for text_line in audit_lines(billing.audit()):
        console.print(text_line)
    _tell_new_tier(billing, console, text, current)


def _tell_pricing(billing: Billing, console: Console, month: date) -> str:
    """Apply the demo's pricing file (a preview first when it changes); its text."""
    console.rule("Pricing as configuration")
    text = pricing_text(month)
    preview = billing.apply(text, dry_run=True)
    if preview.changes:
        console.print(
            "Finance declares meters, plans (free, team with graduated prices by model,"
            " enterprise with volume tiers) and ten contracts in one YAML file."
            " [bold]meterline apply -f pricing.yaml --dry-run[/bold] shows:"
        )
        console.print(changes_table(preview))
    report = billing.apply(text)
    console.print(
        f"Applied as configuration revision [bold]{report.revision}[/bold]"
        + (" (unchanged since the last run)" if not report.changes else "")
    )
    return text


def _tell_close(billing: Billing, console: Console, month: date) -> StoredInvoice:
    """Close ``month`` and show its invoices; acme-copilot's (the amended one)."""
    console.rule(f"Closing {month:%B}")
    finalized = billing.close()
    console.print(
        f"{len(finalized)} invoices finalized now (numbered, immutable, content-hashed);"
        f" {len([i for i in billing.store.invoices() if i.kind == 'period'])} in all."
    )
    console.print(_invoices_table(billing))
    _tell_unbillable(billing, console, finalized.failed)
    acme = next(i for i in billing.store.invoices("acme-copilot"))
    console.print(
        f"acme-copilot upgraded from team to enterprise on {month:%b} 15: the team fee is credited"
        " for unused days and the enterprise fee charged for the rest (proration by day)."
    )
    console.print(invoice_table(acme.record))
    return acme


def _tell_late_event(billing: Billing, console: Console, month: date, current: date) -> None:
    console.rule("Late events are adjustments, never edits")
    outcome = billing.ledger.ingest([late_event(month)])
    console.print(
        f"An event of {month:%B} arrives after the close ({outcome.results[0].status}):"
        f" the finalized invoice is untouched, and the {current:%B} draft carries the"
        " difference."
    )
    draft = billing.draft("wayne-analytics")
    adjustments = [line for line in draft.lines if line.kind == "adjustment"]
    for line in adjustments:
        amount = money.display_amount(line.amount, draft.currency)
        console.print(f"  draft line {line.number}: {line.description}: {amount}")


def _tell_lineage(billing: Billing, console: Console, acme: StoredInvoice) -> None:
    console.rule("Every line traces to its events")
    line = max(
        (line for line in acme.record.lines if isinstance(line, MeterUsageLine)),
        key=lambda line: line.lineage.events,
    )
    events = billing.explain(acme.invoice_id, line.number)
    sample = events[len(events) // 2]
    proof = billing.proof(acme.invoice_id, line.number, sample["id"])
    problems = verify_proof(proof)
    lineage = line.lineage
    console.print(
        f"{acme.invoice_id} line {line.number} ({line.description}):"
        f" {lineage.events:,} events, sequences {lineage.first_sequence}"
        f"..{lineage.last_sequence}, Merkle root {lineage.merkle_root[:16]}…"
    )
    verdict = "[green]verifies[/green]" if not problems else f"[red]fails: {problems}[/red]"
    console.print(
        f"Inclusion proof for event {sample['id']} (sequence {sample['sequence']}):"
        f" {len(proof['path'])} hashes, {verdict} with meterline.core.lineage.verify_proof."
    )
    forged = dict(proof, leaf_index=(proof["leaf_index"] + 1) % proof["tree_size"])
    console.print(f"The same proof claiming another position: {verify_proof(forged)[0]}")
    console.print(
        f"See them all: [bold]meterline explain {acme.invoice_id} --line {line.number}[/bold]"
    )


def _tell_new_tier(billing: Billing, console: Console, text: str, current: date) -> None:
    console.rule("Launching a new pricing tier is one YAML edit")
    changed = billing.apply(with_new_tier(text, add_months(current, 1)), dry_run=True)
    console.print(changes_table(changed))
    console.print(f"customers affected: {', '.join(changed.customers_affected)}")
    console.print(simulation_table(changed))
    console.print("[yellow]dry run[/yellow]: nothing stored; drop --dry-run to launch.")


def _tell_unbillable(billing: Billing, console: Console, failed: Sequence[object]) -> None:
    """What no invoice can bill is reported, never dropped or counted as zero."""
    report = billing.unbillable().as_dict()
    reasons = ", ".join(f"{count:,} {reason}" for reason, count in report["reasons"].items())
    names = [row["customer"] for row in report["customers"]]
    why = ["cyberdyne-ops's agents ran before its contract started on the 8th"]
    if "wonka-marketing" in names:
        why.append("wonka-marketing's contract starts at midnight in New York, hours after UTC's")
    console.print(
        f"Unbillable usage, reported rather than dropped: {report['events']:,} events"
        f" ({reasons or 'none'}) of {', '.join(names) or 'nobody'}; {'; '.join(why)}."
        " [bold]meterline unbillable[/bold] lists each event,"
        " GET /v1/unbillable and the dashboard show it, a usage.unbillable webhook tells the"
        f" product; customers that could not be closed: {len(failed)} (one never stops"
        " the others)."
    )


def _tell_credits(billing: Billing, console: Console, month: date, current: date) -> None:
    console.rule("Prepaid credits: pools, rollover, a pack that runs out, a commit")
    console.print(
        "Three hybrid contracts, declared in the same YAML with no code: cyberdyne-ops buys a"
        " monthly pool of 15,000 credits ($135) that rolls 50% of what is left, at most"
        " 1,000 credits, for one more month; stark-agents has a free 2,000-credit promotion"
        f" (priority 1, expires {month:%b} 11) and a 20,000-credit pack ($180), with overage billed"
        " at $0.012 instead of $0.01 once out; tyrell-research prepaid a $20,000 annual"
        " commit ($18,000) with a $9,000 monthly minimum."
    )
    stark = next(iter(billing.store.invoices("stark-agents")))
    document = stark.record
    section = document.credits or {}
    overage = [e for e in section["entries"] if e["kind"] == "overage"]
    if overage:
        window_end = datetime.fromisoformat(overage[0]["at"].replace("Z", "+00:00"))
        day = (window_end - timedelta(microseconds=1)).date()
        console.print(
            f"stark-agents burnt the promotion first, then the pack, and ran out on {day}"
            " (the first day with usage no grant covered; the ledger burns credit by day):"
        )
    console.print(invoice_table(document, lineage=False))
    next_month = add_months(month, 1)
    month_end = timestamp_to_us(datetime(next_month.year, next_month.month, 1, tzinfo=UTC))
    report = billing.credits("cyberdyne-ops", month_end)
    console.print(
        "The month closes: cyberdyne-ops's pool resets; half of what was left, capped at"
        " 1,000, rolls over and the rest expires. Every balance is a sum of ledger entries:"
    )
    console.print(credits_table(report, document.currency))
    console.print(credit_totals_table(report))
    for entry in report["entries"]:
        if entry["kind"] in ("expire", "rollover"):
            console.print(
                f"  {entry['at'][:10]}  {entry['kind']:<8}"
                f" {money.display_amount(entry['amount'], entry['unit']):>8} {entry['unit']}"
                f"  {entry['reason']}"
            )
    tyrell = next(iter(billing.store.invoices("tyrell-research"))).record
    for line in tyrell.lines:
        if line.kind in ("purchase", "credit", "commitment"):
            amount = money.display_amount(line.amount, tyrell.currency)
            console.print(f"  tyrell-research: {line.description}: {amount}")
    existing = [g for g in billing.store.grants("stark-agents")]
    if not existing:
        stored, invoice = billing.grant(
            "stark-agents",
            "credits",
            Decimal(30000),
            f"{current:%B} top-up pack",
            paid=Decimal("270.00"),
            priority=10,
            scope=("tool_calls",),
            source="demo",
        )
        console.print(
            f"Finance tops stark-agents up by API (POST /v1/customers/stark-agents/credits):"
            f" grant {stored.grant_id}, invoiced at once on"
            f" {invoice.invoice_id if invoice else 'no invoice'}."
        )
    now = billing.credits("stark-agents")
    active = [g for g in now["grants"] if g["status"] == "active"]
    for grant in active:
        balance = money.display_amount(grant["balance"], grant["unit"])
        console.print(f"  stark-agents now: {grant['grant']} balance {balance} credits")
    console.print(
        "See any customer's ledger: [bold]meterline credits show stark-agents --entries[/bold]"
    )
