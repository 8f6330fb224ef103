"""Vendor semantics of rating (``core.semantics``): a line maximum in every window or at
the close, volume prices billed progressively or at the close, and the percentage
price's free allowance and per-event minimum, each shown with both values on worked
numbers. The invoice line never changes with the window options: only how its amount
is spread over the credit windows does."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import read_yaml
from meterline.core.credits import CreditBook, Grant
from meterline.core.events import timestamp_to_us
from meterline.core.line_pricing import free_allowance, percentage_fee
from meterline.core.model import Configuration, Price, segments
from meterline.core.rating import Rater, window_charges
from meterline.core.semantics import Semantics

DAY = 24 * 3_600_000_000
OCTOBER = timestamp_to_us(datetime(2026, 10, 1, tzinfo=UTC))
NOVEMBER = timestamp_to_us(datetime(2026, 11, 1, tzinfo=UTC))
CUTS = (OCTOBER + 10 * DAY, OCTOBER + 20 * DAY)

PRICING = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
  - {key: images, event_type: img, aggregation: sum, property: count}
  - {key: payments, event_type: pay, aggregation: sum, property: amount}
  - {key: seats, event_type: seats, aggregation: latest, property: seats}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: tokens, model: per_unit, unit_amount: 1, maximum: 50}
          - meter: images
            model: volume
            tiers: [{up_to: 100, unit_amount: 1}, {unit_amount: "0.5"}]
          - {meter: payments, model: percentage, rate: "0.02", fixed_fee: "0.30",
             free_events: 3, free_units: 150, per_event_minimum: "0.50"}
          - {meter: seats, model: per_unit, unit_amount: 2}
contracts:
  - {customer: c, plan: p, start: 2026-10-01}
"""


def load(block: str = "", pricing: str = PRICING) -> Configuration:
    text = pricing + ("semantics:\n" + block if block else "")
    data, positions = read_yaml(text, "pricing.yaml")
    return parse_configuration(data, positions, "pricing.yaml")


def rated(configuration: Configuration, events: list[tuple[int, str, dict[str, object]]]) -> Rater:
    contract = configuration.contract("c")
    assert contract is not None
    rater = Rater(configuration, segments(configuration, contract, OCTOBER, NOVEMBER), cuts=CUTS)
    for sequence, (timestamp_us, event_type, properties) in enumerate(events, start=1):
        digest = hashlib.sha256(sequence.to_bytes(8, "big")).digest()
        rater.add(sequence, timestamp_us, event_type, properties, digest)
    return rater


def charges_of(configuration: Configuration, meter: str, events: list) -> list[tuple[int, D]]:
    """``(window end, amount)`` of the meter's window charges."""
    rater = rated(configuration, events)
    return [(c.end_us, c.amount) for c in window_charges(rater, "USD", configuration)
            if c.meter == meter]  # fmt: skip


def line_amount(configuration: Configuration, meter: str, events: list) -> D:
    lines = rated(configuration, events).lines("USD", configuration)
    return next(line.amount for line in lines if line.meter == meter)


# -- e. a gauge read once per period or per day -------------------------------------------


def at(day: int, hour: int, minute: int = 0) -> int:
    return timestamp_to_us(datetime(2026, 10, day, hour, minute, tzinfo=UTC))


SEATS = [
    (at(1, 10), "seats", {"seats": 5}),
    (at(1, 18), "seats", {"seats": 7}),
    (at(2, 9), "seats", {"seats": 3}),
    (at(5, 12), "seats", {"seats": 4}),
    (at(12, 8), "seats", {"seats": 1}),
]


