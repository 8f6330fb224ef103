"""Tax: rates by customer or jurisdiction, exclusive or inclusive, per line (pure).

A tax rate (``TaxRate``) is a percentage with a name and, optionally, the jurisdiction it
belongs to. Which rates apply to a customer's invoice is a provider's answer
(``TaxProvider``): the one meterline ships (``TableTaxProvider``) reads the pricing file's
rates by the customer's jurisdiction; a user may implement the protocol over any table of
their own. Nothing here, and nothing meterline ships, calls an outside service.

The computation, the rule every invoice follows:

- Tax is computed on each taxable line's amount after coupons (``core.coupons``), line by
  line and rate by rate; several rates on one line are each applied to the same amount
  (they do not compound).
- **Exclusive** (the default): the line's price excludes tax; the tax is
  ``taxable * percent / 100`` and is added to the invoice as a ``tax`` line per rate.
- **Inclusive**: the line's price includes tax; the tax within it is
  ``taxable - taxable / (1 + percent / 100)``. The invoice total does not change: the
  ``tax`` line carries amount 0 and the included tax as ``included``, so revenue is the
  line amounts less the included tax, and the journal books the included part as tax
  payable.
- **Rounding** (``TaxRounding``): ``line`` (the default, as Stripe computes tax per line
  item) rounds each line's tax once to the currency's minor unit, half-up, and the rate's
  tax line is the sum of those; ``invoice`` sums the exact taxes of a rate and rounds once.
  Both round only through ``money.round_amount``.

Negative taxable amounts (a line that credits) give negative tax, so a credit reverses the
tax it reverses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, Inexact, localcontext
from typing import Literal, Protocol

from meterline.core.money import MONEY_CONTEXT, PRORATION_PLACES, round_amount

TaxRounding = Literal["line", "invoice"]
TAX_ROUNDINGS: tuple[TaxRounding, ...] = ("line", "invoice")
HUNDRED = Decimal(100)
ZERO = Decimal(0)
TAX_PERCENT_LIMIT = HUNDRED
"""The highest rate a tax may have, in percent."""


@dataclass(frozen=True, slots=True)
class TaxRate:
    """A tax: its name (``VAT DE``), percentage, whether prices include it, and the
    jurisdiction it belongs to (``DE``, ``US-CA``) when it is keyed by one."""

    name: str
    percent: Decimal
    inclusive: bool = False
    jurisdiction: str | None = None


@dataclass(frozen=True, slots=True)
class Taxable:
    """An invoice line tax is computed on: its position, kind, meter (usage lines),
    product, and its amount after coupons (exact)."""

    key: int
    kind: str
    meter: str | None
    product: str | None
    amount: Decimal


@dataclass(frozen=True, slots=True)
class TaxRequest:
    """What a provider is asked: the customer, their jurisdiction, the invoice currency
    and its taxable lines."""

    customer: str
    jurisdiction: str | None
    currency: str
    lines: tuple[Taxable, ...]


class TaxProvider(Protocol):
    """The rates that apply to each line of a request (by the line's key); a line with no
    entry is not taxed. Implementations must be deterministic for one request."""

    def rates(self, request: TaxRequest) -> Mapping[int, Sequence[TaxRate]]: ...


@dataclass(frozen=True, slots=True)
class TableTaxProvider:
    """The provider meterline ships: a customer's rates are those named for them
    (``by_customer``), else those of their jurisdiction; every line gets them."""

    by_jurisdiction: Mapping[str, tuple[TaxRate, ...]]
    by_customer: Mapping[str, tuple[TaxRate, ...]]

    def rates(self, request: TaxRequest) -> Mapping[int, Sequence[TaxRate]]:
        rates = self.by_customer.get(request.customer)
        if rates is None and request.jurisdiction is not None:
            rates = self.by_jurisdiction.get(request.jurisdiction)
        if not rates:
            return {}
        return {line.key: rates for line in request.lines}


@dataclass(frozen=True, slots=True)
class TaxLine:
    """One rate's tax on an invoice: what it was computed on (``taxable``), the tax added
    to the total (``amount``; 0 for an inclusive rate) and the tax included in the prices
    (``included``; 0 for an exclusive rate), both rounded."""

    rate: TaxRate
    taxable: Decimal
    amount: Decimal
    included: Decimal
    lines: tuple[int, ...]

    def description(self) -> str:
        where = f", {self.rate.jurisdiction}" if self.rate.jurisdiction else ""
        kind = "included" if self.rate.inclusive else "on"
        return f"{self.rate.name} {self.rate.percent}%{where} ({kind} {self.taxable})"


def tax_rate_errors(rate: TaxRate, path: str) -> list[str]:
    """Every problem with a rate's declaration, each naming its field."""
    errors = []
    if not rate.name.strip():
        errors.append(f"{path}.name: must not be blank")
    if not ZERO <= rate.percent <= TAX_PERCENT_LIMIT:
        errors.append(f"{path}.percent: must be from 0 to {TAX_PERCENT_LIMIT}")
    return errors


def tax_lines(
    lines: Sequence[Taxable],
    rates: Mapping[int, Sequence[TaxRate]],
    currency: str,
    rounding: TaxRounding = "line",
) -> list[TaxLine]:
    """One ``TaxLine`` per rate that applies to any line, in the order rates are first
    met (lines in order, a line's rates in order); see the module docstring."""
    exact: dict[TaxRate, list[tuple[int, Decimal, Decimal]]] = {}
    for line in lines:
        for rate in rates.get(line.key, ()):
            exact.setdefault(rate, []).append((line.key, line.amount, _tax_in(line.amount, rate)))
    result = []
    for rate, items in exact.items():
        with localcontext(MONEY_CONTEXT):
            taxable = sum((amount for _, amount, _ in items), ZERO)
            if rounding == "line":
                tax = sum((round_amount(tax, currency) for _, _, tax in items), ZERO)
            else:
                tax = round_amount(sum((tax for _, _, tax in items), ZERO), currency)
        keys = tuple(key for key, _, _ in items)
        taxable = round_amount(taxable, currency)
        if rate.inclusive:
            result.append(TaxLine(rate, taxable, round_amount(ZERO, currency), tax, keys))
        else:
            result.append(TaxLine(rate, taxable, tax, round_amount(ZERO, currency), keys))
    return result


def _tax_in(amount: Decimal, rate: TaxRate) -> Decimal:
    """The exact tax of ``amount`` at ``rate`` (an inclusive rate's quotient is carried
    to ``PRORATION_PLACES`` places, far below any minor unit, before the one rounding)."""
    with localcontext(MONEY_CONTEXT) as context:
        if not rate.inclusive:
            return amount * rate.percent / HUNDRED
        context.traps[Inexact] = False
        net = amount * HUNDRED / (HUNDRED + rate.percent)
        return (amount - net).quantize(Decimal(1).scaleb(-PRORATION_PLACES))


@dataclass(frozen=True, slots=True)
class TaxAsk:
    """What an invoice needs to compute its tax: the provider, the customer's
    jurisdiction and the rounding rule."""

    provider: TaxProvider
    jurisdiction: str | None
    rounding: TaxRounding = "line"
