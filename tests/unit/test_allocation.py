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


PLAN = """\
plans:
  - key: bundle
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees:
          - key: bundle
            name: Platform bundle
            amount: "3100.00"
            obligations:
              - {name: licence, standalone_price: 2000, recognition: point}
              - {name: support, standalone_price: 1100}
contracts:
  - {customer: c, plan: bundle, start: 2026-01-01}
"""


def test_a_fee_line_books_each_obligation_its_own_way() -> None:
    """A 3,100.00 fee for a licence (SSP 2,000, point) and support (SSP 1,100, ratable)
    in October: 2,000.00 of licence revenue on October 1st, support a share a day."""
    from datetime import date

    from meterline.core.books import document_entries
    from meterline.core.cuts import Cut
    from meterline.core.documents import FeeLine
    from meterline.core.invoicing import InvoiceHeader, build_invoice
    from meterline.core.journal import REVENUE_SUBSCRIPTION
    from meterline.core.model import segments
    from tests.unit.test_invoicing import OCTOBER, configuration

    config = configuration(PLAN)
    contract = config.contract("c")
    assert contract is not None
    spans = segments(config, contract, OCTOBER.start_us, OCTOBER.end_us)
    header = InvoiceHeader("c", "USD", "UTC", OCTOBER, 1, "00", Cut((1,)))
    document = build_invoice(header, spans, [], [], config)
    (fee,) = document.lines
    assert isinstance(fee, FeeLine)
    assert fee.obligations == [("licence", D(2000), "point"), ("support", D(1100), "ratable")]
    assert [str(ssp) for _, ssp, _ in fee.obligations] == ["2000", "1100"]
    entries = document_entries(document, date(2026, 10, 1), "invoice:1")
    revenue: dict[date, D] = {}
    for item in entries:
        for posting in item.postings:
            if posting.account == REVENUE_SUBSCRIPTION:
                revenue[item.day] = revenue.get(item.day, D(0)) - posting.amount
    # the licence at once, plus support's first day (1,100.00 / 31 = 35.48)
    assert abs(revenue[date(2026, 10, 1)] - D("2035.48")) <= D("0.01")
    assert sum(revenue.values(), D(0)) == D("3100.00")
    assert abs(revenue[date(2026, 10, 2)] - D("35.48")) <= D("0.01")
