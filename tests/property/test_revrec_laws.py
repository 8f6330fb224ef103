"""Laws of revenue recognition (``core.revrec``, ``core.journal``) over random contracts:

- every journal entry balances, per currency;
- recognized + deferred = billed, for fees and for every grant, at every date;
- breakage never exceeds the value left unused;
- a fee's recognized cumulative revenue is within half a cent of the exact amount on
  every day, and the days sum to the fee.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from meterline.core.journal import (
    CHART,
    DEFERRED_CREDITS,
    DEFERRED_FEES,
    RECEIVABLE,
    UNBILLED,
    JournalEntry,
    trial_balance,
)
from meterline.core.revrec import (
    BREAKAGE_MODES,
    CreditTerms,
    Movement,
    credit_entries,
    ratable_fee,
)

START = date(2026, 1, 1)
cents = st.integers(1, 10_000_000).map(lambda n: D(n).scaleb(-2))


def balanced(entries: list[JournalEntry]) -> bool:
    for item in entries:
        totals: dict[str, D] = defaultdict(D)
        for posting in item.postings:
            totals[posting.currency] += posting.amount
        if any(total != 0 for total in totals.values()):
            return False
    return True


def recognized(balances: dict[tuple[str, str], D]) -> D:
    """Revenue net of contra-revenue, as a positive amount."""
    return -sum(
        (v for (a, _), v in balances.items() if CHART[a] in ("revenue", "contra_revenue")),
        D(0),
    )


@given(amount=cents, offset=st.integers(0, 60), length=st.integers(1, 400))
def test_a_fee_is_recognized_plus_deferred_equals_billed_every_day(
    amount: D, offset: int, length: int
) -> None:
    start = START + timedelta(days=offset)
    end = start + timedelta(days=length)
    entries = ratable_fee("fee", "acme", amount, "USD", start, start, end)
    assert balanced(entries)
    for day in (start + timedelta(days=n) for n in range(0, length + 1, max(1, length // 7))):
        balances = trial_balance(entries, through=day)
        deferred = -balances.get((DEFERRED_FEES, "USD"), D(0))
        assert recognized(balances) + deferred == amount
        assert deferred >= 0
    assert recognized(trial_balance(entries)) == amount


@given(amount=cents, length=st.integers(1, 400), negative=st.booleans())
def test_ratable_revenue_is_within_half_a_cent_of_exact_every_day(
    amount: D, length: int, negative: bool
) -> None:
    fee = -amount if negative else amount
    end = START + timedelta(days=length)
    entries = ratable_fee("fee", "acme", fee, "USD", START, START, end)
    for served in range(1, length + 1):
        balances = trial_balance(entries, through=START + timedelta(days=served - 1))
        exact = fee * served / length
        assert abs(recognized(balances) - exact) <= D("0.005")
    assert recognized(trial_balance(entries)) == fee


@st.composite
def grant_histories(draw: st.DrawFn) -> tuple[CreditTerms, list[Movement]]:
    units = D(draw(st.integers(1, 100_000)))
    paid = draw(st.sampled_from([D(0), *(draw(cents) for _ in range(1))]))
    mode = draw(st.sampled_from(BREAKAGE_MODES))
    rate = D(draw(st.integers(0, 95))) / 100
    unit = draw(st.sampled_from(["USD", "credits"]))
    terms = CreditTerms("g", "acme", unit, units, paid, "USD", START, mode, rate)
    movements: list[Movement] = []
    left = units
    used = D(0)
    day = START
    for _ in range(draw(st.integers(0, 12))):
        day += timedelta(days=draw(st.integers(0, 5)))
        if left > 0 and draw(st.booleans()):
            taken = D(draw(st.integers(1, int(left))))
            movements.append(Movement(day, "g", "consume", taken))
            left -= taken
            used += taken
        elif used > 0:
            given_back = D(draw(st.integers(1, int(used))))
            movements.append(Movement(day, "g", "release", given_back))
            left += given_back
            used -= given_back
    ending = draw(st.sampled_from(["open", "expire", "rollover", "void"]))
    day += timedelta(days=1)
    if ending == "expire":
        movements.append(Movement(day, "g", "expire", left))
    elif ending == "rollover":
        kept = D(draw(st.integers(0, int(left) + 10)))
        if kept > 0:
            movements.append(Movement(day, "g", "rollover", kept, to="g/rollover"))
            movements.append(Movement(day + timedelta(days=3), "g/rollover", "expire", kept))
    elif ending == "void":
        movements.append(Movement(day, "g", "void", D(0)))
    return terms, movements


@given(history=grant_histories())
def test_a_grant_is_recognized_plus_deferred_equals_billed_at_every_date(
    history: tuple[CreditTerms, list[Movement]],
) -> None:
    terms, movements = history
    for count in range(len(movements) + 1):
        entries, accounts = credit_entries([terms], movements[:count])
        assert balanced(entries)
        account = accounts["g"]
        # breakage never exceeds the value left unused
        assert 0 <= account.breakage <= account.billed - account.released - account.moved
        assert account.deferred >= 0
        balances = trial_balance(entries)
        billed = balances.get((RECEIVABLE, "USD"), D(0))
        deferred = -balances.get((DEFERRED_CREDITS, "USD"), D(0))
        # money-priced usage the credits settled was recognized as usage revenue (in the
        # usage's own entries): here it shows as the unbilled receivable the credits paid
        settled = -balances.get((UNBILLED, "USD"), D(0))
        assert recognized(balances) + settled + deferred == billed
        assert billed == terms.paid - sum(a.reversed for a in accounts.values())
