"""Billing periods: calendar and anniversary cycles across DST, tiling, and proration."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from decimal import localcontext
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.money import MONEY_CONTEXT, round_amount
from meterline.core.periods import (
    ANCHORS,
    CYCLES,
    FRACTION_PLACES,
    PRORATIONS,
    BillingCycle,
    BillingPeriod,
    cycle_errors,
    local_date,
    local_midnight_us,
    next_period,
    period_containing,
    periods_overlapping,
    proration_fraction,
)

MICROSECONDS_PER_HOUR = 3_600 * 1_000_000
NEW_YORK = "America/New_York"
BERLIN = "Europe/Berlin"
# Zones with DST, half-hour offsets, midnight transitions (Sao Paulo until 2019) and a
# skipped day (Apia, 2011-12-30).
ZONES = [
    "UTC",
    NEW_YORK,
    BERLIN,
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Pacific/Apia",
]
RANGE_START_US = 946_684_800 * 1_000_000  # 2000-01-01T00:00:00Z
RANGE_END_US = 2_524_608_000 * 1_000_000  # 2050-01-01T00:00:00Z
HALF_FRACTION_ULP = Fraction(1, 2 * 10**FRACTION_PLACES)


def instant(text: str, timezone: str = "UTC") -> int:
    """Microseconds since the epoch of local wall time ``text`` in ``timezone``."""
    local = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(timezone))
    return (local - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def hours(period: BillingPeriod) -> int:
    length = period.end_us - period.start_us
    assert length % MICROSECONDS_PER_HOUR == 0
    return length // MICROSECONDS_PER_HOUR


def labels(cycle: BillingCycle, start: str, end: str) -> list[str]:
    periods = periods_overlapping(
        cycle, instant(start, cycle.timezone), instant(end, cycle.timezone)
    )
    return [period.label(cycle.timezone) for period in periods]


# --- calendar cycles --------------------------------------------------------------------


def test_calendar_monthly_in_utc() -> None:
    """October 2026 in UTC is [Oct 1, Nov 1) at midnight, 744 hours long."""
    cycle = BillingCycle()
    period = period_containing(cycle, instant("2026-10-15T14:00"))
    assert period == BillingPeriod(instant("2026-10-01T00:00"), instant("2026-11-01T00:00"))
    assert period.label("UTC") == "2026-10-01" and hours(period) == 744
    assert period_containing(cycle, period.start_us) == period
    assert period_containing(cycle, period.end_us - 1) == period
    assert period_containing(cycle, period.end_us).label("UTC") == "2026-11-01"
    assert labels(cycle, "2026-01-01T00:00", "2027-01-01T00:00") == [
        f"2026-{month:02d}-01" for month in range(1, 13)
    ]


def test_calendar_quarterly_and_annual_in_utc() -> None:
    """Quarters start Jan/Apr/Jul/Oct 1; years start Jan 1."""
    quarterly = BillingCycle(cycle="quarterly")
    assert labels(quarterly, "2026-02-10T00:00", "2027-01-02T00:00") == [
        "2026-01-01",
        "2026-04-01",
        "2026-07-01",
        "2026-10-01",
        "2027-01-01",
    ]
    assert hours(period_containing(quarterly, instant("2026-05-05T05:05"))) == 91 * 24
    annual = BillingCycle(cycle="annual")
    period = period_containing(annual, instant("2028-07-01T00:00"))
    assert period == BillingPeriod(instant("2028-01-01T00:00"), instant("2029-01-01T00:00"))
    assert hours(period) == 366 * 24
    assert labels(annual, "2026-12-31T23:00", "2027-01-01T00:00:01") == [
        "2026-01-01",
        "2027-01-01",
    ]


def test_calendar_weekly_starts_on_monday_and_daily_at_midnight() -> None:
    """Calendar weeks are ISO weeks; 2026-12-07 is a Monday. A day is midnight to midnight."""
    weekly = BillingCycle(cycle="weekly")
    assert labels(weekly, "2026-12-09T10:00", "2026-12-22T00:00") == [
        "2026-12-07",
        "2026-12-14",
        "2026-12-21",
    ]
    assert hours(period_containing(weekly, instant("2026-12-13T23:59"))) == 7 * 24
    daily = BillingCycle(cycle="daily", timezone=BERLIN)
    october_25 = period_containing(daily, instant("2026-10-25T12:00", BERLIN))
    assert october_25.label(BERLIN) == "2026-10-25" and hours(october_25) == 25
    assert len(labels(daily, "2026-02-27T05:00", "2026-03-02T00:00")) == 3


def test_every_n_cycles_by_calendar_and_anniversary() -> None:
    """Every 2 weeks from the anniversary's weekday; every 2 months by the calendar from
    January; every 6 months from an anniversary on the 31st; every 10 days."""
    fortnight = BillingCycle("weekly", "anniversary", "UTC", date(2026, 12, 3), every=2)
    assert labels(fortnight, "2026-12-03T00:00", "2027-01-15T00:00") == [
        "2026-12-03",
        "2026-12-17",
        "2026-12-31",
        "2027-01-14",
    ]
    assert hours(period_containing(fortnight, instant("2026-12-16T23:00"))) == 14 * 24
    bimonthly = BillingCycle("monthly", every=2)
    assert labels(bimonthly, "2026-02-10T00:00", "2026-07-02T00:00") == [
        "2026-01-01",
        "2026-03-01",
        "2026-05-01",
        "2026-07-01",
    ]
    half_year = BillingCycle("monthly", "anniversary", "UTC", date(2026, 8, 31), every=6)
    assert labels(half_year, "2026-08-31T00:00", "2027-09-01T00:00") == [
        "2026-08-31",
        "2027-02-28",
        "2027-08-31",
    ]
    ten_days = BillingCycle("daily", "anniversary", "UTC", date(2026, 12, 1), every=10)
    assert labels(ten_days, "2026-12-01T00:00", "2026-12-22T00:00") == [
        "2026-12-01",
        "2026-12-11",
        "2026-12-21",
    ]


def test_calendar_monthly_in_new_york_across_dst() -> None:
    """Local midnights: March 2026 is 743 hours, November 721, October 744."""
    cycle = BillingCycle(timezone=NEW_YORK)
    march = period_containing(cycle, instant("2026-03-20T12:00", NEW_YORK))
    assert march.start_us == instant("2026-03-01T00:00", NEW_YORK)
    assert march.start_us == instant("2026-03-01T05:00")  # EST, UTC-5
    assert march.end_us == instant("2026-04-01T04:00")  # EDT, UTC-4
    assert hours(march) == 743
    november = next_period(cycle, period_containing(cycle, instant("2026-10-31T23:59", NEW_YORK)))
    assert november.label(NEW_YORK) == "2026-11-01" and hours(november) == 721
    assert hours(period_containing(cycle, instant("2026-10-01T00:00", NEW_YORK))) == 744
    # One microsecond before local midnight is still the previous month.
    assert period_containing(cycle, november.start_us - 1).label(NEW_YORK) == "2026-10-01"
    quarter = period_containing(BillingCycle("quarterly", timezone=NEW_YORK), march.start_us)
    assert quarter.label(NEW_YORK) == "2026-01-01" and hours(quarter) == 90 * 24 - 1
    year = period_containing(BillingCycle("annual", timezone=NEW_YORK), march.start_us)
    assert hours(year) == 365 * 24  # the spring hour comes back in the autumn


def test_calendar_monthly_in_berlin_has_a_745_hour_october() -> None:
    """Europe/Berlin leaves summer time on 2026-10-25: October is 745 hours, March 743."""
    cycle = BillingCycle(timezone=BERLIN)
    assert hours(period_containing(cycle, instant("2026-10-25T12:00", BERLIN))) == 745
    assert hours(period_containing(cycle, instant("2026-03-29T12:00", BERLIN))) == 743


def test_midnight_in_a_gap_starts_at_the_transition() -> None:
    """Sao Paulo skipped 2018-11-04 00:00-01:00: that day starts at 01:00 local."""
    first = local_midnight_us("America/Sao_Paulo", date(2018, 11, 4))
    assert first == instant("2018-11-04T03:00")  # 00:00 at UTC-3, which became 01:00 at UTC-2
    assert local_date("America/Sao_Paulo", first) == date(2018, 11, 4)
    assert local_date("America/Sao_Paulo", first - 1) == date(2018, 11, 3)
    # Samoa skipped 2011-12-30 entirely: its "midnight" is the start of Dec 31.
    skipped = local_midnight_us("Pacific/Apia", date(2011, 12, 30))
    assert skipped == local_midnight_us("Pacific/Apia", date(2011, 12, 31))
    assert local_date("Pacific/Apia", skipped - 1) == date(2011, 12, 29)


def test_periods_tile_across_a_skipped_day_and_a_skipped_midnight() -> None:
    """Anniversary on the 30th in Apia (Dec 30 2011 never happened) and the 4th in Sao Paulo."""
    apia = BillingCycle(
        anchor="anniversary", timezone="Pacific/Apia", anchor_date=date(2011, 1, 30)
    )
    periods = periods_overlapping(
        apia, instant("2011-11-15T00:00", "Pacific/Apia"), instant("2012-02-15T00:00", "UTC")
    )
    assert [period.label("Pacific/Apia") for period in periods] == [
        "2011-10-30",
        "2011-11-30",
        "2011-12-31",  # the 30th's midnight is the first instant of the 31st
        "2012-01-30",
    ]
    assert all(a.end_us == b.start_us for a, b in pairwise(periods))
    sao_paulo = BillingCycle(
        anchor="anniversary", timezone="America/Sao_Paulo", anchor_date=date(2018, 1, 4)
    )
    november = period_containing(sao_paulo, instant("2018-11-10T00:00"))
    assert november.start_us == instant("2018-11-04T03:00")
    assert next_period(sao_paulo, period_containing(sao_paulo, november.start_us - 1)) == november


# --- anniversary cycles -----------------------------------------------------------------


def test_anniversary_from_january_31_uses_the_original_day() -> None:
    """Jan 31 → Feb 28 → Mar 31 → Apr 30: clamped per month, never cumulatively."""
    cycle = BillingCycle(anchor="anniversary", anchor_date=date(2026, 1, 31))
    assert labels(cycle, "2026-01-31T00:00", "2026-08-01T00:00") == [
        "2026-01-31",
        "2026-02-28",
        "2026-03-31",
        "2026-04-30",
        "2026-05-31",
        "2026-06-30",
        "2026-07-31",
    ]
    assert period_containing(cycle, instant("2028-02-29T12:00")).label("UTC") == "2028-02-29"
    # Before its start date the contract's cycle extends backwards the same way.
    assert period_containing(cycle, instant("2026-01-30T23:59")).label("UTC") == "2025-12-31"
    february = period_containing(cycle, instant("2026-03-01T00:00"))
    assert february == BillingPeriod(instant("2026-02-28T00:00"), instant("2026-03-31T00:00"))


def test_anniversary_quarterly_and_annual() -> None:
    """Quarterly from Nov 30 returns to the 30th after February; annual from Feb 29."""
    quarterly = BillingCycle("quarterly", "anniversary", NEW_YORK, date(2025, 11, 30))
    assert labels(quarterly, "2025-12-01T00:00", "2026-12-01T00:00") == [
        "2025-11-30",
        "2026-02-28",
        "2026-05-30",
        "2026-08-30",
        "2026-11-30",
    ]
    first = period_containing(quarterly, instant("2026-01-01T00:00", NEW_YORK))
    assert first.start_us == instant("2025-11-30T00:00", NEW_YORK)
    annual = BillingCycle("annual", "anniversary", "UTC", date(2024, 2, 29))
    assert labels(annual, "2024-03-01T00:00", "2028-03-01T00:00") == [
        "2024-02-29",
        "2025-02-28",
        "2026-02-28",
        "2027-02-28",
        "2028-02-29",
    ]


# --- tiling ---------------------------------------------------------------------------


@st.composite
def billing_cycles(draw: st.DrawFn) -> BillingCycle:
    anchor = draw(st.sampled_from(ANCHORS))
    anchor_date = draw(st.dates(date(1995, 1, 1), date(2040, 12, 31)))
    return BillingCycle(
        draw(st.sampled_from(CYCLES)),
        anchor,
        draw(st.sampled_from(ZONES)),
        anchor_date if anchor == "anniversary" else None,
        draw(st.integers(1, 4)),
    )


@settings(max_examples=300)
@given(
    billing_cycles(),
    st.integers(RANGE_START_US, RANGE_END_US),
    st.integers(1, 3 * 366 * 24 * MICROSECONDS_PER_HOUR),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=20),
)
def test_periods_tile_a_range(
    cycle: BillingCycle, start_us: int, length_us: int, samples: list[int]
) -> None:
    """No gap, no overlap: each period ends where the next starts; every instant is in one."""
    end_us = start_us + length_us
    periods = periods_overlapping(cycle, start_us, end_us)
    assert periods[0].contains(start_us) and periods[-1].contains(end_us - 1)
    for earlier, later in pairwise(periods):
        assert earlier.end_us == later.start_us
        assert next_period(cycle, earlier) == later
    assert periods == sorted(periods)
    for sample in samples:
        point = start_us + length_us * sample // 10**6
        point = min(point, end_us - 1)
        assert sum(period.contains(point) for period in periods) == 1
        assert period_containing(cycle, point) in periods
    for period in periods:
        # Every boundary is the local midnight of the label's date.
        start_date = local_date(cycle.timezone, period.start_us)
        assert local_midnight_us(cycle.timezone, start_date) == period.start_us


def test_periods_overlapping_edges() -> None:
    """An empty range meets nothing; a reversed one is refused; the end is exclusive."""
    cycle = BillingCycle()
    october = instant("2026-10-01T00:00")
    assert periods_overlapping(cycle, october, october) == []
    with pytest.raises(ValueError, match="must not be after"):
        periods_overlapping(cycle, october + 1, october)
    assert len(periods_overlapping(cycle, october, instant("2026-11-01T00:00"))) == 1
    assert len(periods_overlapping(cycle, october - 1, instant("2026-11-01T00:00"))) == 2


# --- the period value -------------------------------------------------------------------


def test_billing_period_is_half_open_and_ordered() -> None:
    """start < end is enforced; the end instant belongs to the next period."""
    period = BillingPeriod(10, 20)
    assert period.contains(10) and period.contains(19)
    assert not period.contains(20) and not period.contains(9)
    assert BillingPeriod(10, 20) < BillingPeriod(20, 30)
    with pytest.raises(ValueError, match="must be before"):
        BillingPeriod(20, 20)
    with pytest.raises(TypeError):
        BillingPeriod(1.5, 2)  # type: ignore[arg-type]
    assert BillingPeriod(instant("2026-10-01T00:00", NEW_YORK), 2**60).label(NEW_YORK) == (
        "2026-10-01"
    )


def test_next_period_refuses_a_period_off_the_cycle() -> None:
    """A period whose end is not a boundary of the cycle has no defined successor."""
    with pytest.raises(ValueError, match="not a boundary"):
        next_period(BillingCycle(), BillingPeriod(0, instant("2026-10-15T00:00")))


# --- validation -------------------------------------------------------------------------


def test_cycle_errors_name_the_path() -> None:
    """Each problem is reported with its path; a valid cycle has none."""
    assert cycle_errors(BillingCycle()) == []
    assert cycle_errors(BillingCycle("annual", "anniversary", BERLIN, date(2026, 3, 1))) == []
    bad = BillingCycle("fortnightly", "fiscal", "Mars/Base", every=0)  # type: ignore[arg-type]
    assert cycle_errors(bad, "contracts[2].billing") == [
        "contracts[2].billing.cycle: 'fortnightly' is not one of daily, weekly, monthly,"
        " quarterly, annual",
        "contracts[2].billing.anchor: 'fiscal' is not one of calendar, anniversary",
        "contracts[2].billing.every: 0 is not a whole number from 1 to 1000",
        "contracts[2].billing.timezone: 'Mars/Base' is not a known time zone",
    ]
    assert cycle_errors(BillingCycle(anchor="anniversary")) == [
        "billing.anchor_date: anniversary billing needs the contract's local start date"
    ]
    as_datetime = BillingCycle(anchor="anniversary", anchor_date=datetime(2026, 1, 1))
    assert cycle_errors(as_datetime) == ["billing.anchor_date: expected a date, got datetime"]
    for timezone in ("", "utc", "../etc/passwd", "America", "zone.tab"):
        assert cycle_errors(BillingCycle(timezone=timezone)) == [
            f"billing.timezone: {timezone!r} is not a known time zone"
        ]


def test_invalid_cycles_and_zones_are_refused_by_the_functions() -> None:
    """The computations raise with the same messages instead of guessing."""
    with pytest.raises(ValueError, match=r"billing\.timezone: 'Mars/Base'"):
        period_containing(BillingCycle(timezone="Mars/Base"), 0)
    with pytest.raises(ValueError, match="anchor_date"):
        periods_overlapping(BillingCycle(anchor="anniversary"), 0, 1)
    with pytest.raises(ValueError, match="timezone: 'Mars/Base'"):
        local_date("Mars/Base", 0)
    with pytest.raises(ValueError, match="timezone"):
        proration_fraction(BillingPeriod(0, 1), 0, 1, "Mars/Base")
    with pytest.raises(ValueError, match="by: 'hour'"):
        proration_fraction(BillingPeriod(0, 1), 0, 1, "UTC", "hour")  # type: ignore[arg-type]


# --- proration --------------------------------------------------------------------------


def assert_rounded_from(fraction: D, exact: Fraction) -> None:
    """``fraction`` is ``exact`` rounded to FRACTION_PLACES places (within half a unit)."""
    exponent = fraction.as_tuple().exponent
    assert isinstance(exponent, int) and exponent >= -FRACTION_PLACES
    assert abs(Fraction(fraction) - exact) <= HALF_FRACTION_ULP


def test_upgrade_mid_day_by_day_gives_the_change_day_to_the_new_terms() -> None:
    """Upgrade on Oct 15 at 14:00: old terms Oct 1..14 = 14/31, new Oct 15..31 = 17/31."""
    cycle = BillingCycle(timezone=NEW_YORK)
    change = instant("2026-10-15T14:00", NEW_YORK)
    october = period_containing(cycle, change)
    old = proration_fraction(october, october.start_us, change, NEW_YORK)
    new = proration_fraction(october, change, october.end_us, NEW_YORK)
    assert_rounded_from(old, Fraction(14, 31))
    assert_rounded_from(new, Fraction(17, 31))
    with localcontext(MONEY_CONTEXT):
        assert old + new == D(1)
    # Coverage past the period is clipped; the default is by day.
    assert proration_fraction(october, change, change * 2, NEW_YORK, "day") == new
    # A change at local midnight splits the same way as one later that day.
    midnight = instant("2026-10-15T00:00", NEW_YORK)
    assert proration_fraction(october, october.start_us, midnight, NEW_YORK) == old


def test_proration_by_second() -> None:
    """Covered microseconds over the period's, across a 745-hour Berlin October."""
    october = period_containing(BillingCycle(timezone=BERLIN), instant("2026-10-10T00:00"))
    change = instant("2026-10-15T14:00", BERLIN)
    old = proration_fraction(october, october.start_us, change, BERLIN, "second")
    new = proration_fraction(october, change, october.end_us, BERLIN, "second")
    length = october.end_us - october.start_us
    assert_rounded_from(old, Fraction(change - october.start_us, length))
    assert_rounded_from(new, Fraction(october.end_us - change, length))
    with localcontext(MONEY_CONTEXT):
        assert old + new == D(1)
    half = october.start_us + length // 2
    assert proration_fraction(october, october.start_us, half, BERLIN, "second") == D("0.5")


