"""Vendor semantics of the credit ledger (``core.semantics``): the pricing file's
``semantics:`` block, the burn-order tie-breaks (cost basis, expiry to the minute), a
grant's end at its exact expiry instant and its declared start on the whole minute, each
shown with every value on worked numbers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, read_yaml
from meterline.core.credits import Charge, CreditBook, Grant, burn_order, cut_instants
from meterline.core.events import timestamp_to_us
from meterline.core.grants import contract_grants
from meterline.core.model import Configuration, segments
from meterline.core.periods import BillingCycle
from meterline.core.rating import Rater, window_charges
from meterline.core.semantics import DEFAULT, Semantics, declared_start

SECOND = 1_000_000
MINUTE = 60 * SECOND
DAY = 24 * 60 * MINUTE
OCTOBER = timestamp_to_us(datetime(2026, 10, 1, tzinfo=UTC))
NOVEMBER = timestamp_to_us(datetime(2026, 11, 1, tzinfo=UTC))
EXPIRY = timestamp_to_us(datetime(2026, 10, 10, tzinfo=UTC))

PRICING = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: tokens, model: per_unit, unit_amount: 1}
contracts:
  - customer: c
    plan: p
    start: 2026-10-01
    credits:
      grants:
        - {key: pool, credit_type: USD, amount: 100, expires: 2026-10-10}
"""


def load(text: str) -> Configuration:
    data, positions = read_yaml(text, "pricing.yaml")
    return parse_configuration(data, positions, "pricing.yaml")


def with_block(block: str, text: str = PRICING) -> Configuration:
    return load(text + "semantics:\n" + block)


def drawn(book: CreditBook) -> list[tuple[str | None, D]]:
    return [(e.grant, e.amount) for e in book.entries if e.kind == "consume"]


def charge(amount: int, start: int = OCTOBER, end: int = OCTOBER + DAY) -> Charge:
    return Charge(start, end, "0/tokens/", "tokens", "credits", D(amount))


# -- the block ------------------------------------------------------------------------------


def test_no_block_is_every_default_and_changes_nothing() -> None:
    configuration = load(PRICING)
    assert configuration.semantics == DEFAULT == Semantics()
    contract = configuration.contract("c")
    assert contract is not None and contract.credits.semantics == DEFAULT


def test_the_block_is_read_into_the_configuration_and_each_contracts_credit_terms() -> None:
    configuration = with_block("  burn_cost_basis: promotional_first\n  burn_expiry: minute\n")
    assert configuration.semantics == Semantics(
        burn_cost_basis="promotional_first", burn_expiry="minute"
    )
    contract = configuration.contract("c")
    assert contract is not None and contract.credits.semantics == configuration.semantics
    assert contract.credits.is_empty() is False  # it has a grant; the block alone is not terms


def test_a_wrong_value_and_an_unknown_option_are_named_with_their_path_and_line() -> None:
    with pytest.raises(ConfigurationError) as caught:
        with_block("  grant_end: sometimes\n  burn_order: paid\n")
    assert caught.value.errors == [
        "pricing.yaml:20: semantics.burn_order: unknown key (expected one of burn_cost_basis, "
        "burn_expiry, grant_end, grant_start, gauge, line_maximum, volume_billing, "
        "percentage_free, free_event_minimum)",
        "pricing.yaml:19: semantics.grant_end: 'sometimes' is not one of exclusive, inclusive",
    ]


def test_a_block_that_is_not_a_mapping_is_named() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load(PRICING + "semantics: [minute]\n")
    assert caught.value.errors == ["pricing.yaml:18: semantics: must be a mapping, not a list"]


# -- a. burn-order tie-breaks --------------------------------------------------------------

# Two grants of equal priority and expiry: a paid top-up made first, a promotional grant
# (nothing paid) made a day later. A charge of 30 is drawn from one of them.
PAID = Grant("paid", "credits", D(50), 0, expires_us=NOVEMBER, paid=D(45), created_us=0)
PROMO = Grant("promo", "credits", D(50), 0, expires_us=NOVEMBER, created_us=DAY)


