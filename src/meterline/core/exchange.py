"""A reporting currency: effective-dated exchange rates the user loads (pure).

Customers may be billed in EUR or GBP while providers bill COGS in USD; margin across the
business is read in one **reporting currency**. The pricing file's ``reporting`` section
names it and the rates into it, each in force from an instant until the next one of its
currency (``rate`` is how many reporting units one unit of ``currency`` is worth:
``{currency: EUR, rate: "1.08"}`` into USD). Nothing fetches rates from an outside
service.

Conversion is exact (``amount x rate`` in ``MONEY_CONTEXT``); a reported figure is
rounded once, half-up, to the reporting currency's minor unit by ``reported``, the one
rounding of this module. An amount already in the reporting currency converts at 1. An
instant before a currency's first rate is an ``ExchangeError`` naming the currency and
the instant, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from meterline.core.errors import MeterlineError
from meterline.core.events import format_timestamp
from meterline.core.money import MONEY_CONTEXT, round_amount


class ExchangeError(MeterlineError, ValueError):
    """No rate of a currency into the reporting currency is in force at an instant."""

    code = "no_exchange_rate"
    http_status = 422


@dataclass(frozen=True, slots=True)
class ExchangeRate:
    """One ``currency`` unit is worth ``rate`` reporting units from ``effective_from_us``."""

    currency: str
    rate: Decimal
    effective_from_us: int


@dataclass(frozen=True, slots=True)
class ReportingCurrency:
    """The currency reports are read in, and the rates into it."""

    currency: str
    rates: tuple[ExchangeRate, ...] = ()

    def rate_at(self, currency: str, at_us: int) -> Decimal:
        """The rate of ``currency`` in force at ``at_us`` (1 for the reporting currency)."""
        if currency == self.currency:
            return Decimal(1)
        in_force = [
            r for r in self.rates if r.currency == currency and r.effective_from_us <= at_us
        ]
        if not in_force:
            raise ExchangeError(
                f"reporting.rates: no rate of {currency} into {self.currency} is in force at"
                f" {format_timestamp(at_us)}"
            )
        return max(in_force, key=lambda r: r.effective_from_us).rate

    def exact(self, amount: Decimal, currency: str, at_us: int) -> Decimal:
        """``amount`` of ``currency`` in the reporting currency at ``at_us``, exact."""
        rate = self.rate_at(currency, at_us)
        with localcontext(MONEY_CONTEXT):
            return amount * rate

    def reported(self, amount: Decimal, currency: str, at_us: int) -> Decimal:
        """``amount`` converted and rounded once to the reporting currency's minor unit."""
        return round_amount(self.exact(amount, currency, at_us), self.currency)

    def currencies(self) -> tuple[str, ...]:
        """Every currency with a rate, and the reporting currency, sorted."""
        return tuple(sorted({self.currency, *(rate.currency for rate in self.rates)}))


def exchange_errors(reporting: ReportingCurrency, path: str) -> list[str]:
    """Every problem with the declared rates, each naming its field."""
    errors = []
    seen: set[tuple[str, int]] = set()
    for index, rate in enumerate(reporting.rates):
        where = f"{path}.rates[{index}]"
        if rate.currency == reporting.currency:
            errors.append(f"{where}.currency: the reporting currency needs no rate")
        if rate.rate <= 0:
            errors.append(f"{where}.rate: must be more than 0")
        if (rate.currency, rate.effective_from_us) in seen:
            errors.append(
                f"{where}.effective_from: {rate.currency} has two rates from this instant"
            )
        seen.add((rate.currency, rate.effective_from_us))
    return errors


def sorted_rates(rates: Sequence[ExchangeRate]) -> tuple[ExchangeRate, ...]:
    return tuple(sorted(rates, key=lambda r: (r.currency, r.effective_from_us)))