def test_gauge_once_per_period_or_summed_per_day() -> None:
    """Seats at 2 USD: 5 then 7 on October 1, 3 on the 2nd, 4 on the 5th, 1 on the 12th
    (in the second window). ``period`` (default): the latest reading, 1 seat = 2 USD; the
    windows charge 4 x 2 = 8, then 2 - 8 = -6. ``day``: each day's latest, summed (days
    without readings add nothing): 7 + 3 + 4 + 1 = 15 seat-days = 30 USD; the windows
    charge 28, then 2."""
    period, day = load(), load("  gauge: day\n")
    assert line_amount(period, "seats", SEATS) == D(2)
    assert charges_of(period, "seats", SEATS) == [(CUTS[0], D(8)), (CUTS[1], D(-6))]
    assert line_amount(day, "seats", SEATS) == D(30)
    assert charges_of(day, "seats", SEATS) == [(CUTS[0], D(28)), (CUTS[1], D(2))]
    quantities = {meter.key: quantity for _, meter, _, quantity, _ in
                  rated(day, SEATS).quantities()}  # fmt: skip
    assert quantities["seats"] == D(15)


def test_a_gauge_day_is_the_contracts_local_day() -> None:
    """8 seats at 21:00Z and 2 at 23:30Z on October 2: one UTC day (2 seats), but in
    Berlin (UTC+2) 23:00 on the 2nd and 01:30 on the 3rd: two days, 8 + 2 = 10."""
    events = [(at(2, 21), "seats", {"seats": 8}), (at(2, 23, 30), "seats", {"seats": 2})]
    berlin = PRICING.replace("start: 2026-10-01}", "start: 2026-10-01, timezone: Europe/Berlin}")
    assert line_amount(load("  gauge: day\n"), "seats", events) == D(4)
    assert line_amount(load("  gauge: day\n", berlin), "seats", events) == D(20)
    assert line_amount(load("", berlin), "seats", events) == D(4)


# -- c. a line maximum in every window or at the close --------------------------------------

TOKENS = [
    (OCTOBER + DAY, "llm", {"tokens": 40}),
    (OCTOBER + 11 * DAY, "llm", {"tokens": 30}),
    (OCTOBER + 21 * DAY, "llm", {"tokens": 10}),
]


def test_line_maximum_at_the_close_or_in_every_window() -> None:
    """1 USD a token, maximum 50; 40, 30 and 10 tokens in three windows. ``close``
    (default): the windows charge 40, 30 (70 so far, over the maximum), then the close
    settles the maximum: -20; a grant of 100 is drawn 70 and given 20 back.
    ``every_window``: 40, then 10 (the cumulative 70 capped at 50), then nothing. Either
    way the line is 50."""
    close, every = load(), load("  line_maximum: every_window\n")
    assert charges_of(close, "tokens", TOKENS) == [
        (CUTS[0], D(40)), (CUTS[1], D(30)), (NOVEMBER, D(-20)),
    ]  # fmt: skip
    assert charges_of(every, "tokens", TOKENS) == [(CUTS[0], D(40)), (CUTS[1], D(10))]
    assert line_amount(close, "tokens", TOKENS) == line_amount(every, "tokens", TOKENS) == D(50)
    grant = Grant("g", "USD", D(100), effective_us=OCTOBER)
    for configuration, moves in (
        (close, [("consume", D(40)), ("consume", D(30)), ("release", D(20))]),
        (every, [("consume", D(40)), ("consume", D(10))]),
    ):
        charges = window_charges(rated(configuration, TOKENS), "USD", configuration)
        book = CreditBook().run([grant], [c for c in charges if c.meter == "tokens"])
        assert [(e.kind, e.amount) for e in book.entries if e.kind != "grant"] == moves
        assert book.balance("g") == D(50)


# -- d. volume prices billed progressively or at the close --------------------------------

IMAGES = [
    (OCTOBER + DAY, "img", {"count": 100}),
    (OCTOBER + 11 * DAY, "img", {"count": 20}),
]


