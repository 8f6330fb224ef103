"""The general ledger's words (pure): a chart of accounts, balanced journal entries, and
the reports every accountant reads from them.

An entry is a set of postings; each posting debits (a positive amount) or credits (a
negative amount) one account in one currency. An entry balances: its postings sum to
zero in every currency it touches (checked when it is made: an unbalanced entry cannot
exist). Every entry cites what caused it (an invoice line, a grant, a day's usage), so a
report's figure traces back to its causes.

Reports:

- ``trial_balance``: every account's balance (debits - credits) per currency at a date;
  the balances sum to zero.
- ``rollforward``: for a liability such as deferred revenue, over [start, end):
  opening + billed - recognized = closing.
- ``waterfall``: revenue recognized per month and revenue account.
- ``monthly_summary``: the summary journal a general ledger books, one entry per month and
  currency, with the daily entries as its subledger.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext
from typing import Literal

from meterline.core.errors import MeterlineError
from meterline.core.money import MONEY_CONTEXT

ZERO = Decimal(0)

AccountKind = Literal["asset", "liability", "revenue", "contra_revenue", "expense"]

CASH = "assets:cash"
RECEIVABLE = "assets:accounts_receivable"
UNBILLED = "assets:unbilled_receivable"
DEFERRED_FEES = "liabilities:deferred_revenue:fees"
DEFERRED_CREDITS = "liabilities:deferred_revenue:credits"
DEFERRED_BILLED_EARLY = "liabilities:deferred_revenue:billed_early"
"""Billed early by a threshold invoice beyond what its period's invoice could net: owed
as service to come, until a later period invoice nets it."""
REVENUE_SUBSCRIPTION = "revenue:subscription"
REVENUE_USAGE = "revenue:usage"
REVENUE_CREDITS = "revenue:credits"
REVENUE_BREAKAGE = "revenue:breakage"
REVENUE_MINIMUM = "revenue:minimum_commitment"
CONTRA_FREE_CREDITS = "contra_revenue:free_credits"
"""Usage paid by promotional (free) credit."""
CONTRA_COMMIT_DISCOUNTS = "contra_revenue:commit_discounts"
"""Usage paid by the discounted part of a prepaid commit (face above what was paid)."""
CONTRA_DISCOUNTS = "contra_revenue:discounts"
CONTRA_COUPONS = "contra_revenue:coupons"
CONTRA_TRIALS = "contra_revenue:free_trials"
CONTRA_TAX_INCLUDED = "contra_revenue:tax_included"
TAX_PAYABLE = "liabilities:tax_payable"
CUSTOMER_CREDIT = "liabilities:customer_credit"
BAD_DEBT = "expenses:bad_debt"

CHART: Mapping[str, AccountKind] = {
    CASH: "asset",
    RECEIVABLE: "asset",
    UNBILLED: "asset",
    DEFERRED_FEES: "liability",
    DEFERRED_CREDITS: "liability",
    DEFERRED_BILLED_EARLY: "liability",
    REVENUE_SUBSCRIPTION: "revenue",
    REVENUE_USAGE: "revenue",
    REVENUE_CREDITS: "revenue",
    REVENUE_BREAKAGE: "revenue",
    REVENUE_MINIMUM: "revenue",
    CONTRA_FREE_CREDITS: "contra_revenue",
    CONTRA_COMMIT_DISCOUNTS: "contra_revenue",
    CONTRA_DISCOUNTS: "contra_revenue",
    CONTRA_COUPONS: "contra_revenue",
    CONTRA_TRIALS: "contra_revenue",
    CONTRA_TAX_INCLUDED: "contra_revenue",
    TAX_PAYABLE: "liability",
    CUSTOMER_CREDIT: "liability",
    BAD_DEBT: "expense",
}
"""The chart of accounts: every account an entry may post to, and its kind. Names are
colon paths (the first part is the kind's group), as general ledgers and Beancount use."""

DEFERRED = (DEFERRED_FEES, DEFERRED_CREDITS, DEFERRED_BILLED_EARLY)


class JournalError(MeterlineError, ValueError):
    """An entry that cannot be made (unbalanced, an unknown account, a zero posting)."""

    code = "journal_failed"
    http_status = 500


@dataclass(frozen=True, slots=True)
class Posting:
    """``amount`` on ``account``: a debit when positive, a credit when negative."""

    account: str
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A balanced set of postings on ``day``, with what caused it (``cause``: a
    reference such as ``invoice:INV-7/line:2``, ``grant:g-1``, ``usage:line/2026-10-03``)."""

    entry_id: str
    day: date
    description: str
    cause: str
    customer: str
    postings: tuple[Posting, ...]

    def __post_init__(self) -> None:
        if not self.postings:
            raise JournalError(f"{self.entry_id}: an entry needs postings")
        totals: dict[str, Decimal] = defaultdict(Decimal)
        with localcontext(MONEY_CONTEXT):
            for posting in self.postings:
                if posting.account not in CHART:
                    raise JournalError(f"{self.entry_id}: account {posting.account!r} unknown")
                if posting.amount == 0:
                    raise JournalError(f"{self.entry_id}: a posting of zero")
                totals[posting.currency] += posting.amount
        unbalanced = {c: t for c, t in totals.items() if t != 0}
        if unbalanced:
            raise JournalError(f"{self.entry_id}: debits != credits by {unbalanced}")


def entry(
    entry_id: str,
    day: date,
    description: str,
    cause: str,
    customer: str,
    currency: str,
    debit: str,
    credit: str,
    amount: Decimal,
) -> JournalEntry | None:
    """A two-posting entry moving ``amount`` from ``credit`` to ``debit`` (a negative
    amount moves it back); None for zero."""
    if amount == 0:
        return None
    return JournalEntry(
        entry_id,
        day,
        description,
        cause,
        customer,
        (Posting(debit, amount, currency), Posting(credit, -amount, currency)),
    )


Balances = dict[tuple[str, str], Decimal]


def trial_balance(entries: Iterable[JournalEntry], through: date | None = None) -> Balances:
    """Every (account, currency)'s balance (debits - credits) over entries on or before
    ``through`` (all when None). Zero balances are left out."""
    balances: Balances = defaultdict(Decimal)
    with localcontext(MONEY_CONTEXT):
        for item in entries:
            if through is not None and item.day > through:
                continue
            for posting in item.postings:
                balances[(posting.account, posting.currency)] += posting.amount
    return {key: value for key, value in sorted(balances.items()) if value != 0}


@dataclass(frozen=True, slots=True)
class Rollforward:
    """A liability over [start, end]: opening + billed - recognized = closing (each as a
    positive amount owed)."""

    account: str
    currency: str
    opening: Decimal
    billed: Decimal
    recognized: Decimal
    closing: Decimal


def rollforward(
    entries: Iterable[JournalEntry], account: str, currency: str, start: date, end: date
) -> Rollforward:
    """The roll-forward of liability ``account`` from the start of ``start`` to the end of
    ``end``: what it owed before, what was added (credits), what was released (debits),
    and what it owes after."""
    opening = billed = recognized = ZERO
    with localcontext(MONEY_CONTEXT):
        for item in entries:
            if item.day > end:
                continue
            for posting in item.postings:
                if posting.account != account or posting.currency != currency:
                    continue
                if item.day < start:
                    opening -= posting.amount
                elif posting.amount < 0:
                    billed -= posting.amount
                else:
                    recognized += posting.amount
        closing = opening + billed - recognized
    return Rollforward(account, currency, opening, billed, recognized, closing)


def waterfall(entries: Iterable[JournalEntry]) -> dict[tuple[str, str, str], Decimal]:
    """Revenue recognized per (month ``YYYY-MM``, revenue or contra-revenue account,
    currency), as a positive amount for revenue (contra-revenue negative)."""
    months: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    named: dict[date, str] = {}  # each day's month, named once
    with localcontext(MONEY_CONTEXT):
        for item in entries:
            month = named.get(item.day)
            if month is None:
                month = named[item.day] = item.day.strftime("%Y-%m")
            for posting in item.postings:
                if CHART[posting.account] in ("revenue", "contra_revenue"):
                    months[(month, posting.account, posting.currency)] -= posting.amount
    return {key: value for key, value in sorted(months.items()) if value != 0}


def monthly_summary(entries: Iterable[JournalEntry]) -> list[JournalEntry]:
    """The general ledger's summary journal: per month and currency, one entry dated the
    month's last day whose postings are each account's net movement that month; the daily
    entries stay its subledger (``cause`` names how many it sums). Balanced because each
    daily entry is; an account that nets to zero is left out."""
    months: dict[tuple[date, str], dict[str, Decimal]] = {}
    counts: dict[tuple[date, str], int] = defaultdict(int)
    with localcontext(MONEY_CONTEXT):
        for item in entries:
            last = _month_end(item.day)
            for currency in {posting.currency for posting in item.postings}:
                counts[(last, currency)] += 1
            for posting in item.postings:
                moved = months.setdefault((last, posting.currency), defaultdict(Decimal))
                moved[posting.account] += posting.amount
    summary = []
    for (last, currency), moved in sorted(months.items()):
        postings = tuple(
            Posting(account, amount, currency)
            for account, amount in sorted(moved.items())
            if amount != 0
        )
        if not postings:
            continue
        month = last.strftime("%Y-%m")
        summary.append(
            JournalEntry(
                f"summary:{month}:{currency}",
                last,
                f"Monthly summary of {counts[(last, currency)]} daily entries",
                f"summary:{month}",
                "",
                postings,
            )
        )
    return summary


def _month_end(day: date) -> date:
    following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return date.fromordinal(following.toordinal() - 1)
