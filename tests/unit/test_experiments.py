"""A price experiment's pure parts: the new plan version written into the pricing data
(fees and prices over the latest version's), the floating contracts pinned, the checks
the parser cannot make, and the default sample."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

from meterline.config.schema import parse_configuration
from meterline.core.experiments import (
    EXPERIMENT_SAMPLE_MAX,
    Candidate,
    PlanExperiment,
    experiment_configuration,
    experiment_from_data,
    experiment_problems,
    sample_by_usage,
    segments_on_version,
)
from meterline.core.model import Overrides, PlanVersion, Segment, Terms
from meterline.core.proposals import line_comparison

DATA: dict[str, Any] = {
    "credit_types": [{"key": "credits", "currency": "USD", "unit_value": "0.01"}],
    "meters": [{"key": "calls", "event_type": "call", "aggregation": "count"}],
    "plans": [
        {
            "key": "team",
            "versions": [
                {
                    "version": 1,
                    "effective_from": "2026-01-01",
                    "currency": "USD",
                    "fees": [
                        {"key": "platform", "name": "Platform", "amount": "500.00"},
                        {"key": "support", "name": "Support", "amount": "50.00"},
                    ],
                    "prices": [
                        {"meter": "calls", "model": "per_unit", "unit_amount": "0.02"},
                    ],
                }
            ],
        }
    ],
    "contracts": [
        {"customer": "acme", "plan": "team", "start": "2026-10-01"},
        {
            "customer": "globex",
            "plan": "team",
            "start": "2026-10-01",
            "amendments": [{"effective": "2026-11-01", "overrides": {"discount_percent": "5"}}],
        },
        {"customer": "pinned", "plan": "team", "version": 1, "start": "2026-10-01"},
    ],
}
CHEAPER = PlanExperiment(
    "team",
    "2026-12-01",
    fees=({"key": "platform", "amount": "450.00"},),
    prices=({"meter": "calls", "unit_amount": "0.01"},),
)


def test_the_new_version_starts_from_the_latest_and_pins_the_floating_contracts() -> None:
    """Version 2 from the effective date with the fee's amount changed (its name kept),
    the other fee kept, the price's amount changed; acme pinned on the contract, globex
    on its last amendment, the pinned contract and the input left alone."""
    changed = experiment_configuration(DATA, CHEAPER, {"acme": 1, "globex": 1})
    version = changed.data["plans"][0]["versions"][1]
    assert (version["version"], version["effective_from"]) == (2, "2026-12-01")
    assert version["fees"] == [
        {"key": "support", "name": "Support", "amount": "50.00"},
        {"key": "platform", "name": "Platform", "amount": "450.00"},
    ]
    assert version["prices"] == [{"meter": "calls", "model": "per_unit", "unit_amount": "0.01"}]
    acme, globex, pinned = changed.data["contracts"]
    assert acme["version"] == 1 and "version" not in globex
    assert globex["amendments"][-1]["version"] == 1
    assert pinned == DATA["contracts"][2]
    assert "version" not in DATA["contracts"][0] and len(DATA["plans"][0]["versions"]) == 1
    assert changed.field_paths["effective"] == "plans[0].versions[1].effective_from"
    assert changed.field_paths["pinned.globex"] == "contracts[1]"
    configuration = parse_configuration(changed.data)
    assert [p.label for p in configuration.plans] == ["team@1", "team@2"]


def test_a_price_of_another_model_replaces_the_old_one_wholly() -> None:
    tiers = [{"up_to": 100, "unit_amount": "0.02"}, {"unit_amount": "0.01"}]
    graduated = PlanExperiment(
        "team", "2026-12-01", prices=({"meter": "calls", "model": "graduated", "tiers": tiers},)
    )
    version = experiment_configuration(DATA, graduated, {}).data["plans"][0]["versions"][1]
    assert version["prices"] == [{"meter": "calls", "model": "graduated", "tiers": tiers}]


def test_what_the_parser_cannot_see_is_refused_by_field() -> None:
    bad = PlanExperiment(
        "enterprise",
        "next month",
        fees=({"key": "platform", "amount": "-1"},),
        sample=("acme", "acme"),
    )
    problems = experiment_problems(bad, DATA)
    assert {problem.split(":")[0] for problem in problems} == {
        "plan",
        "effective",
        "fees",
        "sample",
    }
    too_many = PlanExperiment("team", "2026-12-01", sample=tuple(map(str, range(101))))
    assert experiment_problems(too_many, DATA) == [
        f"sample: at most {EXPERIMENT_SAMPLE_MAX} customers"
    ]
    assert experiment_problems(CHEAPER, DATA) == []


def test_stored_data_reads_back_as_the_same_experiment() -> None:
    assert experiment_from_data(CHEAPER.as_data()) == CHEAPER
    assert CHEAPER.as_data()["kind"] == "plan_version" and CHEAPER.customer == ""


def test_the_default_sample_is_the_most_usage_then_the_name() -> None:
    candidates = [
        Candidate("b", D("5")),
        Candidate("a", D("5")),
        Candidate("c", D("9")),
        Candidate("d", D("0")),
    ]
    assert sample_by_usage(candidates, 3) == ["c", "a", "b"]


def test_lines_of_two_plan_versions_meet_under_an_alias() -> None:
    both = "(team@1 → team@2)"
    rows = line_comparison(
        [{"kind": "fee", "description": "Platform (team@1)", "amount": "500.00"}],
        [{"kind": "fee", "description": "Platform (team@2)", "amount": "450.00"}],
        {"(team@1)": both, "(team@2)": both},
    )
    assert rows == [
        {
            "kind": "fee",
            "description": f"Platform {both}",
            "actual": "500.00",
            "proposed": "450.00",
            "difference": "-50.00",
        }
    ]


def test_a_period_moves_onto_the_new_version_stretch_by_stretch() -> None:
    """Only the stretches on the plan move (a switch from free mid-period keeps its
    split and proration); a period wholly on another plan moves wholly; the aliases
    name every old version."""
    free = PlanVersion("free", 1, "Free", "USD", 0)
    team1 = PlanVersion("team", 1, "Team", "USD", 0)
    team2 = PlanVersion("team", 2, "Team", "USD", 10)
    discount = Overrides(discount_percent=D("5"))
    period = [
        Segment(0, 10, Terms(free, Overrides()), True),
        Segment(10, 30, Terms(team1, discount), True),
    ]
    moved, aliases = segments_on_version(period, team2)
    assert [s.terms for s in moved] == [Terms(free, Overrides()), Terms(team2, discount)]
    assert [(s.start_us, s.end_us, s.begins_terms) for s in moved] == [
        (0, 10, True),
        (10, 30, True),
    ]
    assert aliases == {"(team@1)": "(team@1 → team@2)", "(team@2)": "(team@1 → team@2)"}
    wholly, other = segments_on_version(period[:1], team2)
    assert wholly[0].terms.plan == team2 and other["(free@1)"] == "(free@1 → team@2)"