def test_full_and_empty_coverage_are_exactly_one_and_zero() -> None:
    """Full coverage is Decimal(1), nothing is Decimal(0), whatever the method."""
    october = period_containing(BillingCycle(timezone=NEW_YORK), instant("2026-10-10T00:00"))
    for by in PRORATIONS:
        full = proration_fraction(october, 0, 2**62, NEW_YORK, by)
        assert full == D(1) and str(full) == "1"
        assert str(proration_fraction(october, 0, october.start_us, NEW_YORK, by)) == "0"
        assert str(proration_fraction(october, october.end_us, 2**62, NEW_YORK, by)) == "0"
        assert str(proration_fraction(october, 5, 5, NEW_YORK, by)) == "0"
    # By day, a coverage within one local day yields that day to whatever follows it.
    start, end = instant("2026-10-15T09:00", NEW_YORK), instant("2026-10-15T17:00", NEW_YORK)
    assert proration_fraction(october, start, end, NEW_YORK) == D(0)
    assert proration_fraction(october, start, end, NEW_YORK, "second") > 0


def test_stripe_upgrade_halfway_through_the_month() -> None:
    """Stripe's proration example, in April 2026 (30 days), switching Apr 16 00:00 UTC.

    Stripe, "Prorations": a customer upgrading from a 10 USD monthly plan to a 20 USD one
    halfway through the billing period is billed an additional 5 USD: -5 USD for unused
    time on the original plan and +10 USD for the remaining time on the new plan.
    """
    april = period_containing(BillingCycle(), instant("2026-04-10T00:00"))
    switch = instant("2026-04-16T00:00")
    old_price, new_price = D(10), D(20)
    for by in PRORATIONS:
        used = proration_fraction(april, april.start_us, switch, "UTC", by)
        remaining = proration_fraction(april, switch, april.end_us, "UTC", by)
        assert used == remaining == D("0.5")
        with localcontext(MONEY_CONTEXT):
            old_charge = round_amount(old_price * used, "USD")
            new_charge = round_amount(new_price * remaining, "USD")
            unused_credit = -round_amount(old_price * remaining, "USD")  # billed in advance
            assert old_charge == D("5.00")
            assert new_charge == D("10.00")
            assert unused_credit == D("-5.00")
            assert unused_credit + new_charge == D("5.00")  # the additional amount billed


