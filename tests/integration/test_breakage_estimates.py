"""A change of the expected breakage rate, and a grant's ``unit_cost``, through the
pricing file, a real ledger and the books (``finance.books.build_books``).

1,000 credits bought at 0.90 each (``unit_cost``: paid 900.00), 10% expected never to be
used; 450 used in October: 405.00 of credit revenue (450 x 0.90) and 90.00 x 450 / 900 =
45.00 of breakage. A revision applied on November 10 estimates 20% from November 15:
180.00 x 450 / 800 = 101.25 for what was used, so one catch-up of 56.25 on November 15,
and October's entries stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from meterline.billing.service import open_billing
from meterline.config.source import ConfigurationError
from meterline.core.events import timestamp_to_us
from meterline.core.journal import REVENUE_BREAKAGE, REVENUE_CREDITS
from meterline.finance.books import build_books
from tests.conftest import Location

NewDb = Callable[..., Location]


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


PRICING = """\
credit_types:
  - {key: credits, currency: USD, unit_value: "1.00"}
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices: [{meter: tokens, model: per_unit, unit_amount: 1, credit_type: credits}]
contracts:
  - customer: acme
    plan: p
    start: 2026-10-01
    credits:
      grants:
        - key: pack
          credit_type: credits
          amount: 1000
          unit_cost: "0.90"
          expires: 2027-10-01
          breakage: proportional
          breakage_rate: "0.10"
"""
CHANGE = '          breakage_rate_changes: [{effective: %s, rate: "0.20"}]\n'
EVENTS = [
    {"id": f"e{n}", "customer": "acme", "type": "llm", "timestamp": stamp, "properties": p}
    for n, (stamp, p) in enumerate(
        [("2026-10-05T10:00:00Z", {"tokens": 200}), ("2026-10-20T10:00:00Z", {"tokens": 250})]
    )
]


def _breakage(books: object) -> dict[tuple[date, str], D]:
    """Breakage and credit revenue recognized, by day and account (positive)."""
    found: dict[tuple[date, str], D] = {}
    for item in books.entries:  # type: ignore[attr-defined]
        for posting in item.postings:
            if posting.account in (REVENUE_BREAKAGE, REVENUE_CREDITS):
                key = (item.day, posting.account)
                found[key] = found.get(key, D(0)) - posting.amount
    return found


def test_a_revision_changing_the_estimate_books_one_catch_up(new_db: NewDb) -> None:
    """The catch-up (56.25) is booked on the change's day; October is unchanged; the
    grant's cost basis is its unit_cost."""
    now = [at(2026, 11, 10)]
    with open_billing(new_db(), clock=lambda: now[0]) as billing:
        assert billing.ledger.ingest(EVENTS).accepted == 2
        billing.apply(PRICING)
        before = build_books(billing, at(2026, 11, 20))
        october = [e for e in before.entries if e.day < date(2026, 11, 1)]
        assert sum(_breakage(before).values(), D(0)) == D("405.00") + D("45.00")
        billing.apply(PRICING + CHANGE % "2026-11-15")
        after = build_books(billing, at(2026, 11, 20))
        assert [e for e in after.entries if e.day < date(2026, 11, 1)] == october
        (catch,) = [e for e in after.entries if e.entry_id.endswith("breakage-estimate")]
        assert catch.day == date(2026, 11, 15)
        assert _breakage(after)[(date(2026, 11, 15), REVENUE_BREAKAGE)] == D("56.25")
        # as of a day before the change, nothing of it is booked yet
        earlier = build_books(billing, at(2026, 11, 12))
        assert not [e for e in earlier.entries if e.entry_id.endswith("breakage-estimate")]
        (grant,) = [g for g in after.grants.values() if g.terms.grant_id == "acme/pack"]
        assert (grant.billed, grant.released, grant.breakage) == (D(900), D(405), D("101.25"))


def test_a_change_effective_before_now_is_refused(new_db: NewDb) -> None:
    """A change dated before the revision is applied would restate booked entries: the
    revision is refused, naming the contract and the date."""
    with open_billing(new_db(), clock=lambda: at(2026, 11, 10)) as billing:
        billing.apply(PRICING)
        with pytest.raises(ConfigurationError) as caught:
            billing.apply(PRICING + CHANGE % "2026-11-01")
        message = str(caught.value)
        assert "contracts[0].credits" in message and "2026-11-01" in message, message
        assert "history is not rewritten" in message
