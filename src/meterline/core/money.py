"""Money: the only way a Decimal enters meterline, and the one place amounts are rounded.

Amounts stay exact ``Decimal`` through metering, pricing and credits; arithmetic runs in
``MONEY_CONTEXT``, which traps inexact results, so a computation that would silently lose
a digit raises instead. Rounding happens only in ``round_amount``: half-up to the
currency's minor unit by default (banker's rounding selectable). Leftover minor units are
allocated by largest remainder with a deterministic tie-break (``allocate``); an amount
spread evenly over time takes the rounded cumulative amount at each step
(``cumulative_shares``), so no step runs ahead of the exact figure by half a minor unit. Floats are
refused at the door: ``to_decimal(0.1)`` raises.

What a person reads is made here too, and only here: ``display_amount`` writes an amount
at its currency's minor unit (``15,011.35 USD``, never ``15,011.3476752`` or ``0E-7``) and
``display_quantity`` writes a quantity or a percentage without exponent notation. The
display rule is ``DISPLAY_ROUNDING`` (half-up) and it is one-way: a displayed string is
never parsed back into a figure, so display rounding never feeds any total, invoice,
journal, export, JSON output or API answer, which all keep the exact ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import (
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Literal

from meterline.core.errors import MeterlineError

MONEY_CONTEXT = Context(
    prec=60, rounding=ROUND_HALF_EVEN, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow]
)
"""Exact arithmetic: 60 significant digits, and any rounding raises ``Inexact``."""

MINOR_UNITS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CAD": 2,
    "AUD": 2,
    "CHF": 2,
    "CNY": 2,
    "INR": 2,
    "BRL": 2,
    "MXN": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "SGD": 2,
    "HKD": 2,
    "NZD": 2,
    "JPY": 0,
    "KRW": 0,
    "CLP": 0,
    "ISK": 0,
    "VND": 0,
    "BHD": 3,
    "KWD": 3,
    "OMR": 3,
    "JOD": 3,
    "TND": 3,
}
"""ISO 4217 minor units of the currencies meterline knows; others must be declared."""

RoundingMode = Literal["half_up", "half_even"]
_ROUNDING = {"half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN}


class MoneyError(MeterlineError, ValueError):
    """An amount that cannot be handled exactly: a float, a non-finite value, bad text."""

    code = "invalid_money"
    http_status = 422


def to_decimal(value: object, field: str = "amount") -> Decimal:
    """``value`` as an exact Decimal: from str, int or Decimal; never from float."""
    if type(value) is Decimal:
        if not value.is_finite():
            raise MoneyError(f"{field}: {value} is not a finite number")
        return value
    if type(value) is int:
        return Decimal(value)
    if type(value) is str:
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            raise MoneyError(f"{field}: {value!r} is not a decimal number") from None
        if not parsed.is_finite():
            raise MoneyError(f"{field}: {value!r} is not a finite number")
        return parsed
    if isinstance(value, Decimal):  # a subclass: a document's ``DecimalText``
        return to_decimal(Decimal(value), field)
    if isinstance(value, float):
        raise MoneyError(f"{field}: floats are never money; write {value!r} as a string")
    raise MoneyError(f"{field}: expected a decimal number, got {type(value).__name__}")


AMOUNT_INTEGER_DIGITS_MAX = 18
AMOUNT_FRACTION_DIGITS_MAX = 12
"""An amount a person types (a grant, an adjustment, a price paid): at most 18 digits
before the point and 12 after. Money arithmetic carries 60 digits and refuses to round,
so a longer amount would make every later balance of its customer fail."""


def to_bounded_amount(value: object, field: str = "amount") -> Decimal:
    """``value`` as ``to_decimal`` reads it, within ``AMOUNT_INTEGER_DIGITS_MAX`` digits
    before the point and ``AMOUNT_FRACTION_DIGITS_MAX`` after; else ``MoneyError``."""
    amount = to_decimal(value, field)
    _sign, digits, exponent = amount.as_tuple()
    if not isinstance(exponent, int):  # to_decimal refused non-finite values already
        raise MoneyError(f"{field}: {value!r} is not a finite number")
    fraction = max(-exponent, 0)
    integer = max(len(digits) + exponent, 0) if amount else 0
    if integer > AMOUNT_INTEGER_DIGITS_MAX or fraction > AMOUNT_FRACTION_DIGITS_MAX:
        raise MoneyError(
            f"{field}: {str(value)[:64]!r} is out of range: at most"
            f" {AMOUNT_INTEGER_DIGITS_MAX} digits before the point and"
            f" {AMOUNT_FRACTION_DIGITS_MAX} after"
        )
    return amount


def minor_units(currency: str) -> int:
    """Digits after the decimal point in ``currency``'s smallest unit."""
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise MoneyError(f"currency: {currency!r} is not a known ISO 4217 code") from None


