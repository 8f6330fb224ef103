"""The balance controls' view of a customer's credit: its exact remaining balance per
unit (the credit book, the costly part of an evaluation), or between two runs a lower
bound that stands in for it.

The bound is the last exact balance less every increase of a line's amount since
(consumption never exceeds that); it stands only for at most ``BOOK_REFRESH_US``, never
across a grant edge, never with line minimums or maximums, and never once a balance
control has fired. When the bound is clear of every limit, no crossing is possible, so
the book is not run; otherwise it is. A customer answered from a bound is remembered
(``stale``) so the engine evaluates it exactly when idle.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from meterline.core.control_policies import ControlPolicy
from meterline.live.figures import Figures
from meterline.live.projection import LiveProjection

ZERO = Decimal(0)
BOOK_REFRESH_US = 1_000_000
"""Under load, the exact credit balance of a customer is recomputed at least this often."""


class CreditBounds:
    """Per customer, the last exact balances, when they were taken and the line amounts
    then; and the customers answered from a lower bound since."""

    def __init__(self, projection: LiveProjection) -> None:
        self.projection = projection
        self.books: dict[str, tuple[int, dict[str, Decimal], dict[Any, Decimal]]] = {}
        """Per customer: the last exact credit balances, when, and the line amounts then."""
        self.stale: set[str] = set()
        """Customers answered from a lower bound of their balance: exact again when idle."""

    def remaining(
        self,
        customer: str,
        live: Any,
        balance: list[ControlPolicy],
        figures: Figures,
        now_us: int,
        fired: Iterable[tuple[str, str]],
        extensions: dict[str, Decimal],
    ) -> tuple[bool, dict[str, Decimal]]:
        """(exact?, remaining per unit) for the ``balance`` controls of ``customer``
        (``fired``: its fired levels; ``extensions``: the limits overrides added)."""
        keys = {p.key for p in balance}
        cached = self.books.get(customer)
        if (
            cached is not None
            and not live.bounded_prices
            and not any(policy in keys for policy, _ in fired)
            and now_us - cached[0] < BOOK_REFRESH_US
            and not live.grant_edge_between(cached[0], now_us)
        ):
            _, exact, amounts = cached
            lower = _lower_bound(exact, amounts, figures)
            if all(
                lower.get(p.unit or figures.currency, ZERO)
                > p.remaining_at_most - extensions.get(p.key, ZERO)
                for p in balance
                if (p.unit or figures.currency) in lower
            ):
                self.stale.add(customer)
                return False, lower
        exact = self.projection.remaining(customer)
        self.books[customer] = (
            now_us,
            exact,
            {key: line.amount for key, line in _keyed(figures) if line.amount is not None},
        )
        self.stale.discard(customer)
        return True, exact


def _lower_bound(
    exact: dict[str, Decimal], amounts: dict[Any, Decimal], figures: Figures
) -> dict[str, Decimal]:
    """The ``exact`` balances less every increase of a line's amount since ``amounts``."""
    increase: dict[str, Decimal] = {}
    for key, line in _keyed(figures):
        if line.amount is None or line.unit is None:
            continue
        before = amounts.get(key, ZERO)
        if line.amount > before:
            increase[line.unit] = increase.get(line.unit, ZERO) + line.amount - before
    return {unit: value - increase.get(unit, ZERO) for unit, value in exact.items()}


def _keyed(figures: Figures) -> list[tuple[tuple[Any, ...], Any]]:
    """Each line with a key that tells apart the same meter and group in two segments of
    an amended period (the n-th occurrence, in the figures' stable order)."""
    seen: dict[tuple[Any, ...], int] = {}
    keyed = []
    for line in figures.lines:
        base = (line.meter, tuple(line.group.items()))
        seen[base] = seen.get(base, 0) + 1
        keyed.append(((*base, seen[base]), line))
    return keyed
