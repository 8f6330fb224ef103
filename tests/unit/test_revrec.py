"""Revenue recognition: worked examples from public revenue-recognition docs, with their
numbers, and the journal's own rules.

- Stripe, "Revenue Recognition settings examples" (daily amortization): a 120 USD
  subscription from 2026-06-15 12:00 UTC to 2026-10-13 12:00 UTC is recognized 16, 31,
  31, 30 and 12 USD in June to October; deferred revenue is 104 at the end of June.
- Lago, "Wallets and prepaid credits": 100 USD of credits bought on January 1, 30 USD of
  usage consumed in January: 30 USD recognized, a 70 USD credit balance (still deferred).
- The proportional method (ASC 606-10-55-48) as commonly worked: 100 USD of prepaid
  value, 15 USD expected never to be used; each redemption brings 15/85 of its value as
  breakage: 42.50 redeemed brings 7.50, and the full 85 brings all 15.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest

from meterline.core.journal import (
    CONTRA_FREE_CREDITS,
    DEFERRED_CREDITS,
    DEFERRED_FEES,
    RECEIVABLE,
    REVENUE_BREAKAGE,
    REVENUE_CREDITS,
    REVENUE_SUBSCRIPTION,
    REVENUE_USAGE,
    UNBILLED,
    JournalEntry,
    JournalError,
    Posting,
    rollforward,
    trial_balance,
    waterfall,
)
from meterline.core.revrec import (
    CreditTerms,
    Movement,
    credit_entries,
    ratable_fee,
    service_days,
    usage_in_arrears,
)


def test_stripe_daily_amortization_of_a_four_month_subscription() -> None:
    entries = ratable_fee(
        "invoice:INV-1/line:1",
        "acme",
        D("120.00"),
        "USD",
        billed=date(2026, 6, 15),
        start=date(2026, 6, 15),
        end=date(2026, 10, 13),
    )
    assert len(service_days(date(2026, 6, 15), date(2026, 10, 13))) == 120
    months = waterfall(entries)
    assert {month: amount for (month, _, _), amount in months.items()} == {
        "2026-06": D("16.00"),
        "2026-07": D("31.00"),
        "2026-08": D("31.00"),
        "2026-09": D("30.00"),
        "2026-10": D("12.00"),
    }
    june = rollforward(entries, DEFERRED_FEES, "USD", date(2026, 6, 1), date(2026, 6, 30))
    assert (june.opening, june.billed, june.recognized, june.closing) == (
        D(0),
        D("120.00"),
        D("16.00"),
        D("104.00"),
    )
    july = rollforward(entries, DEFERRED_FEES, "USD", date(2026, 7, 1), date(2026, 7, 31))
    assert (july.opening, july.billed, july.recognized, july.closing) == (
        D("104.00"),
        D(0),
        D("31.00"),
        D("73.00"),
    )
    assert trial_balance(entries) == {
        (RECEIVABLE, "USD"): D("120.00"),
        (REVENUE_SUBSCRIPTION, "USD"): D("-120.00"),
    }


def test_a_fee_that_does_not_divide_by_its_days_loses_no_cent() -> None:
    entries = ratable_fee(
        "fee", "acme", D("100.00"), "USD", date(2026, 10, 1), date(2026, 10, 1), date(2026, 11, 1)
    )
    daily = [e.postings[1].amount for e in entries if e.entry_id != "fee/billed"]
    assert len(daily) == 31 and -sum(daily) == D("100.00")
    assert {-amount for amount in daily} == {D("3.22"), D("3.23")}


def test_an_annual_fee_does_not_overstate_january() -> None:
    """1,000.00 a year over 365 days: January is 31/365 of it (84.93 to the cent), not
    the largest-remainder split that gave the leftover cents to the first days."""
    entries = ratable_fee(
        "fee", "acme", D("1000.00"), "USD", date(2026, 1, 1), date(2026, 1, 1), date(2027, 1, 1)
    )
    months = {month: amount for (month, _, _), amount in waterfall(entries).items()}
    assert months["2026-01"] == D("84.93")
    assert sum(months.values()) == D("1000.00")


def test_lago_prepaid_credits_recognized_as_consumed() -> None:
    grant = CreditTerms("wallet", "acme", "USD", D(100), D(100), "USD", date(2026, 1, 1))
    usage = usage_in_arrears(
        "line:usage", "acme", "USD", [(date(2026, 1, 10), D(12)), (date(2026, 1, 20), D(18))], None
    )
    credits, accounts = credit_entries(
        [grant], [Movement(date(2026, 1, 31), "wallet", "consume", D(30))]
    )
    entries = usage + credits
    january = waterfall(entries)
    assert january == {("2026-01", REVENUE_USAGE, "USD"): D(30)}
    assert accounts["wallet"].deferred == D(70)
    balances = trial_balance(entries)
    assert balances[(DEFERRED_CREDITS, "USD")] == D(-70)  # a 70 USD credit balance, owed
    assert balances[(RECEIVABLE, "USD")] == D(100)  # the purchase invoice
    assert (UNBILLED, "USD") not in balances  # the usage was paid by the credits


GIFT_CARD = CreditTerms(
    "card",
    "acme",
    "credits",
    D(100),
    D(100),
    "USD",
    date(2026, 1, 1),
    breakage="proportional",
    breakage_rate=D("0.15"),
)
"""100 USD of prepaid value, 15 USD of it expected never to be used."""


def test_proportional_breakage_follows_the_pattern_of_use() -> None:
    grant = GIFT_CARD
    _, half = credit_entries([grant], [Movement(date(2026, 2, 1), "card", "consume", D("42.50"))])
    assert half["card"].released == D("42.50")
    assert half["card"].breakage == D("7.50")
    assert half["card"].deferred == D("50.00")
    entries, full = credit_entries(
        [grant],
        [
            Movement(date(2026, 2, 1), "card", "consume", D("42.50")),
            Movement(date(2026, 3, 1), "card", "consume", D("42.50")),
        ],
    )
    assert (full["card"].released, full["card"].breakage, full["card"].deferred) == (
        D(85),
        D(15),
        D(0),
    )
    assert waterfall(entries) == {
        ("2026-02", REVENUE_BREAKAGE, "USD"): D("7.50"),
        ("2026-02", REVENUE_CREDITS, "USD"): D("42.50"),
        ("2026-03", REVENUE_BREAKAGE, "USD"): D("7.50"),
        ("2026-03", REVENUE_CREDITS, "USD"): D("42.50"),
    }


def test_a_heavy_user_takes_back_breakage_recognized_early() -> None:
    grant = GIFT_CARD
    _, accounts = credit_entries(
        [grant],
        [
            Movement(date(2026, 2, 1), "card", "consume", D(85)),
            Movement(date(2026, 3, 1), "card", "consume", D(10)),
        ],
    )
    # 95 of 100 used: 5 left unused is all the breakage there can be
    assert (accounts["card"].released, accounts["card"].breakage) == (D(95), D(5))
    assert accounts["card"].deferred == D(0)


@pytest.mark.parametrize(
    ("mode", "breakage", "deferred"), [("expiry", D(60), D(0)), ("never", D(0), D(60))]
)
def test_unused_credit_at_expiry(mode: str, breakage: D, deferred: D) -> None:
    grant = CreditTerms(
        "pool",
        "acme",
        "credits",
        D(1000),
        D(100),
        "USD",
        date(2026, 1, 1),
        breakage=mode,  # type: ignore[arg-type]
    )
    _, accounts = credit_entries(
        [grant],
        [
            Movement(date(2026, 1, 15), "pool", "consume", D(400)),
            Movement(date(2026, 2, 1), "pool", "expire", D(600)),
        ],
    )
    assert accounts["pool"].released == D(40)  # 400 credits at 0.10 each
    assert (accounts["pool"].breakage, accounts["pool"].deferred) == (breakage, deferred)


def test_free_credits_earn_no_revenue_and_offset_usage_as_contra_revenue() -> None:
    free = CreditTerms("promo", "acme", "credits", D(50), D(0), "USD", date(2026, 1, 1))
    entries, _ = credit_entries([free], [Movement(date(2026, 1, 2), "promo", "consume", D(50))])
    assert waterfall(entries) == {} and trial_balance(entries) == {}
    promo_usd = CreditTerms("promo-usd", "acme", "USD", D(50), D(0), "USD", date(2026, 1, 1))
    usage = usage_in_arrears("line", "acme", "USD", [(date(2026, 1, 2), D(80))], date(2026, 2, 1))
    applied, _ = credit_entries(
        [promo_usd], [Movement(date(2026, 1, 2), "promo-usd", "consume", D(50))]
    )
    assert waterfall(usage + applied) == {
        ("2026-01", CONTRA_FREE_CREDITS, "USD"): D(-50),
        ("2026-01", REVENUE_USAGE, "USD"): D(80),
    }


def test_rollover_moves_deferred_value_without_revenue() -> None:
    grant = CreditTerms("jan", "acme", "credits", D(100), D(50), "USD", date(2026, 1, 1))
    entries, accounts = credit_entries(
        [grant],
        [
            Movement(date(2026, 1, 20), "jan", "consume", D(60)),
            Movement(date(2026, 2, 1), "jan", "rollover", D(30), to="jan/rollover"),
            Movement(date(2026, 2, 10), "jan/rollover", "consume", D(30)),
        ],
    )
    jan, rolled = accounts["jan"], accounts["jan/rollover"]
    assert (jan.released, jan.moved, jan.breakage, jan.deferred) == (D(30), D(15), D(5), D(0))
    assert (rolled.billed, rolled.released, rolled.deferred) == (D(15), D(15), D(0))
    assert waterfall(entries) == {
        ("2026-01", REVENUE_CREDITS, "USD"): D(30),
        ("2026-02", REVENUE_BREAKAGE, "USD"): D(5),
        ("2026-02", REVENUE_CREDITS, "USD"): D(15),
    }


def test_a_void_reverses_what_is_still_deferred() -> None:
    grant = CreditTerms("g", "acme", "credits", D(10), D(10), "USD", date(2026, 1, 1))
    entries, accounts = credit_entries(
        [grant],
        [
            Movement(date(2026, 1, 2), "g", "consume", D(4)),
            Movement(date(2026, 1, 3), "g", "void", D(0)),
        ],
    )
    assert (accounts["g"].released, accounts["g"].reversed, accounts["g"].deferred) == (
        D(4),
        D(6),
        D(0),
    )
    assert trial_balance(entries)[(RECEIVABLE, "USD")] == D(4)


def test_an_unbalanced_entry_cannot_be_made() -> None:
    with pytest.raises(JournalError, match="debits != credits"):
        JournalEntry(
            "x",
            date(2026, 1, 1),
            "",
            "",
            "acme",
            (Posting(RECEIVABLE, D(10), "USD"), Posting(REVENUE_USAGE, D(-9), "USD")),
        )
    with pytest.raises(JournalError, match="unknown"):
        JournalEntry(
            "x",
            date(2026, 1, 1),
            "",
            "",
            "acme",
            (Posting("revenue:other", D(10), "USD"), Posting(RECEIVABLE, D(-10), "USD")),
        )


def _recognized(recognition: str, timezone: str = "UTC") -> dict[date, D]:
    from meterline.core.journal import REVENUE_SUBSCRIPTION
    from meterline.core.revrec import ratable_fee

    entries = ratable_fee(
        "fee", "c", D("1200.00"), "USD", date(2026, 1, 15), date(2026, 1, 15),
        date(2027, 1, 15), recognition=recognition, timezone=timezone,  # type: ignore[arg-type]
    )  # fmt: skip
    by_day: dict[date, D] = {}
    for item in entries:
        for posting in item.postings:
            if posting.account == REVENUE_SUBSCRIPTION:
                by_day[item.day] = by_day.get(item.day, D(0)) - posting.amount
    assert sum(by_day.values(), D(0)) == D("1200.00")
    return by_day


def _between(by_day: dict[date, D], start: date, end: date) -> D:
    return sum((amount for day, amount in by_day.items() if start <= day < end), D(0))


def test_recognition_options_spread_an_annual_fee_by_day_second_or_month() -> None:
    """1,200.00 for a year from January 15: by month with prorated ends, each full calendar
    month earns 100.00 and January 2026 17/31 of one; evenly per service month, each month
    from the 15th earns 100.00; by day, a 31-day month earns 31/365; by second, Berlin's
    23-hour March 29 earns less than its neighbours."""
    prorated = _recognized("month_prorated")
    assert _between(prorated, date(2026, 3, 1), date(2026, 4, 1)) == D("100.00")
    assert _between(prorated, date(2026, 1, 1), date(2026, 2, 1)) == D("54.84")
    monthly = _recognized("month")
    assert _between(monthly, date(2026, 2, 15), date(2026, 3, 15)) == D("100.00")
    daily = _recognized("day")
    assert abs(_between(daily, date(2026, 3, 1), date(2026, 4, 1)) - D("101.92")) <= D("0.01")
    seconds = _recognized("second", "Europe/Berlin")
    assert seconds[date(2026, 3, 29)] < seconds[date(2026, 3, 28)]