@pytest.mark.parametrize(
    ("cost_basis", "first", "draws"),
    [
        ("none", "paid", [("paid", D(30))]),  # default: the older grant first
        ("promotional_first", "promo", [("promo", D(30))]),  # Stigg: promotional first
        ("paid_first", "paid", [("paid", D(30))]),
        ("lowest_first", "promo", [("promo", D(30))]),  # Orb: a 0 cost basis is lowest
    ],
)
def test_cost_basis_tie_break(cost_basis: str, first: str, draws: list[tuple[str, D]]) -> None:
    semantics = Semantics(burn_cost_basis=cost_basis)  # type: ignore[arg-type]
    assert burn_order([PROMO, PAID], semantics)[0].grant_id == first
    book = CreditBook(semantics=semantics).run([PAID, PROMO], [charge(30)])
    book.check()
    assert drawn(book) == draws


def test_paid_first_wins_over_an_older_promotional_grant() -> None:
    """The reverse ages: the promotional grant is the older one, so only ``paid_first``
    draws the paid grant first (60 of 50 + 10)."""
    older_promo = Grant("promo", "credits", D(50), 0, expires_us=NOVEMBER, created_us=0)
    newer_paid = Grant("paid", "credits", D(50), 0, expires_us=NOVEMBER, paid=D(45), created_us=DAY)
    grants = [older_promo, newer_paid]
    default = CreditBook().run(grants, [charge(60)])
    paid_first = CreditBook(semantics=Semantics(burn_cost_basis="paid_first")).run(
        grants, [charge(60)]
    )
    assert drawn(default) == [("promo", D(50)), ("paid", D(10))]
    assert drawn(paid_first) == [("paid", D(50)), ("promo", D(10))]


def test_priority_and_expiry_still_come_before_the_cost_basis() -> None:
    urgent_paid = Grant("paid", "credits", D(50), 0, expires_us=EXPIRY, paid=D(45))
    semantics = Semantics(burn_cost_basis="promotional_first")
    assert [g.grant_id for g in burn_order([PROMO, urgent_paid], semantics)] == ["paid", "promo"]


def test_expiry_to_the_minute_ties_grants_expiring_within_one_minute() -> None:
    """``minute`` compares expiries truncated to the minute: A expires at 10:00:50 and was
    made first, B at 10:00:10. Exactly, B expires sooner and burns first; to the minute
    both expire at 10:00, so the older A burns first. A charge of 70: exact draws B 40
    then A 30; to the minute A 40 then B 30."""
    ten = timestamp_to_us(datetime(2026, 10, 20, 10, tzinfo=UTC))
    a = Grant("A", "credits", D(40), 0, expires_us=ten + 50_000_000, created_us=0)
    b = Grant("B", "credits", D(40), 0, expires_us=ten + 10_000_000, created_us=DAY)
    exact = CreditBook().run([a, b], [charge(70)])
    minute = CreditBook(semantics=Semantics(burn_expiry="minute")).run([a, b], [charge(70)])
    assert drawn(exact) == [("B", D(40)), ("A", D(30))]
    assert drawn(minute) == [("A", D(40)), ("B", D(30))]
    # grants in different minutes keep their order under either value
    c = Grant("C", "credits", D(40), 0, expires_us=ten + MINUTE, created_us=0)
    assert [g.grant_id for g in burn_order([c, b], Semantics(burn_expiry="minute"))] == [
        "B",
        "C",
    ]


# -- b. a grant at its exact expiry instant -------------------------------------------------