def test_volume_billing_progressive_or_at_the_close() -> None:
    """Volume tiers: up to 100 at 1, beyond at 0.50 for every unit. 100 images, then 20
    more. ``progressive`` (default, Lago's progressive billing): the first window charges
    100 x 1 = 100, the second 120 x 0.50 - 100 = -40. ``close``: nothing until the last
    window, which charges 60. The line is 60 either way."""
    progressive, close = load(), load("  volume_billing: close\n")
    assert charges_of(progressive, "images", IMAGES) == [(CUTS[0], D(100)), (CUTS[1], D(-40))]
    assert charges_of(close, "images", IMAGES) == [(NOVEMBER, D(60))]
    assert line_amount(progressive, "images", IMAGES) == line_amount(close, "images", IMAGES)
    assert line_amount(close, "images", IMAGES) == D(60)


# -- f, g. a percentage price's free allowance and its per-event minimum -------------------

PAYMENTS = [
    (OCTOBER + DAY, "pay", {"amount": 10}),
    (OCTOBER + 2 * DAY, "pay", {"amount": 100}),
    (OCTOBER + 11 * DAY, "pay", {"amount": 100}),
    (OCTOBER + 21 * DAY, "pay", {"amount": 10}),
]


@pytest.mark.parametrize(
    ("free", "minimum", "fees"),
    [
        # the first 3 events pay no fixed fee; the rate applies to all
        ("fixed_fee", "applies", ["0.50", "2.00", "2.00", "0.50"]),
        ("fixed_fee", "skipped", ["0.20", "2.00", "2.00", "0.50"]),
        # Lago free_units_per_events: the first 3 events pay nothing
        ("events", "applies", ["0.50", "0.50", "0.50", "0.50"]),
        ("events", "skipped", ["0", "0", "0", "0.50"]),
        # Lago free_units_per_total_aggregation (150) with free_units_per_events (3): 10
        # and 100 are inside the 150; the third pays 2% of the 60 beyond it plus its fixed
        # fee; the fourth is past the 3 free events
        ("amount", "applies", ["0.50", "0.50", "1.50", "0.50"]),
        ("amount", "skipped", ["0", "0", "1.50", "0.50"]),
        # Lago's per-transaction path: the same here, the 150 being used up by the third
        # event, before the 3 free events run out
        ("amount_else_events", "applies", ["0.50", "0.50", "1.50", "0.50"]),
        ("amount_else_events", "skipped", ["0", "0", "1.50", "0.50"]),
    ],
)
def test_percentage_free_allowance_and_the_minimum_of_free_events(
    free: str, minimum: str, fees: list[str]
) -> None:
    """2% of each payment plus 0.30, at least 0.50 a payment; free_events 3, free_units
    150; payments of 10, 100, 100 and 10 (the third in the second window, the fourth in
    the third). Each event's fee, the line (their sum) and the window charges (the same
    sum, spread by window) under each value of ``percentage_free`` and
    ``free_event_minimum``."""
    configuration = load(f"  percentage_free: {free}\n  free_event_minimum: {minimum}\n")
    price = next(p for p in configuration.plans[0].prices if p.model == "percentage")
    semantics = configuration.semantics
    before = D(0)
    for position, ((_, _, properties), fee) in enumerate(zip(PAYMENTS, fees, strict=True)):
        amount = D(str(properties["amount"]))
        assert percentage_fee(price, amount, position, before, semantics) == D(fee)
        before += amount
    total = sum((D(fee) for fee in fees), D(0))
    assert line_amount(configuration, "payments", PAYMENTS) == total
    charges = charges_of(configuration, "payments", PAYMENTS)
    assert sum(amount for _, amount in charges) == total
    by_window = [D(fees[0]) + D(fees[1]), D(fees[2]), D(fees[3])]
    assert charges == [
        (end, amount)
        for end, amount in zip((*CUTS, NOVEMBER), by_window, strict=True)
        if amount
    ]


def test_the_default_allowance_is_the_fee_before_semantics() -> None:
    """No block: free_events waive the fixed fee only and free_units are not read: 5.00."""
    assert line_amount(load(), "payments", PAYMENTS) == D("5.00")


