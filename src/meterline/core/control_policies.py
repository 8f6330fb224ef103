"""Controls: policies on a customer's live figures, and when they fire (pure).

A control watches one figure and fires its actions once per *crossing*: when its
condition turns true after being false (or never evaluated). While the condition stays
true nothing more fires; when it turns false the level is *re-armed*, and the next
crossing fires again. A spend threshold has one level per percentage; every other policy
has one level. Because each level fires on the false -> true edge of a condition over
cumulative figures, how the usage is split into batches does not change which levels
fire (tested by hypothesis over random splits).

Policies:

- ``balance_exhausted``: the remaining balance of ``unit`` (a credit type or currency)
  is at most ``remaining_at_most`` (0: exhausted; a positive value makes it a low-balance
  warning). An ``extend`` override lets the balance go that much further below.
- ``cost_exceeds_prepayment``: cost to serve (COGS) so far in the period exceeds what the
  customer prepaid for it, by more than ``margin_percent``: cost > prepaid x (1 + m/100).
- ``margin_floor``: gross margin so far in the period, (spend - cost) / spend, is below
  ``margin_percent`` once spend reached ``minimum`` (cost with no spend at all is below
  any floor): (spend - cost) x 100 < floor x spend, decided exactly. An ``extend``
  override allows that much more cost.
- ``spend_threshold``: usage spend in the period reached ``percent`` of ``amount``, per
  percentage level (e.g. 50/80/100: the shared design's "previous < T <= current").
- ``usage_spike``: the quantity of ``meter`` (events when None) in the last ``window``
  is more than ``factor`` x the baseline rate (the trailing ``baseline`` before the
  window, scaled to one window) and at least ``minimum``: factor 11 is +1000%.
- ``invoice_overdue``: an invoice of the customer has an amount open more than ``days``
  past its due date (``net_days`` after the day it was issued) on the observation's
  ``today``, as ``core.payments.overdue`` counts it. An ``extend`` override allows that
  many more days.

Actions: ``block`` (everything, or only ``features``), ``alert`` (a webhook), ``true_up``
(an invoice for the unbilled usage now), ``top_up`` (a credit grant per ``top_up``).
Blocks from a spike are held until an override releases them (the spike subsides
*because* the agent is blocked); other blocks lift when their condition clears, unless
``release: manual``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Context, Decimal, localcontext
from itertools import repeat
from typing import Literal, get_args

from meterline.core.money import MONEY_CONTEXT, cost_of

ZERO = Decimal(0)
HUNDRED = Decimal(100)

PolicyKind = Literal[
    "balance_exhausted",
    "cost_exceeds_prepayment",
    "margin_floor",
    "spend_threshold",
    "usage_spike",
    "invoice_overdue",
]
POLICY_KINDS: tuple[PolicyKind, ...] = get_args(PolicyKind)
ActionKind = Literal["block", "alert", "true_up", "top_up"]
ACTION_KINDS: tuple[ActionKind, ...] = ("block", "alert", "true_up", "top_up")
Release = Literal["clear", "manual"]
RELEASES: tuple[Release, ...] = ("clear", "manual")

SPIKE_BUCKET_US = 1_000_000
"""Usage-rate buckets are one second wide: a spike window is a whole number of them."""
SPIKE_WINDOW_MIN_US = 10 * SPIKE_BUCKET_US
SPIKE_HISTORY_MAX_US = 24 * 3600 * 1_000_000
"""The longest window + baseline a usage_spike may look back over."""
SPIKE_BLOCK_BUCKETS = 60
"""Buckets per block sum: a window's total reads whole minutes, and ten-second sums and
seconds at its edges."""
SPIKE_TEN_BUCKETS = 10
"""Buckets per ten-second sum (divides ``SPIKE_BLOCK_BUCKETS``): a window's edges read at
most 5 of them and 9 seconds each, instead of up to 59 seconds."""
_SPIKE_WIDTHS = (1, SPIKE_TEN_BUCKETS, SPIKE_BLOCK_BUCKETS)
"""The buckets each level of a ``RateCounter``'s sums spans, finest first."""
NET_DAYS_DEFAULT = 30
"""An invoice is due this many days after it was issued (``core.payments`` alike)."""
LEVEL = "crossed"
"""The one level of a policy that is not a spend threshold."""
_DISPLAY_CONTEXT = Context(prec=40)
"""For observed values shown to people, never for a decision."""


