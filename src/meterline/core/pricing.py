"""Price models: quantity in, exact amount out, one small pure function per model.

Semantics (docs/DESIGN.md, "Semantics where vendors differ"): a tier's ``up_to`` is
inclusive (``up_to: 100`` puts unit 100 in tier 1 and 100.5 in tier 2); graduated
pricing prices each unit in its own tier and adds the flat amount of every tier entered;
volume pricing prices all units at the tier the total falls in; the first tier's flat
amount is charged even at zero usage unless ``first_flat_at_zero`` is off; packages are
``ceil(quantity / size)`` and zero usage is zero packages. Amounts are never rounded
here (``money.round_amount`` does that, once, at finalization); inexact arithmetic
raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, Inexact, localcontext

from meterline.core.money import MONEY_CONTEXT

ZERO = Decimal(0)
_multiply = MONEY_CONTEXT.multiply
_subtract = MONEY_CONTEXT.subtract
"""``MONEY_CONTEXT``'s own arithmetic (its precision and traps, so ``Inexact`` raises as
in a ``localcontext`` of it): the hot per-line calls skip entering a local context."""


@dataclass(frozen=True, slots=True)
class Tier:
    """One price tier: units up to and including ``up_to`` (None: no upper bound)."""

    up_to: Decimal | None
    unit_amount: Decimal = ZERO
    flat_amount: Decimal = ZERO


def tier_errors(tiers: Sequence[Tier], path: str = "tiers") -> list[str]:
    """Every problem with a tier list, each prefixed with its path (e.g. ``tiers[1].up_to``)."""
    if not tiers:
        return [f"{path}: at least one tier is needed"]
    errors = []
    previous: Decimal = ZERO
    for position, tier in enumerate(tiers):
        where = f"{path}[{position}]"
        last = position == len(tiers) - 1
        if tier.up_to is None and not last:
            errors.append(f"{where}.up_to: only the last tier may be unbounded")
        if tier.up_to is not None:
            if last:
                errors.append(f"{where}.up_to: the last tier must be unbounded (omit up_to)")
            if tier.up_to <= previous:
                errors.append(
                    f"{where}.up_to: {tier.up_to} must be greater than {previous}"
                    " (tiers overlap or are out of order)"
                )
            previous = tier.up_to
        for field in ("unit_amount", "flat_amount"):
            if getattr(tier, field) < 0:
                errors.append(f"{where}.{field}: must not be negative")
    return errors


def _check(quantity: Decimal) -> None:
    if quantity < 0:
        raise ValueError(f"quantity: {quantity} is negative")


def per_unit(quantity: Decimal, unit_amount: Decimal) -> Decimal:
    """``quantity`` units at ``unit_amount`` each."""
    _check(quantity)
    # the context's own method: the same exact product, without entering a local context
    return _multiply(quantity, unit_amount)


def package(
    quantity: Decimal, size: Decimal, amount: Decimal, free_units: Decimal = ZERO
) -> Decimal:
    """Whole packages of ``size`` units at ``amount`` each, after ``free_units``; rounds up."""
    _check(quantity)
    if size <= 0:
        raise ValueError("size: must be positive")
    billable = after_allowance(quantity, free_units)
    with localcontext(MONEY_CONTEXT) as context:
        context.traps[Inexact] = False  # the division may be inexact; the ceiling is not
        packages = (billable / size).to_integral_value(rounding=ROUND_CEILING)
    with localcontext(MONEY_CONTEXT):
        return packages * amount


def graduated(quantity: Decimal, tiers: Sequence[Tier], first_flat_at_zero: bool = True) -> Decimal:
    """Each unit at its own tier's price, plus the flat amount of every tier entered."""
    _check(quantity)
    total = ZERO
    lower = ZERO
    with localcontext(MONEY_CONTEXT):
        for position, tier in enumerate(tiers):
            entered = quantity > lower or (position == 0 and first_flat_at_zero)
            if not entered:
                break
            upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
            total += max(upper - lower, ZERO) * tier.unit_amount + tier.flat_amount
            if tier.up_to is None:
                break
            lower = tier.up_to
    return total


def volume_tier(quantity: Decimal, tiers: Sequence[Tier]) -> Tier:
    """The tier whose range holds ``quantity`` (the last one past every bound)."""
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return tier
    return tiers[-1]


def volume(quantity: Decimal, tiers: Sequence[Tier]) -> Decimal:
    """All units at the price of the tier the total falls in, plus that tier's flat amount."""
    _check(quantity)
    tier = volume_tier(quantity, tiers)
    with localcontext(MONEY_CONTEXT):
        return quantity * tier.unit_amount + tier.flat_amount


def matrix_unit_amount(
    prices: Mapping[tuple[str, ...], Decimal], key: tuple[str, ...], default: Decimal | None = None
) -> Decimal:
    """The unit price for one combination of dimension values (e.g. ``("gpt-4o", "input")``)."""
    price = prices.get(key, default)
    if price is None:
        raise KeyError(f"no price for {'/'.join(key)} and no default")
    return price


def percentage(
    event_amounts: Sequence[Decimal],
    rate: Decimal,
    fixed_fee: Decimal = ZERO,
    free_events: int = 0,
    per_event_min: Decimal | None = None,
    per_event_max: Decimal | None = None,
) -> Decimal:
    """``rate`` of each event's amount plus ``fixed_fee``, clamped per event to [min, max].

    The first ``free_events`` events (in the order given) pay no fixed fee.
    """
    total = ZERO
    with localcontext(MONEY_CONTEXT):
        for position, amount in enumerate(event_amounts):
            fee = amount * rate + (fixed_fee if position >= free_events else ZERO)
            if per_event_min is not None:
                fee = max(fee, per_event_min)
            if per_event_max is not None:
                fee = min(fee, per_event_max)
            total += fee
    return total


def bounded(
    amount: Decimal, minimum: Decimal | None = None, maximum: Decimal | None = None
) -> Decimal:
    """A line's amount held within its minimum and maximum spend."""
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueError("minimum: must not exceed maximum")
    if minimum is not None:
        amount = max(amount, minimum)
    if maximum is not None:
        amount = min(amount, maximum)
    return amount


def after_allowance(quantity: Decimal, free_units: Decimal) -> Decimal:
    """The billable quantity once ``free_units`` are used up."""
    return max(_subtract(quantity, free_units), ZERO)
