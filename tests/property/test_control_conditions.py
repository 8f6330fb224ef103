"""``core.control_conditions.evaluate`` (conditions first, observed values only for the
levels that change) against ``core.control_policies.evaluate`` (every level read in
full): the same firings and re-arms, with the same observed values, and the same fired
set, on random policies of every kind, observations, fired sets and extensions; and
``control_conditions.spikes`` (a baseline read only where it can matter) against every
baseline read: the same answers."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core import control_conditions, control_policies
from meterline.core.control_policies import (
    LEVEL,
    POLICY_KINDS,
    ControlPolicy,
    Observation,
    OpenInvoice,
    RateCounter,
)

TODAY = date(2026, 10, 20)
KEYS = ("a", "b", "c")

# small values, mostly whole: every condition meets its boundary (equality) often
money = st.one_of(st.integers(-3, 12).map(D), st.decimals(-3, 12, places=2, allow_nan=False))
positive = st.one_of(st.integers(0, 10).map(D), st.decimals(0, 10, places=1, allow_nan=False))
percents = st.lists(
    st.sampled_from((D(50), D(80), D(100), D("0.5"), D("12.5"), D(150))),
    min_size=1,
    max_size=4,
    unique=True,
).map(tuple)


@st.composite
def policies(draw: st.DrawFn) -> tuple[ControlPolicy, ...]:
    chosen = []
    for key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True)):
        kind = draw(st.sampled_from(POLICY_KINDS))
        chosen.append(
            ControlPolicy(
                key,
                kind,
                ("alert",),
                unit=draw(st.sampled_from((None, "USD", "credits"))),
                remaining_at_most=draw(positive),
                margin_percent=draw(st.sampled_from((D(0), D(10), D(50), D(100)))),
                amount=draw(positive) if kind == "spend_threshold" else None,
                percents=draw(percents),
                window_us=draw(st.sampled_from((60_000_000, 300_000_000))),
                baseline_us=draw(st.sampled_from((600_000_000, 3_600_000_000))),
                factor=draw(st.sampled_from((D(1), D(2), D("2.5")))),
                minimum=draw(positive),
                days=draw(st.integers(0, 6)),
                net_days=draw(st.integers(0, 6)),
            )
        )
    return tuple(chosen)


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    invoices = tuple(
        OpenInvoice(f"inv-{number}", TODAY - timedelta(days=draw(st.integers(0, 14))), open_, "USD")
        for number, open_ in enumerate(draw(st.lists(money, max_size=3)))
    )
    return Observation(
        spend=draw(money),
        cost=draw(money),
        prepaid=draw(positive),
        remaining=draw(st.dictionaries(st.sampled_from(("USD", "credits")), money, max_size=2)),
        spikes=draw(st.dictionaries(st.sampled_from(KEYS), st.tuples(positive, positive))),
        currency="USD",
        open_invoices=invoices,
        today=draw(st.sampled_from((None, TODAY))),
    )


@settings(max_examples=600, deadline=None)
@given(
    policies(),
    observations(),
    st.lists(
        st.tuples(
            st.sampled_from((*KEYS, "gone")),
            st.sampled_from((LEVEL, "50%", "80%", "100%", "0.5%")),
        ),
        max_size=6,
    ).map(frozenset),
    st.one_of(st.none(), st.dictionaries(st.sampled_from(KEYS), st.integers(0, 3).map(D))),
)
def test_conditions_evaluate_as_every_reading_does(
    chosen: tuple[ControlPolicy, ...],
    observation: Observation,
    fired: frozenset[tuple[str, str]],
    extensions: dict[str, D] | None,
) -> None:
    general = control_policies.evaluate(chosen, observation, fired, extensions)
    fast = control_conditions.evaluate(chosen, observation, fired, extensions)
    assert fast == general


def test_a_crossing_carries_what_read_shows() -> None:
    policy = ControlPolicy("budget", "spend_threshold", ("alert",), amount=D(10), percents=(D(50),))
    result = control_conditions.evaluate((policy,), Observation(spend=D(6)), frozenset())
    assert [(f.level, f.observed) for f in result.firings] == [
        ("50%", {"spend": "6", "threshold": "5"})
    ]
    again = control_conditions.evaluate((policy,), Observation(spend=D(4)), result.fired)
    assert [(r.level, r.observed) for r in again.rearms] == [
        ("50%", {"spend": "4", "threshold": "5"})
    ]
    assert again.fired == frozenset()


NOW_US = 1_800_000_000_000_000


@st.composite
def counters(draw: st.DrawFn) -> dict[str | None, RateCounter]:
    found: dict[str | None, RateCounter] = {}
    for meter in draw(st.lists(st.sampled_from((None, "tokens")), max_size=2, unique=True)):
        counter = RateCounter()
        for seconds_ago, quantity in draw(
            st.lists(
                st.tuples(
                    st.integers(-2, 800),
                    st.one_of(st.integers(0, 6), st.decimals(0, 6, places=1, allow_nan=False)),
                ),
                max_size=25,
            )
        ):
            counter.add(NOW_US - seconds_ago * 1_000_000, quantity)
        found[meter] = counter
    return found


@st.composite
def spike_policies(draw: st.DrawFn) -> tuple[ControlPolicy, ...]:
    return tuple(
        ControlPolicy(
            key,
            "usage_spike",
            ("alert",),
            meter=draw(st.sampled_from((None, "tokens", "other"))),
            window_us=60_000_000,
            baseline_us=600_000_000,
            factor=draw(st.sampled_from((D(1), D(2), D("2.5")))),
            minimum=draw(st.integers(0, 12).map(D)),
        )
        for key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
    )


@settings(max_examples=400, deadline=None)
@given(
    spike_policies(),
    counters(),
    st.lists(st.sampled_from(KEYS), max_size=3).map(
        lambda keys: frozenset((k, LEVEL) for k in keys)
    ),
    st.one_of(st.none(), st.dictionaries(st.sampled_from(KEYS), st.integers(0, 3).map(D))),
)
def test_baselines_read_only_where_they_matter_answer_the_same(
    chosen: tuple[ControlPolicy, ...],
    counted: dict[str | None, RateCounter],
    fired: frozenset[tuple[str, str]],
    extensions: dict[str, D] | None,
) -> None:
    every = {
        policy.key: counted[policy.meter].spike(policy, NOW_US)
        for policy in chosen
        if policy.meter in counted
    }
    lazy = control_conditions.spikes(chosen, counted, fired, extensions, NOW_US)
    assert lazy.keys() == every.keys()
    assert all(lazy[key][0] == every[key][0] for key in every)
    full = control_policies.evaluate(chosen, Observation(spikes=every), fired, extensions)
    for evaluate in (control_policies.evaluate, control_conditions.evaluate):
        assert evaluate(chosen, Observation(spikes=lazy), fired, extensions) == full