@dataclass(frozen=True, slots=True)
class TopUpRule:
    """What a ``top_up`` action grants: ``amount`` of ``credit_type`` for ``paid``; or,
    with ``target_balance``, what brings the balance back to it, at least ``minimum`` and
    at most ``maximum`` per top-up. ``unit_cost``: the price of one unit granted (the
    grant's cost basis), instead of a fixed ``paid``."""

    credit_type: str
    amount: Decimal
    paid: Decimal = ZERO
    expires_after_days: int | None = None
    target_balance: Decimal | None = None
    minimum: Decimal = ZERO
    maximum: Decimal | None = None
    unit_cost: Decimal | None = None

    def grant_for(self, balance: Decimal) -> Decimal:
        """How much to grant when the remaining balance is ``balance``: the fixed amount,
        or the way back to the target within the bounds (0: nothing to grant)."""
        if self.target_balance is None:
            return self.amount
        with localcontext(MONEY_CONTEXT):
            needed = self.target_balance - balance
        if needed <= 0:
            return ZERO
        needed = max(needed, self.minimum)
        return needed if self.maximum is None else min(needed, self.maximum)

    def paid_for(self, granted: Decimal, currency: str) -> Decimal:
        """What ``granted`` units cost: ``granted x unit_cost`` rounded once to
        ``currency``, or the fixed ``paid``."""
        if self.unit_cost is None:
            return self.paid
        return cost_of(granted, self.unit_cost, currency)


@dataclass(frozen=True, slots=True)
class ControlPolicy:
    """One declared control (see the module docstring for each kind's fields)."""

    key: str
    kind: PolicyKind
    actions: tuple[ActionKind, ...]
    unit: str | None = None
    remaining_at_most: Decimal = ZERO
    margin_percent: Decimal = ZERO
    amount: Decimal | None = None
    percents: tuple[Decimal, ...] = (HUNDRED,)
    meter: str | None = None
    window_us: int = 5 * 60 * 1_000_000
    baseline_us: int = 60 * 60 * 1_000_000
    factor: Decimal = Decimal(11)
    minimum: Decimal = ZERO
    features: tuple[str, ...] = ()
    top_up: TopUpRule | None = None
    release: Release = "clear"
    days: int = 0
    net_days: int = NET_DAYS_DEFAULT

    def levels(self) -> tuple[str, ...]:
        if self.kind == "spend_threshold":
            return tuple(_percent_label(p) for p in self.percents)
        return (LEVEL,)

    @property
    def held(self) -> bool:
        """A block that only an override lifts."""
        return self.release == "manual" or self.kind == "usage_spike"


def _percent_label(percent: Decimal) -> str:
    return f"{percent.normalize():f}%"


