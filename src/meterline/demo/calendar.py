"""When the demo's month is: the last full calendar month before "now", whatever today is.

The demo's files (``pricing.yaml``, the late event, the new tier) are written for one
reference month, October 2026, and read as worked examples by the tests. The demo moves
every date in them by whole months to its own month, so a contract that starts on the
first, an upgrade on the 15th and a promotion that expires on the 11th keep their places
(a day past the month's end becomes its last day). A rerun on the same ledger tells the
month the ledger already holds, so a ledger made in one month can be retold in another.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime

REFERENCE_MONTH = date(2026, 10, 1)
"""The month the demo's files are written for."""

_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")


def month_of(instant_us: int) -> date:
    """The first day of the UTC calendar month holding ``instant_us``."""
    moment = datetime.fromtimestamp(instant_us / 1_000_000, tz=UTC)
    return date(moment.year, moment.month, 1)


def add_months(day: date, months: int) -> date:
    """``day`` moved by whole months; a day past the new month's end becomes its last."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def months_between(earlier: date, later: date) -> int:
    """Whole calendar months from ``earlier``'s month to ``later``'s."""
    return (later.year - earlier.year) * 12 + later.month - earlier.month


def demo_month(now_us: int) -> date:
    """The last full calendar month before ``now_us`` (UTC)."""
    return add_months(month_of(now_us), -1)


def days_in(month: date) -> int:
    return calendar.monthrange(month.year, month.month)[1]


def moved_text(text: str, month: date) -> str:
    """``text`` with every ``YYYY-MM-DD`` moved from the reference month to ``month``."""
    shift = months_between(REFERENCE_MONTH, month)
    if shift == 0:
        return text

    def move(match: re.Match[str]) -> str:
        year, month_number, day = (int(part) for part in match.groups())
        return add_months(date(year, month_number, day), shift).isoformat()

    return _DATE.sub(move, text)
