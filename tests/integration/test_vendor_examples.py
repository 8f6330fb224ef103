"""Vendor semantics through the billing shell (docs/billing.md, "Vendor semantics"): a
pricing file's ``semantics:`` block, applied to a real ledger, changes the draft invoice
as the table says, and the default keeps today's invoice. Each example is run with both
values of its option on the same events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest

from meterline.billing.service import open_billing
from meterline.core.documents import CreditLine, Invoice, line_meter
from meterline.core.events import timestamp_to_us
from tests.conftest import Location

NewDb = Callable[..., Location]


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


PRICING = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
  - {key: seats, event_type: seats, aggregation: latest, property: seats}
  - {key: payments, event_type: pay, aggregation: sum, property: amount}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: tokens, model: per_unit, unit_amount: 1}
          - {meter: seats, model: per_unit, unit_amount: 2}
          - {meter: payments, model: percentage, rate: "0.02", fixed_fee: "0.30",
             free_units: 150, per_event_minimum: "0.50"}
contracts:
  - customer: acme
    plan: p
    start: 2026-10-01
    credits:
      grants:
        - {key: a-paid, credit_type: USD, amount: 50, paid: 45, expires: 2026-12-01}
        - {key: b-promo, credit_type: USD, amount: 50, expires: 2026-12-01}
        - {key: c-short, credit_type: USD, amount: 40, priority: 1, expires: 2026-10-10}
"""


def event(number: int, timestamp: str, kind: str, **properties: Any) -> dict[str, Any]:
    return {
        "id": f"e{number}",
        "customer": "acme",
        "type": kind,
        "timestamp": timestamp,
        "properties": properties,
    }


EVENTS = [
    # c-short (priority 1, 40 USD) pays the first 20 tokens; the 15 at its exact expiry
    # instant are paid by it only when its end is inclusive
    event(1, "2026-10-05T12:00:00Z", "llm", tokens=20),
    event(2, "2026-10-10T00:00:00Z", "llm", tokens=15),
    event(3, "2026-10-11T09:00:00Z", "seats", seats=7),
    event(4, "2026-10-12T09:00:00Z", "seats", seats=3),
    event(5, "2026-10-13T09:00:00Z", "pay", amount=100),
    event(6, "2026-10-14T09:00:00Z", "pay", amount=100),
]


def draft(new_db: NewDb, block: str, name: str = "ledger") -> Invoice:
    with open_billing(new_db(name), clock=lambda: at(2026, 10, 20)) as billing:
        assert billing.ledger.ingest(EVENTS).accepted == len(EVENTS)
        billing.apply(PRICING + ("semantics:\n" + block if block else ""))
        return billing.draft("acme", at(2026, 10, 20))


def lines(document: Invoice, kind: str) -> dict[str, D]:
    """The amounts of the draft's lines of ``kind``, by grant (credit) or meter (usage)."""
    return {
        (line.grant if isinstance(line, CreditLine) else line_meter(line)) or line.description: (
            D(line.amount)
        )
        for line in document.lines
        if line.kind == kind
    }


def test_the_default_block_is_the_invoice_without_one(new_db: NewDb) -> None:
    explicit = (
        "  burn_cost_basis: none\n  burn_expiry: exact\n  grant_end: exclusive\n"
        "  gauge: period\n  line_maximum: close\n  volume_billing: progressive\n"
        "  percentage_free: fixed_fee\n  free_event_minimum: applies\n"
    )
    without, with_defaults = draft(new_db, ""), draft(new_db, explicit, "explicit")
    assert without.lines == with_defaults.lines
    assert without.total == with_defaults.total


def test_each_option_changes_the_draft_as_the_table_says(new_db: NewDb) -> None:
    """Defaults: c-short pays 20 tokens; the 15 at its expiry instant go to a-paid (the
    older of two grants of equal priority and expiry: ids break the tie); seats are the
    latest reading (3 x 2 = 6); payments pay 2% + 0.30 each (2.30 + 2.30).
    The chosen block: the 15 at the instant are c-short's (inclusive end); promotional
    b-promo burns before paid a-paid for the rest; seats are summed per day (7 + 3 = 10 x
    2 = 20); payments: the first 150 of the amounts are free (the first 100 wholly, with
    no minimum; the second pays 2% of 50 + 0.30 = 1.30)."""
    default = draft(new_db, "")
    usage = lines(default, "usage")
    assert usage == {"tokens": D(35), "seats": D(6), "payments": D("4.60")}
    assert lines(default, "credit") == {"c-short": D(-20), "a-paid": D("-25.60")}
    chosen = draft(
        new_db,
        "  burn_cost_basis: promotional_first\n  grant_end: inclusive\n  gauge: day\n"
        "  percentage_free: amount\n  free_event_minimum: skipped\n",
        "chosen",
    )
    usage = lines(chosen, "usage")
    assert usage == {"tokens": D(35), "seats": D(20), "payments": D("1.30")}
    assert lines(chosen, "credit") == {"c-short": D(-35), "b-promo": D("-21.30")}


@pytest.mark.parametrize(
    ("block", "credits"),
    [
        ("", {"c-short": D(-20), "a-paid": D("-25.60")}),
        ("  burn_cost_basis: promotional_first\n", {"c-short": D(-20), "b-promo": D("-25.60")}),
        ("  grant_end: inclusive\n", {"c-short": D(-35), "a-paid": D("-10.60")}),
    ],
)
def test_burn_order_options_pick_the_grant(
    new_db: NewDb, block: str, credits: dict[str, D]
) -> None:
    """The same usage (35 tokens, seats 6, payments 4.60 = 45.60) drawn: c-short pays
    20 (its priority) before its expiry instant, the rest falls to a-paid or,
    promotional first, to b-promo. ``inclusive``: c-short also pays the 15 at its expiry
    instant, a-paid the remaining 10.60."""
    assert lines(draft(new_db, block), "credit") == credits


def test_a_closed_period_under_chosen_semantics_audits(new_db: NewDb) -> None:
    """The invoice a close finalizes under a non-default block is re-derived byte for byte
    by ``audit`` (the block is part of the stored revision) and equals the draft."""
    block = "  grant_end: inclusive\n  gauge: day\n  percentage_free: amount\n"
    with open_billing(new_db(), clock=lambda: at(2026, 11, 2)) as billing:
        billing.ledger.ingest(EVENTS)
        billing.apply(PRICING + "semantics:\n" + block)
        before = billing.draft("acme", at(2026, 10, 20))
        (invoice,) = billing.close(at(2026, 11, 2))
        report = billing.audit()
        assert report.passed, report.mismatches
        after = billing.draft("acme", at(2026, 10, 20))
    assert after.lines == before.lines and after.total == before.total
    assert invoice.customer == "acme"