def book_for(configuration: Configuration, events: list[tuple[int, int]]) -> CreditBook:
    """The credit book of customer ``c`` for October: the grants its contract declares,
    the window edges the shell cuts (every grant instant and each midnight), the rated
    ``(timestamp, tokens)`` events' charges."""
    contract = configuration.contract("c")
    assert contract is not None
    grants = contract_grants(configuration, contract, BillingCycle(), NOVEMBER)
    cuts = set(cut_instants(grants, (), OCTOBER, NOVEMBER))
    cuts.update(range(OCTOBER + DAY, NOVEMBER, DAY))
    rater = Rater(
        configuration, segments(configuration, contract, OCTOBER, NOVEMBER), cuts=tuple(cuts)
    )
    for sequence, (timestamp_us, tokens) in enumerate(events, start=1):
        digest = hashlib.sha256(sequence.to_bytes(8, "big")).digest()
        rater.add(sequence, timestamp_us, "llm", {"tokens": tokens}, digest)
    charges = window_charges(rater, "USD", configuration)
    book = CreditBook(contract.credits.overage, contract.credits.semantics).run(grants, charges)
    book.check()
    return book


def test_grant_end_exclusive_or_inclusive_at_the_exact_expiry_instant() -> None:
    """A grant of 100 USD declared to expire at 2026-10-10T00:00Z; 30 tokens at 1 USD
    the day before, 20 at exactly the expiry instant. ``exclusive`` (default): the grant
    pays 30, the 20 at the instant are overage, 70 expire. ``inclusive``: it pays 30 + 20,
    and 50 expire right after the instant."""
    events = [(EXPIRY - DAY, 30), (EXPIRY, 20)]
    exclusive = book_for(load(PRICING), events)
    assert drawn(exclusive) == [("pool", D(30))]
    assert [(e.kind, e.amount, e.at_us) for e in exclusive.entries if e.kind != "grant"] == [
        ("consume", D(30), EXPIRY - DAY + DAY),
        ("expire", D(70), EXPIRY),
        ("overage", D(20), EXPIRY + DAY),
    ]
    inclusive = book_for(with_block("  grant_end: inclusive\n"), events)
    assert drawn(inclusive) == [("pool", D(30)), ("pool", D(20))]
    assert [e.kind for e in inclusive.entries].count("overage") == 0
    assert [(e.kind, e.amount, e.at_us) for e in inclusive.entries if e.kind == "expire"] == [
        ("expire", D(50), EXPIRY + 1)
    ]
    # one microsecond after the instant, neither value lets the grant pay
    late = book_for(with_block("  grant_end: inclusive\n"), [(EXPIRY + 1, 20)])
    assert drawn(late) == []


def test_lowest_cost_basis_first_among_paid_grants() -> None:
    """Orb, "Fetch customer credits ledger" (docs.withorb.com/api-reference/credit/
    fetch-customer-credits-ledger): among blocks with the same expiry date, the block with
    the lower cost basis is deducted first. Three blocks of 100 credits expiring together:
    "dear" (paid 50.00: 0.50 a credit, made first), "cheap" (20.00: 0.20 a credit) and
    "trial" (0 cost basis, made last). A charge of 250 draws trial 100, cheap 100, dear 50;
    ``promotional_first`` only puts the free block first and then takes the older dear."""
    dear = Grant("dear", "credits", D(100), 0, expires_us=NOVEMBER, paid=D(50), created_us=0)
    cheap = Grant("cheap", "credits", D(100), 0, expires_us=NOVEMBER, paid=D(20), created_us=DAY)
    trial = Grant("trial", "credits", D(100), 0, expires_us=NOVEMBER, created_us=2 * DAY)
    grants = [dear, cheap, trial]
    lowest = CreditBook(semantics=Semantics(burn_cost_basis="lowest_first")).run(
        grants, [charge(250)]
    )
    lowest.check()
    assert drawn(lowest) == [("trial", D(100)), ("cheap", D(100)), ("dear", D(50))]
    promotional = CreditBook(semantics=Semantics(burn_cost_basis="promotional_first")).run(
        grants, [charge(250)]
    )
    assert drawn(promotional) == [("trial", D(100)), ("dear", D(100)), ("cheap", D(50))]