@dataclass(frozen=True, slots=True)
class OpenInvoice:
    """A finalized invoice with an amount still open, as ``invoice_overdue`` reads it."""

    invoice_id: str
    issued: date
    open: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Observation:
    """A customer's live figures, as the controls see them.

    ``spikes`` maps a policy key to (quantity in the window, quantity in the baseline);
    ``open_invoices`` are the customer's receivables with an amount open on ``today``
    (the date the ``invoice_overdue`` controls count days to; None: not read).
    """

    spend: Decimal = ZERO
    cost: Decimal = ZERO
    prepaid: Decimal = ZERO
    remaining: Mapping[str, Decimal] = field(default_factory=dict)
    spikes: Mapping[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    currency: str = "USD"
    open_invoices: tuple[OpenInvoice, ...] = ()
    today: date | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One level's condition and the values it was decided on."""

    policy: str
    level: str
    crossed: bool
    observed: dict[str, str]


@dataclass(frozen=True, slots=True)
class Firing:
    """A level that crossed: its policy's actions are due."""

    policy: ControlPolicy
    level: str
    observed: dict[str, str]


@dataclass(frozen=True, slots=True)
class Rearm:
    """A level whose condition cleared after it fired: the next crossing fires again."""

    policy: ControlPolicy
    level: str
    observed: dict[str, str]


def _text(value: Decimal) -> str:
    return f"{value:f}"


def read(
    policy: ControlPolicy, observation: Observation, extension: Decimal = ZERO
) -> list[Reading]:
    """The condition of each of ``policy``'s levels on ``observation``; ``extension`` is
    the limit an ``extend`` override added."""
    reader = _READERS.get(policy.kind, _read_usage_spike)
    with localcontext(MONEY_CONTEXT):
        return reader(policy, observation, extension)


def _read_balance(
    policy: ControlPolicy, observation: Observation, extension: Decimal
) -> list[Reading]:
    unit = policy.unit or observation.currency
    remaining = observation.remaining.get(unit)
    if remaining is None:
        return [Reading(policy.key, LEVEL, False, {"unit": unit, "remaining": "none"})]
    limit = policy.remaining_at_most - extension
    return [
        Reading(
            policy.key,
            LEVEL,
            remaining <= limit,
            {"unit": unit, "remaining": _text(remaining), "limit": _text(limit)},
        )
    ]


def _read_cost(
    policy: ControlPolicy, observation: Observation, extension: Decimal
) -> list[Reading]:
    limit = observation.prepaid * (1 + policy.margin_percent / HUNDRED) + extension
    return [
        Reading(
            policy.key,
            LEVEL,
            observation.cost > limit,
            {
                "cost": _text(observation.cost),
                "prepaid": _text(observation.prepaid),
                "limit": _text(limit),
            },
        )
    ]


def _read_margin(
    policy: ControlPolicy, observation: Observation, extension: Decimal
) -> list[Reading]:
    spend, cost = observation.spend, observation.cost - extension
    judged = spend >= policy.minimum and (spend > 0 or cost > 0)
    crossed = judged and (spend - cost) * HUNDRED < policy.margin_percent * spend
    with localcontext(_DISPLAY_CONTEXT):
        shown = (
            "none"
            if spend == 0
            else _text(((spend - cost) * HUNDRED / spend).quantize(Decimal("0.1")))
        )
    return [
        Reading(
            policy.key,
            LEVEL,
            crossed,
            {
                "spend": _text(spend),
                "cost": _text(observation.cost),
                "margin_percent": shown,
                "floor_percent": _text(policy.margin_percent),
            },
        )
    ]


def _read_spend(
    policy: ControlPolicy, observation: Observation, extension: Decimal
) -> list[Reading]:
    assert policy.amount is not None
    readings = []
    for percent in policy.percents:
        limit = policy.amount * percent / HUNDRED + extension
        readings.append(
            Reading(
                policy.key,
                _percent_label(percent),
                observation.spend >= limit,
                {"spend": _text(observation.spend), "threshold": _text(limit)},
            )
        )
    return readings


def _read_usage_spike(
    policy: ControlPolicy, observation: Observation, extension: Decimal
) -> list[Reading]:
    window, baseline = observation.spikes.get(policy.key, (ZERO, ZERO))
    # window > factor x baseline x (window length / baseline length), multiplied out
    # so the decision stays exact; the scaled baseline is shown rounded (display only).
    crossed = window >= policy.minimum + extension and (
        window * policy.baseline_us > policy.factor * baseline * policy.window_us
    )
    with localcontext(_DISPLAY_CONTEXT):
        per_window = (baseline * policy.window_us / policy.baseline_us).quantize(Decimal("0.01"))
    return [
        Reading(
            policy.key,
            LEVEL,
            crossed,
            {
                "window": _text(window),
                "baseline_per_window": _text(per_window.normalize()),
                "factor": _text(policy.factor),
                "minimum": _text(policy.minimum + extension),
            },
        )
    ]


def _read_overdue(
    policy: ControlPolicy, observation: Observation, extension: Decimal
) -> list[Reading]:
    limit = policy.days + int(extension)
    observed = {"days_limit": str(limit), "net_days": str(policy.net_days)}
    latest: tuple[int, OpenInvoice] | None = None
    today = observation.today
    if today is not None:
        for invoice in observation.open_invoices:
            late = (today - (invoice.issued + timedelta(days=policy.net_days))).days
            if invoice.open > 0 and (latest is None or late > latest[0]):
                latest = (late, invoice)
    if latest is None:
        return [Reading(policy.key, LEVEL, False, {**observed, "invoice": "none"})]
    late, invoice = latest
    observed |= {
        "invoice": invoice.invoice_id,
        "days_past_due": str(late),
        "open": _text(invoice.open),
        "currency": invoice.currency,
    }
    return [Reading(policy.key, LEVEL, late > limit, observed)]


_READERS: dict[str, Callable[[ControlPolicy, Observation, Decimal], list[Reading]]] = {
    "invoice_overdue": _read_overdue,
    "balance_exhausted": _read_balance,
    "cost_exceeds_prepayment": _read_cost,
    "margin_floor": _read_margin,
    "spend_threshold": _read_spend,
}
"""Each kind's reading of its levels (every other kind is a ``usage_spike``)."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    firings: list[Firing]
    rearms: list[Rearm]
    fired: frozenset[tuple[str, str]]
    """(policy, level) pairs whose condition is true and that have fired (not re-armed)."""


def evaluate(
    policies: tuple[ControlPolicy, ...],
    observation: Observation,
    fired: frozenset[tuple[str, str]],
    extensions: Mapping[str, Decimal] | None = None,
) -> Evaluation:
    """Which levels fire now and which re-arm, given the levels ``fired`` before."""
    firings: list[Firing] = []
    rearms: list[Rearm] = []
    now_fired = set(fired)
    for policy in policies:
        extension = (extensions or {}).get(policy.key, ZERO)
        for reading in read(policy, observation, extension):
            pair = (policy.key, reading.level)
            if reading.crossed and pair not in now_fired:
                firings.append(Firing(policy, reading.level, reading.observed))
                now_fired.add(pair)
            elif not reading.crossed and pair in now_fired:
                rearms.append(Rearm(policy, reading.level, reading.observed))
                now_fired.discard(pair)
    known = {(p.key, level) for p in policies for level in p.levels()}
    return Evaluation(firings, rearms, frozenset(now_fired & known))


# -- usage rates ------------------------------------------------------------------------------


class RateCounter:
    """Quantity per second-wide bucket of event time, for ``usage_spike``, with two more
    levels of sums: per ten seconds (``SPIKE_TEN_BUCKETS``) and per block of
    ``SPIKE_BLOCK_BUCKETS``. Adds in O(1) (three dict updates), sums a window in
    O(window / block + 2 x (block / ten + ten)) lookups instead of O(window seconds), and
    forgets buckets older than the longest look-back. Sums are exact (ints stay ints,
    decimals add in ``MONEY_CONTEXT``), so a total is the same however it is grouped."""

    __slots__ = ("blocks", "buckets", "decimals", "horizon_us", "newest", "tens")

    def __init__(self, horizon_us: int = SPIKE_HISTORY_MAX_US) -> None:
        self.buckets: dict[int, Decimal | int] = {}
        self.tens: dict[int, Decimal | int] = {}
        self.blocks: dict[int, Decimal | int] = {}
        self.horizon_us = horizon_us
        self.newest = 0
        self.decimals = False
        """Whether a Decimal quantity was ever added (else every sum is an int)."""

    def add(self, timestamp_us: int, quantity: Decimal | int) -> None:
        """Add ``quantity`` (an int stays an int: exact, and no decimal context per event)."""
        bucket = timestamp_us // SPIKE_BUCKET_US
        ten = bucket // SPIKE_TEN_BUCKETS
        block = bucket // SPIKE_BLOCK_BUCKETS
        buckets, tens, blocks = self.buckets, self.tens, self.blocks
        if type(quantity) is int:
            buckets[bucket] = buckets.get(bucket, 0) + quantity
            tens[ten] = tens.get(ten, 0) + quantity
            blocks[block] = blocks.get(block, 0) + quantity
        else:
            self.decimals = True
            with localcontext(MONEY_CONTEXT):
                buckets[bucket] = buckets.get(bucket, ZERO) + quantity
                tens[ten] = tens.get(ten, ZERO) + quantity
                blocks[block] = blocks.get(block, ZERO) + quantity
        if bucket > self.newest:
            self.newest = bucket
            if len(self.buckets) > 2 * (self.horizon_us // SPIKE_BUCKET_US):
                self.forget()

    def forget(self) -> None:
        """Drop buckets older than the horizon, and the sums wholly older (a sum the
        horizon cuts keeps its whole: only a window reaching past the horizon, which no
        policy has, would read it whole)."""
        oldest = self.newest - self.horizon_us // SPIKE_BUCKET_US
        for bucket in [b for b in self.buckets if b < oldest]:
            del self.buckets[bucket]
        first_ten = oldest // SPIKE_TEN_BUCKETS
        for ten in [t for t in self.tens if t < first_ten]:
            del self.tens[ten]
        first_block = oldest // SPIKE_BLOCK_BUCKETS
        for block in [b for b in self.blocks if b < first_block]:
            del self.blocks[block]

    def total(self, start_us: int, end_us: int) -> Decimal:
        """The quantity with event time in [start, end), at bucket resolution: the whole
        blocks inside, then the whole ten seconds and the seconds at either edge (looked up
        by ``map``, so the loops run in C and a window total costs microseconds)."""
        first, last = start_us // SPIKE_BUCKET_US, end_us // SPIKE_BUCKET_US
        if last <= first:
            return ZERO
        if not self.decimals:  # ints only: exact without a decimal context
            return Decimal(self._span(0, first, last))
        with localcontext(MONEY_CONTEXT):
            return ZERO + self._span(0, first, last)

    def _span(self, level: int, first: int, last: int) -> Decimal | int:
        """The quantity of buckets [first, last) (multiples of the level's width) from the
        sums of ``level`` at the edges and the coarser levels' sums within."""
        width = _SPIKE_WIDTHS[level]
        sums = (self.buckets, self.tens, self.blocks)[level]
        if level + 1 < len(_SPIKE_WIDTHS):
            coarse = _SPIKE_WIDTHS[level + 1]
            inner_first = -(-first // coarse) * coarse
            inner_last = last // coarse * coarse
            if inner_first < inner_last:
                return (
                    sum(map(sums.get, range(first // width, inner_first // width), repeat(0)), 0)
                    + self._span(level + 1, inner_first, inner_last)
                    + sum(map(sums.get, range(inner_last // width, last // width), repeat(0)), 0)
                )
        return sum(map(sums.get, range(first // width, last // width), repeat(0)), 0)

    def spike(self, policy: ControlPolicy, now_us: int) -> tuple[Decimal, Decimal]:
        """(quantity in the window ending now, quantity in the baseline before it)."""
        return self.window(policy, now_us), self.baseline(policy, now_us)

    def window(self, policy: ControlPolicy, now_us: int) -> Decimal:
        """The quantity in ``policy``'s window ending now (its bucket included)."""
        end = (now_us // SPIKE_BUCKET_US + 1) * SPIKE_BUCKET_US
        return self.total(end - policy.window_us, end)

    def baseline(self, policy: ControlPolicy, now_us: int) -> Decimal:
        """The quantity in ``policy``'s baseline, before the window ending now."""
        window_start = (now_us // SPIKE_BUCKET_US + 1) * SPIKE_BUCKET_US - policy.window_us
        return self.total(window_start - policy.baseline_us, window_start)


# -- access ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Block:
    """An active block: which policy (or override) set it, on which features (all when
    empty), since when, and why."""

    policy: str
    features: tuple[str, ...]
    reason: str
    since_us: int


@dataclass(frozen=True, slots=True)
class AccessDecision:
    """May the customer use the feature now?"""

    allowed: bool
    reason: str
    policy: str | None = None


def decide(blocks: tuple[Block, ...], feature: str | None) -> AccessDecision:
    """The answer for ``feature`` (None: the customer as a whole) given the active blocks:
    a block on everything denies all; a block on features denies those features."""
    for block in blocks:
        if not block.features or (feature is not None and feature in block.features):
            return AccessDecision(False, block.reason, block.policy)
    return AccessDecision(True, "")
