"""SSP allocation (core.allocation): a revenue-recognition guide's worked example."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.allocation import AllocationError, Obligation, allocate_by_ssp


def test_the_bundle_discount_is_spread_by_relative_standalone_price() -> None:
    """ASC 606 guide example: a $100,000 contract for a licence (SSP $60,000), support
    ($30,000) and training ($20,000); SSPs total $110,000, so the $10,000 discount is
    spread proportionally: 54,545.45 / 27,272.73 / 18,181.82."""
    obligations = [
        Obligation("licence", D(60000), "point"),
        Obligation("support", D(30000)),
        Obligation("training", D(20000), "point"),
    ]
    assert allocate_by_ssp(D("100000.00"), obligations, "USD") == [
        D("54545.45"),
        D("27272.73"),
        D("18181.82"),
    ]


def test_a_credit_splits_with_its_sign_and_bad_obligations_are_refused() -> None:
    obligations = [Obligation("a", D(1)), Obligation("b", D(1))]
    assert allocate_by_ssp(D("-0.01"), obligations, "USD") == [D("-0.01"), D("0.00")]
    with pytest.raises(AllocationError):
        allocate_by_ssp(D(1), [], "USD")
    with pytest.raises(AllocationError):
        allocate_by_ssp(D(1), [Obligation("a", D(0))], "USD")


@given(
    st.decimals(D("-100000"), D("100000"), places=2),
    st.lists(st.decimals(D(0), D(10000), places=2), min_size=1, max_size=6).filter(any),
)
def test_shares_add_up_to_the_price_to_the_cent(price: D, prices: list[D]) -> None:
    obligations = [Obligation(f"o{i}", ssp) for i, ssp in enumerate(prices)]
    shares = allocate_by_ssp(price, obligations, "USD")
    assert sum(shares, D(0)) == price
    total = sum(prices, D(0))
    for share, ssp in zip(shares, prices, strict=True):
        assert abs(share - price * ssp / total) < D("0.01")
