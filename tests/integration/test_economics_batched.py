"""Unit economics read every customer's open period in one statement
(``billing.period_reads``), on both stores: what it gives equals, to the last digit of
every Decimal, what the per-customer reads give (each draft reading its own buckets), on
a ledger with a closed October, credit windows, a late event into the closed period and
one into the open period, and a price change in the middle of the open period; and both
equal the re-rating from raw events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from meterline.billing import drafts
from meterline.billing.service import Billing
from meterline.core.economics import OPEN_PERIOD_INVOICE, UsageSlice, summarize
from meterline.core.events import format_timestamp
from meterline.ledger.location import Location
from tests.integration.test_buckets import as_data, kept
from tests.property.test_control_laws import CUSTOMERS, Clock, once_stream, once_yaml
from tests.property.test_rating_batches import us

NOVEMBER_PLAN = """\
  - key: max
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: tokens, model: per_unit, unit_amount: "0.0007"}
          - {meter: calls, model: per_unit, unit_amount: 2, credit_type: credits}
contracts:
"""
"""A second plan, which every contract moves to in the middle of November (the open
period): a new revision, and two segments in the period."""


def pricing(timezone: str, repriced: bool = False) -> str:
    start = "    start: 2026-10-01\n"
    zoned = f"{start}    timezone: {timezone}\n"
    if repriced:
        zoned += "    amendments: [{effective: 2026-11-15, plan: max}]\n"
        return once_yaml(3).replace(start, zoned).replace("contracts:\n", NOVEMBER_PLAN, 1)
    return once_yaml(3).replace(start, zoned)


def november_stream() -> list[dict[str, Any]]:
    """Calls over November on both sides of the price change; the first customer's
    last one timed back into an hour already folded (late within the open period)."""
    events = []
    for day in range(1, 20):
        for number, customer in enumerate(CUSTOMERS):
            if (day + number) % 3 == 0:
                continue  # not every customer every day
            events.append(
                {
                    "id": f"{customer}-nov-{day}",
                    "customer": customer,
                    "type": "llm",
                    "timestamp": format_timestamp(us(2026, 11, day, 2 + 7 * number)),
                    "properties": {"model": "m" if day % 2 else "n", "tokens": 300 * day},
                }
            )
    return events


def shown(slices: list[UsageSlice]) -> list[str]:
    """Every field as its repr: equal Decimals written differently count as different."""
    return [repr(item) for item in slices]


def both_ways(billing: Billing, monkeypatch: pytest.MonkeyPatch) -> list[UsageSlice]:
    """Unit economics batched and customer by customer (no period read in advance: each
    draft reads its own buckets); asserts they are the same and returns them."""
    from meterline.finance.economics import usage_slices

    batched = usage_slices(billing)
    batched_pairs = billing.rated_periods(from_buckets=True)
    one = usage_slices(billing, customer=CUSTOMERS[1])  # one customer's, read by its key
    with monkeypatch.context() as patch:
        patch.setattr(drafts, "period_buckets", lambda *arguments: {})
        general = usage_slices(billing)
        general_pairs = billing.rated_periods(from_buckets=True)
        assert shown(one) == shown(usage_slices(billing, customer=CUSTOMERS[1]))
    assert {item.customer for item in one} == {CUSTOMERS[1]}
    assert shown(batched) == shown(general)
    assert len(batched_pairs) == len(general_pairs)
    for (document, job), (expected, general_job) in zip(batched_pairs, general_pairs, strict=True):
        assert as_data(document) == as_data(expected)
        assert job.days == general_job.days
        currency = as_data(document)["currency"]
        assert repr(job.rater.lines(currency, job.configuration)) == repr(
            general_job.rater.lines(currency, general_job.configuration)
        )
    return batched


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_batched_economics_equal_the_per_customer_reads(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch, timezone: str
) -> None:
    """A closed October (credits), a late event into it, a November repriced mid-period
    with an event late within it: batched and per-customer economics are identical (and
    equal to re-rating from raw events); in a zone whose days are not UTC days the open
    periods' days come from hours, both ways."""
    from meterline.finance.economics import usage_slices

    with kept(new_db(), pricing(timezone)) as billing:
        clock = billing.context.clock
        assert isinstance(clock, Clock)
        assert billing.ledger.ingest(once_stream(3)).accepted == 36
        clock.now_us = us(2026, 11, 2)
        assert len(billing.close(us(2026, 11, 1, 6))) == 3  # in either zone
        late_october = {**once_stream(1)[3], "id": "late-october"}
        assert billing.ledger.ingest([late_october]).accepted == 1
        billing.apply(pricing(timezone, repriced=True))
        clock.now_us = us(2026, 11, 20, 12)
        november = november_stream()
        assert billing.ledger.ingest(november[:-1]).accepted == len(november) - 1
        late_november = {**november[-1], "timestamp": format_timestamp(us(2026, 11, 1, 2))}
        assert billing.ledger.ingest([late_november]).accepted == 1

        slices = both_ways(billing, monkeypatch)
        open_slices = [item for item in slices if item.invoice == OPEN_PERIOD_INVOICE]
        assert {item.customer for item in open_slices} == set(CUSTOMERS)
        assert {item.plan for item in open_slices} == {"pro@1", "max@1"}  # repriced mid-period
        assert any(item.invoice != OPEN_PERIOD_INVOICE for item in slices)  # October, closed
        assert any(item.revenue for item in slices) and any(item.cost for item in slices)
        pairs = billing.rated_periods(from_buckets=True)
        assert all(job.days is not None for document, job in pairs if not document.number)
        assert summarize(slices, ["customer", "model"]) == summarize(
            usage_slices(billing), ["customer", "model"]
        )

        billing.context.keeps_buckets = False  # re-rated from raw events
        try:
            assert usage_slices(billing) == slices
        finally:
            billing.context.keeps_buckets = True
