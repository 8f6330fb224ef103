"""Finance's reports as plain documents (exact decimal text), for the CLI, the dashboard
and the demo alike: the revenue waterfall by month, deferred revenue rolled forward month
by month (opening + billed - recognized = closing), and the trial balance."""

from __future__ import annotations

import calendar
from datetime import date
from decimal import Decimal, localcontext
from typing import Any

from meterline.core.journal import CHART
from meterline.core.money import MONEY_CONTEXT
from meterline.finance.books import Books

ZERO = Decimal(0)


def month_span(month: str) -> tuple[date, date]:
    """``2026-10`` -> (2026-10-01, 2026-10-31)."""
    try:
        year, number = (int(part) for part in month.split("-"))
        last = calendar.monthrange(year, number)[1]
        return date(year, number, 1), date(year, number, last)
    except ValueError:
        raise ValueError(f"{month!r} is not a month (YYYY-MM)") from None


def revenue_reports(
    books: Books, month: str | None = None, balances_at: date | None = None
) -> dict[str, Any]:
    """Waterfall, roll-forward (each month, or just ``month``) and trial balance: of every
    entry known, or of the entries dated through ``balances_at`` (the balance at a date,
    beside ``books.as_of``, the date of knowledge)."""
    months = books.months()
    chosen = [month] if month is not None else months
    for name in chosen:
        month_span(name)
    accounts: dict[tuple[str, str], dict[str, Decimal]] = {}
    for (name, account, currency), amount in books.waterfall().items():
        accounts.setdefault((account, currency), {})[name] = amount
    waterfall: list[dict[str, Any]] = []
    with localcontext(MONEY_CONTEXT):
        for (account, currency), amounts in sorted(
            accounts.items(), key=lambda item: (CHART[item[0][0]] != "revenue", item[0])
        ):
            waterfall.append(
                {
                    "account": account,
                    "currency": currency,
                    "months": {name: str(value) for name, value in amounts.items()},
                    "total": str(sum(amounts.values(), ZERO)),
                }
            )
        totals = {
            name: str(sum((Decimal(row["months"].get(name, "0")) for row in waterfall), ZERO))
            for name in months
        }
    rolled = []
    for name in chosen:
        start, end = month_span(name)
        for item in books.rollforwards(start, end):
            if not (item.opening or item.billed or item.recognized or item.closing):
                continue
            rolled.append(
                {
                    "month": name,
                    "account": item.account,
                    "currency": item.currency,
                    "opening": str(item.opening),
                    "billed": str(item.billed),
                    "recognized": str(item.recognized),
                    "closing": str(item.closing),
                }
            )
    trial = []
    debits = credits = ZERO
    with localcontext(MONEY_CONTEXT):
        for (account, currency), balance in books.trial_balance(balances_at).items():
            trial.append(
                {
                    "account": account,
                    "currency": currency,
                    "debit": str(balance) if balance > 0 else "",
                    "credit": str(-balance) if balance < 0 else "",
                }
            )
            debits += max(balance, ZERO)
            credits += max(-balance, ZERO)
    return {
        "as_of": books.as_of.isoformat() if books.as_of else None,
        "balances_at": balances_at.isoformat() if balances_at else None,
        "months": months,
        "waterfall": waterfall,
        "waterfall_totals": totals,
        "rollforward": rolled,
        "trial_balance": trial,
        "trial_balance_totals": {"debit": str(debits), "credit": str(credits)},
    }