@settings(max_examples=300)
@given(billing_cycles(), st.integers(RANGE_START_US, RANGE_END_US), st.integers(0, 10**6))
def test_old_and_new_fractions_sum_to_exactly_one(
    cycle: BillingCycle, moment_us: int, position: int
) -> None:
    """For any change inside a period, old + new terms cover exactly the whole, both ways."""
    period = period_containing(cycle, moment_us)
    change = period.start_us + (period.end_us - period.start_us) * position // 10**6
    for by in PRORATIONS:
        old = proration_fraction(period, period.start_us, change, cycle.timezone, by)
        new = proration_fraction(period, change, period.end_us, cycle.timezone, by)
        with localcontext(MONEY_CONTEXT):
            assert old + new == D(1)
        assert D(0) <= old <= D(1) and D(0) <= new <= D(1)


@given(
    st.sampled_from(ZONES),
    st.integers(RANGE_START_US, RANGE_END_US),
    st.lists(st.integers(0, 10**6), min_size=2, max_size=6),
)
def test_any_split_of_a_period_partitions_its_days(
    timezone: str, moment_us: int, positions: list[int]
) -> None:
    """Several changes in one period: each piece is a whole number of days, and they add up.

    Only two complementary fractions are promised to sum to exactly 1 (more pieces can each
    carry rounding); the day counts behind them always partition the period.
    """
    period = period_containing(BillingCycle(timezone=timezone), moment_us)
    days = (local_date(timezone, period.end_us) - local_date(timezone, period.start_us)).days
    length = period.end_us - period.start_us
    cuts = sorted(period.start_us + length * position // 10**6 for position in positions)
    edges = [period.start_us, *cuts, period.end_us]
    counts = []
    for start, end in pairwise(edges):
        fraction = Fraction(proration_fraction(period, start, end, timezone))
        count = round(fraction * days)
        assert abs(fraction - Fraction(count, days)) <= HALF_FRACTION_ULP
        counts.append(count)
    assert sum(counts) == days
