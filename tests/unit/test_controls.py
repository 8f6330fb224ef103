"""Controls, pure: each policy's condition at its boundaries, firing once per crossing
(re-armed when the condition clears), usage-rate counting, access decisions, and the
``controls``/``costs`` sections of the pricing file (valid and, by path, invalid)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, read_yaml
from meterline.core.control_policies import (
    LEVEL,
    Block,
    ControlPolicy,
    Observation,
    RateCounter,
    TopUpRule,
    decide,
    evaluate,
    read,
)
from meterline.core.events import timestamp_to_us
from meterline.core.model import Configuration, CostRate

SECOND = 1_000_000
MINUTE = 60 * SECOND


def balance(
    remaining_at_most: D = D(0), unit: str | None = "credits", key: str = "empty"
) -> ControlPolicy:
    return ControlPolicy(
        key, "balance_exhausted", ("block",), unit=unit, remaining_at_most=remaining_at_most
    )


def cost(margin: D = D(0)) -> ControlPolicy:
    return ControlPolicy("cogs", "cost_exceeds_prepayment", ("alert",), margin_percent=margin)


def budget(amount: D = D(1000), percents: tuple[D, ...] = (D(50), D(80), D(100))) -> ControlPolicy:
    return ControlPolicy("budget", "spend_threshold", ("alert",), amount=amount, percents=percents)


def spike(minimum: D = D(100), factor: D = D(11)) -> ControlPolicy:
    return ControlPolicy(
        "spike",
        "usage_spike",
        ("block",),
        meter="tokens",
        window_us=MINUTE,
        baseline_us=10 * MINUTE,
        factor=factor,
        minimum=minimum,
    )


def crossed(policy: ControlPolicy, observation: Observation, extension: D = D(0)) -> list[bool]:
    return [reading.crossed for reading in read(policy, observation, extension)]


# -- read: each policy's condition ------------------------------------------------------------


def test_balance_crosses_at_the_limit_inclusive() -> None:
    policy = balance()
    assert crossed(policy, Observation(remaining={"credits": D("0.01")})) == [False]
    assert crossed(policy, Observation(remaining={"credits": D(0)})) == [True]
    assert crossed(policy, Observation(remaining={"credits": D(-5)})) == [True]
    low = balance(D(1000))
    assert crossed(low, Observation(remaining={"credits": D("1000.01")})) == [False]
    assert crossed(low, Observation(remaining={"credits": D(1000)})) == [True]
    (reading,) = read(low, Observation(remaining={"credits": D(1000)}))
    assert reading.policy == "empty" and reading.level == LEVEL
    assert reading.observed == {"unit": "credits", "remaining": "1000", "limit": "1000"}


def test_balance_of_a_unit_the_customer_has_no_grant_of_never_crosses() -> None:
    (reading,) = read(balance(), Observation(remaining={"USD": D(-100)}))
    assert not reading.crossed and reading.observed["remaining"] == "none"


def test_balance_without_unit_watches_the_contract_currency() -> None:
    policy = balance(unit=None)
    assert crossed(policy, Observation(remaining={"EUR": D(0)}, currency="EUR")) == [True]
    assert crossed(policy, Observation(remaining={"USD": D(0)}, currency="EUR")) == [False]


def test_balance_extension_lets_the_balance_go_further_below() -> None:
    policy = balance()
    assert crossed(policy, Observation(remaining={"credits": D(-10)}), D(10)) == [True]
    assert crossed(policy, Observation(remaining={"credits": D("-9.99")}), D(10)) == [False]


def test_cost_must_strictly_exceed_prepaid_with_margin() -> None:
    assert crossed(cost(), Observation(cost=D(100), prepaid=D(100))) == [False]
    assert crossed(cost(), Observation(cost=D("100.0001"), prepaid=D(100))) == [True]
    margin = cost(D(10))
    assert crossed(margin, Observation(cost=D(110), prepaid=D(100))) == [False]
    assert crossed(margin, Observation(cost=D("110.01"), prepaid=D(100))) == [True]
    # nothing prepaid: any cost exceeds it, no cost does not
    assert crossed(cost(), Observation(cost=D(0), prepaid=D(0))) == [False]
    assert crossed(cost(), Observation(cost=D("0.0000001"), prepaid=D(0))) == [True]
    # an extension raises the limit
    assert crossed(margin, Observation(cost=D(115), prepaid=D(100)), D(5)) == [False]
    assert crossed(margin, Observation(cost=D("115.01"), prepaid=D(100)), D(5)) == [True]


def test_spend_threshold_levels_cross_at_their_percentage_inclusive() -> None:
    policy = budget()
    assert [r.level for r in read(policy, Observation())] == ["50%", "80%", "100%"]
    assert crossed(policy, Observation(spend=D("499.99"))) == [False, False, False]
    assert crossed(policy, Observation(spend=D(500))) == [True, False, False]
    assert crossed(policy, Observation(spend=D(800))) == [True, True, False]
    assert crossed(policy, Observation(spend=D(1000))) == [True, True, True]
    # an extension shifts every level
    assert crossed(policy, Observation(spend=D(1000)), D(1)) == [True, True, False]
    assert read(policy, Observation(spend=D(1)), D(1))[2].observed["threshold"] == "1001"


def test_spend_threshold_labels_fractional_percentages_plainly() -> None:
    policy = budget(D(200), (D("12.5"), D("1E+2")))
    assert policy.levels() == ("12.5%", "100%")
    assert crossed(policy, Observation(spend=D(25))) == [True, False]


def test_spike_needs_the_minimum_and_more_than_factor_times_the_baseline() -> None:
    policy = spike(minimum=D(100))
    # baseline 600 over ten minutes is 60 per one-minute window; 11 x 60 = 660
    assert crossed(policy, Observation(spikes={"spike": (D(660), D(600))})) == [False]
    assert crossed(policy, Observation(spikes={"spike": (D(661), D(600))})) == [True]
    # above the factor but below the minimum: no
    assert crossed(policy, Observation(spikes={"spike": (D(99), D(0))})) == [False]
    # a zero baseline: the volume at the minimum crosses
    assert crossed(policy, Observation(spikes={"spike": (D(100), D(0))})) == [True]
    # at the minimum but not above the factor
    assert crossed(policy, Observation(spikes={"spike": (D(100), D(1000))})) == [False]
    (reading,) = read(policy, Observation(spikes={"spike": (D(661), D(600))}))
    assert reading.observed == {
        "window": "661",
        "baseline_per_window": "60",
        "factor": "11",
        "minimum": "100",
    }


def test_spike_decision_is_exact_when_the_scaled_baseline_does_not_terminate() -> None:
    policy = ControlPolicy(
        "s", "usage_spike", ("block",), window_us=MINUTE, baseline_us=60 * MINUTE
    )
    # 7 over an hour is 0.11666... a minute; 11 times that is 1.28333...
    (below,) = read(policy, Observation(spikes={"s": (D("1.2833"), D(7))}))
    (above,) = read(policy, Observation(spikes={"s": (D("1.2834"), D(7))}))
    assert (below.crossed, above.crossed) == (False, True)
    assert below.observed["baseline_per_window"] == "0.12"  # shown rounded, decided exactly


def test_a_quiet_customers_first_calls_below_the_minimum_are_no_spike() -> None:
    policy = spike(minimum=D(50))
    for calls in range(1, 50):
        assert crossed(policy, Observation(spikes={"spike": (D(calls), D(0))})) == [False]
    assert crossed(policy, Observation(spikes={"spike": (D(50), D(0))})) == [True]
    # no data at all is no spike, even with no minimum
    assert crossed(spike(minimum=D(0)), Observation()) == [False]


def test_spike_extension_raises_the_minimum() -> None:
    policy = spike(minimum=D(100))
    assert crossed(policy, Observation(spikes={"spike": (D(150), D(0))}), D(100)) == [False]
    assert crossed(policy, Observation(spikes={"spike": (D(200), D(0))}), D(100)) == [True]


# -- evaluate: once per crossing ----------------------------------------------------------------


def test_fires_on_the_rising_edge_only_and_rearms_when_it_clears() -> None:
    policies = (balance(),)
    fired: frozenset[tuple[str, str]] = frozenset()
    history = []
    for remaining in ["10", "0", "-3", "-7", "5", "4", "0", "-1", "1"]:
        result = evaluate(policies, Observation(remaining={"credits": D(remaining)}), fired)
        history.append(([f.level for f in result.firings], [r.level for r in result.rearms]))
        fired = result.fired
    assert history == [
        ([], []),
        ([LEVEL], []),  # false -> true: fires
        ([], []),  # still true: nothing
        ([], []),
        ([], [LEVEL]),  # true -> false: re-armed
        ([], []),
        ([LEVEL], []),  # crosses again: fires again
        ([], []),
        ([], [LEVEL]),
    ]
    assert fired == frozenset()


def test_a_firing_carries_its_policy_and_observed_values() -> None:
    policy = balance()
    result = evaluate((policy,), Observation(remaining={"credits": D(-2)}), frozenset())
    (firing,) = result.firings
    assert firing.policy is policy and firing.level == LEVEL
    assert firing.observed["remaining"] == "-2"
    assert result.fired == frozenset({("empty", LEVEL)})


def test_spend_thresholds_fire_each_level_once_and_a_jump_fires_every_level_passed() -> None:
    policies = (budget(),)
    fired: frozenset[tuple[str, str]] = frozenset()
    fires = []
    for spend in ["100", "500", "600", "1000", "1200"]:
        result = evaluate(policies, Observation(spend=D(spend)), fired)
        fires.append([f.level for f in result.firings])
        assert not result.rearms  # spend only grows
        fired = result.fired
    assert fires == [[], ["50%"], [], ["80%", "100%"], []]
    # one jump over all three
    jumped = evaluate(policies, Observation(spend=D(5000)), frozenset())
    assert [f.level for f in jumped.firings] == ["50%", "80%", "100%"]


def test_extensions_shift_the_limit_and_can_rearm() -> None:
    policies = (balance(),)
    first = evaluate(policies, Observation(remaining={"credits": D(0)}), frozenset())
    assert len(first.firings) == 1
    extended = evaluate(
        policies, Observation(remaining={"credits": D(0)}), first.fired, {"empty": D(50)}
    )
    assert not extended.firings and [r.level for r in extended.rearms] == [LEVEL]
    assert extended.fired == frozenset()
    again = evaluate(
        policies, Observation(remaining={"credits": D(-50)}), extended.fired, {"empty": D(50)}
    )
    assert [f.level for f in again.firings] == [LEVEL]


def test_policies_are_independent_and_undeclared_levels_are_forgotten() -> None:
    policies = (balance(), budget(D(100)), cost())
    observation = Observation(spend=D(100), cost=D(5), prepaid=D(1), remaining={"credits": D(0)})
    result = evaluate(policies, observation, frozenset())
    assert sorted((f.policy.key, f.level) for f in result.firings) == [
        ("budget", "100%"),
        ("budget", "50%"),
        ("budget", "80%"),
        ("cogs", LEVEL),
        ("empty", LEVEL),
    ]
    # a policy removed from the configuration: its fired level is dropped, not re-armed
    later = evaluate((cost(),), observation, result.fired)
    assert not later.firings and not later.rearms
    assert later.fired == frozenset({("cogs", LEVEL)})


# -- usage rates -------------------------------------------------------------------------------


def test_rate_counter_sums_windows_at_bucket_resolution() -> None:
    counter = RateCounter()
    base = 1_000 * SECOND
    counter.add(base, D(1))
    counter.add(base + 999_999, D(2))  # same one-second bucket
    counter.add(base + SECOND, D(4))
    counter.add(base + 5 * SECOND + 1, D(8))
    counter.add(base - 3 * SECOND, D(16))  # out of order: still counted
    assert counter.total(base, base + SECOND) == D(3)
    assert counter.total(base, base + 2 * SECOND) == D(7)
    assert counter.total(base - 10 * SECOND, base + 10 * SECOND) == D(31)
    assert counter.total(base + 2 * SECOND, base + 5 * SECOND) == D(0)
    assert counter.total(base + 5 * SECOND, base + 6 * SECOND) == D(8)
    # a range much wider than the buckets held takes the sparse path: same answer
    assert counter.total(0, base * 10) == D(31)


def test_rate_counter_spike_is_the_window_ending_now_and_the_baseline_before_it() -> None:
    policy = spike()
    counter = RateCounter()
    now = 100 * MINUTE + 30 * SECOND + 123
    # the baseline: one token per second over the ten minutes before the window
    window_end = (now // SECOND + 1) * SECOND
    window_start = window_end - MINUTE
    for second in range(600):
        counter.add(window_start - (second + 1) * SECOND, D(1))
    counter.add(window_start - 601 * SECOND, D(1000))  # older than the baseline: ignored
    counter.add(window_start, D(5))
    counter.add(now, D(7))  # this very second is in the window
    counter.add(window_end, D(1000))  # the future: not yet
    assert counter.spike(policy, now) == (D(12), D(600))


def test_rate_counter_forgets_buckets_older_than_its_horizon() -> None:
    counter = RateCounter(horizon_us=10 * SECOND)
    for second in range(20):
        counter.add(second * SECOND, D(1))
    assert len(counter.buckets) == 20  # not yet over twice the horizon
    counter.add(20 * SECOND, D(1))
    assert min(counter.buckets) == 10  # the newest is 20: older than 10 s is forgotten
    assert counter.total(0, 10 * SECOND) == D(0)
    assert counter.total(10 * SECOND, 21 * SECOND) == D(11)


# -- access ------------------------------------------------------------------------------------


def test_a_whole_customer_block_denies_everything() -> None:
    blocks = (Block("empty", (), "balance_exhausted empty fired (F-000001)", 1),)
    for feature in (None, "chat", "images"):
        answer = decide(blocks, feature)
        assert not answer.allowed
        assert answer.policy == "empty" and "F-000001" in answer.reason


def test_a_feature_block_denies_only_those_features() -> None:
    blocks = (Block("spike", ("images", "video"), "usage_spike spike fired", 1),)
    assert not decide(blocks, "images").allowed
    assert decide(blocks, "video").policy == "spike"
    assert decide(blocks, "chat").allowed
    assert decide(blocks, None).allowed  # the customer as a whole is not blocked
    assert decide((), None).allowed and decide((), None).reason == ""


def test_the_first_matching_block_answers() -> None:
    blocks = (
        Block("spike", ("images",), "feature", 1),
        Block("empty", (), "whole", 2),
    )
    assert decide(blocks, "chat").policy == "empty"
    assert decide(blocks, "images").policy == "spike"


# -- the pricing file ------------------------------------------------------------------------

HEAD = """\
credit_types:
  - {key: credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: calls, event_type: call, aggregation: count}
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens, group_by: [model]}
"""
PLANS = """\
plans:
  - key: pro
    controls:
      - {key: budget, policy: spend_threshold, amount: 5000, percents: [50, 80, 100],
         actions: [alert]}
      - {key: empty, policy: balance_exhausted, unit: credits, actions: [block]}
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: calls, model: per_unit, unit_amount: 2, credit_type: credits}
      - version: 2
        effective_from: 2026-06-01
        currency: USD
        prices:
          - {meter: calls, model: per_unit, unit_amount: 3, credit_type: credits}
