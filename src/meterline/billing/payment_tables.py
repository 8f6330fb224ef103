"""Receivables, payment records and aging as Rich tables (for the CLI).

Amounts are written by ``core.money``'s display (a currency at its minor unit); ``--json``
prints the exact figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from rich.table import Table

from meterline.core.money import display_amount
from meterline.core.payments import AGING_BUCKETS, AgingRow, Standing
from meterline.ledger.payment_records import StoredPayment


def _table(title: str, columns: Sequence[str], right_from: int) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if index >= right_from else "left")
    return table


def standings_table(standings: Sequence[Standing]) -> Table:
    """Each invoice's state and figures."""
    columns = ["invoice", "customer", "issued", "state", "currency", "billed", "paid", "open"]
    table = _table("Receivables", [*columns, "written off", "credit balance"], 5)
    for item in standings:
        invoice = item.receivable
        amounts = (item.billed, item.paid, item.open, item.written_off, item.credit_balance)
        table.add_row(
            invoice.invoice_id,
            invoice.customer,
            invoice.issued.isoformat(),
            item.state,
            invoice.currency,
            *(display_amount(amount, invoice.currency) for amount in amounts),
        )
    return table


def payments_table(records: Sequence[StoredPayment]) -> Table:
    """Every payment, refund and write-off in the order recorded."""
    columns = ["#", "payment id", "customer", "invoice", "kind", "amount"]
    table = _table("Payment records", columns, 5)
    for item in records:
        table.add_row(
            str(item.number),
            item.payment_id,
            item.customer,
            item.invoice_id,
            item.kind,
            f"{display_amount(item.amount, item.currency)} {item.currency}",
        )
    return table


def aging_table(rows: Sequence[AgingRow], on: date) -> Table:
    """Open receivables by customer and bucket of days past due."""
    table = _table(
        f"Aging at the end of {on.isoformat()}",
        ["customer", "currency", *AGING_BUCKETS, "total"],
        2,
    )
    for row in rows:
        table.add_row(
            row.customer,
            row.currency,
            *(display_amount(row.buckets[name], row.currency) for name in AGING_BUCKETS),
            display_amount(row.total, row.currency),
        )
    return table
