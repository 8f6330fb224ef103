"""Which control levels fire or re-arm, deciding the conditions alone (pure).

``evaluate`` answers exactly what ``control_policies.evaluate`` answers (the same
firings and re-arms, each with the same ``observed`` values, the same fired set), but it
decides each level's condition without building what ``read`` shows for it: the
``observed`` values (numbers formatted as text, a spike's baseline rounded for display)
are read only for the levels that fire or re-arm. The live engine evaluates every touched
customer each cycle, and almost every evaluation changes nothing.

Invariants:

* each condition is the expression its ``control_policies`` reader decides on, under
  the same decimal context (``MONEY_CONTEXT``): same value, same exceptions, except
  where ``read`` fails formatting a value it would show (a figure beyond the 40 digits
  of its display context): that failure now comes only when the level fires or re-arms;
* level labels are ``ControlPolicy.levels`` computed in ``MONEY_CONTEXT``, as ``read``
  labels them (the same in any context for percentages of at most 28 digits); a spend
  threshold's labels and amount x percent / 100 are kept per (amount, percentages);
* a level that fires or re-arms carries ``read``'s observed values for it;
* the fired set keeps only the levels the policies declare (``ControlPolicy.levels``);
* ``tests/property/test_control_conditions.py`` checks both evaluations agree on random
  policies, observations, fired sets and extensions.

``spikes`` gives the ``usage_spike`` quantities an ``Observation`` needs, reading a
baseline (the long sum: an hour of buckets by default) only where it can change an
answer: where the window reaches the minimum (the condition's first half), or where the
level has fired (its re-arm shows the baseline). Elsewhere the condition is false
whatever the baseline and nothing is shown, so 0 stands in for it: ``evaluate`` answers
the same as with every baseline read (the same test checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Decimal, localcontext

from meterline.core.control_policies import (
    HUNDRED,
    LEVEL,
    ZERO,
    ControlPolicy,
    Evaluation,
    Firing,
    Observation,
    RateCounter,
    Rearm,
    read,
)
from meterline.core.money import MONEY_CONTEXT

THRESHOLDS_CACHED_MAX = 1024
"""Distinct (amount, percentages) of spend thresholds whose levels are kept; past it the
cache starts again (levels are recomputed, never wrong)."""

_thresholds: dict[tuple[Decimal, tuple[Decimal, ...]], tuple[tuple[str, Decimal], ...]] = {}
"""A spend threshold's (amount, percentages) -> each level's (label, amount x percent /
100), computed in ``MONEY_CONTEXT`` as ``read`` computes them."""

Condition = Callable[[ControlPolicy, Observation, Decimal], bool]
"""The condition of a one-level policy, as its reader decides it (in ``MONEY_CONTEXT``)."""


def _threshold_levels(
    amount: Decimal, percents: tuple[Decimal, ...]
) -> tuple[tuple[str, Decimal], ...]:
    """Each level's (label, amount x percent / 100) of a spend threshold (in
    ``MONEY_CONTEXT``), remembered: formatting labels and dividing are the costly part."""
    key = (amount, percents)
    levels = _thresholds.get(key)
    if levels is None:
        if len(_thresholds) >= THRESHOLDS_CACHED_MAX:
            _thresholds.clear()
        labels = ControlPolicy("", "spend_threshold", (), percents=percents).levels()
        levels = _thresholds[key] = tuple(
            (label, amount * percent / HUNDRED)
            for label, percent in zip(labels, percents, strict=True)
        )
    return levels


def _balance(policy: ControlPolicy, observation: Observation, extension: Decimal) -> bool:
    remaining = observation.remaining.get(policy.unit or observation.currency)
    return remaining is not None and remaining <= policy.remaining_at_most - extension


def _cost(policy: ControlPolicy, observation: Observation, extension: Decimal) -> bool:
    limit = observation.prepaid * (1 + policy.margin_percent / HUNDRED) + extension
    return observation.cost > limit


def _margin(policy: ControlPolicy, observation: Observation, extension: Decimal) -> bool:
    spend, cost = observation.spend, observation.cost - extension
    judged = spend >= policy.minimum and (spend > 0 or cost > 0)
    return judged and (spend - cost) * HUNDRED < policy.margin_percent * spend


def _spike(policy: ControlPolicy, observation: Observation, extension: Decimal) -> bool:
    window, baseline = observation.spikes.get(policy.key, (ZERO, ZERO))
    return window >= policy.minimum + extension and (
        window * policy.baseline_us > policy.factor * baseline * policy.window_us
    )


def _overdue(policy: ControlPolicy, observation: Observation, extension: Decimal) -> bool:
    limit = policy.days + int(extension)
    today = observation.today
    if today is None:
        return False
    latest: int | None = None
    for invoice in observation.open_invoices:
        late = (today - (invoice.issued + timedelta(days=policy.net_days))).days
        if invoice.open > 0 and (latest is None or late > latest):
            latest = late
    return latest is not None and latest > limit


_CONDITIONS: dict[str, Condition] = {
    "balance_exhausted": _balance,
    "cost_exceeds_prepayment": _cost,
    "margin_floor": _margin,
    "usage_spike": _spike,
    "invoice_overdue": _overdue,
}
"""Each one-level kind's condition (``spend_threshold`` has one per percentage)."""