contracts:
  - customer: acme
    plan: pro
    start: 2026-10-08
"""
CONTROLS = """\
    controls:
      - {key: empty, policy: balance_exhausted, unit: credits, remaining_at_most: 100,
         actions: [block, true_up], features: [images], release: manual}
      - {key: rogue, policy: usage_spike, meter: tokens, window: 5m, baseline: 1h,
         factor: 11, minimum: 200000, actions: [block, alert]}
      - {key: calls-spike, policy: usage_spike, window: 30, actions: [alert]}
      - {key: cogs, policy: cost_exceeds_prepayment, margin_percent: 10, actions: [alert]}
      - {key: refill, policy: balance_exhausted, unit: credits, remaining_at_most: 1000,
         actions: [top_up], top_up: {credit_type: credits, amount: 10000, paid: 90,
         expires_after_days: 30}}
  - customer: plain
    plan: pro
    start: 2026-10-08
"""
COSTS = """\
costs:
  - {meter: tokens, where: {model: big}, per_unit: "0.0000025"}
  - {meter: tokens, per_unit: "0.0000005"}
  - {meter: tokens, per_unit: "0.000001", effective_from: 2026-11-01}
  - {meter: calls, per_unit: 1, currency: EUR}
"""


def load(text: str) -> Configuration:
    data, positions = read_yaml(text, "pricing.yaml")
    return parse_configuration(data, positions, "pricing.yaml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        load(text)
    return caught.value.errors


def us(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))


def test_controls_and_costs_parse_to_policies() -> None:
    configuration = load(HEAD + COSTS + PLANS + CONTROLS)
    acme = configuration.contract("acme")
    plain = configuration.contract("plain")
    assert acme is not None and plain is not None
    # every version of the plan carries the plan's controls
    assert all(len(version.controls) == 2 for version in configuration.plans)
    # a contract inherits the plan's controls; its own replace them by key
    inherited = configuration.controls_for(plain, us(2026, 10, 9))
    assert [p.key for p in inherited] == ["budget", "empty"]
    assert inherited[1] == ControlPolicy("empty", "balance_exhausted", ("block",), unit="credits")
    policies = {p.key: p for p in configuration.controls_for(acme, us(2026, 10, 9))}
    assert list(policies) == ["budget", "empty", "rogue", "calls-spike", "cogs", "refill"]
    assert policies["budget"] == ControlPolicy(
        "budget",
        "spend_threshold",
        ("alert",),
        amount=D(5000),
        percents=(D(50), D(80), D(100)),
    )
    assert policies["budget"].levels() == ("50%", "80%", "100%")
    assert policies["empty"] == ControlPolicy(
        "empty",
        "balance_exhausted",
        ("block", "true_up"),
        unit="credits",
        remaining_at_most=D(100),
        features=("images",),
        release="manual",
    )
    assert policies["empty"].held and not inherited[1].held
    assert policies["rogue"] == ControlPolicy(
        "rogue",
        "usage_spike",
        ("block", "alert"),
        meter="tokens",
        window_us=5 * MINUTE,
        baseline_us=60 * MINUTE,
        factor=D(11),
        minimum=D(200000),
    )
    assert policies["rogue"].held  # a spike's block is only lifted by an override
    calls = policies["calls-spike"]  # no meter: counts events; whole seconds
    assert calls.meter is None and calls.window_us == 30 * SECOND
    assert calls.baseline_us == 60 * MINUTE and calls.factor == D(11)
    assert policies["cogs"].margin_percent == D(10)
    assert policies["refill"].top_up == TopUpRule("credits", D(10000), D(90), 30)
    assert configuration.costs == (
        CostRate("tokens", D("0.0000025"), "USD", (("model", "big"),), 0),
        CostRate("tokens", D("0.0000005"), "USD", (), 0),
        CostRate("tokens", D("0.000001"), "USD", (), us(2026, 11, 1)),
        CostRate("calls", D(1), "EUR", (), 0),
    )
    # the latest rate per where, most specific first
    assert [r.per_unit for r in configuration.cost_rates("tokens", us(2026, 10, 31))] == [
        D("0.0000025"),
        D("0.0000005"),
    ]
    assert [r.per_unit for r in configuration.cost_rates("tokens", us(2026, 11, 1))] == [
        D("0.0000025"),
        D("0.000001"),
    ]


PREFIX = "contracts[0].controls[0]"


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        (
            "{key: a, policy: nope, actions: [block]}",
            f"{PREFIX}.policy: 'nope' is not one of balance_exhausted,",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: [explode]}",
            f"{PREFIX}.actions[0]: 'explode' is not one of block, alert, true_up, top_up",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: [block, block]}",
            f"{PREFIX}.actions[1]: 'block' is listed twice",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: []}",
            f"{PREFIX}.actions: needs at least one action",
        ),
        (
            "{key: a, policy: balance_exhausted, unit: credits, actions: [top_up]}",
            f"{PREFIX}.top_up: a top_up action needs a top_up rule",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: [block],"
            " top_up: {credit_type: credits, amount: 5}}",
            f"{PREFIX}.top_up: a top_up action needs a top_up rule, and only it",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: [top_up],"
            " top_up: {credit_type: credits}}",
            f"{PREFIX}.top_up.amount: is required and must be above zero",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: [top_up],"
            " top_up: {credit_type: gems, amount: 5}}",
            f"{PREFIX}.top_up.credit_type: unknown credit type or currency 'gems'",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: [alert], features: [images]}",
            f"{PREFIX}.features: only a block action takes features",
        ),
        (
            "{key: a, policy: usage_spike, window: 5x, actions: [block]}",
            f"{PREFIX}.window: '5x' is not a duration",
        ),
        (
            "{key: a, policy: usage_spike, window: 5s, actions: [block]}",
            f"{PREFIX}.window: must be at least 10s",
        ),
        (
            "{key: a, policy: usage_spike, window: 9, actions: [block]}",
            f"{PREFIX}.window: must be at least 10s",
        ),
        (
            "{key: a, policy: usage_spike, baseline: 1.5, actions: [block]}",
            f"{PREFIX}.baseline: Decimal('1.5') is not a duration",
        ),
        (
            "{key: a, policy: usage_spike, window: 23h, baseline: 2h, actions: [block]}",
            f"{PREFIX}.baseline: window + baseline must be at most 24h",
        ),
        (
            "{key: a, policy: usage_spike, factor: 1, actions: [block]}",
            f"{PREFIX}.factor: must be above 1",
        ),
        (
            "{key: a, policy: usage_spike, factor: '0.5', actions: [block]}",
            f"{PREFIX}.factor: must be above 1",
        ),
        (
            "{key: a, policy: usage_spike, meter: nope, actions: [block]}",
            f"{PREFIX}.meter: unknown meter 'nope'",
        ),
        (
            "{key: a, policy: spend_threshold, amount: 10, percents: [80, 50], actions: [alert]}",
            f"{PREFIX}.percents: must rise, each once",
        ),
        (
            "{key: a, policy: spend_threshold, amount: 10, percents: [50, 50], actions: [alert]}",
            f"{PREFIX}.percents: must rise, each once",
        ),
        (
            "{key: a, policy: spend_threshold, amount: 10, percents: [0, 50], actions: [alert]}",
            f"{PREFIX}.percents[0]: must be above zero",
        ),
        (
            "{key: a, policy: spend_threshold, actions: [alert]}",
            f"{PREFIX}.amount: is required",
        ),
        (
            "{key: a, policy: spend_threshold, amount: 0, actions: [alert]}",
            f"{PREFIX}.amount: must be above zero",
        ),
        (
            "{key: a, policy: balance_exhausted, unit: gems, actions: [block]}",
            f"{PREFIX}.unit: unknown credit type or currency 'gems'",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: [block], margin_percent: 5}",
            f"{PREFIX}.margin_percent: unknown key",
        ),
        (
            "{key: a, policy: cost_exceeds_prepayment, margin_percent: -5, actions: [alert]}",
            f"{PREFIX}.margin_percent: must not be negative",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: [block], release: never}",
            f"{PREFIX}.release: 'never' is not one of clear, manual",
        ),
        (
            "{policy: balance_exhausted, actions: [block]}",
            f"{PREFIX}.key: is required",
        ),
        (
            "{key: a, policy: balance_exhausted, actions: [block]}\n"
            "      - {key: a, policy: spend_threshold, amount: 5, actions: [alert]}",
            "contracts[0].controls[1].key: control 'a' is declared twice",
        ),
    ],
)
def test_control_mistakes_are_named_by_path(control: str, expected: str) -> None:
    text = HEAD + PLANS + f"    controls:\n      - {control}\n"
    problems = errors_of(text)
    assert any(expected in problem for problem in problems), problems
    assert all(problem.startswith("pricing.yaml:") for problem in problems), problems


def test_plan_control_mistakes_are_named_by_the_plan_path() -> None:
    text = HEAD + PLANS.replace("unit: credits, actions: [block]", "unit: credits, actions: [x]")
    problems = errors_of(text)
    assert any(
        "plans[0].controls[1].actions[0]: 'x' is not one of" in problem for problem in problems
    ), problems


@pytest.mark.parametrize(
    ("cost_line", "expected"),
    [
        ("{meter: nope, per_unit: 1}", "costs[0].meter: unknown meter 'nope'"),
        (
            "{meter: tokens, per_unit: 1, where: {region: eu}}",
            "costs[0].where.region: meter 'tokens' is not grouped by 'region'",
        ),
        (
            "{meter: calls, per_unit: 1, where: {model: big}}",
            "costs[0].where.model: meter 'calls' is not grouped by 'model'",
        ),
        (
            "{meter: tokens, per_unit: 1, where: [model]}",
            "costs[0].where: must be a mapping of dimension to value",
        ),
        ("{meter: tokens, per_unit: -1}", "costs[0].per_unit: must not be negative"),
        ("{meter: tokens}", "costs[0].per_unit: is required"),
        ("{meter: tokens, per_unit: 1, currency: XXX}", "costs[0].currency: unknown currency"),
        ("{meter: tokens, per_unit: 1, colour: red}", "costs[0].colour: unknown key"),
    ],
)
def test_cost_mistakes_are_named_by_path(cost_line: str, expected: str) -> None:
    text = HEAD + f"costs:\n  - {cost_line}\n" + PLANS
    problems = errors_of(text)
    assert any(expected in problem for problem in problems), problems
    assert all(problem.startswith("pricing.yaml:") for problem in problems), problems


def test_a_top_up_to_a_target_is_bounded_and_priced_by_the_unit() -> None:
    rule = TopUpRule("credits", D(0), target_balance=D(1000), minimum=D(100), maximum=D(600))
    assert rule.grant_for(D(950)) == D(100)  # at least the minimum
    assert rule.grant_for(D(700)) == D(300)
    assert rule.grant_for(D(-50)) == D(600)  # at most the maximum
    assert rule.grant_for(D(1000)) == D(0) and rule.grant_for(D(1200)) == D(0)
    priced = TopUpRule("credits", D(250), unit_cost=D("0.0095"))
    assert priced.grant_for(D(0)) == D(250) and priced.paid_for(D(250), "USD") == D("2.38")
    assert TopUpRule("credits", D(5), paid=D(1)).paid_for(D(5), "USD") == D(1)