def test_expiry_to_the_second_as_openmeter_compares_it() -> None:
    """OpenMeter's burn order (openmeterio/openmeter ``openmeter/credit/engine/grant.go``,
    ``PrioritizeGrants``) compares expirations as ``Unix()`` seconds, then the creation
    instant, then the id. A expires at 10:00:00.900 and was made first, B at 10:00:00.200:
    to the second they tie and the older A burns first; exactly, B burns first; grants a
    second apart keep their order."""
    ten = timestamp_to_us(datetime(2026, 10, 20, 10, tzinfo=UTC))
    a = Grant("A", "credits", D(40), 0, expires_us=ten + 900_000, created_us=0)
    b = Grant("B", "credits", D(40), 0, expires_us=ten + 200_000, created_us=DAY)
    second = Semantics(burn_expiry="second")
    assert [g.grant_id for g in burn_order([b, a], second)] == ["A", "B"]
    assert [g.grant_id for g in burn_order([a, b], DEFAULT)] == ["B", "A"]
    c = Grant("C", "credits", D(40), 0, expires_us=ten + 1_000_000, created_us=0)
    assert [g.grant_id for g in burn_order([c, b], second)] == ["B", "C"]


def test_plan_and_contract_overrides_are_read_and_checked() -> None:
    """A plan's block overrides the file's, a contract's its plan's, option by option; a
    customer without overrides bills with the file's; a wrong value in either is named
    by its path."""
    text = PRICING.replace(
        "  - key: p\n", "  - key: p\n    semantics: {gauge: day, burn_expiry: second}\n"
    )
    text = text.replace("    plan: p\n", "    plan: p\n    semantics: {gauge: period}\n")
    configuration = with_block("  line_maximum: every_window\n", text)
    chosen = configuration.semantics_for("c")
    assert (chosen.gauge, chosen.burn_expiry, chosen.line_maximum) == (
        "period",
        "second",
        "every_window",
    )
    assert configuration.contracts[0].credits.semantics == chosen
    assert configuration.semantics_for("nobody") == configuration.semantics
    wrong = PRICING.replace("  - key: p\n", "  - key: p\n    semantics: {gauge: hourly}\n")
    with pytest.raises(ConfigurationError) as caught:
        load(wrong.replace("    plan: p\n", "    plan: p\n    semantics: {nonsense: 1}\n"))
    message = str(caught.value)
    assert "plans[0].semantics.gauge: 'hourly' is not one of period, day" in message, message
    assert "contracts[0].semantics" in message and "nonsense" in message, message


# -- a grant's declared start, as declared or on the whole minute --------------------------

STARTED = PRICING.replace(
    "{key: pool, credit_type: USD, amount: 100, expires: 2026-10-10}",
    "{key: pool, credit_type: USD, amount: 100, start: '2026-10-05T10:00:30Z',\n"
    "           expires: 2026-10-10}",
)
TEN = timestamp_to_us(datetime(2026, 10, 5, 10, tzinfo=UTC))


