"""Rating and invoicing (pure): worked proration example, fees, discounts, credit types,
and the laws: re-rating is byte-identical, lines add up, nothing is ever a float."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from meterline.config.schema import parse_configuration
from meterline.config.source import read_yaml
from meterline.core.cuts import Cut
from meterline.core.documents import (
    DecimalText,
    Invoice,
    MeterUsageLine,
    PrepaidLine,
    document_data,
)
from meterline.core.events import timestamp_to_us
from meterline.core.invoice_lines import netted_amounts
from meterline.core.invoicing import (
    ExtraLine,
    InvoiceHeader,
    build_invoice,
    invoice_bytes,
    line_sum,
)
from meterline.core.lineage import merkle_root
from meterline.core.model import Configuration, segments
from meterline.core.periods import BillingPeriod
from meterline.core.pricing import graduated, per_unit
from meterline.core.rating import Rater

OCTOBER = BillingPeriod(
    timestamp_to_us(datetime(2026, 10, 1, tzinfo=UTC)),
    timestamp_to_us(datetime(2026, 11, 1, tzinfo=UTC)),
)


def configuration(text: str) -> Configuration:
    data, positions = read_yaml(text)
    return parse_configuration(data, positions)


def event_hash(sequence: int) -> bytes:
    return hashlib.sha256(sequence.to_bytes(8, "big")).digest()


def invoice(
    config: Configuration,
    customer: str,
    period: BillingPeriod,
    events: list[tuple[int, int, str, dict[str, Any]]],
) -> Invoice:
    contract = config.contract(customer)
    assert contract is not None
    spans = segments(config, contract, period.start_us, period.end_us)
    rater = Rater(config, spans)
    for sequence, timestamp_us, event_type, properties in events:
        rater.add(sequence, timestamp_us, event_type, properties, event_hash(sequence))
    currency = spans[0].terms.plan.currency
    header = InvoiceHeader(customer, currency, contract.timezone, period, 1, "00", Cut((10**9,)))
    return build_invoice(header, spans, rater.lines(currency, config), [], config)


STRIPE = """\
plans:
  - key: basic
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         fees: [{key: subscription, name: Basic, amount: 10}]}
  - key: pro
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         fees: [{key: subscription, name: Pro, amount: 20}]}
contracts:
  - {customer: c, plan: basic, start: 2026-04-01,
     amendments: [{effective: 2026-04-16, plan: pro}]}
"""


def test_stripe_proration_example_upgrade_halfway_through_the_month() -> None:
    """Stripe's prorations page: $10/month to $20/month halfway through (April 2026, 30
    days, switch on the 16th): credit $5 unused on the old price, charge $10 for the rest
    on the new one; the customer pays $5 more than the $10 already billed in advance."""
    config = configuration(STRIPE)
    april = BillingPeriod(
        timestamp_to_us(datetime(2026, 4, 1, tzinfo=UTC)),
        timestamp_to_us(datetime(2026, 5, 1, tzinfo=UTC)),
    )
    document = invoice(config, "c", april, [])
    amounts = [(line.description, str(line.amount)) for line in document.lines]
    assert amounts == [
        ("Basic (basic@1)", "10.00"),
        ("Basic (basic@1), unused time from 2026-04-16", "-5.00"),
        ("Pro (pro@1), remaining time from 2026-04-16", "10.00"),
    ]
    assert str(document.total) == "15.00"


def test_proration_by_day_gives_the_change_day_to_the_new_terms() -> None:
    text = STRIPE.replace("2026-04-16", "2026-10-15T14:00:00Z").replace("2026-04-01", "2026-10-01")
    document = invoice(configuration(text), "c", OCTOBER, [])
    exact = [line.amount_exact for line in document.lines]
    # old terms Oct 1..14 = 14/31 used, 17/31 unused; new terms 17/31 of $20
    assert abs(exact[1] * 31 + 170) < D("1e-50")  # -10 x 17/31, to 59 places
    assert abs(exact[2] * 31 - 340) < D("1e-50")  # +20 x 17/31
    assert str(document.lines[1].amount) == "-5.48"
    assert str(document.lines[2].amount) == "10.97"


def test_proration_by_second_and_arrears_fees() -> None:
    text = (
        STRIPE.replace("amount: 10}", "amount: 10, timing: arrears}")
        .replace("amount: 20}", "amount: 20, timing: arrears}")
        .replace("2026-04-16", "2026-10-16T12:00:00Z")
        .replace("2026-04-01", "2026-10-01")
        .replace("currency: USD,\n", "currency: USD, billing: {proration: second},\n")
    )
    document = invoice(configuration(text), "c", OCTOBER, [])
    # 15.5 of 31 days on each side, to the second
    assert [str(line.amount) for line in document.lines] == ["5.00", "10.00"]


DISCOUNTED = """\
credit_types:
  - {key: credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: calls, event_type: tool.call, aggregation: count}
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens, group_by: [model]}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees: [{key: platform, amount: 100}]
        prices:
          - {meter: calls, model: per_unit, unit_amount: 3, credit_type: credits}
          - meter: tokens
            where: {model: big}
            model: graduated
            tiers: [{up_to: 10, unit_amount: 1, flat_amount: 5}, {unit_amount: "0.5"}]
          - {meter: tokens, model: per_unit, unit_amount: "0.1", minimum: 2}