def _crossed(
    policy: ControlPolicy, observation: Observation, extension: Decimal
) -> list[tuple[str, bool]]:
    """Each level's (label, condition), in ``read``'s order (in ``MONEY_CONTEXT``)."""
    if policy.kind == "spend_threshold":
        assert policy.amount is not None
        spend = observation.spend
        return [
            (label, spend >= share + extension)
            for label, share in _threshold_levels(policy.amount, policy.percents)
        ]
    condition = _CONDITIONS.get(policy.kind, _spike)
    return [(LEVEL, condition(policy, observation, extension))]


def evaluate(
    policies: tuple[ControlPolicy, ...],
    observation: Observation,
    fired: frozenset[tuple[str, str]],
    extensions: Mapping[str, Decimal] | None = None,
) -> Evaluation:
    """``control_policies.evaluate``: which levels fire now and which re-arm, given the
    levels ``fired`` before; ``observed`` values are read only for those."""
    firings: list[Firing] = []
    rearms: list[Rearm] = []
    now_fired = set(fired)
    known: set[tuple[str, str]] = set()
    with localcontext(MONEY_CONTEXT):
        decided = [
            (policy, extension, _crossed(policy, observation, extension))
            for policy in policies
            for extension in ((extensions or {}).get(policy.key, ZERO),)
        ]
    for policy, extension, conditions in decided:
        observed: dict[str, dict[str, str]] | None = None
        for level, crossed in conditions:
            pair = (policy.key, level)
            known.add(pair)
            if crossed == (pair in now_fired):
                continue
            if observed is None:
                observed = {r.level: r.observed for r in read(policy, observation, extension)}
            if crossed:
                firings.append(Firing(policy, level, observed[level]))
                now_fired.add(pair)
            else:
                rearms.append(Rearm(policy, level, observed[level]))
                now_fired.discard(pair)
    return Evaluation(firings, rearms, frozenset(now_fired & known))


def spikes(
    policies: tuple[ControlPolicy, ...],
    counters: Mapping[str | None, RateCounter],
    fired: frozenset[tuple[str, str]],
    extensions: Mapping[str, Decimal] | None,
    now_us: int,
) -> dict[str, tuple[Decimal, Decimal]]:
    """Each ``usage_spike`` policy's (window, baseline) quantities at ``now_us`` (those
    whose meter has a counter), the baseline 0 where it cannot matter (module docstring)."""
    found: dict[str, tuple[Decimal, Decimal]] = {}
    for policy in policies:
        if policy.kind != "usage_spike" or policy.meter not in counters:
            continue
        counter = counters[policy.meter]
        window = counter.window(policy, now_us)
        extension = (extensions or {}).get(policy.key, ZERO)
        if (policy.key, LEVEL) not in fired and window < MONEY_CONTEXT.add(
            policy.minimum, extension
        ):
            found[policy.key] = (window, ZERO)
        else:
            found[policy.key] = (window, counter.baseline(policy, now_us))
    return found
