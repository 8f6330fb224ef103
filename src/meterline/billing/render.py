"""Invoices, plans of change and audits as Rich tables (for the CLI and the demo).

Amounts are written by ``core.money``'s display (a currency at its minor unit, a credit
type exactly, never exponent notation); the documents themselves stay exact, and
``--json`` prints them as they are.
"""

from __future__ import annotations

from typing import Any

from msgspec import UnsetType
from rich.markup import escape
from rich.table import Table

from meterline.billing.service import ApplyReport, AuditReport
from meterline.core.documents import (
    AdjustmentLine,
    CarriedLine,
    CreditLine,
    Invoice,
    MeterUsageLine,
    OverageLine,
    PurchaseLine,
)
from meterline.core.money import display_amount, display_quantity, to_decimal

UNIT_LINES = (MeterUsageLine, CreditLine, CarriedLine, OverageLine, PurchaseLine)
"""Lines counted in a unit of their own (a credit type): the table shows those units."""


def invoice_table(document: Invoice, lineage: bool = True) -> Table:
    """One invoice: its lines, amounts and, per usage line, the events behind it."""
    number = document.number or "draft"
    period = document.period
    kind = document.kind
    when = (
        f"{period.start[:10]} to {period.end[:10]}"
        if period
        else f"issued {str(document.finalized_at)[:10]}"
    )
    title = (
        f"{number}  {document.customer}  {when}  ({document.status}"
        f"{', ' + kind if kind else ''})"
    )
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("line")
    table.add_column("quantity", justify="right")
    table.add_column(f"amount {document.currency}", justify="right")
    if lineage:
        table.add_column("events", justify="right")
        table.add_column("sequences", justify="right")
        table.add_column("merkle root")
    currency = document.currency
    for line in document.lines:
        quantity = display_quantity(line.quantity) if isinstance(line, MeterUsageLine) else ""
        if isinstance(line, UNIT_LINES) and not isinstance(line.units, UnsetType):
            unit = line.unit if isinstance(line.unit, str) else ""
            quantity = f"{quantity} ({display_amount(line.units, unit)} {unit})"
        amount = display_amount(line.amount, currency)
        row = [str(line.number), line.description, quantity, amount]
        if lineage:
            trace = line.lineage if isinstance(line, MeterUsageLine | AdjustmentLine) else None
            if trace:
                first, last = trace.first_sequence, trace.last_sequence
                row += [
                    f"{trace.events:,}",
                    f"{first}..{last}" if first is not None else "",
                    trace.merkle_root[:16] + "…",
                ]
            else:
                row += ["", "", ""]
        table.add_row(*row)
    table.add_section()
    total = display_amount(document.total, currency)
    table.add_row("", "[bold]total[/bold]", "", f"[bold]{total}[/bold]")
    return table


def changes_table(report: ApplyReport) -> Table:
    table = Table(title="plan of changes", title_justify="left", show_edge=False)
    table.add_column("object")
    table.add_column("key")
    table.add_column("change")
    colours = {"created": "green", "changed": "yellow", "retired": "red"}
    for change in report.changes:
        colour = colours.get(change.change, "white")
        table.add_row(change.kind, change.key, f"[{colour}]{change.change}[/{colour}]")
    if not report.changes:
        table.add_row("(nothing)", "", "")
    return table


def simulation_table(report: ApplyReport) -> Table:
    title = f"simulation: period {report.simulated_period} re-rated under the new terms"
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("customer")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("difference", justify="right")
    for row in report.simulation:
        currency = row["currency"]
        change = to_decimal(row["difference"])
        colour = "green" if change > 0 else "red" if change < 0 else "white"
        table.add_row(
            row["customer"],
            f"{display_amount(row['before'], currency)} {currency}",
            f"{display_amount(row['after'], currency)} {currency}",
            f"[{colour}]{display_amount(change, currency)}[/{colour}]",
        )
    return table