def test_an_amount_allowance_alone_or_an_event_allowance_alone() -> None:
    """Under ``amount``: with ``free_units`` alone the allowance is the amount (an event
    that brings the total exactly to it pays no rate but does pay the fixed fee, as in
    getlago/lago-api ``percentage_service.rb``: ``free_units_count`` counts running totals
    strictly below ``free_units_per_total_aggregation``); with ``free_events`` alone it is
    the events; with neither nothing is free."""
    semantics = Semantics(percentage_free="amount")
    by_amount = Price("payments", "percentage", rate=D("0.02"), free_units=D(150))
    assert free_allowance(by_amount, D(100), 0, D(0), semantics) == (D(100), True)
    assert free_allowance(by_amount, D(50), 7, D(100), semantics) == (D(50), False)
    assert free_allowance(by_amount, D(49), 7, D(100), semantics) == (D(49), True)
    assert free_allowance(by_amount, D(60), 1, D(100), semantics) == (D(50), False)
    assert free_allowance(by_amount, D(10), 2, D(150), semantics) == (D(0), False)
    by_events = Price("payments", "percentage", rate=D("0.02"), free_events=1)
    assert free_allowance(by_events, D(500), 0, D(0), semantics) == (D(500), True)
    assert free_allowance(by_events, D(5), 1, D(500), semantics) == (D(0), False)
    neither = Price("payments", "percentage", rate=D("0.02"))
    assert free_allowance(neither, D(5), 0, D(0), semantics) == (D(0), False)


# -- f'. Lago's per-transaction minimum and maximum: the amount allowance outlasts the events


def lago_fees(price: Price, amounts: list[int], semantics: Semantics) -> list[D]:
    """Each event's fee, in order, with the amounts of the events before it."""
    fees, before = [], D(0)
    for position, amount in enumerate(amounts):
        fees.append(percentage_fee(price, D(amount), position, before, semantics))
        before += amount
    return fees


LAGO_PAYMENTS = [100, 1_000, 10_000]


@pytest.mark.parametrize(
    ("changes", "fees"),
    [
        # nothing free: 1 (raised to 1.75), 10, 100 (capped at 12)
        ({}, ["1.75", "10", "12"]),
        # fixed_amount 1: 2, 11, 101 (capped at 12)
        ({"fixed_fee": D(1)}, ["2", "11", "12"]),
        # free_units_per_events 2 alone: the first two pay nothing, not even the minimum
        ({"free_events": 2}, ["0", "0", "12"]),
        # free_units_per_total_aggregation 300 alone: 100 inside it; 1000 pays 1% of the
        # 800 beyond it
        ({"free_units": D(300)}, ["0", "8", "12"]),
        # both, 3 events and 10000: 100 and 1000 inside; 10000 pays 1% of the 1100 beyond
        ({"free_events": 3, "free_units": D(10_000)}, ["0", "0", "11"]),
        # both, 1 event and 300: the amount outlasts the one free event (Lago's loop goes
        # on while any free amount is left), so 1000 still pays only 1% of 800
        ({"free_events": 1, "free_units": D(300)}, ["0", "8", "12"]),
        # the same with fixed_amount 1: the event crossing the amount pays it (8 + 1)
        ({"free_events": 1, "free_units": D(300), "fixed_fee": D(1)}, ["0", "9", "12"]),
        # 100 + 1000 reach 1100 exactly: the second is not free (0 of rate + 0 fixed is
        # raised to the minimum), as Lago's `remaining_free_amount > value` says
        ({"free_units": D(1_100)}, ["0", "1.75", "12"]),
    ],
)
def test_lago_per_transaction_minimum_and_maximum_with_free_units(
    changes: dict[str, object], fees: list[str]
) -> None:
    """Lago prices a percentage charge with ``per_transaction_min_amount`` or
    ``per_transaction_max_amount`` event by event (getlago/lago-api
    ``app/services/charges/charge_models/percentage_service.rb``,
    ``compute_amount_with_transaction_min_max``): while free events or a free amount are
    left, an event inside the free amount (or, with no free amount, one of the free
    events) pays nothing, no minimum either; the event that uses up the free amount pays
    the rate on its part beyond it plus the fixed amount; every later event pays rate x
    value + fixed amount; each paying event is raised to the minimum, then capped at the
    maximum. Using the free amount up ends the free events too, but the free events
    running out does not end the free amount. The numbers are Lago's own spec (rate 1%,
    minimum 1.75, maximum 12, events of 100, 1000 and 10000:
    ``spec/services/charges/charge_models/percentage_service_spec.rb``, "when applying min
    / max amount per transaction": 23.75, 25, 12, 20 and 11) and, for one free event with
    300 free, computed by hand from the same loop. ``percentage_free:
    amount_else_events`` with ``free_event_minimum: skipped`` gives each fee."""
    price = Price(
        "payments",
        "percentage",
        rate=D("0.01"),
        per_event_minimum=D("1.75"),
        per_event_maximum=D(12),
    )
    price = replace(price, **changes)  # type: ignore[arg-type]
    semantics = Semantics(percentage_free="amount_else_events", free_event_minimum="skipped")
    assert lago_fees(price, LAGO_PAYMENTS, semantics) == [D(fee) for fee in fees]


