"""Laws of the prepaid-credit journal read from a credit book (``finance.books``):

- each day's consumption is recognized on that day (the book stamps a window's usage at
  its end, the midnight that ends the day; the journal puts it on the day of use), so a
  month's last day of credit use stays in that month;
- entry ids come from the facts: the journal of the first days is unchanged, ids and
  amounts, when later days arrive (the books read after midnight).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.credits import Charge, CreditBook, Grant
from meterline.core.events import timestamp_to_us
from meterline.core.journal import (
    DEFERRED_CREDITS,
    REVENUE_CREDITS,
    JournalEntry,
    trial_balance,
)
from meterline.core.model import CreditTerms as ContractCredits
from meterline.finance.books import grant_journal

FIRST = date(2026, 10, 25)
"""Days around a month's end (October 31)."""


def _midnight(day: date) -> int:
    return timestamp_to_us(datetime(day.year, day.month, day.day, tzinfo=UTC))


def _entries(units: list[int], paid: D) -> list[JournalEntry]:
    """The journal of a 1,000,000-credit grant bought for ``paid`` USD, used ``units[n]``
    credits in the window of day n (from ``FIRST``)."""
    grant = Grant(
        "pool", "credits", D(10**6), effective_us=_midnight(FIRST), paid=paid, paid_currency="USD"
    )
    charges = [
        Charge(
            _midnight(FIRST + timedelta(days=n)),
            _midnight(FIRST + timedelta(days=n + 1)),
            "0/tokens/",
            "tokens",
            "credits",
            D(used),
        )
        for n, used in enumerate(units)
    ]
    entries, _ = grant_journal(CreditBook().run([grant], charges), ContractCredits(), "acme", "UTC")
    return entries


def _journal(units: list[int], paid: D) -> list[tuple[str, date, D]]:
    return [
        (item.entry_id, item.day, -sum((p.amount for p in item.postings if p.amount < 0), D(0)))
        for item in _entries(units, paid)
    ]


daily = st.lists(st.integers(0, 5000), min_size=1, max_size=12)
prices = st.integers(1, 10**7).map(lambda n: D(n).scaleb(-2))


@settings(max_examples=40, deadline=None)
@given(units=daily, paid=prices)
def test_each_days_consumption_is_recognized_on_that_day(units: list[int], paid: D) -> None:
    entries = _entries(units, paid)
    used_so_far = D(0)
    for n, used in enumerate(units):
        day = FIRST + timedelta(days=n)
        used_so_far += used
        balances = trial_balance(entries, through=day)
        released = -balances.get((REVENUE_CREDITS, "USD"), D(0))
        exact = paid * used_so_far / D(10**6)
        assert abs(released - exact) <= D("0.005"), (day, released, exact)
        assert balances.get((DEFERRED_CREDITS, "USD"), D(0)) == -(paid - released)


@settings(max_examples=40, deadline=None)
@given(units=daily, paid=prices, cut=st.integers(1, 12))
def test_entry_ids_of_earlier_days_do_not_change_as_later_days_arrive(
    units: list[int], paid: D, cut: int
) -> None:
    first_days = _journal(units[:cut], paid)
    everything = _journal(units, paid)
    assert everything[: len(first_days)] == first_days
    assert len({entry_id for entry_id, _, _ in everything}) == len(everything)


def test_october_31_use_lands_in_october() -> None:
    """The accountant's review: credit used on October 31 is October's revenue."""
    journal = _journal([0, 0, 0, 0, 0, 0, 100], D("1000000.00"))  # 1.00 USD a credit
    [(entry_id, day, amount)] = [row for row in journal if "usage" in row[0]]
    assert (entry_id, day, amount) == (
        "grant:acme/pool/2026-10-31/usage",
        date(2026, 10, 31),
        D(100),
    )
