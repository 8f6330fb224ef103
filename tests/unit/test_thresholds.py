"""Progressive billing levels (core.thresholds) and their declaration."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.config.source import ConfigurationError
from meterline.core.thresholds import ThresholdLevels
from tests.integration.test_commerce import PROGRESSIVE
from tests.unit.test_invoicing import configuration


def test_fixed_levels_then_every_recurring_amount() -> None:
    levels = ThresholdLevels((D(10), D(50)), D(100))
    assert [levels.reached(D(x)) for x in ("9.99", "10", "49", "50", "149", "150", "260")] == [
        0, 1, 1, 2, 2, 3, 4,
    ]  # fmt: skip
    assert [levels.level(n) for n in (1, 2, 3, 4)] == [D(10), D(50), D(150), D(250)]
    assert levels.next_level(D(55)) == D(150) and levels.next_level(D(0)) == D(10)
    assert ThresholdLevels((D(10),)).next_level(D(11)) is None
    assert ThresholdLevels((), D(25)).reached(D(74)) == 2


@given(st.decimals(D(0), D(10000), places=2), st.decimals(D(0), D(10000), places=2))
def test_reaching_is_monotone_and_each_reached_level_is_at_most_the_figure(a: D, b: D) -> None:
    levels = ThresholdLevels((D(10), D(50)), D(100))
    low, high = sorted((a, b))
    assert levels.reached(low) <= levels.reached(high)
    reached = levels.reached(high)
    if reached:
        assert levels.level(reached) <= high < levels.level(reached + 1)  # type: ignore[operator]


def test_bad_levels_are_named() -> None:
    bad = PROGRESSIVE.replace("levels: [10, 50], recurring: 100", "levels: [50, 10], recurring: 0")
    with pytest.raises(ConfigurationError) as raised:
        configuration(bad)
    text = str(raised.value)
    assert "contracts[0].credits.thresholds.levels: must increase" in text
    assert "contracts[0].credits.thresholds.recurring: must be above zero" in text


def test_the_scope_is_read_and_lifetime_levels_are_of_money() -> None:
    """``scope: lifetime`` is read (``period`` by default); a lifetime scope with a meter,
    or an unknown scope, is refused by its path."""
    lifetime = PROGRESSIVE.replace("recurring: 100", "recurring: 100, scope: lifetime")
    levels = configuration(lifetime).contracts[0].credits.threshold_levels
    assert levels is not None and levels.scope == "lifetime"
    default = configuration(PROGRESSIVE).contracts[0].credits.threshold_levels
    assert default is not None and default.scope == "period"
    by_meter = PROGRESSIVE.replace("recurring: 100", "meter: tokens, scope: lifetime")
    for text, reason in (
        (by_meter, "lifetime levels are of money"),
        (PROGRESSIVE.replace("recurring: 100", "recurring: 100, scope: forever"), "forever"),
    ):
        with pytest.raises(ConfigurationError) as raised:
            configuration(text)
        assert "contracts[0].credits.thresholds.scope" in str(raised.value)
        assert reason in str(raised.value), str(raised.value)