def test_amount_ends_at_the_free_events_where_amount_else_events_goes_on() -> None:
    """One free event and 300 free, rate 1%, minimum 1.75, maximum 12: ``amount`` (Lago's
    aggregate path, without a per-transaction minimum or maximum) ends the allowance after
    the first event, so 1000 pays 1% of all of it (10): 0 + 10 + 12 = 22;
    ``amount_else_events`` (its per-transaction path) lets the 200 left pay for part of
    1000: 0 + 8 + 12 = 20. With no free amount the two are ``events``: one event free."""
    price = Price(
        "payments",
        "percentage",
        rate=D("0.01"),
        per_event_minimum=D("1.75"),
        per_event_maximum=D(12),
        free_events=1,
        free_units=D(300),
    )
    amount = Semantics(percentage_free="amount", free_event_minimum="skipped")
    per_transaction = replace(amount, percentage_free="amount_else_events")
    assert sum(lago_fees(price, LAGO_PAYMENTS, amount), D(0)) == D(22)
    assert sum(lago_fees(price, LAGO_PAYMENTS, per_transaction), D(0)) == D(20)
    events_only = replace(price, free_units=D(0))
    for semantics in (amount, per_transaction, replace(amount, percentage_free="events")):
        assert lago_fees(events_only, LAGO_PAYMENTS, semantics) == [D(0), D(10), D(12)]


def test_lagos_published_example_of_free_events_and_a_free_amount() -> None:
    """Lago, "Percentage" charge model (getlago.com/docs/guide/plans/charges/charge-models/
    percentage): 1.2% and 0.10 a transaction, the first 3 events or $500 free;
    transactions of 200, 100, 100 and 50: the first three pay nothing, "for the fourth
    transaction, the charge will be $0.10 x 1 event + 1.2% of $50 = $0.70" (4 events:
    free units exceeded). That is ``amount``. With a per-transaction minimum or maximum
    set, Lago's per-transaction path (``amount_else_events``) keeps the fourth inside
    the $500 (450 so far) and charges nothing."""
    price = Price(
        "payments",
        "percentage",
        rate=D("0.012"),
        fixed_fee=D("0.10"),
        free_events=3,
        free_units=D(500),
    )
    payments = [200, 100, 100, 50]
    amount = Semantics(percentage_free="amount", free_event_minimum="skipped")
    assert lago_fees(price, payments, amount) == [D(0), D(0), D(0), D("0.70")]
    per_transaction = replace(amount, percentage_free="amount_else_events")
    assert lago_fees(price, payments, per_transaction) == [D(0)] * 4


# -- f''. Lago charges nothing on a line whose events sum to 0 -------------------------------