contracts:
  - {customer: c, plan: p, start: 2026-10-01, overrides: {discount_percent: 10}}
"""


def test_credit_type_prices_convert_and_a_discount_applies_to_fees_and_usage() -> None:
    config = configuration(DISCOUNTED)
    day = OCTOBER.start_us + 86_400_000_000
    events = [
        (1, day, "tool.call", {}),
        (2, day, "tool.call", {}),
        (3, day, "llm", {"model": "big", "tokens": 12}),
        (4, day, "llm", {"model": "small", "tokens": 7}),
    ]
    document = invoice(config, "c", OCTOBER, events)
    by_description = {line.description: line for line in document.lines}
    calls = by_description["calls (p@1)"]
    assert isinstance(calls, MeterUsageLine)
    assert (str(calls.units), calls.unit, str(calls.amount)) == ("6", "credits", "0.06")
    assert str(by_description["tokens big (p@1)"].amount) == "16.00"  # 10x1 + 5 flat + 2x0.5
    assert str(by_description["tokens small (p@1)"].amount) == "2.00"  # 0.70, minimum 2
    assert str(by_description["Discount 10% (p@1)"].amount) == "-11.81"  # 10% of 118.06
    assert str(document.total) == "106.25"
    assert line_sum(document) == document.total


def test_a_first_tier_flat_fee_is_charged_at_zero_usage() -> None:
    text = DISCOUNTED.replace(", overrides: {discount_percent: 10}", "").replace(
        "fees: [{key: platform, amount: 100}]", "fees: []"
    )
    document = invoice(configuration(text), "c", OCTOBER, [])
    # only a price naming every group dimension can charge without events: the graduated
    # price for model=big charges its first-tier flat fee; the catch-all minimum cannot
    assert [(line.description, str(line.amount)) for line in document.lines] == [
        ("tokens big (p@1)", "5.00"),
    ]
    (tokens,) = document.lines
    assert isinstance(tokens, MeterUsageLine) and tokens.lineage.events == 0


LAWS = """\
meters:
  - {key: calls, event_type: call, aggregation: count, group_by: [tool]}
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens, group_by: [model]}
  - {key: peak, event_type: llm, aggregation: max, property: tokens}
  - {key: payments, event_type: pay, aggregation: sum, property: amount}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: calls, model: per_unit, unit_amount: "0.013"}
          - meter: tokens
            model: graduated
            tiers: [{up_to: 100, unit_amount: "0.021"}, {up_to: 1000, unit_amount: "0.017"},
                    {unit_amount: "0.011", flat_amount: 3}]
          - {meter: peak, model: per_unit, unit_amount: "0.5"}
          - {meter: payments, model: percentage, rate: "0.029", fixed_fee: "0.30"}
contracts:
  - {customer: c, plan: p, start: 2026-10-01}