def audit_lines(report: AuditReport) -> list[str]:
    """The verdict, then each finding (the first bad item first), as Rich markup."""
    verdict = "[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]"
    lines = [
        f"audit {verdict}: {report.invoices} invoices and {report.credit_notes} credit notes"
        f" re-derived from the ledger; {report.revisions} configuration revisions checked;"
        f" chain {'intact' if report.chain_intact else 'BROKEN'}"
    ]
    lines += [f"  [red]mismatch[/red] {escape(str(finding))}" for finding in report.findings]
    if report.unhashed_revisions:
        numbers = ", ".join(str(number) for number in report.unhashed_revisions)
        lines.append(
            f"  note: revision(s) {numbers} predate revision hashes: content checked, source"
            " text covered by no hash"
        )
    return lines


def credits_table(report: dict[str, Any], currency: str | None = None) -> Table:
    """A customer's grants as of an instant: balances, order of burn, status. Grants and
    balances read in their unit; ``paid`` in ``currency`` (the plan's, which the report
    does not carry), or exactly when it is not given."""
    table = Table(
        title=f"credits  {report['customer']}  as of {report['as_of']}  (overage: "
        f"{report['overage']})",
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for name, justify in (
        ("grant", "left"),
        ("unit", "left"),
        ("priority", "right"),
        ("granted", "right"),
        ("paid", "right"),
        ("balance", "right"),
        ("effective", "left"),
        ("expires/resets", "left"),
        ("status", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for grant in report["grants"]:
        ends = grant["expires"] or grant["resets"] or ""
        table.add_row(
            grant["grant"],
            grant["unit"],
            str(grant["priority"]),
            display_amount(grant["amount"], grant["unit"]),
            display_quantity(grant["paid"])
            if currency is None
            else display_amount(grant["paid"], currency),
            display_amount(grant["balance"], grant["unit"]),
            grant["effective"][:10],
            ends[:10],
            grant["status"],
        )
    return table


def credit_totals_table(report: dict[str, Any]) -> Table:
    """Per unit: granted = consumed + expired + remaining + voided, and what was uncovered."""
    table = Table(show_edge=False, pad_edge=False)
    columns = ("granted", "consumed", "expired", "voided", "remaining", "overage", "carried")
    table.add_column("unit")
    for name in columns:
        table.add_column(name, justify="right")
    for unit, totals in report["totals"].items():
        table.add_row(unit, *(display_amount(totals[name], unit) for name in columns))
    return table


UNBILLABLE_ROWS_SHOWN = 50
"""Unbillable records the CLI table lists (their count is always printed; ``--json`` has
every one)."""


def unbillable_tables(document: dict[str, Any]) -> list[Table]:
    """An unbillable usage report (``UnbillableReport.as_dict``): events per customer and
    reason, then the records (the first ``UNBILLABLE_ROWS_SHOWN``)."""
    summary = Table(
        title=f"unbillable usage through ledger cut {document['through']}",
        title_justify="left",
        show_edge=False,
    )
    for column in ("customer", "reason", "events"):
        summary.add_column(column, justify="right" if column == "events" else "left")
    records = []
    for customer in document["customers"]:
        for reason, events in customer["reasons"].items():
            summary.add_row(customer["customer"], reason, f"{events:,}")
        records.extend(customer["usage"])
    tables = [summary]
    if records:
        shown = records[:UNBILLABLE_ROWS_SHOWN]
        title = f"{len(records):,} records" + (
            f" ({len(shown)} shown; --json lists all)" if len(shown) < len(records) else ""
        )
        detail = Table(title=title, title_justify="left", show_edge=False)
        for column in ("customer", "event", "sequence", "timestamp", "meter", "reason", "detail"):
            detail.add_column(column, justify="right" if column == "sequence" else "left")
        for record in shown:
            detail.add_row(
                record["customer"],
                record["event_id"],
                str(record["sequence"]),
                record["timestamp"],
                record["meter"] or "",
                record["reason"],
                record["detail"],
            )
        tables.append(detail)
    if document["failed"]:
        failed = Table(title="customers that cannot be rated", title_justify="left")
        failed.add_column("customer")
        failed.add_column("reason")
        for failure in document["failed"]:
            failed.add_row(failure["customer"], failure["reason"])
        tables.append(failed)
    return tables
