"""Keys given twice in a pricing file: a repeated mapping key at any depth, and two meters,
plans, plan versions, contracts, fees or grants with one key, are errors naming the line
of the repeat and of the first."""

from __future__ import annotations

import pytest

from meterline.config.source import read_yaml
from tests.unit.test_config import BASE, errors_of, load

PLAN = BASE.split("plans:\n")[1].split("contracts:")[0]


def test_the_base_file_has_no_duplicates() -> None:
    """The file the other cases edit parses as it is."""
    assert len(load(BASE).plans) == 1


@pytest.mark.parametrize(
    ("edited", "expected"),
    [
        (
            BASE.replace("meters:\n", "meters: []\nmeters:\n", 1),
            "pricing.yaml:2: meters: duplicate key 'meters' (first at line 1)",
        ),
        (
            BASE.replace("    property: tokens\n", "    property: tokens\n    property: count\n"),
            "pricing.yaml:6: meters[0].property: duplicate key 'property' (first at line 5)",
        ),
        (
            BASE.replace(
                "        currency: USD\n", "        currency: USD\n        currency: EUR\n"
            ),
            "pricing.yaml:13: plans[0].versions[0].currency: duplicate key 'currency'"
            " (first at line 12)",
        ),
        (
            BASE.replace("{up_to: 1000, unit_amount: 0.002}", "{up_to: 1000, up_to: 10}"),
            "pricing.yaml:19: plans[0].versions[0].prices[0].tiers[0].up_to: duplicate key"
            " 'up_to' (first at line 19)",
        ),
        (
            BASE.replace("start: 2026-10-01,", "start: 2026-10-01, start: 2026-11-01,"),
            "pricing.yaml:22: contracts[0].start: duplicate key 'start' (first at line 22)",
        ),
    ],
    ids=["top-level", "meter", "plan-version", "flow-mapping", "contract"],
)
def test_a_repeated_mapping_key_names_both_lines(edited: str, expected: str) -> None:
    """PyYAML would keep the last value silently; here the repeat is the error."""
    assert errors_of(edited) == [expected]


def test_every_repeated_key_is_reported_at_once() -> None:
    """Two repeats in different places: both named, in file order."""
    edited = BASE.replace(
        "    property: tokens\n", "    property: tokens\n    property: n\n"
    ).replace("        currency: USD\n", "        currency: USD\n        currency: USD\n")
    problems = errors_of(edited)
    assert [problem.split(": ")[1] for problem in problems] == [
        "meters[0].property",
        "plans[0].versions[0].currency",
    ]


def test_one_key_under_different_parents_is_not_a_repeat() -> None:
    """``key`` in each meter, ``currency`` in each version: each mapping has its own keys."""
    data, positions = read_yaml(BASE.replace("key: team", "key: tokens"))
    assert data["plans"][0]["key"] == "tokens"
    assert positions["plans[0].key"] == 8


def test_two_merge_keys_are_yaml_not_a_repeat() -> None:
    """``<<`` merges are YAML's own mechanism: two of them merge both mappings."""
    text = "a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: *a\n  <<: *b\n"
    data, _ = read_yaml(text)
    assert data["c"] == {"x": 1, "y": 2}


def test_a_repeat_inside_an_alias_is_named_once() -> None:
    """A mapping used through two aliases is one mapping: its repeat is one error."""
    problems = errors_of("a: &a {x: 1, x: 2}\nc: *a\nd: *a\n")
    assert problems == ["pricing.yaml:1: a.x: duplicate key 'x' (first at line 1)"]


def test_two_meters_with_one_key_name_the_second_and_the_first_line() -> None:
    """meters[1].key repeats meters[0].key."""
    meter = BASE.split("plans:")[0].replace("meters:\n", "")
    problems = errors_of(BASE.replace("plans:", meter + "plans:", 1))
    assert problems == [
        "pricing.yaml:7: meters[1].key: meter 'tokens' is declared twice (first at line 2)"
    ]


def test_two_plans_with_one_key_are_refused() -> None:
    """Two plan entries named ``team`` (even with different versions) are one mistake."""
    second = PLAN.replace("version: 1", "version: 2").replace("2026-01-01", "2026-06-01")
    problems = errors_of(BASE.replace("contracts:", second + "contracts:"))
    assert problems == [
        "pricing.yaml:21: plans[1].key: plan 'team' is declared twice (first at line 8)"
    ]


def test_two_versions_with_one_number_are_refused_at_the_second() -> None:
    """versions[1] repeats version 1 of the same plan: named at its own line."""
    edited = BASE.replace(
        "      - version: 1\n",
        "      - version: 1\n        effective_from: 2026-01-01\n        currency: USD\n"
        "      - version: 1\n",
    )
    problems = errors_of(edited)
    assert problems == [
        "pricing.yaml:13: plans[0].versions[1].version: plan version 'team@1' is declared"
        " twice (first at line 10)"
    ]


def test_two_contracts_for_one_customer_are_refused() -> None:
    """The second contract for acme is named, with the first's line."""
    problems = errors_of(BASE + "  - {customer: acme, plan: team, start: 2026-11-01}\n")
    assert problems == [
        "pricing.yaml:23: contracts[1].customer: contract for customer 'acme' is declared"
        " twice (first at line 22)"
    ]


def test_two_fees_with_one_key_are_refused() -> None:
    """Fee keys are unique within a plan version."""
    edited = BASE.replace(
        '          - {key: platform, amount: "500.00"}\n',
        '          - {key: platform, amount: "500.00"}\n          - {key: platform, amount: 1}\n',
    )
    problems = errors_of(edited)
    assert problems == [
        "pricing.yaml:15: plans[0].versions[0].fees[1].key: fee 'platform' is declared twice"
        " (first at line 14)"
    ]
