"""The journal as files a general ledger imports: CSV (one row per posting) and Beancount.

CSV columns: ``date, entry_id, account, debit, credit, currency, customer, cause,
description`` (debit and credit as exact decimal text, one of them zero), the shape most
general-ledger imports take. Beancount: one ``open`` per account, one transaction per
entry (its id and cause as metadata), and a ``balance`` assertion per account and currency
the day after the last entry, so ``bean-check`` proves the file's balances equal
meterline's trial balance.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from meterline.core.journal import CHART
from meterline.finance.books import POSTING_FIELDS, Books, journal_rows

REPORTING_COLUMNS = ("reporting_currency", "reporting_debit", "reporting_credit")
"""The columns a journal gains when the pricing file declares a reporting currency."""
CSV_COLUMNS = ("date", "entry_id", "account", *POSTING_FIELDS)
BEANCOUNT_ROOTS = {
    "asset": "Assets",
    "liability": "Liabilities",
    "revenue": "Income",
    "contra_revenue": "Income:Contra",
    "expense": "Expenses",
}
"""Beancount's root for each kind of account (contra-revenue reduces income)."""


def journal_csv(books: Books) -> str:
    """The journal as general-ledger CSV text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    reporting = () if books.reporting is None else REPORTING_COLUMNS
    writer.writerow((*CSV_COLUMNS, *reporting))
    for row in journal_rows(books):
        writer.writerow(
            [
                row["date"].isoformat(),
                row["entry_id"],
                row["account"],
                str(row["debit"]),
                str(row["credit"]),
                row["currency"],
                row["customer"],
                row["cause"],
                row["description"],
                *(str(row[column]) for column in reporting),
            ]
        )
    return out.getvalue()


def beancount_account(account: str) -> str:
    """``liabilities:deferred_revenue:fees`` -> ``Liabilities:DeferredRevenue:Fees``."""
    parts = account.split(":")[1:]
    names = ["".join(word.capitalize() for word in part.split("_")) for part in parts]
    return ":".join([BEANCOUNT_ROOTS[CHART[account]], *names])


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def journal_beancount(books: Books, title: str = "meterline journal") -> str:
    """The journal as a Beancount file ``bean-check`` accepts."""
    lines = [f"option {_quoted('title')} {_quoted(title)}"]
    currencies = books.currencies()
    for currency in currencies:
        lines.append(f"option {_quoted('operating_currency')} {_quoted(currency)}")
    if not books.entries:
        return "\n".join(lines) + "\n"
    first = books.entries[0].day
    last = books.entries[-1].day
    lines.append("")
    used = sorted({p.account for item in books.entries for p in item.postings})
    for account in used:
        lines.append(f"{first.isoformat()} open {beancount_account(account)}")
    for item in books.entries:
        lines.append("")
        lines.append(
            f"{item.day.isoformat()} * {_quoted(item.customer)} {_quoted(item.description)}"
        )
        lines.append(f"  entry: {_quoted(item.entry_id)}")
        lines.append(f"  cause: {_quoted(item.cause)}")
        for posting in item.postings:
            lines.append(
                f"  {beancount_account(posting.account)}  {posting.amount} {posting.currency}"
            )
    lines.append("")
    after = (last + timedelta(days=1)).isoformat()
    balances = books.trial_balance()
    for account in used:
        for currency in currencies:
            amount = balances.get((account, currency), 0)
            lines.append(f"{after} balance {beancount_account(account)}  {amount} {currency}")
    return "\n".join(lines) + "\n"
