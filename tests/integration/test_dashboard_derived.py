"""The dashboard's per-customer slices (``Derived.customer_slices``): a customer's page
derives only that customer's periods, and shows exactly its share of every customer's
slices, before and after the ledger moves; on both stores."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meterline.core.economics import UsageSlice
from meterline.dashboard import derived
from meterline.dashboard.derived import Derived
from meterline.ledger.location import Location
from tests.integration.test_buckets import kept
from tests.integration.test_economics_batched import november_stream, pricing, shown
from tests.property.test_control_laws import CUSTOMERS, Clock, once_stream
from tests.property.test_rating_batches import us


def _share(slices: list[UsageSlice], customer: str) -> list[str]:
    return shown([item for item in slices if item.customer == customer])


def test_a_customers_slices_are_its_share_of_everyones(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    with kept(new_db(), pricing("UTC")) as billing:
        clock = billing.context.clock
        assert isinstance(clock, Clock)
        assert billing.ledger.ingest(once_stream(3)).accepted == 36
        clock.now_us = us(2026, 11, 2)
        assert len(billing.close(us(2026, 11, 1, 6))) == 3
        clock.now_us = us(2026, 11, 20, 12)
        november = november_stream()
        assert billing.ledger.ingest(november[:-1]).accepted == len(november) - 1

        alone = Derived(billing, billing.ledger)
        mine = {customer: alone.customer_slices(customer) for customer in CUSTOMERS}
        everyone = Derived(billing, billing.ledger).slices()
        assert any(item.revenue for item in everyone) and any(item.cost for item in everyone)
        for customer in CUSTOMERS:
            assert {item.customer for item in mine[customer]} == {customer}
            assert shown(mine[customer]) == _share(everyone, customer)

        # the ledger moved: derived again (not the cached slices), still its share
        last = november[-1]
        assert billing.ledger.ingest([last]).accepted == 1
        moved = alone.customer_slices(last["customer"])
        assert shown(moved) != shown(mine[last["customer"]])
        assert shown(moved) == _share(Derived(billing, billing.ledger).slices(), last["customer"])

        # every customer's slices current: a customer's share is taken from them
        assert shown(alone.customer_slices(CUSTOMERS[1])) == _share(alone.slices(), CUSTOMERS[1])


def test_the_cache_keeps_the_newest_customers(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(derived, "CUSTOMER_SLICES_CACHED_MAX", 2)
    with kept(new_db(), pricing("UTC")) as billing:
        assert billing.ledger.ingest(once_stream(3)).accepted == 36
        pages = Derived(billing, billing.ledger)
        for customer in CUSTOMERS:
            pages.customer_slices(customer)
        assert list(pages._customer_slices) == list(CUSTOMERS[-2:])
        pages.customer_slices(CUSTOMERS[-2])  # read again: the newest
        assert list(pages._customer_slices) == [CUSTOMERS[-1], CUSTOMERS[-2]]