def _round_places(value: Decimal, places: int, mode: RoundingMode) -> Decimal:
    """``value`` rounded to ``places`` digits after the point (the one quantize), with
    enough precision for the result's digits (a quantize never rounds anywhere else)."""
    exponent = Decimal(1).scaleb(-places)
    with localcontext(MONEY_CONTEXT) as context:
        context.traps[Inexact] = False
        context.prec = max(context.prec, value.adjusted() + places + 2)
        return value.quantize(exponent, rounding=_ROUNDING[mode])


def round_amount(amount: Decimal, currency: str, mode: RoundingMode = "half_up") -> Decimal:
    """The one rounding step: ``amount`` to ``currency``'s minor unit."""
    return _round_places(amount, minor_units(currency), mode)


def cost_of(units: Decimal, unit_cost: Decimal, currency: str) -> Decimal:
    """What ``units`` cost at ``unit_cost`` each (a grant's or a top-up's cost basis from
    its price per unit), rounded once to ``currency``."""
    with localcontext(MONEY_CONTEXT):
        return round_amount(units * unit_cost, currency)


def rounded_ratio(
    amount: Decimal, numerator: Decimal, denominator: Decimal, currency: str
) -> Decimal:
    """``amount x numerator / denominator`` rounded to ``currency`` (a quotient is not
    exact: it is carried far past the minor unit, then rounded once)."""
    with localcontext(MONEY_CONTEXT) as context:
        context.traps[Inexact] = False
        context.prec = 2 * MONEY_CONTEXT.prec + 10
        return round_amount(amount * numerator / denominator, currency)


PRORATION_PLACES = 28
"""Decimal places a prorated amount carries: far below any minor unit, fixed so results
are deterministic and later sums stay exact within ``MONEY_CONTEXT``."""


def prorate(amount: Decimal, fraction: Decimal) -> Decimal:
    """``amount`` times a proration ``fraction`` (a quotient, so not exact): the product is
    carried to ``PRORATION_PLACES`` (half-even), before the one rounding at the line.
    A whole fraction returns ``amount`` untouched."""
    if fraction == 1:
        return amount
    if fraction == 0:
        return Decimal(0)
    with localcontext(MONEY_CONTEXT) as context:
        context.prec = 2 * MONEY_CONTEXT.prec + 10  # exact: both factors fit in prec digits
        product = amount * fraction
        context.traps[Inexact] = False
        carried = product.quantize(Decimal(1).scaleb(-PRORATION_PLACES), rounding=ROUND_HALF_EVEN)
    return carried.normalize(MONEY_CONTEXT) if carried == carried.to_integral_value() else carried


def exact_sum(amounts: Sequence[Decimal]) -> Decimal:
    """The exact sum of ``amounts`` (raises rather than round)."""
    with localcontext(MONEY_CONTEXT):
        total = Decimal(0)
        for amount in amounts:
            total += amount
        return total


def allocate(total: Decimal, weights: Sequence[Decimal], currency: str) -> list[Decimal]:
    """Split ``total`` (in minor units of ``currency``) over ``weights`` without losing a cent.

    Each share is rounded down; the leftover minor units go one each to the largest
    remainders, ties broken by position (earlier first). Shares sum exactly to ``total``.
    """
    if not weights:
        raise MoneyError("weights: at least one is needed")
    if any(weight < 0 for weight in weights):
        raise MoneyError("weights: must not be negative")
    unit = Decimal(1).scaleb(-minor_units(currency))
    if round_amount(total, currency) != total:
        raise MoneyError(f"total: {total} is not a whole number of {currency} minor units")
    weight_total = exact_sum(weights)
    if weight_total == 0:
        raise MoneyError("weights: must not all be zero")
    with localcontext(MONEY_CONTEXT) as context:
        context.traps[Inexact] = False
        exact = [total * weight / weight_total for weight in weights]
        floors = [(share / unit).to_integral_value(rounding=ROUND_FLOOR) * unit for share in exact]
        leftover = int((total - sum(floors, Decimal(0))) / unit)
        order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - floors[i]), i))
        for position in order[:leftover]:
            floors[position] += unit
    return floors