@pytest.mark.parametrize(
    ("start", "effective", "paid"),
    [
        ("exact", TEN + MINUTE // 2, D(30)),
        ("minute_up", TEN + MINUTE, D(20)),
        ("minute_down", TEN, D(35)),
    ],
)
def test_a_grants_declared_start_as_declared_or_on_the_whole_minute(
    start: str, effective: int, paid: D
) -> None:
    """OpenMeter's grant ``effectiveAt`` "will be ceiled to metering windowSize (minute)"
    (openmeterio/openmeter ``api/spec/src/entitlements/grant.tsp``, ``GrantCreateInput``;
    its early ``internal/credit/grant_connector.go`` ``CreateGrant``: truncated, plus a
    minute when that moved it; later versions of it and ``openmeter/credit/grant.go``
    ``CreateGrant`` truncate down). A grant of 100 USD declared to start at 10:00:30; 5
    tokens at 10:00:10, 10 at 10:00:40 (in the first, partial minute) and 20 at 10:01:00.
    ``exact`` (default): it pays 10 + 20; ``minute_up``: it starts at 10:01, so the 10 in
    the partial minute are not its (overage); ``minute_down``: it starts at 10:00 and pays
    all three."""
    configuration = with_block(f"  grant_start: {start}\n", STARTED)
    contract = configuration.contract("c")
    assert contract is not None
    (grant,) = contract_grants(configuration, contract, BillingCycle(), NOVEMBER)
    assert grant.effective_us == effective
    events = [(TEN + 10 * SECOND, 5), (TEN + 40 * SECOND, 10), (TEN + MINUTE, 20)]
    book = book_for(configuration, events)
    assert sum((amount for _, amount in drawn(book)), D(0)) == paid
    assert sum((e.amount for e in book.entries if e.kind == "overage"), D(0)) == D(35) - paid


def test_a_start_on_the_whole_minute_or_none_is_never_moved() -> None:
    """A start already on a whole minute stays under every value; a grant without a
    start is effective from the contract's start; a start rounded down before the
    contract's start is held at it."""
    whole = STARTED.replace("10:00:30Z", "10:00:00Z")
    for start in ("exact", "minute_up", "minute_down"):
        configuration = with_block(f"  grant_start: {start}\n", whole)
        contract = configuration.contract("c")
        assert contract is not None
        (grant,) = contract_grants(configuration, contract, BillingCycle(), NOVEMBER)
        assert grant.effective_us == TEN
    late_contract = STARTED.replace(
        "    start: 2026-10-01\n", "    start: '2026-10-05T10:00:20Z'\n"
    )
    configuration = with_block("  grant_start: minute_down\n", late_contract)
    contract = configuration.contract("c")
    assert contract is not None
    (grant,) = contract_grants(configuration, contract, BillingCycle(), NOVEMBER)
    assert grant.effective_us == TEN + 20 * SECOND
    assert declared_start(TEN + 1, Semantics(grant_start="minute_up")) == TEN + MINUTE
    assert declared_start(TEN - 1, Semantics(grant_start="minute_down")) == TEN - MINUTE


def test_grant_start_is_overridden_by_a_plan_or_a_contract() -> None:
    """The file rounds up; the plan keeps starts exact; the contract rounds down."""
    text = STARTED.replace("  - key: p\n", "  - key: p\n    semantics: {grant_start: exact}\n")
    by_plan = with_block("  grant_start: minute_up\n", text)
    assert by_plan.semantics.grant_start == "minute_up"
    assert by_plan.semantics_for("c").grant_start == "exact"
    text = text.replace("    plan: p\n", "    plan: p\n    semantics: {grant_start: minute_down}\n")
    by_contract = with_block("  grant_start: minute_up\n", text)
    contract = by_contract.contract("c")
    assert contract is not None
    (grant,) = contract_grants(by_contract, contract, BillingCycle(), NOVEMBER)
    assert grant.effective_us == TEN
    with pytest.raises(ConfigurationError) as caught:
        with_block("  grant_start: minute\n", STARTED)
    assert caught.value.errors == [
        "pricing.yaml:20: semantics.grant_start: 'minute' is not one of exact, minute_up, "
        "minute_down"
    ]


def test_a_start_rounded_up_to_its_expiry_is_named() -> None:
    """Declared to start at 10:00:30 and expire at 10:00:45: rounded up, it would start
    at 10:01, after its expiry; the file is refused, naming the field. Exact, it stands."""
    text = STARTED.replace("expires: 2026-10-10}", "expires: '2026-10-05T10:00:45Z'}")
    assert with_block("  grant_start: exact\n", text).contract("c") is not None
    with pytest.raises(ConfigurationError) as caught:
        with_block("  grant_start: minute_up\n", text)
    assert caught.value.errors == [
        "pricing.yaml:18: contracts[0].credits.grants[0].expires: must be after the grant's "
        "start on the whole minute (semantics.grant_start: minute_up)"
    ]