"""

events_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("call"), st.fixed_dictionaries({"tool": st.sampled_from(["a", "b"])})),
        st.tuples(
            st.just("llm"),
            st.fixed_dictionaries(
                {"model": st.sampled_from(["x", "y", "z"]), "tokens": st.integers(0, 5000)}
            ),
        ),
        st.tuples(
            st.just("pay"),
            st.fixed_dictionaries(
                {"amount": st.decimals("0.01", "9999.99", places=2).map(lambda d: d)}
            ),
        ),
    ),
    max_size=60,
)


def _sequenced(
    events: list[tuple[str, dict[str, Any]]],
) -> list[tuple[int, int, str, dict[str, Any]]]:
    return [
        (index + 1, OCTOBER.start_us + index * 60_000_000, kind, properties)
        for index, (kind, properties) in enumerate(events)
    ]


@settings(max_examples=60, deadline=None)
@given(events_strategy)
def test_re_rating_the_same_events_gives_byte_identical_invoices(events: list[Any]) -> None:
    config = configuration(LAWS)
    first = invoice_bytes(invoice(config, "c", OCTOBER, _sequenced(events)))
    second = invoice_bytes(invoice(configuration(LAWS), "c", OCTOBER, _sequenced(events)))
    assert first == second


@settings(max_examples=60, deadline=None)
@given(events_strategy)
def test_usage_lines_equal_their_contributions_computed_independently(events: list[Any]) -> None:
    sequenced = _sequenced(events)
    document = invoice(configuration(LAWS), "c", OCTOBER, sequenced)
    expected: dict[str, D] = {}
    lineage: dict[str, list[int]] = {}
    for sequence, _, kind, properties in sequenced:
        if kind == "call":
            key = f"calls {properties['tool']}"
            expected[key] = expected.get(key, D(0)) + D("0.013")
            lineage.setdefault(key, []).append(sequence)
        elif kind == "llm":
            key = f"tokens {properties['model']}"
            lineage.setdefault(key, []).append(sequence)
            lineage.setdefault("peak", []).append(sequence)
        else:
            fee = properties["amount"] * D("0.029") + D("0.30")
            expected["payments"] = expected.get("payments", D(0)) + fee
            lineage.setdefault("payments", []).append(sequence)
    for model in ("x", "y", "z"):
        tokens = [p["tokens"] for _, _, k, p in sequenced if k == "llm" and p["model"] == model]
        if tokens:
            tiers = configuration(LAWS).plans[0].prices[1].tiers
            expected[f"tokens {model}"] = graduated(D(sum(tokens)), tiers)
    peaks = [p["tokens"] for _, _, k, p in sequenced if k == "llm"]
    if peaks:
        expected["peak"] = per_unit(D(max(peaks)), D("0.5"))
    usage = {
        line.description.rsplit(" (", 1)[0]: line
        for line in document.lines
        if isinstance(line, MeterUsageLine)
    }
    assert set(usage) == set(expected)
    for key, amount in expected.items():
        assert usage[key].amount_exact == amount, key
        roots = usage[key].lineage
        assert roots.events == len(lineage[key])
        assert roots.merkle_root == merkle_root([event_hash(s) for s in lineage[key]]).hex()
    assert sum((line.amount_exact for line in document.lines), D(0)) == sum(
        expected.values(), D(0)
    )
    assert line_sum(document) == document.total


def _no_floats(value: Any, path: str = "") -> None:
    assert not isinstance(value, float), path
    if isinstance(value, dict):
        for key, item in value.items():
            _no_floats(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_floats(item, f"{path}[{index}]")


@settings(max_examples=40, deadline=None)
@given(events_strategy)
def test_no_amount_is_ever_a_float(events: list[Any]) -> None:
    document = invoice(configuration(LAWS), "c", OCTOBER, _sequenced(events))
    _no_floats(document_data(document))
    for line in document.lines:
        assert isinstance(line.amount, DecimalText)
        assert line.amount.as_tuple().exponent == -2
    assert document.total.as_tuple().exponent == -2


@settings(max_examples=80, deadline=None)
@given(
    st.decimals("0.01", "999999999.9999", places=4),
    st.decimals("0.01", "999999999.9999", places=4),
    st.integers(1, 31 * 86_400 - 1),
    st.sampled_from(["day", "second"]),
)
def test_any_fee_and_change_instant_prorate_without_error(
    old_fee: D, new_fee: D, change_s: int, by: str
) -> None:
    """Proration is the one quotient: carried to fixed places, it never trips the exact
    context, and the used and unused shares of a fee add back to the whole fee."""
    change = datetime.fromtimestamp(OCTOBER.start_us // 10**6 + change_s, tz=UTC)
    text = (
        STRIPE.replace("amount: 10}", f"amount: {old_fee}}}")
        .replace("amount: 20}", f"amount: {new_fee}}}")
        .replace("2026-04-16", change.isoformat().replace("+00:00", "Z"))
        .replace("2026-04-01", "2026-10-01")
        .replace("currency: USD,\n", f"currency: USD, billing: {{proration: {by}}},\n")
    )
    document = invoice(configuration(text), "c", OCTOBER, [])
    exact = [line.amount_exact for line in document.lines]
    assert exact[0] == old_fee
    if len(exact) == 3:  # the change fell inside the period's days
        # the unused share credited on the old fee is the share charged on the new one
        assert 0 < -exact[1] <= old_fee and 0 < exact[2] <= new_fee
        assert abs(-exact[1] / old_fee - exact[2] / new_fee) < D("1e-24")
    assert line_sum(document) == document.total


def test_a_contract_ending_mid_period_credits_its_unused_advance_fee() -> None:
    text = STRIPE.replace(
        "{customer: c, plan: basic, start: 2026-04-01,\n"
        "     amendments: [{effective: 2026-04-16, plan: pro}]}",
        "{customer: c, plan: pro, start: 2026-10-01, end: 2026-10-11}",
    )
    document = invoice(configuration(text), "c", OCTOBER, [])
    assert [(line.description, str(line.amount)) for line in document.lines] == [
        ("Pro (pro@1)", "20.00"),
        ("Pro (pro@1), unused time from 2026-10-11", "-13.55"),  # 21 of 31 days
    ]


def test_anniversary_and_quarterly_cycles_place_the_period() -> None:
    from meterline.billing.service import billing_cycle
    from meterline.core.periods import period_containing

    text = LAWS.replace(
        "currency: USD\n",
        "currency: USD\n        billing: {cycle: quarterly, anchor: anniversary}\n",
    ).replace("start: 2026-10-01", "start: 2026-01-31, timezone: America/New_York")
    config = configuration(text)
    contract = config.contract("c")
    assert contract is not None
    period = period_containing(billing_cycle(config, contract), OCTOBER.start_us)
    # quarters anchored on Jan 31 in New York: Jul 31 .. Oct 31 local midnight (EDT, UTC-4)
    assert period == BillingPeriod(
        timestamp_to_us(datetime(2026, 7, 31, 4, tzinfo=UTC)),
        timestamp_to_us(datetime(2026, 10, 31, 4, tzinfo=UTC)),
    )


# -- netting amounts billed early (threshold invoices) ------------------------------------------


def _with_extra(extra: list[ExtraLine]) -> Invoice:
    config = configuration(STRIPE.replace("2026-04-16", "2026-12-01"))
    contract = config.contract("c")
    assert contract is not None
    spans = segments(config, contract, OCTOBER.start_us, OCTOBER.end_us)
    header = InvoiceHeader("c", "USD", "UTC", OCTOBER, 1, "00", Cut((10**9,)))
    return build_invoice(header, spans, [], [], config, extra=extra)


def test_a_threshold_credit_above_what_the_invoice_owes_is_capped() -> None:
    """Lago's progressive billing: the final invoice deducts what was billed early, never
    more than it owes. 25.00 billed early against a 10.00 invoice nets 10.00 (the total
    is zero, not -15.00) and the 15.00 surplus is marked as carried."""
    early = ExtraLine("prepaid", "Billed early", D("-25.00"), None, {"billed_early": "25.00"})
    document = _with_extra([early])
    prepaid = document.lines[-1]
    assert isinstance(prepaid, PrepaidLine)
    assert (str(prepaid.amount), str(prepaid.carried), str(prepaid.billed_early)) == (
        "-10.00",
        "15.00",
        "25.00",
    )
    assert str(document.total) == "0.00" == str(line_sum(document))


def test_a_threshold_credit_within_what_the_invoice_owes_nets_in_full() -> None:
    early = ExtraLine("prepaid", "Billed early", D("-4.00"), None, {"billed_early": "4.00"})
    prepaid = _with_extra([early]).lines[-1]
    assert (str(prepaid.amount), str(prepaid.amount_exact), prepaid.carried) == (
        "-4.00",
        "-4.00",
        UNSET,
    )


amounts = st.integers(-(10**6), 10**6).map(lambda n: D(n).scaleb(-2))


@given(
    lines=st.lists(
        st.tuples(st.sampled_from(["usage", "fee", "credit", "prepaid", "adjustment"]), amounts),
        max_size=12,
    )
)
def test_netting_never_makes_an_invoice_negative(lines: list[tuple[str, D]]) -> None:
    """Law: prepaid lines (amounts billed early, negative) never take a total below zero,
    nor below what the other lines come to; each nets at most what was billed early."""
    kinds = [kind for kind, _ in lines]
    given_amounts = [-abs(a) if kind == "prepaid" else a for kind, a in lines]
    netted = netted_amounts(kinds, given_amounts)
    others = sum((a for k, a in zip(kinds, given_amounts, strict=True) if k != "prepaid"), D(0))
    assert sum(netted, D(0)) >= min(D(0), others)
    for kind, before, after in zip(kinds, given_amounts, netted, strict=True):
        if kind == "prepaid":
            assert before <= after <= 0
        else:
            assert after == before
