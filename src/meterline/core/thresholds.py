"""Progressive billing thresholds: fixed levels, then every X (pure).

A contract may bill its period's usage early at levels of the period's **cumulative**
usage (``scope: period``), or of the contract's **lifetime** usage across every period
(``scope: lifetime``: Lago's progressive billing, where a level is passed once in the
contract's life and a period invoice that bills past a level passes it too): fixed
levels in increasing order (``10, 50, 200``), then, optionally, every ``recurring`` above
the last one (``200 + 500``, ``200 + 1000``, ...). The levels are of money (the usage
charged so far, billed early or not) or, per period, of a meter's quantity (``meter``:
units, not money). Each time the cumulative figure reaches a level not reached before,
everything unbilled is invoiced at once (several levels crossed together make one
invoice); the period's own invoice then nets what was billed early.

``reached`` counts the levels at or below a figure; ``next_level`` is the progress the
live figures and access answers show. The older single ``threshold`` (bill whenever the
*unbilled* usage reaches X) stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Literal

from meterline.core.money import MONEY_CONTEXT

ZERO = Decimal(0)
LEVELS_LIMIT = 100
"""The most fixed levels a contract may declare."""
CROSSED_LIMIT = 100
"""The most levels one step reports as crossed (the rest on the next)."""
ThresholdScope = Literal["period", "lifetime"]
THRESHOLD_SCOPES: tuple[ThresholdScope, ...] = ("period", "lifetime")


@dataclass(frozen=True, slots=True)
class ThresholdLevels:
    """Fixed ``levels`` (increasing, above zero), then every ``recurring`` above the last
    (or from zero when there are none); of money, or of ``meter``'s quantity; of the
    period's usage or the contract's lifetime usage (``scope``, money only)."""

    levels: tuple[Decimal, ...] = ()
    recurring: Decimal | None = None
    meter: str | None = None
    scope: ThresholdScope = "period"

    def reached(self, figure: Decimal) -> int:
        """How many levels ``figure`` has reached (a level counts when reached exactly)."""
        count = sum(1 for level in self.levels if figure >= level)
        if self.recurring is None or count < len(self.levels):
            return count
        last = self.levels[-1] if self.levels else ZERO
        with localcontext(MONEY_CONTEXT):
            steps = int((figure - last) // self.recurring) if figure > last else 0
        return count + steps

    def level(self, number: int) -> Decimal | None:
        """The ``number``-th level (from 1), or None when there is none."""
        if number < 1:
            return None
        if number <= len(self.levels):
            return self.levels[number - 1]
        if self.recurring is None:
            return None
        last = self.levels[-1] if self.levels else ZERO
        with localcontext(MONEY_CONTEXT):
            return last + self.recurring * (number - len(self.levels))

    def next_level(self, figure: Decimal) -> Decimal | None:
        """The next level above ``figure`` (None: none left)."""
        return self.level(self.reached(figure) + 1)

    def crossed(self, before: int, figure: Decimal) -> list[tuple[int, Decimal]]:
        """The levels (number, level) ``figure`` reached beyond the first ``before``
        (fixed and recurring alike), at most ``CROSSED_LIMIT`` of the lowest: one alert
        each."""
        reached = min(self.reached(figure), before + CROSSED_LIMIT)
        found = []
        for number in range(before + 1, reached + 1):
            level = self.level(number)
            if level is not None:
                found.append((number, level))
        return found


def threshold_level_errors(levels: ThresholdLevels, path: str) -> list[str]:
    """Every problem with declared levels, each naming its field."""
    errors = []
    if not levels.levels and levels.recurring is None:
        errors.append(f"{path}: give levels, a recurring amount, or both")
    if len(levels.levels) > LEVELS_LIMIT:
        errors.append(f"{path}.levels: at most {LEVELS_LIMIT}")
    if any(level <= 0 for level in levels.levels):
        errors.append(f"{path}.levels: each must be above zero")
    if any(b <= a for a, b in zip(levels.levels, levels.levels[1:], strict=False)):
        errors.append(f"{path}.levels: must increase")
    if levels.recurring is not None and levels.recurring <= 0:
        errors.append(f"{path}.recurring: must be above zero")
    if levels.scope not in THRESHOLD_SCOPES:
        errors.append(f"{path}.scope: {levels.scope!r} is not one of period, lifetime")
    if levels.scope == "lifetime" and levels.meter is not None:
        errors.append(f"{path}.scope: lifetime levels are of money (lifetime usage), not a meter")
    return errors
