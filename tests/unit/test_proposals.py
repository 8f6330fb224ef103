"""The workspace's pure parts: a contract change written into the pricing data, its
refusals by field, maker-checker, line comparison; roles as scopes and user passwords."""

from __future__ import annotations

from typing import Any

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError
from meterline.core.proposals import (
    ContractChange,
    CreditPool,
    change_from_data,
    change_problems,
    changed_configuration,
    decision_problem,
    field_errors,
    line_comparison,
)
from meterline.errors import AuthError, InputError, ScopeError
from meterline.keys import (
    ROLE_SCOPES,
    Principal,
    add_user,
    authenticate_user,
    hash_password,
    password_matches,
    role_of,
)

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
                    "fees": [{"key": "platform", "name": "Platform fee", "amount": "500"}],
                    "prices": [{"meter": "calls", "model": "per_unit", "unit_amount": "1"}],
                }
            ],
        }
    ],
    "contracts": [{"customer": "acme", "plan": "team", "start": "2026-10-01"}],
}
HYBRID = ContractChange(
    "acme",
    "2026-11-01",
    fee_amount="800",
    credit_pool=CreditPool("10000", "credits", paid="90", rollover_percent="50"),
)


def test_a_hybrid_change_becomes_an_amendment_and_a_grant_the_parser_reads() -> None:
    """Fee as an amendment from the date (the plan's fee name kept), the pool as a grant."""
    changed = changed_configuration(DATA, HYBRID)
    contract = changed.data["contracts"][0]
    assert contract["amendments"] == [
        {
            "effective": "2026-11-01",
            "overrides": {"fees": [{"key": "platform", "amount": "800", "name": "Platform fee"}]},
        }
    ]
    (grant,) = contract["credits"]["grants"]
    assert grant["start"] == "2026-11-01" and grant["rollover"] == {"percent": "50"}
    assert DATA["contracts"][0] == {"customer": "acme", "plan": "team", "start": "2026-10-01"}
    configuration = parse_configuration(changed.data)
    parsed = configuration.contract("acme")
    assert parsed is not None and parsed.credits.grants[0].paid == 90


def test_a_new_customer_gets_a_contract_starting_on_the_date() -> None:
    """A customer without a contract gets one from ``effective`` with its overrides."""
    change = ContractChange("globex", "2026-11-01", plan="team", discount_percent="10")
    changed = changed_configuration(DATA, change)
    assert changed.data["contracts"][1] == {
        "customer": "globex",
        "start": "2026-11-01",
        "plan": "team",
        "overrides": {"discount_percent": "10"},
    }


def test_parser_errors_name_the_form_field() -> None:
    """Overlapping tiers and a rollover above 100% are refused by the parser, by field."""
    tiers = [
        {"up_to": 100, "unit_amount": "1"},
        {"up_to": 50, "unit_amount": "1"},
        {"unit_amount": "1"},
    ]
    change = ContractChange(
        "acme",
        "2026-11-01",
        prices=({"meter": "calls", "model": "graduated", "tiers": tiers},),
        credit_pool=CreditPool("10", "credits", rollover_percent="150"),
    )
    changed = changed_configuration(DATA, change)
    with pytest.raises(ConfigurationError) as refused:
        parse_configuration(changed.data)
    fields = dict(field_errors(refused.value.errors, changed))
    assert "tiers overlap" in fields["prices"]
    assert fields["credit_pool.rollover_percent"].endswith("rollover.percent: must be at most 100")


def test_negative_amounts_and_an_amendment_before_the_closed_period_are_refused() -> None:
    """What the parser cannot see: amounts below zero, a date before the last close."""
    from datetime import date

    change = ContractChange(
        "acme", "2026-10-15", fee_amount="-1", credit_pool=CreditPool("-5", "credits")
    )
    problems = change_problems(change, date(2026, 11, 1))
    assert "fee_amount: must not be negative" in problems
    assert "credit_pool.amount: must not be negative" in problems
    assert any(p.startswith("effective: 2026-10-15 is before") for p in problems)
    assert change_problems(HYBRID, date(2026, 11, 1)) == []
    assert change_problems(ContractChange("acme", "soon"), None) == [
        "effective: 'soon' is not a date (YYYY-MM-DD)"
    ]


def test_a_stored_change_reads_back_the_same() -> None:
    """``as_data`` then ``change_from_data`` is the identity."""
    assert change_from_data(HYBRID.as_data()) == HYBRID


def test_maker_checker() -> None:
    """Only an approver decides, never the proposer, and only once."""
    assert decision_problem("user:erin", "user:abe", True, False) is None
    assert "own proposal" in str(decision_problem("user:erin", "user:erin", True, False))
    assert "approver role" in str(decision_problem("user:erin", "user:abe", False, False))
    assert "decided already" in str(decision_problem("user:erin", "user:abe", True, True))


def test_lines_side_by_side() -> None:
    """Lines match by kind and description; a missing one counts 0."""
    actual = [{"kind": "fee", "description": "Fee", "amount": "500.00"}]
    proposed = [
        {"kind": "fee", "description": "Fee", "amount": "800.00"},
        {"kind": "purchase", "description": "Pool", "amount": "90.00"},
    ]
    rows = line_comparison(actual, proposed)
    assert [(r["actual"], r["proposed"], r["difference"]) for r in rows] == [
        ("500.00", "800.00", "300.00"),
        ("0", "90.00", "90.00"),
    ]


def test_roles_are_scopes() -> None:
    """Each role stands for a scope; an editor proposes, not approves; admin does both."""
    assert role_of("read") == "viewer" and role_of("ingest") is None
    editor = Principal("k", ROLE_SCOPES["editor"])
    editor.require("read", "read")
    editor.require("editor", "propose")
    with pytest.raises(ScopeError):
        editor.require("approver", "approve")
    with pytest.raises(ScopeError):
        Principal("k", ROLE_SCOPES["viewer"]).require("editor", "propose")
    Principal("k", "admin").require("approver", "approve")


class _Users:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, str | None]] = {}

    def put_user(
        self, name: str, password_hash: str, role: str, customer: str | None, created_at_us: int
    ) -> None:
        self.rows[name] = (password_hash, role, customer)

    def get_user(self, name: str) -> tuple[str, str, str | None] | None:
        return self.rows.get(name)


def test_passwords_are_stored_as_scrypt_and_checked() -> None:
    """Only a salted scrypt hash is kept; a wrong password or name is one answer."""
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert password_matches("correct horse battery", stored)
    assert not password_matches("correct horse batterY", stored)
    users = _Users()
    add_user(users, "erin", "correct horse battery", "editor", 0, customer="acme")
    assert authenticate_user(users, "erin", "correct horse battery") == Principal(
        "user:erin", "editor", "acme"
    )
    for name, password in (("erin", "wrong password!"), ("nobody", "correct horse battery")):
        with pytest.raises(AuthError, match="invalid user name or password"):
            authenticate_user(users, name, password)
    with pytest.raises(InputError) as refused:
        add_user(users, "bad name", "short", "boss", 0)
    assert [part.split(":")[0] for part in str(refused.value).split("; ")] == [
        "name",
        "password",
        "role",
    ]
