"""Tax (core.tax): Stripe's worked examples, inclusive and exclusive, rounding options."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from meterline.core.tax import (
    TableTaxProvider,
    Taxable,
    TaxRate,
    TaxRequest,
    tax_lines,
    tax_rate_errors,
)

CA = TaxRate("Sales tax", D("7.25"), jurisdiction="US-CA")
VAT = TaxRate("VAT", D(20), inclusive=True, jurisdiction="GB")


def line(key: int, amount: str) -> Taxable:
    return Taxable(key, "usage", "tokens", None, D(amount))


def test_exclusive_sales_tax_is_added() -> None:
    """7.25% on $100.00 is $7.25, added to the invoice."""
    (tax,) = tax_lines([line(1, "100.00")], {1: [CA]}, "USD")
    assert (tax.taxable, tax.amount, tax.included) == (D("100.00"), D("7.25"), D("0.00"))
    assert tax.description() == "Sales tax 7.25%, US-CA (on 100.00)"


def test_inclusive_vat_is_within_the_price() -> None:
    """Stripe: a 10.00 price with 20% inclusive tax holds 1.67 of tax; the total stays."""
    (tax,) = tax_lines([line(1, "10.00")], {1: [VAT]}, "GBP")
    assert (tax.amount, tax.included) == (D("0.00"), D("1.67"))


def test_rates_do_not_compound_and_rounding_is_per_line_or_per_invoice() -> None:
    """Two rates on one line each apply to the line; per-line rounding can differ from
    per-invoice rounding by a cent, which is why it is an option."""
    state = TaxRate("State", D(6))
    county = TaxRate("County", D("1.5"))
    lines = [line(1, "0.25"), line(2, "0.25"), line(3, "0.25")]
    rates = {key: [state, county] for key in (1, 2, 3)}
    by_line = tax_lines(lines, rates, "USD")
    assert [(t.rate.name, t.amount) for t in by_line] == [
        ("State", D("0.06")),
        ("County", D("0.00")),
    ]
    by_invoice = tax_lines(lines, rates, "USD", rounding="invoice")
    assert [t.amount for t in by_invoice] == [D("0.05"), D("0.01")]


def test_a_credit_reverses_its_tax() -> None:
    (tax,) = tax_lines([line(1, "-40.00")], {1: [CA]}, "USD")
    assert tax.amount == D("-2.90")


def test_the_table_provider_prefers_the_customer_then_the_jurisdiction() -> None:
    special = TaxRate("Exempt", D(0))
    provider = TableTaxProvider({"US-CA": (CA,)}, {"acme": (special,)})
    request = TaxRequest("acme", "US-CA", "USD", (line(1, "5"),))
    assert provider.rates(request) == {1: (special,)}
    other = TaxRequest("globex", "US-CA", "USD", (line(1, "5"), line(2, "6")))
    assert provider.rates(other) == {1: (CA,), 2: (CA,)}
    assert provider.rates(TaxRequest("globex", "FR", "EUR", (line(1, "5"),))) == {}


def test_declaration_errors_name_the_field() -> None:
    assert tax_rate_errors(TaxRate(" ", D(120)), "tax_rates[0]") == [
        "tax_rates[0].name: must not be blank",
        "tax_rates[0].percent: must be from 0 to 100",
    ]


@given(st.lists(st.decimals(D("-1000"), D("1000"), places=2), min_size=1, max_size=8))
def test_inclusive_tax_and_net_add_back_to_the_price(amounts: list[D]) -> None:
    """For every line, tax included plus the net is the price, within the rounding."""
    lines = [Taxable(key, "fee", None, None, amount) for key, amount in enumerate(amounts)]
    (tax,) = tax_lines(lines, {key: [VAT] for key in range(len(amounts))}, "GBP")
    exact = sum((a - a * 100 / D(120) for a in amounts), D(0))
    assert abs(tax.included - exact) <= D("0.005") * len(amounts)