def weighted_shares(total: Decimal, weights: Sequence[Decimal], currency: str) -> list[Decimal]:
    """``cumulative_shares`` with a weight per step: step k's share is
    round(total x W_k / W) - round(total x W_(k-1) / W), W_k the weights through step k, so
    the cumulative amount is always the exact one rounded once and the shares sum to
    ``total``. Weights are zero or more, not all zero."""
    if not weights or any(weight < 0 for weight in weights) or not any(weights):
        raise MoneyError("weights: zero or more each, not all zero")
    if round_amount(total, currency) != total:
        raise MoneyError(f"total: {total} is not a whole number of {currency} minor units")
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    whole = exact_sum(weights)
    shares: list[Decimal] = []
    before = running = Decimal(0)
    for weight in weights:
        with localcontext(MONEY_CONTEXT) as context:
            context.traps[Inexact] = False  # a quotient: carried far past the minor unit
            context.prec = 2 * MONEY_CONTEXT.prec + 10
            running += weight
            exact = magnitude * running / whole
        reached = round_amount(exact, currency)
        with localcontext(MONEY_CONTEXT):
            shares.append(sign * (reached - before))
        before = reached
    return shares


def cumulative_shares(total: Decimal, count: int, currency: str) -> list[Decimal]:
    """Split ``total`` evenly over ``count`` steps in order (the days of a service period):
    step k's share is round(total x k / count) - round(total x (k - 1) / count), so the
    cumulative amount after every step is the exact cumulative amount rounded once (within
    half a minor unit) and the shares sum exactly to ``total``. A negative total splits as
    its positive counterpart, negated (rounding is symmetric about zero). It is
    ``weighted_shares`` with every step weighing one."""
    if count < 1:
        raise MoneyError("count: at least one step is needed")
    return weighted_shares(total, [Decimal(1)] * count, currency)


# -- display: what a person reads (never parsed back into a figure) -------------------------

DISPLAY_ROUNDING: RoundingMode = "half_up"
"""How an amount is rounded for reading: half-up, the billing default, so an unrounded
figure (a live spend, a day's recognized revenue) reads as the cent an invoice line would
round it to under the default rule. Display only: the exact ``Decimal`` is what is summed,
stored, exported and answered."""


def _plain(value: Decimal) -> str:
    """``value`` in positional notation, thousands separated, never ``-0``."""
    if value == 0:
        value = value.copy_abs()
    return format(value, ",f")


def _trimmed(value: Decimal) -> Decimal:
    """``value`` exactly, without trailing zeros after the point (``30.4800000`` ->
    ``30.48``, ``0E-7`` -> ``0``); integral digits are kept (``1E+3`` is 1000)."""
    if value == 0:
        return Decimal(0)
    # as many significant digits as it has: normalize only drops zeros, never rounds
    return value.normalize(Context(prec=len(value.as_tuple().digits)))


def display_amount(amount: Decimal | int | str, unit: str) -> str:
    """An exact amount as a person reads it in ``unit``, without the unit's name.

    - A currency (``MINOR_UNITS``): at its minor unit, rounded by ``DISPLAY_ROUNDING``,
      thousands separated: ``15011.3476752`` USD -> ``15,011.35``; ``0E-7`` -> ``0.00``;
      ``-12.3`` -> ``-12.30``; JPY ``1234.5`` -> ``1,235``. A negative amount that rounds
      to zero reads ``0.00`` (no ``-0.00``).
    - Any other unit is a custom unit (a credit type such as ``credits``): credit types
      declare no precision, so they are shown exactly, trailing zeros trimmed, thousands
      separated: ``19999.500`` -> ``19,999.5``; ``0E-7`` -> ``0``.

    Never exponent notation. Accepts an exact Decimal, an int or a document's decimal
    string (through ``to_decimal``: never a float).
    """
    value = to_decimal(amount)
    places = MINOR_UNITS.get(unit)
    if places is None:
        return _plain(_trimmed(value))
    return _plain(_round_places(value, places, DISPLAY_ROUNDING))


def display_quantity(value: Decimal | int | str, places: int | None = None) -> str:
    """A quantity or a percentage as a person reads it, never in exponent notation.

    Without ``places``: exact, trailing zeros trimmed, thousands separated
    (``1234567`` -> ``1,234,567``; ``30.4800000`` -> ``30.48``; ``0E-7`` -> ``0``). With
    ``places``: rounded to that many digits by ``DISPLAY_ROUNDING`` (a margin percentage:
    ``27.2``, ``-0.04`` at one place -> ``0.0``).
    """
    number = to_decimal(value, "quantity")
    if places is None:
        return _plain(_trimmed(number))
    return _plain(_round_places(number, places, DISPLAY_ROUNDING))


def display_figure(value: object) -> str:
    """A figure inside a record (a control's observed values, a proof's checks), shown
    exactly: a decimal number (or its text) as ``display_quantity`` writes it, anything
    else (``none``, ``intact``) as its text. Exactly, because such a figure is evidence:
    rounded, ``spend 149.996`` against ``threshold 150`` would read as crossed."""
    if isinstance(value, Decimal | int | str) and not isinstance(value, bool):
        try:
            return display_quantity(value)
        except MoneyError:
            pass
    return str(value)