ZERO_SUM = PRICING.replace(
    """          - {meter: payments, model: percentage, rate: "0.02", fixed_fee: "0.30",
             free_events: 3, free_units: 150, per_event_minimum: "0.50"}""",
    """          - {meter: payments, model: percentage, rate: "0.02", fixed_fee: "0.30",
             free_events: 1}""",
)
ZEROS = [
    (OCTOBER + DAY, "pay", {"amount": 0}),
    (OCTOBER + 11 * DAY, "pay", {"amount": 0}),
    (OCTOBER + 12 * DAY, "pay", {"amount": 0}),
]


@pytest.mark.parametrize(
    ("free", "total"),
    [("events", "0"), ("amount", "0"), ("fixed_fee", "0.60"), ("amount_else_events", "0.60")],
)
def test_a_line_whose_events_sum_to_zero_pays_no_fixed_fee_under_lagos_values(
    free: str, total: str
) -> None:
    """2% and 0.30 a payment, the first payment free (``free_units_per_events`` 1); three
    payments of 0. Lago charges no fixed amount when the aggregated units are 0
    (getlago/lago-api ``app/services/charges/charge_models/percentage_service.rb``,
    ``compute_fixed_amount``: ``return 0 if units.zero?``; its spec
    ``spec/services/charges/charge_models/percentage_service_spec.rb``, "when aggregation
    value is 0": 4 events, 2 of them not free, fixed amount 2, amount 0): 0 under
    ``events`` and ``amount`` (``amount`` with no ``free_units`` is ``events``). The other
    two values charge the two paying events their fixed fee: 0.60 (``amount_else_events``
    is Lago's per-transaction loop, which has no such rule: ``0 x rate + 0.30`` each)."""
    configuration = load(f"  percentage_free: {free}\n", ZERO_SUM)
    assert line_amount(configuration, "payments", ZEROS) == D(total)
    charges = charges_of(configuration, "payments", ZEROS)
    assert charges == ([] if total == "0" else [(CUTS[1], D(total))])


def test_the_zero_sum_rule_reads_the_usage_so_far_in_each_window() -> None:
    """The same price under ``events``; payments of 0 (window 1), 0 (window 2) and 50
    (window 3). Lago's progressive billing prices the usage to date: after the second
    payment the units are 0, so nothing (though the second payment is past the free
    one); at the close, units 50: the running total of the first (free) event is 0, so
    no amount is free of the rate: 2% x 50 = 1.00, plus the fixed amount of the 2
    events past the free one, 0.60: 1.60, all charged in the third window."""
    configuration = load("  percentage_free: events\n", ZERO_SUM)
    payments = [*ZEROS[:2], (OCTOBER + 21 * DAY, "pay", {"amount": 50})]
    assert line_amount(configuration, "payments", payments) == D("1.60")
    assert charges_of(configuration, "payments", payments) == [(NOVEMBER, D("1.60"))]


def test_amount_ends_the_allowance_when_the_first_event_reaches_the_free_amount() -> None:
    """1% and 5 a transaction, the first 3 events or 15 free; transactions of 20, 10 and
    10. The first uses up the 15, so under ``amount`` the allowance has ended: 20 pays 1%
    of the 5 beyond it plus 5, the others 1% plus 5: 5.05 + 5.10 + 5.10 = 15.25. Lago's
    code charges 0.25 here (getlago/lago-api
    ``app/services/charges/charge_models/percentage_service.rb``: 1% of 40 - 15, and no
    fixed amount, ``free_units_count`` taking ``free_units_per_events`` 3 when no running
    total is below 15); no Lago test or doc states that, and its docs' rule ("the first 3
    events or $500 are free") says the allowance ended, so meterline does not follow it
    (docs/billing.md, ``amount``)."""
    price = Price(
        "payments",
        "percentage",
        rate=D("0.01"),
        fixed_fee=D(5),
        free_events=3,
        free_units=D(15),
    )
    fees = lago_fees(price, [20, 10, 10], Semantics(percentage_free="amount"))
    assert fees == [D("5.05"), D("5.10"), D("5.10")]
