"""Allocating a price across performance obligations by relative standalone selling
price (ASC 606-10-32-28 to 32-41; IFRS 15.73-86) (pure).

A contract's price covers several promises (a platform licence, support, onboarding);
revenue is recognized per promise, so the price is split over them in proportion to what
each would sell for alone (its standalone selling price, SSP). A bundle discount is
spread proportionally (606-10-32-36) unless the user allocates it otherwise. The shares
are whole minor units that add up to the price exactly (``money.allocate``: floors, then
the leftover units to the largest remainders, earlier obligations first on ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from meterline.core.errors import MeterlineError
from meterline.core.money import allocate

Recognition = Literal["point", "ratable"]
RECOGNITIONS: tuple[Recognition, ...] = ("point", "ratable")


class AllocationError(MeterlineError, ValueError):
    """Obligations that cannot carry a price: none, or a negative or all-zero SSP."""

    code = "invalid_allocation"
    http_status = 422


@dataclass(frozen=True, slots=True)
class Obligation:
    """A distinct promise: its name, standalone selling price and how its revenue is
    recognized (``point``: when the service starts; ``ratable``: over the service)."""

    name: str
    standalone_price: Decimal
    recognition: Recognition = "ratable"


def allocate_by_ssp(
    price: Decimal, obligations: Sequence[Obligation], currency: str
) -> list[Decimal]:
    """``price`` split over ``obligations`` by relative SSP, in whole minor units of
    ``currency`` that sum exactly to ``price`` (a negative price, a credit, splits the
    same way with its sign)."""
    if not obligations:
        raise AllocationError("obligations: at least one is needed")
    weights = [obligation.standalone_price for obligation in obligations]
    if any(weight < 0 for weight in weights) or not any(weights):
        raise AllocationError("obligations: standalone prices must be 0 or more, not all 0")
    if price < 0:
        return [-share for share in allocate(-price, weights, currency)]
    return allocate(price, weights, currency)
