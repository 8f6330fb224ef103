"""Proportional breakage and a change of its estimate (``core.breakage``, wired into
``core.revrec.credit_entries``), with hand-computed numbers.

The worked example (ASC 606-10-55-48, proportional method; a change in the estimate is a
cumulative catch-up in the period of change): 1,000 credits sold for 1,000.00 USD
(1.00 each), 10% expected never to be used, so 900 are expected to be used and each one
used brings 100.00 / 900 of breakage.

- 450 used in January: 450.00 released; breakage 100.00 x 450 / 900 = 50.00.
- From March 1 the estimate is 20%: 800 expected to be used; the breakage for the 450
  used so far is 200.00 x 450 / 800 = 112.50; the catch-up is 112.50 - 50.00 = 62.50,
  booked on March 1, and January's entries are as they were.
- 350 more used in March (800 in all): 350.00 released; breakage 200.00 x 800 / 800 =
  200.00 in all, 87.50 of it now. Nothing is left deferred.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.breakage import (
    BreakageError,
    RateChange,
    catch_up,
    check_rates,
    cumulative_breakage,
    rate_on,
)
from meterline.core.journal import DEFERRED_CREDITS, REVENUE_BREAKAGE, REVENUE_CREDITS, waterfall
from meterline.core.revrec import CreditTerms, Movement, credit_entries

JANUARY, MARCH = date(2026, 1, 20), date(2026, 3, 1)


def pack(*changes: RateChange) -> CreditTerms:
    return CreditTerms(
        "pack",
        "acme",
        "credits",
        D(1000),
        D(1000),
        "USD",
        date(2026, 1, 1),
        breakage="proportional",
        breakage_rate=D("0.10"),
        breakage_changes=changes,
    )


def test_the_worked_example_pure() -> None:
    """The pure figures: 50.00 at 10% for 450 used, a 62.50 catch-up at 20%."""
    assert cumulative_breakage(D(1000), D(1000), D("0.10"), D(450), "USD") == D("50.00")
    assert cumulative_breakage(D(1000), D(1000), D("0.20"), D(450), "USD") == D("112.50")
    assert catch_up(D(1000), D(1000), D(450), D(550), D("0.20"), D("50.00"), "USD") == D("62.50")
    assert cumulative_breakage(D(1000), D(1000), D("0.20"), D(800), "USD") == D("200.00")
    # never past the expected use: the whole rate x value, no more
    assert cumulative_breakage(D(1000), D(1000), D("0.20"), D(950), "USD") == D("200.00")


def test_a_rate_change_books_one_catch_up_on_its_day() -> None:
    """The worked example through the journal: one catch-up entry of 62.50 on March 1,
    consumption after it at the new rate, January untouched."""
    change = RateChange(MARCH, D("0.20"))
    movements = [
        Movement(JANUARY, "pack", "consume", D(450)),
        Movement(date(2026, 3, 15), "pack", "consume", D(350)),
    ]
    before, _ = credit_entries([pack()], movements[:1])
    entries, accounts = credit_entries([pack(change)], movements)
    (catch,) = [item for item in entries if item.entry_id.endswith("breakage-estimate")]
    assert catch.day == MARCH and catch.entry_id == "grant:pack/2026-03-01/breakage-estimate"
    assert {p.account: p.amount for p in catch.postings} == {
        DEFERRED_CREDITS: D("62.50"),
        REVENUE_BREAKAGE: D("-62.50"),
    }
    assert [item for item in entries if item.day < MARCH] == before
    assert waterfall(entries) == {
        ("2026-01", REVENUE_CREDITS, "USD"): D(450),
        ("2026-01", REVENUE_BREAKAGE, "USD"): D(50),
        ("2026-03", REVENUE_CREDITS, "USD"): D(350),
        ("2026-03", REVENUE_BREAKAGE, "USD"): D("62.50") + D("87.50"),
    }
    account = accounts["pack"]
    assert (account.released, account.breakage, account.deferred) == (D(800), D(200), D(0))


def test_a_lower_estimate_reverses_breakage_and_a_change_after_expiry_books_nothing() -> None:
    """From 10% to 5% after 450 used: the target is 50.00 x 450 / 950 = 23.684... ->
    23.68, so the catch-up takes back 26.32. A change after the grant expired books
    nothing (the grant's books are closed)."""
    lower = RateChange(MARCH, D("0.05"))
    entries, accounts = credit_entries(
        [pack(lower)], [Movement(JANUARY, "pack", "consume", D(450))]
    )
    (catch,) = [item for item in entries if item.entry_id.endswith("breakage-estimate")]
    assert {p.account: p.amount for p in catch.postings}[REVENUE_BREAKAGE] == D("26.32")
    assert accounts["pack"].breakage == D("23.68")
    late = RateChange(date(2026, 6, 1), D("0.20"))
    entries, accounts = credit_entries(
        [pack(late)],
        [
            Movement(JANUARY, "pack", "consume", D(450)),
            Movement(date(2026, 4, 1), "pack", "expire", D(550)),
        ],
    )
    assert not [item for item in entries if item.entry_id.endswith("breakage-estimate")]
    assert (accounts["pack"].breakage, accounts["pack"].deferred) == (D(550), D(0))


def test_rates_in_force_and_their_checks() -> None:
    """The rate on a day is the latest change effective by then; rates outside [0, 1) and
    changes out of order are refused."""
    changes = [RateChange(date(2026, 2, 1), D("0.2")), RateChange(date(2026, 5, 1), D("0.3"))]
    assert rate_on(D("0.1"), changes, date(2026, 1, 31)) == D("0.1")
    assert rate_on(D("0.1"), changes, date(2026, 2, 1)) == D("0.2")
    assert rate_on(D("0.1"), changes, date(2027, 1, 1)) == D("0.3")
    with pytest.raises(BreakageError, match="out of order"):
        check_rates(D("0.1"), changes[::-1])
    with pytest.raises(BreakageError, match=r"\[0, 1\)"):
        check_rates(D("0.1"), [RateChange(date(2026, 2, 1), D(1))])


@given(
    used=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    at=st.integers(0, 6),
    rates=st.tuples(st.integers(0, 95), st.integers(0, 95)),
)
def test_a_catch_up_leaves_the_books_as_the_new_rate_would_have(
    used: list[int], at: int, rates: tuple[int, int]
) -> None:
    """Whatever the consumption and the two rates: entries before the change are those
    without it, and after it breakage equals what the new rate books from the start
    (the catch-up restates the cumulative figure exactly)."""
    old, new = D(rates[0]) / 100, D(rates[1]) / 100
    changed = date(2026, 1, 1 + at * 4 + 2)
    movements, left = [], D(1000)
    for index, units in enumerate(used):
        quantity = min(D(units), left)
        left -= quantity
        if quantity:
            movements.append(Movement(date(2026, 1, 1 + index * 4), "pack", "consume", quantity))

    def terms(rate: D, changes: tuple[RateChange, ...] = ()) -> CreditTerms:
        return CreditTerms(
            "pack", "acme", "credits", D(1000), D(1000), "USD", date(2026, 1, 1),
            "proportional", rate, breakage_changes=changes,
        )  # fmt: skip

    with_change, accounts = credit_entries([terms(old, (RateChange(changed, new),))], movements)
    without, _ = credit_entries([terms(old)], movements)
    assert [e for e in with_change if e.day < changed] == [e for e in without if e.day < changed]
    _, fresh = credit_entries([terms(new)], movements)
    assert accounts["pack"].breakage == fresh["pack"].breakage
    assert accounts["pack"].deferred >= 0
