"""The demo's calendar: its month is the last full one before now, dates move by months."""

from __future__ import annotations

from datetime import date, datetime

from hypothesis import given
from hypothesis import strategies as st

from meterline.core.events import timestamp_to_us
from meterline.demo.calendar import (
    REFERENCE_MONTH,
    add_months,
    days_in,
    demo_month,
    months_between,
    moved_text,
)
from meterline.demo.workload import generate_month


def _us(text: str) -> int:
    return timestamp_to_us(datetime.fromisoformat(text.replace("Z", "+00:00")))


def test_the_demo_month_is_the_last_full_month() -> None:
    """Mid-month, on the first instant of a month and across a year end."""
    assert demo_month(_us("2026-12-06T21:00:00Z")) == date(2026, 11, 1)
    assert demo_month(_us("2027-01-01T00:00:00Z")) == date(2026, 12, 1)
    assert demo_month(_us("2026-12-31T23:59:59.999999Z")) == date(2026, 11, 1)


def test_a_day_past_the_months_end_becomes_its_last_day() -> None:
    """October 31 moved one month is November 30; to a leap February, the 29th."""
    assert add_months(date(2026, 10, 31), 1) == date(2026, 11, 30)
    assert add_months(date(2026, 10, 30), 16) == date(2028, 2, 29)
    assert add_months(date(2026, 10, 1), -10) == date(2025, 12, 1)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 1)), st.integers(-600, 600))
def test_moving_by_months_keeps_the_month_arithmetic(day: date, months: int) -> None:
    """add_months lands exactly ``months`` calendar months away, inside that month."""
    moved = add_months(day, months)
    assert months_between(day, moved) == months
    assert moved.day == min(day.day, days_in(moved))


def test_moved_text_moves_dates_and_timestamps_but_not_other_numbers() -> None:
    """Dates inside timestamps move; amounts and ids with digits do not."""
    text = "start: 2026-10-01, at 2026-10-30T16:45:00Z, amount 2026-10 12026-10-011 9.99"
    moved = moved_text(text, date(2027, 2, 1))
    assert moved == "start: 2027-02-01, at 2027-02-28T16:45:00Z, amount 2026-10 12026-10-011 9.99"
    assert moved_text(text, REFERENCE_MONTH) == text


def test_the_generated_month_stays_inside_its_month() -> None:
    """Every event of a generated February falls in February, and the reference month's
    events are unchanged by the month parameter's default."""
    february = generate_month(scale=0.02, month=date(2028, 2, 1))
    assert {event["timestamp"][:7] for event in february} == {"2028-02"}
    assert generate_month(scale=0.02) == generate_month(scale=0.02, month=REFERENCE_MONTH)
    assert generate_month(scale=0.02)[0]["timestamp"].startswith("2026-10-")
