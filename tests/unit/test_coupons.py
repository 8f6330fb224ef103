"""Coupons (core.coupons): Stripe's worked examples, the documented order, and laws."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.coupons import (
    Coupon,
    Discountable,
    Redemption,
    apply_coupons,
    coupon_errors,
    redemption_errors,
)


def fee(key: int, amount: str) -> Discountable:
    return Discountable(key, "fee", None, D(amount))


def usage(key: int, meter: str, amount: str) -> Discountable:
    return Discountable(key, "usage", meter, D(amount))


def total_taken(lines: list[Discountable], coupons: list[Coupon]) -> D:
    return sum((taken.amount for taken in apply_coupons(lines, coupons, "USD")), D(0))


def test_stripe_percent_off_and_amount_off() -> None:
    """Stripe: 25% off a $10.00 monthly price leaves $7.50; $5.00 off $20.00 leaves $15.00."""
    quarter = Coupon("25OFF", "Quarter off", percent_off=D(25))
    assert total_taken([fee(1, "10.00")], [quarter]) == D("-2.5")
    five = Coupon("5OFF", "Five off", amount_off=D("5.00"), currency="USD")
    assert total_taken([fee(1, "20.00")], [five]) == D("-5.00")


def test_two_percentages_are_sequential_and_fixed_amounts_stop_at_zero() -> None:
    """Two 10% coupons take 19%; a fixed amount never takes more than is left."""
    ten_a = Coupon("A10", "Ten", percent_off=D(10))
    ten_b = Coupon("B10", "Ten", percent_off=D(10))
    assert total_taken([fee(1, "100")], [ten_a, ten_b]) == D("-19")
    big = Coupon("BIG", "Big", amount_off=D("500.00"), currency="USD")
    assert total_taken([fee(1, "100"), usage(2, "tokens", "30")], [big]) == D("-130")


def test_scope_and_the_documented_order() -> None:
    """Meter coupons first, then all-usage, then invoice; percentages before amounts."""
    lines = [fee(1, "50.00"), usage(2, "gpt", "100.00"), usage(3, "embed", "40.00")]
    gpt_half = Coupon("GPT", "GPT half", percent_off=D(50), applies_to="usage", meters=("gpt",))
    usage_ten = Coupon("U10", "Usage 10", amount_off=D("10.00"), currency="USD", applies_to="usage")
    fees_pct = Coupon("F20", "Fees 20%", percent_off=D(20), applies_to="fees")
    invoice_pct = Coupon("I10", "Invoice 10%", percent_off=D(10))
    taken = apply_coupons(lines, [invoice_pct, usage_ten, fees_pct, gpt_half], "USD")
    assert [t.coupon.code for t in taken] == ["GPT", "F20", "U10", "I10"]
    amounts = {t.coupon.code: t.amount for t in taken}
    assert amounts["GPT"] == D("-50.00")
    assert amounts["F20"] == D("-10.00")
    # 10.00 shared over usage still held (gpt 50, embed 40) in whole cents: 5.56 + 4.44
    assert dict(next(t for t in taken if t.coupon.code == "U10").shares) == {
        2: D("5.56"),
        3: D("4.44"),
    }
    # the invoice coupon sees 40 + 44.44 + 35.56 = 120.00
    assert amounts["I10"] == D("-12.0000")


def test_a_coupon_in_another_currency_takes_nothing() -> None:
    euro = Coupon("EUR5", "Five euro", amount_off=D("5.00"), currency="EUR")
    assert apply_coupons([fee(1, "20.00")], [euro], "USD") == []


def test_durations() -> None:
    once = Coupon("ONCE", "Once", percent_off=D(10))
    three = Coupon("THREE", "Three", percent_off=D(10), duration="repeating", duration_periods=3)
    always = Coupon("ALWAYS", "Always", percent_off=D(10), duration="forever")
    assert [once.lasts(n) for n in (-1, 0, 1)] == [False, True, False]
    assert [three.lasts(n) for n in (0, 2, 3)] == [True, True, False]
    assert always.lasts(120)


def test_declaration_errors_name_the_field() -> None:
    both = Coupon("X", "x", percent_off=D(10), amount_off=D(1), currency="USD")
    assert coupon_errors(both, "coupons[0]") == [
        "coupons[0]: set exactly one of percent_off and amount_off"
    ]
    bad = Coupon(
        "Y", "y", amount_off=D("1.005"), currency="USD", duration="repeating", meters=("m",)
    )
    assert coupon_errors(bad, "coupons[1]") == [
        "coupons[1].amount_off: 1.005 is not a whole number of USD minor units (2 places)",
        "coupons[1].meters: only a usage coupon names meters",
        "coupons[1].duration_periods: a repeating coupon lasts 1 to 1200 periods",
    ]
    assert coupon_errors(Coupon("Z", "z", percent_off=D(101)), "c") == [
        "c.percent_off: must be more than 0 and at most 100"
    ]


def test_redemption_limits_and_last_day() -> None:
    coupons = {
        "LAUNCH": Coupon("LAUNCH", "Launch", percent_off=D(20), max_redemptions=2),
        "EARLY": Coupon("EARLY", "Early", percent_off=D(5), redeem_by_us=1_000),
    }
    redemptions = [
        ("contracts[0].coupons[0]", Redemption("LAUNCH", 10)),
        ("contracts[1].coupons[0]", Redemption("LAUNCH", 20)),
        ("contracts[2].coupons[0]", Redemption("LAUNCH", 30)),
        ("contracts[3].coupons[0]", Redemption("EARLY", 2_000)),
        ("contracts[4].coupons[0]", Redemption("NOPE", 0)),
    ]
    assert redemption_errors(coupons, redemptions) == [
        "contracts[2].coupons[0]: coupon LAUNCH is limited to 2 redemption(s)",
        "contracts[3].coupons[0]: coupon EARLY was redeemable only until redeem_by",
        "contracts[4].coupons[0]: no coupon has the code 'NOPE'",
    ]


amounts = st.decimals(D("0.01"), D("5000"), places=2)


@st.composite
def coupon_sets(draw: st.DrawFn) -> list[Coupon]:
    found = []
    for number in range(draw(st.integers(0, 5))):
        scope = draw(st.sampled_from(["fees", "usage", "invoice"]))
        meters = draw(st.sampled_from([(), ("gpt",), ("gpt", "embed")])) if scope == "usage" else ()
        if draw(st.booleans()):
            off = {"percent_off": draw(st.decimals(D("0.5"), D(100), places=1))}
        else:
            off = {"amount_off": draw(amounts), "currency": "USD"}
        found.append(Coupon(f"C{number}", "c", applies_to=scope, meters=meters, **off))
    return found


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.sampled_from(["fee", "usage"]), st.sampled_from(["gpt", "embed"]), amounts),
        min_size=1,
        max_size=6,
    ),
    coupon_sets(),
    st.randoms(use_true_random=False),
)
def test_any_listing_gives_one_total_and_nothing_goes_negative(
    raw: list[tuple[str, str, D]], coupons: list[Coupon], random: object
) -> None:
    """Applying the same coupons listed in any order gives the same lines; neither the
    invoice nor its fees are taken below zero; each coupon's amount is the sum of its
    shares."""
    lines = [
        Discountable(key, kind, meter if kind == "usage" else None, amount)
        for key, (kind, meter, amount) in enumerate(raw)
    ]
    first = apply_coupons(lines, coupons, "USD")
    shuffled = list(coupons)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    assert apply_coupons(lines, shuffled, "USD") == first
    left = {line.key: line.amount for line in lines}
    for taken in first:
        assert taken.amount == -sum((share for _, share in taken.shares), D(0))
        for key, share in taken.shares:
            left[key] -= share
    assert sum(left.values(), D(0)) >= 0
    fees = [amount for line in lines if line.kind == "fee" for amount in [left[line.key]]]
    assert sum(fees, D(0)) >= 0 or not fees


def test_months_after_keeps_the_local_wall_time_and_clamps_the_day() -> None:
    """``duration_months`` counts calendar months at the same local wall time: 31 January
    + 1 month is 28 February (29 in a leap year); a New York evening stays 19:00 local
    across the change to daylight time."""
    from datetime import UTC, datetime

    from meterline.core.coupons import months_after_us
    from meterline.core.events import timestamp_to_us

    def us(*parts: int, zone: object = UTC) -> int:
        return timestamp_to_us(datetime(*parts, tzinfo=zone))  # type: ignore[arg-type]

    assert months_after_us("UTC", us(2026, 1, 31, 10), 1) == us(2026, 2, 28, 10)
    assert months_after_us("UTC", us(2027, 11, 30), 3) == us(2028, 2, 29)
    assert months_after_us("UTC", us(2026, 1, 5), 3) == us(2026, 4, 5)
    from zoneinfo import ZoneInfo

    york = ZoneInfo("America/New_York")
    assert months_after_us("America/New_York", us(2026, 2, 10, 19, zone=york), 1) == us(
        2026, 3, 10, 19, zone=york
    )
