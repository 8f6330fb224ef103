"""Credits (pure ledger): vendors' worked burn-down, rollover and void examples translated
into ``CreditBook``, releases of negative charges, per-window charges, and errors.

Sources are the vendor research notes (OpenMeter, Kong, Lago, Orb, Stripe); each test's
docstring names its source. Translation used throughout: an OpenMeter recurring or
resetting grant is our ``Grant`` with ``reset_us`` and a ``RolloverRule`` (its
``issueAfterReset`` grant, "amount, minRolloverAmount and maxRolloverAmount all the
same", is ``RolloverRule(minimum=amount, maximum=amount)``); OpenMeter's preserved overage
is ``CreditBook(overage_mode="carry")``; Kong's ``credit_then_invoice`` is ``"bill"``.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import read_yaml
from meterline.core.credits import (
    Charge,
    CreditBook,
    CreditError,
    Entry,
    Grant,
    ManualAdjustment,
    RolloverRule,
    Void,
    account,
    burn_order,
    cut_instants,
)
from meterline.core.events import timestamp_to_us
from meterline.core.model import Configuration, segments
from meterline.core.pricing import Tier, graduated
from meterline.core.rating import Rater, line_id, window_charges

HOUR = 3_600_000_000
DAY = 24 * HOUR
# OpenMeter's engine tests: t1 = 2024-01-01T00:00Z.
T1 = timestamp_to_us(datetime(2024, 1, 1, tzinfo=UTC))
LINE = "0/tokens/"


def charge(
    start_us: int,
    end_us: int,
    amount: D | int | str,
    line: str = LINE,
    meter: str = "tokens",
    unit: str = "credits",
) -> Charge:
    return Charge(start_us, end_us, line, meter, unit, D(amount))


def summary(book: CreditBook, *kinds: str) -> list[tuple[str, str | None, D, int]]:
    """(kind, grant, amount, at_us) of the book's entries of ``kinds`` (all when none)."""
    return [
        (e.kind, e.grant, e.amount, e.at_us) for e in book.entries if not kinds or e.kind in kinds
    ]


def drawn(book: CreditBook, kind: str = "consume") -> dict[str | None, D]:
    """Per grant, the total of the book's entries of ``kind``."""
    result: dict[str | None, D] = {}
    for entry in book.entries:
        if entry.kind == kind:
            result[entry.grant] = result.get(entry.grant, D(0)) + entry.amount
    return result


# -- burn order --------------------------------------------------------------------------


def test_kong_burn_order_example() -> None:
    """Kong Metering & Billing (OpenMeter-based), "Consumption and expiration",
    https://developer.konghq.com/metering-and-billing/credits/consumption-and-expiration/:
    A (priority 1, expires T10, 50), B (priority 1, expires T20, 80), C (priority 2, never
    expires, 100); a charge of 90 consumes A 50, B 40, C 0."""
    grants = [
        Grant("C", "credits", D(100), effective_us=0, priority=2),
        Grant("B", "credits", D(80), effective_us=0, expires_us=20 * HOUR, priority=1),
        Grant("A", "credits", D(50), effective_us=0, expires_us=10 * HOUR, priority=1),
    ]
    assert [g.grant_id for g in burn_order(grants)] == ["A", "B", "C"]
    book = CreditBook().run(grants, [charge(0, HOUR, 90)], until_us=HOUR)
    book.check()
    assert drawn(book) == {"A": D(50), "B": D(40)}
    assert (book.balance("A"), book.balance("B"), book.balance("C")) == (D(0), D(40), D(100))
    assert summary(book, "overage") == []


def test_kong_credit_then_invoice_settlement_bills_what_credit_does_not_cover() -> None:
    """Kong, same page, settlement modes: ``credit_then_invoice``: a charge of 100 with a
    credit balance of 40 consumes 40 and invoices 60 (our ``bill`` mode: an ``overage``
    entry of 60); ``credit_only``: a charge of 100 with a balance of 100 consumes 100 and
    invoices 0."""
    short = Grant("wallet", "USD", D(40), effective_us=0)
    book = CreditBook(overage_mode="bill").run([short], [charge(0, HOUR, 100, unit="USD")])
    book.check()
    assert summary(book, "consume", "overage") == [
        ("consume", "wallet", D(40), HOUR),
        ("overage", None, D(60), HOUR),
    ]
    assert book.totals("USD")["overage"] == D(-60)
    enough = Grant("wallet", "USD", D(100), effective_us=0)
    book = CreditBook(overage_mode="bill").run([enough], [charge(0, HOUR, 100, unit="USD")])
    assert summary(book, "consume", "overage") == [("consume", "wallet", D(100), HOUR)]
    assert book.balance("wallet") == D(0)


def test_openmeter_priority_beats_expiry() -> None:
    """OpenMeter ``engine/run_test.go`` (commit cddcc9cd), "Burns down grant with higher
    priority first": g1 priority 1 and g2 priority 2, 100 each, both expire in 30 days;
    usage 120 at t1+1h → g1 = 0, g2 = 80."""
    g1 = Grant("g1", "credits", D(100), effective_us=T1, expires_us=T1 + 30 * DAY, priority=1)
    g2 = Grant("g2", "credits", D(100), effective_us=T1, expires_us=T1 + 30 * DAY, priority=2)
    book = CreditBook().run([g2, g1], [charge(T1, T1 + DAY, 120)], until_us=T1 + DAY)
    book.check()
    assert (book.balance("g1"), book.balance("g2")) == (D(0), D(80))


def test_openmeter_same_priority_sooner_expiry_burns_first() -> None:
    """OpenMeter ``engine/run_test.go``, "Burns down grant that expires first": same
    priority, g1 expires in 30 days, g2 in 100 years; usage 120 → g1 = 0, g2 = 80."""
    g1 = Grant("g1", "credits", D(100), effective_us=T1, expires_us=T1 + 30 * DAY)
    g2 = Grant("g2", "credits", D(100), effective_us=T1, expires_us=T1 + 36_500 * DAY)
    book = CreditBook().run([g2, g1], [charge(T1, T1 + DAY, 120)], until_us=T1 + DAY)
    book.check()
    assert (book.balance("g1"), book.balance("g2")) == (D(0), D(80))


def test_openmeter_sooner_expiry_first_among_many_shuffled_grants() -> None:
    """OpenMeter ``engine/run_test.go``, "...expires first among many": shuffled grants of
    100 (priority 1, 30 days), one expiring in 29 days; usage 99 → that grant = 1, every
    other 100 (OpenMeter uses 100,000 grants; 500 here)."""
    grants = [
        Grant(f"g{n:03}", "credits", D(100), effective_us=T1, expires_us=T1 + 30 * DAY)
        for n in range(499)
    ]
    grants.append(Grant("soon", "credits", D(100), effective_us=T1, expires_us=T1 + 29 * DAY))
    random.Random(2024).shuffle(grants)
    book = CreditBook().run(grants, [charge(T1, T1 + DAY, 99)], until_us=T1 + DAY)
    assert book.balance("soon") == D(1)
    assert {book.balance(g.grant_id) for g in grants if g.grant_id != "soon"} == {D(100)}


def test_ties_break_on_creation_instant_then_id() -> None:
    """OpenMeter ``engine/grant.go`` ``PrioritizeGrants`` (commit 5157f304): priority,
    then expiry (none last), then createdAt, then id: equal priority and expiry burn the
    older grant first, and equal creation instants burn in id order."""
    newer = Grant("a-newer", "credits", D(10), effective_us=0, created_us=5)
    older = Grant("z-older", "credits", D(10), effective_us=0, created_us=1)
    twin = Grant("b-twin", "credits", D(10), effective_us=0, created_us=5)
    endless = Grant("endless", "credits", D(10), effective_us=0, priority=1)
    ending = Grant("ending", "credits", D(10), effective_us=0, expires_us=DAY, priority=1)
    assert [g.grant_id for g in burn_order([twin, newer, older, endless, ending])] == [
        "ending",
        "endless",
        "z-older",
        "a-newer",
        "b-twin",
    ]


def test_lago_wallets_burn_by_priority_then_oldest() -> None:
    """Lago ``spec/services/credits/applied_prepaid_credits_service_spec.rb`` (commit
    0245a605) and ``Wallet.in_application_order`` = order(priority, created_at): six
    wallets of 10 credits created in order normal (50), priority (49), limited-charge (50,
    charges only), priority-limited-charge (49, charges only), limited-subscription (50,
    subscriptions only), priority-limited-subscription (49, subscriptions only). Lago's fee
    types become meters here (``usage`` and ``subscription``) and wallets scopes.

    Case 1, a charge fee of 1.00: the priority wallet pays 1 → 9.0, the others stay 10.
    Case 2, a charge fee of 15.00: priority pays 10 → 0, priority-limited-charge 5 → 5.
    Case 3, subscription 36.00 (3500 + tax 100) and charge 15.50 (1500 + tax 50): Lago
    walks the largest fee bucket first, so the subscription line is drawn first here;
    balances end priority 0, priority-limited-charge 0, priority-limited-subscription 0,
    normal 0, limited-charge 4.5, limited-subscription 4.0 (total 51.50 consumed)."""

    def wallets() -> list[Grant]:
        made = [
            ("normal", 50, ()),
            ("priority", 49, ()),
            ("limited-charge", 50, ("usage",)),
            ("priority-limited-charge", 49, ("usage",)),
            ("limited-subscription", 50, ("subscription",)),
            ("priority-limited-subscription", 49, ("subscription",)),
        ]
        return [
            Grant(name, "EUR", D(10), effective_us=0, priority=priority, scope=scope, created_us=n)
            for n, (name, priority, scope) in enumerate(made)
        ]

    def fee(amount: str, meter: str) -> Charge:
        return Charge(0, DAY, f"0/{meter}/", meter, "EUR", D(amount))

    one = CreditBook().run(wallets(), [fee("1.00", "usage")])
    assert one.balance("priority") == D(9)
    assert {one.balance(w) for w in one.grants if w != "priority"} == {D(10)}

    two = CreditBook().run(wallets(), [fee("15.00", "usage")])
    assert drawn(two) == {"priority": D(10), "priority-limited-charge": D(5)}

    three = CreditBook().run(wallets(), [fee("36.00", "subscription"), fee("15.50", "usage")])
    three.check()
    assert {w: three.balance(w) for w in three.grants} == {
        "normal": D(0),
        "priority": D(0),
        "limited-charge": D("4.5"),
        "priority-limited-charge": D(0),
        "limited-subscription": D(4),
        "priority-limited-subscription": D(0),
    }
    assert sum(drawn(three).values()) == D("51.50")
    assert summary(three, "overage") == []


def test_orb_soonest_expiring_block_first_and_its_remainder_expires_at_expiry() -> None:
    """Orb, credits ledger (https://docs.withorb.com/api-reference/credit/
    fetch-customer-credits-ledger): usage "deducts from the soonest expiring credit block
    first" (trial credits expiring in 2 weeks before a non-expiring block), and a block's
    remainder leaves by ``credit_block_expiry`` at its expiry. Orb gives no drawdown
    numbers; ours: trial 100 expiring at day 14, purchased 500 never expiring; usage 30 in
    days 0-7 and 40 in days 14-21 → trial 70 expires at day 14, purchased ends at 460."""
    trial = Grant("trial", "credits", D(100), effective_us=0, expires_us=14 * DAY)
    purchased = Grant("purchased", "credits", D(500), effective_us=0, paid=D(500))
    charges = [charge(0, 7 * DAY, 30), charge(14 * DAY, 21 * DAY, 40)]
    assert cut_instants([trial, purchased]) == [0, 14 * DAY]
    book = CreditBook().run([purchased, trial], charges)
    book.check()
    assert summary(book, "consume", "expire") == [
        ("consume", "trial", D(30), 7 * DAY),
        ("expire", "trial", D(70), 14 * DAY),
        ("consume", "purchased", D(40), 21 * DAY),
    ]
    assert (book.balance("trial"), book.balance("purchased")) == (D(0), D(460))
    assert book.totals("credits")["expired"] == D(70)


def test_a_charge_ending_at_an_expiry_is_drawn_before_the_grant_expires() -> None:
    """Module docstring, order at one instant: charges of windows ending there come before
    expiries; the window [0, T) is drawn from a grant expiring at T, then the rest expires."""
    grant = Grant("g", "credits", D(100), effective_us=0, expires_us=10 * HOUR)
    book = CreditBook().run([grant], [charge(0, 10 * HOUR, 25)])
    assert summary(book, "consume", "expire") == [
        ("consume", "g", D(25), 10 * HOUR),
        ("expire", "g", D(75), 10 * HOUR),
    ]


# -- voids -------------------------------------------------------------------------------


def test_openmeter_void_mid_period_voids_the_balance_and_later_usage_is_overage() -> None:
    """OpenMeter ``engine/run_test.go``, "Burns down grant until it's deleted/voided": a
    grant of 100, usage 50 before the void and 50 after → balance 0, overage 50. Ours: the
    void moves the 50 left at that instant to ``voided``; nothing later draws the grant."""
    void_at = T1 + 10 * DAY
    grant = Grant("g1", "credits", D(100), effective_us=T1, expires_us=T1 + 30 * DAY)
    voids = [Void("g1", void_at, "refund")]
    assert cut_instants([grant], voids, T1, T1 + 30 * DAY) == [void_at]
    charges = [charge(T1, void_at, 50), charge(void_at, T1 + 20 * DAY, 50)]
    book = CreditBook().run([grant], charges, voids)
    book.check()
    assert summary(book, "consume", "void", "overage", "expire") == [
        ("consume", "g1", D(50), void_at),
        ("void", "g1", D(50), void_at),
        ("overage", None, D(50), T1 + 20 * DAY),
    ]
    assert book.balance("g1") == D(0)
    assert book.totals("credits")["voided"] == D(50)
    assert "g1" in book.voided


def test_a_voided_grant_never_pays_again_and_a_second_void_moves_nothing() -> None:
    """Stripe billing credits (https://docs.stripe.com/billing/subscriptions/usage-based/
    billing-credits), state Voided; Lago wallet void: a grant of 80 used 30 then voided
    keeps 0, ``voided`` = 50 (its balance at the void), and a later charge of 20 falls to
    the other grant even though the voided one had a better priority."""
    first = Grant("first", "credits", D(80), effective_us=0, priority=1)
    other = Grant("other", "credits", D(100), effective_us=0, priority=9)
    voids = [Void("first", 2 * DAY, "refund"), Void("first", 3 * DAY, "again")]
    charges = [charge(0, DAY, 30), charge(2 * DAY, 4 * DAY, 20)]
    book = CreditBook().run([first, other], charges, voids)
    book.check()
    assert summary(book, "consume", "void") == [
        ("consume", "first", D(30), DAY),
        ("void", "first", D(50), 2 * DAY),
        ("consume", "other", D(20), 4 * DAY),
    ]
    assert (book.balance("first"), book.balance("other")) == (D(0), D(80))


# -- resets and rollover -----------------------------------------------------------------


def test_openmeter_rollover_capped_by_maximum() -> None:
    """OpenMeter ``engine/reset_test.go`` (commit 5157f304), "Should reset roll over grant
    balance after one reset": grant 100, ResetMaxRollover 50, ResetMinRollover 0; usage 10
    at t1+1h; reset at t1+5h → "100 - 10 = 90; Min(50, max(0, 90)) = 50". Ours: 50 moves to
    the rollover grant, the other 40 expires at the reset."""
    reset = T1 + 5 * HOUR
    grant = Grant(
        "g1",
        "credits",
        D(100),
        effective_us=T1,
        expires_us=T1 + 30 * DAY,
        priority=1,
        reset_us=reset,
        rollover=RolloverRule(maximum=D(50)),
    )
    assert RolloverRule(maximum=D(50)).kept(D(90)) == D(50)
    book = CreditBook().run([grant], [charge(T1, reset, 10)], until_us=T1 + DAY)
    book.check()
    child = "g1/rollover"
    assert summary(book, "consume", "expire", "rollover", "top_up") == [
        ("consume", "g1", D(10), reset),
        ("expire", "g1", D(40), reset),
        ("rollover", child, D(50), reset),
    ]
    assert (book.balance("g1"), book.balance(child)) == (D(0), D(50))
    successor = book.grants[child]
    assert (successor.source, successor.priority, successor.effective_us) == ("rollover", 1, reset)


def test_openmeter_minimum_rollover_then_preserved_overage_is_settled() -> None:
    """OpenMeter ``engine/reset_test.go``, "Should carry over overage to next period":
    grant 100, ResetMaxRollover 50, ResetMinRollover 50; usage 10 + 100 = 110 before the
    reset; PreserveOverage true → overage 10, rollover min(50, max(50, 0)) = 50, the
    carried 10 is burnt: 40. Ours (``carry``): 100 consumed, 10 carried; at the reset the
    empty grant keeps 50 as a ``top_up`` from ``issued``; the rollover grant then settles
    the 10 → 40, the same number as OpenMeter."""
    reset = T1 + 5 * HOUR
    grant = Grant(
        "g1",
        "credits",
        D(100),
        effective_us=T1,
        expires_us=T1 + 30 * DAY,
        priority=1,
        reset_us=reset,
        rollover=RolloverRule(minimum=D(50), maximum=D(50)),
    )
    book = CreditBook(overage_mode="carry").run([grant], [charge(T1, reset, 110)])
    book.check()
    child = "g1/rollover"
    assert summary(book, "consume", "carry", "top_up", "rollover", "settle", "expire") == [
        ("consume", "g1", D(100), reset),
        ("carry", None, D(10), reset),
        ("top_up", child, D(50), reset),
        ("settle", child, D(10), reset),
    ]
    assert book.balance(child) == D(40)
    assert book.debts == []
    assert book.totals("credits")["carried"] == D(0)


def test_openmeter_recurring_grant_settles_overage_carried_from_before_the_recurrence() -> None:
    """OpenMeter ``engine/run_test.go``, "Burns down recurring grant": grant 100 recurring
    daily from t1; usage 120 at t1+1h → overage 20; at t1+1d the balance is back to 100 and
    the carried 20 burns → 80. Ours: the recurrence is a reset keeping exactly 100
    (issueAfterReset: min = max = amount), overage ``carry``."""
    recurrence = T1 + DAY
    grant = Grant(
        "g1",
        "credits",
        D(100),
        effective_us=T1,
        priority=1,
        reset_us=recurrence,
        rollover=RolloverRule(minimum=D(100), maximum=D(100)),
    )
    book = CreditBook(overage_mode="carry").run(
        [grant], [charge(T1, recurrence, 120)], until_us=recurrence + HOUR
    )
    book.check()
    child = "g1/rollover"
    assert summary(book, "carry", "top_up", "settle") == [
        ("carry", None, D(20), recurrence),
        ("top_up", child, D(100), recurrence),
        ("settle", child, D(20), recurrence),
    ]
    assert book.balance(child) == D(80)


def test_openmeter_recurring_grant_that_takes_effect_later() -> None:
    """OpenMeter ``engine/run_test.go``, "...takes effect later before it has recurred":
    g1 (priority 3, balance 80 at t1), g2 (priority 1, 100, effective t1+1d, recurring
    weekly from t1+3d); usage 20 at t1+1h, t1+1d-1s and t1+1d → g1 = 40, g2 = 100 after
    its recurrence at t1+3d. Variant with usage 20 at t1+3d → g2 = 80. Ours: g2's
    recurrence is a reset keeping exactly 100 (80 rolled over, 20 topped up); the windows
    are cut at g2's effective and reset instants."""
    g1 = Grant("g1", "credits", D(80), effective_us=T1 - DAY, priority=3)
    g2 = Grant(
        "g2",
        "credits",
        D(100),
        effective_us=T1 + DAY,
        priority=1,
        reset_us=T1 + 3 * DAY,
        rollover=RolloverRule(minimum=D(100), maximum=D(100)),
    )
    assert cut_instants([g1, g2], start_us=T1, end_us=T1 + 10 * DAY) == [T1 + DAY, T1 + 3 * DAY]
    charges = [charge(T1, T1 + DAY, 40), charge(T1 + DAY, T1 + 3 * DAY, 20)]
    child = "g2/rollover"
    book = CreditBook().run([g1, g2], charges, until_us=T1 + 10 * DAY)
    book.check()
    assert (book.balance("g1"), book.balance("g2"), book.balance(child)) == (D(40), D(0), D(100))
    assert summary(book, "rollover", "top_up") == [
        ("rollover", child, D(80), T1 + 3 * DAY),
        ("top_up", child, D(20), T1 + 3 * DAY),
    ]
    later = [*charges, charge(T1 + 3 * DAY, T1 + 10 * DAY, 20)]
    book = CreditBook().run([g1, g2], later, until_us=T1 + 10 * DAY)
    assert (book.balance("g1"), book.balance(child)) == (D(40), D(80))


def test_percent_rollover_with_a_cap_and_its_own_expiry() -> None:
    """The demo's rollover rule (``src/meterline/demo/pricing.yaml``, monthly-pool:
    percent 50, maximum 1000, expires after one period; DESIGN: "min(max_rollover,
    max(min_rollover, balance)), optionally as a percentage ... optionally with its own
    expiry"; Metronome ``rollover_fraction``): a pool of 10,000 used 7,000 keeps 50% of
    3,000 = 1,500, capped at 1,000 → rollover 1,000, expire 2,000 at the reset. The rolled
    1,000 expires at its own expiry 30 days later: 400 used next period, 600 expire then."""
    reset = 31 * DAY
    rolled_expiry = reset + 30 * DAY
    rule = RolloverRule(percent=D(50), maximum=D(1000))
    assert rule.kept(D(3000)) == D(1000)
    assert RolloverRule(percent=D(50)).kept(D(3000)) == D(1500)
    pool = Grant(
        "pool",
        "credits",
        D(10_000),
        effective_us=0,
        reset_us=reset,
        rollover=rule,
        rollover_expires_us=rolled_expiry,
        paid=D(1000),
        paid_currency="USD",
    )
    assert cut_instants([pool]) == [0, reset, rolled_expiry]
    charges = [charge(0, reset, 7000), charge(reset, rolled_expiry, 400)]
    book = CreditBook().run([pool], charges)
    book.check()
    child = "pool/rollover"
    assert summary(book, "expire", "rollover", "top_up") == [
        ("expire", "pool", D(2000), reset),
        ("rollover", child, D(1000), reset),
        ("expire", child, D(600), rolled_expiry),
    ]
    assert book.grants[child].expires_us == rolled_expiry
    assert book.grants[child].paid_currency == "USD"
    assert (book.balance("pool"), book.balance(child)) == (D(0), D(0))
    assert book.totals("credits")["expired"] == D(2600)


def test_a_grant_expiring_at_its_reset_rolls_nothing() -> None:
    """DESIGN, rollover: "A grant that expires at the reset instant rolls nothing": the
    3,000 left of the 10,000 pool all expire at the reset, with no rollover grant."""
    pool = Grant(
        "pool",
        "credits",
        D(10_000),
        effective_us=0,
        expires_us=31 * DAY,
        reset_us=31 * DAY,
        rollover=RolloverRule(percent=D(50), minimum=D(500), maximum=D(1000)),
    )
    book = CreditBook().run([pool], [charge(0, 31 * DAY, 7000)])
    book.check()
    assert summary(book, "expire", "rollover", "top_up") == [("expire", "pool", D(3000), 31 * DAY)]
    assert list(book.grants) == ["pool"]


def test_a_reset_without_a_rule_keeps_nothing() -> None:
    """Grant docstring: at ``reset_us`` "rollover decides what is kept (without a rule,
    nothing is)": the 60 left expire at the reset with the reason naming the reset."""
    grant = Grant("g", "credits", D(100), effective_us=0, reset_us=DAY)
    book = CreditBook().run([grant], [charge(0, DAY, 40)])
    assert [(e.kind, e.amount, e.reason) for e in book.entries if e.kind == "expire"] == [
        ("expire", D(60), "reset: not rolled over")
    ]


def test_a_rollover_expiring_at_the_reset_expires_at_once() -> None:
    """A rollover grant whose own expiry is the reset instant is created and expires
    at once: 50 roll over and the same 50 expire, nothing stays."""
    grant = Grant(
        "g",
        "credits",
        D(100),
        effective_us=0,
        reset_us=DAY,
        rollover=RolloverRule(maximum=D(50)),
        rollover_expires_us=DAY,
    )
    book = CreditBook().run([grant], [charge(0, DAY, 10)])
    book.check()
    child = "g/rollover"
    assert summary(book, "expire", "rollover") == [
        ("expire", "g", D(40), DAY),
        ("rollover", child, D(50), DAY),
        ("expire", child, D(50), DAY),
    ]
    assert book.balance(child) == D(0)


def test_a_rollover_never_takes_over_an_existing_grant_of_the_same_id() -> None:
    """A grant already named ``g/rollover`` (priority 1, 5 credits) must survive ``g``'s
    reset: either the book refuses the timeline or it keeps that grant as given; today the
    rollover of 100 lands on it and the book holds one rollover grant of 105."""
    grant = Grant("g", "credits", D(100), effective_us=0, reset_us=DAY, rollover=RolloverRule())
    named = Grant("g/rollover", "credits", D(5), effective_us=0, priority=1, source="api")
    try:
        book = CreditBook().run([grant, named])
    except CreditError:
        return
    assert book.grants["g/rollover"] == named
    assert book.balance("g/rollover") == D(5)


# -- scope, units, overage modes ---------------------------------------------------------


def test_a_grant_scoped_to_tool_calls_never_pays_input_tokens() -> None:
    """Grant.scope (Orb item filters, Lago ``wallet_targets``, Stripe applicability): a
    grant scoped to ``tool_calls`` pays tool calls only; input tokens fall to overage even
    while it holds 100, and a grant in another unit pays nothing."""
    scoped = Grant("tools", "credits", D(100), effective_us=0, scope=("tool_calls",), priority=1)
    dollars = Grant("dollars", "USD", D(100), effective_us=0)
    charges = [
        charge(0, DAY, 30, line="0/input_tokens/", meter="input_tokens"),
        charge(0, DAY, 20, line="0/tool_calls/", meter="tool_calls"),
    ]
    book = CreditBook().run([scoped, dollars], charges)
    book.check()
    assert [(e.kind, e.grant, e.amount, e.meter) for e in book.entries if e.line] == [
        ("overage", None, D(30), "input_tokens"),
        ("consume", "tools", D(20), "tool_calls"),
    ]
    assert (book.balance("tools"), book.balance("dollars")) == (D(80), D(100))
    assert scoped.may_pay("credits", "tool_calls")
    assert not scoped.may_pay("credits", "input_tokens")
    assert not scoped.may_pay("USD", "tool_calls")


def test_refuse_records_unpaid_usage_as_carried_debt_like_carry() -> None:
    """Module docstring: ``carried`` holds usage no grant paid under ``carry`` and
    ``refuse`` (the shell blocks; the ledger records the debt): 30 unpaid of a 50 charge."""
    grant = Grant("g", "credits", D(20), effective_us=0)
    for mode in ("carry", "refuse"):
        book = CreditBook(overage_mode=mode).run([grant], [charge(0, DAY, 50)])
        assert summary(book, "consume", "carry", "overage") == [
            ("consume", "g", D(20), DAY),
            ("carry", None, D(30), DAY),
        ]
        assert [debt.amount for debt in book.debts] == [D(30)]


def test_carried_debt_waits_for_a_grant_that_may_pay_it() -> None:
    """Carried overage is "burnt from the next grant that becomes active and may pay for
    it": a later grant in another unit or scope leaves the 30 carried, a matching one pays
    it at its effective instant."""
    grants = [
        Grant("other-unit", "USD", D(100), effective_us=DAY),
        Grant("other-scope", "credits", D(100), effective_us=DAY, scope=("tool_calls",)),
        Grant("match", "credits", D(100), effective_us=2 * DAY),
    ]
    book = CreditBook(overage_mode="carry").run(grants, [charge(0, DAY, 30)])
    book.check()
    assert summary(book, "settle") == [("settle", "match", D(30), 2 * DAY)]
    assert [book.balance(g.grant_id) for g in grants] == [D(100), D(100), D(70)]


# -- negative charges --------------------------------------------------------------------


def test_a_negative_charge_releases_last_draw_first() -> None:
    """Module docstring: a negative charge (a volume tier lowering the price of every
    unit) releases what the line drew, last draw first: +80 drew A 50 then B 30; -40
    gives B its 30 back, then A 10."""
    a = Grant("A", "credits", D(50), effective_us=0, priority=1)
    b = Grant("B", "credits", D(100), effective_us=0, priority=2)
    book = CreditBook().run([a, b], [charge(0, DAY, 80), charge(DAY, 2 * DAY, -40)])
    book.check()
    assert summary(book, "consume", "release") == [
        ("consume", "A", D(50), DAY),
        ("consume", "B", D(30), DAY),
        ("release", "B", D(30), 2 * DAY),
        ("release", "A", D(10), 2 * DAY),
    ]
    assert (book.balance("A"), book.balance("B")) == (D(10), D(100))
    assert book.totals("credits")["usage"] == D(40)


def test_a_negative_charge_releases_overage_before_grants_when_overage_was_last() -> None:
    """Billed overage is the last draw of a charge, so it is released first: +80 drew the
    grant's 50 and 30 of overage; -40 cancels the 30 of overage, then gives the grant 10."""
    grant = Grant("g", "credits", D(50), effective_us=0)
    book = CreditBook().run([grant], [charge(0, DAY, 80), charge(DAY, 2 * DAY, -40)])
    book.check()
    released = [(e.kind, e.grant, e.amount, e.debit, e.credit) for e in book.entries[-2:]]
    assert released == [
        ("overage", None, D(30), "overage", "usage"),
        ("release", "g", D(10), "grant:g", "usage"),
    ]
    assert book.totals("credits")["overage"] == D(0)
    assert book.balance("g") == D(10)


def test_a_release_to_an_ended_grant_expires_again_at_once() -> None:
    """Stripe billing credits: "If the grant has already expired, the reinstated credits
    expire immediately"; here: a grant of 100 expiring at day 10 drew 80; a charge of -30
    in the next window releases 30 to it, which expire at that window's end."""
    grant = Grant("g", "credits", D(100), effective_us=0, expires_us=10 * DAY)
    charges = [charge(0, 10 * DAY, 80), charge(10 * DAY, 20 * DAY, -30)]
    book = CreditBook().run([grant], charges)
    book.check()
    assert summary(book) == [
        ("grant", "g", D(100), 0),
        ("consume", "g", D(80), 10 * DAY),
        ("expire", "g", D(20), 10 * DAY),
        ("release", "g", D(30), 20 * DAY),
        ("expire", "g", D(30), 20 * DAY),
    ]
    assert book.balance("g") == D(0)


def test_a_release_to_a_voided_grant_is_voided_again() -> None:
    """A release to a voided grant leaves it as ``void`` (not ``expire``): 80 drawn, the
    remaining 20 voided at day 5, -30 later → 30 released and voided."""
    grant = Grant("g", "credits", D(100), effective_us=0)
    charges = [charge(0, 5 * DAY, 80), charge(5 * DAY, 9 * DAY, -30)]
    book = CreditBook().run([grant], charges, [Void("g", 5 * DAY, "refund")])
    book.check()
    assert summary(book, "release", "void") == [
        ("void", "g", D(20), 5 * DAY),
        ("release", "g", D(30), 9 * DAY),
        ("void", "g", D(30), 9 * DAY),
    ]
    assert book.totals("credits")["voided"] == D(50)


def test_a_release_of_carried_overage_forgives_the_debt() -> None:
    """A release of carried overage not yet paid forgives that much of the line's debt:
    +50 over a 20 grant carries 30; -10 forgives 10 of it, leaving 20 to settle."""
    grant = Grant("g", "credits", D(20), effective_us=0)
    book = CreditBook(overage_mode="carry").run(
        [grant], [charge(0, DAY, 50), charge(DAY, 2 * DAY, -10)]
    )
    book.check()
    assert [debt.amount for debt in book.debts] == [D(20)]
    assert book.totals("credits")["carried"] == D(-20)
    assert book.balance("g") == D(0)


def test_a_release_of_carried_overage_already_settled_refunds_the_grant_that_paid() -> None:
    """+10 carried at day 1 (no grant), a grant of 100 effective at day 1 settles the 10,
    then the line's price falls by 5: net usage is 5, so the grant should hold 95 and
    ``carried`` be 0. Today the 5 goes to ``carried`` (+5, a debt account in credit) and the
    grant keeps 90: consumption (10) exceeds net usage (5)."""
    grant = Grant("g", "credits", D(100), effective_us=DAY)
    book = CreditBook(overage_mode="carry").run(
        [grant], [charge(0, DAY, 10), charge(DAY, 2 * DAY, -5)]
    )
    book.check()
    assert book.totals("credits").get("carried", D(0)) == D(0)
    assert book.balance("g") == D(95)


def test_releasing_more_than_a_line_drew_is_an_error() -> None:
    """A negative charge may only give back what its own line drew."""
    grant = Grant("g", "credits", D(100), effective_us=0)
    charges = [charge(0, DAY, 10, line="0/a/"), charge(DAY, 2 * DAY, -20, line="0/b/")]
    with pytest.raises(CreditError, match="releases more than it drew"):
        CreditBook().run([grant], charges)


# -- manual adjustments ------------------------------------------------------------------


def test_manual_adjustments_add_and_remove_but_never_below_zero() -> None:
    """ManualAdjustment: +25 adds from ``issued``; -500 on a balance of 75 removes only 75
    (a grant's balance is never below zero); an adjustment of 0 posts nothing."""
    grant = Grant("g", "credits", D(100), effective_us=0)
    adjustments = [
        ManualAdjustment("g", DAY, D(25), "goodwill"),
        ManualAdjustment("g", 2 * DAY, D(0), "nothing"),
        ManualAdjustment("g", 3 * DAY, D(-500), "clawback"),
    ]
    book = CreditBook().run([grant], [charge(0, 2 * DAY, 50)], adjustments=adjustments)
    book.check()
    assert [(e.kind, e.amount, e.debit, e.credit, e.reason) for e in book.entries[1:]] == [
        ("adjust", D(25), "grant:g", "issued", "goodwill"),
        ("consume", D(50), "usage", "grant:g", "usage"),
        ("adjust", D(75), "issued", "grant:g", "clawback"),
    ]
    assert book.balance("g") == D(0)


# -- ledger shape and errors -------------------------------------------------------------


def test_entries_record_the_line_meter_and_sequences_behind_a_charge() -> None:
    """An entry drawn by a charge names its line, meter and the ledger sequences behind
    the usage, so a burn traces back to events; a grant entry names none."""
    grant = Grant("g", "credits", D(100), effective_us=0, reason="welcome credit")
    usage = Charge(0, DAY, LINE, "tokens", "credits", D(7), 11, 19)
    book = CreditBook().run([grant], [usage])
    issued, consumed = book.entries
    assert issued == Entry(
        0, "grant", "credits", D(100), account("g"), "issued", "g", "welcome credit"
    )
    assert (consumed.line, consumed.meter, consumed.first_sequence, consumed.last_sequence) == (
        LINE,
        "tokens",
        11,
        19,
    )
    assert consumed.as_dict()["amount"] == "7"


def test_granting_the_same_id_twice_is_an_error() -> None:
    """CreditError: a grant id is granted once."""
    grant = Grant("g", "credits", D(100), effective_us=0)
    with pytest.raises(CreditError, match="granted twice"):
        CreditBook().run([grant, Grant("g", "credits", D(5), effective_us=DAY)])


def test_voiding_or_adjusting_an_unknown_grant_is_an_error() -> None:
    """CreditError: a void or an adjustment must name a grant the book knows."""
    grant = Grant("g", "credits", D(100), effective_us=0)
    with pytest.raises(CreditError, match="void of unknown grant nope"):
        CreditBook().run([grant], voids=[Void("nope", DAY, "typo")])
    with pytest.raises(CreditError, match="adjustment of unknown grant nope"):
        CreditBook().run([grant], adjustments=[ManualAdjustment("nope", DAY, D(1), "typo")])


def test_a_negative_grant_is_an_error() -> None:
    """CreditError: a grant's amount is never negative."""
    with pytest.raises(CreditError, match="amount is negative"):
        CreditBook().run([Grant("g", "credits", D(-1), effective_us=0)])


def test_a_grant_ending_at_or_before_its_effective_instant_is_refused_or_empty() -> None:
    """A grant whose expiry is at its effective instant is active for no instant: it should
    be refused with ``CreditError`` or hold nothing; today ``run`` raises ``KeyError``."""
    grants = [Grant("g", "credits", D(5), effective_us=DAY, expires_us=DAY)]
    try:
        book = CreditBook().run(grants)
    except CreditError:
        return
    book.check()
    assert book.balance("g") == D(0)


def test_carried_debt_is_settled_in_burn_order_among_grants_effective_together() -> None:
    """Two grants effective at the same instant, priority 1 and priority 10, and 30 of
    carried overage: the priority-1 grant should pay it whichever order the grants are
    given in; today the grant listed first pays."""
    low = Grant("low", "credits", D(100), effective_us=DAY, priority=10)
    high = Grant("high", "credits", D(100), effective_us=DAY, priority=1)
    for grants in ([high, low], [low, high]):
        book = CreditBook(overage_mode="carry").run(grants, [charge(0, DAY, 30)])
        assert (book.balance("high"), book.balance("low")) == (D(70), D(100))


# -- window charges (rating) -------------------------------------------------------------

OCTOBER_START = timestamp_to_us(datetime(2026, 10, 1, tzinfo=UTC))
OCTOBER_END = timestamp_to_us(datetime(2026, 11, 1, tzinfo=UTC))
CUT = OCTOBER_START + 10 * DAY
TOKEN_TIERS = [Tier(D(100), D("0.02")), Tier(None, D("0.01"))]

WINDOWS = """\
credit_types:
  - {key: credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
  - {key: images, event_type: img, aggregation: sum, property: count}
  - {key: calls, event_type: call, aggregation: count}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - meter: tokens
            model: graduated
            tiers: [{up_to: 100, unit_amount: "0.02"}, {unit_amount: "0.01"}]
          - meter: images
            model: volume
            tiers: [{up_to: 100, unit_amount: 1}, {unit_amount: "0.5"}]
          - {meter: calls, model: per_unit, unit_amount: 1, minimum: 50, credit_type: credits}
contracts:
  - {customer: c, plan: p, start: 2026-10-01}
"""


def configuration(text: str) -> Configuration:
    data, positions = read_yaml(text)
    return parse_configuration(data, positions)


def rated(
    config: Configuration, events: list[tuple[int, str, dict[str, object]]], cuts: tuple[int, ...]
) -> Rater:
    contract = config.contract("c")
    assert contract is not None
    rater = Rater(config, segments(config, contract, OCTOBER_START, OCTOBER_END), cuts=cuts)
    for sequence, (timestamp_us, event_type, properties) in enumerate(events, start=1):
        digest = hashlib.sha256(sequence.to_bytes(8, "big")).digest()
        rater.add(sequence, timestamp_us, event_type, properties, digest)
    return rater


EVENTS: list[tuple[int, str, dict[str, object]]] = [
    (OCTOBER_START + DAY, "llm", {"tokens": 80}),
    (OCTOBER_START + 2 * DAY, "img", {"count": 100}),
    *[(OCTOBER_START + 3 * DAY, "call", {}) for _ in range(10)],
    (CUT, "llm", {"tokens": 30}),
    (OCTOBER_START + 11 * DAY, "llm", {"tokens": 20}),
    (OCTOBER_START + 12 * DAY, "img", {"count": 20}),
    *[(OCTOBER_START + 20 * DAY, "call", {}) for _ in range(5)],
]


def test_window_charges_of_a_graduated_price_add_up_to_the_line_amount() -> None:
    """A window's charge is amount(cumulative usage at its end) - amount(at its start):
    80 tokens before the cut cost 80 x 0.02 = 1.60; 50 more (an event at the cut instant
    belongs to the later window) bring the total to 130 tokens = 2.00 + 0.30 = 2.30, so the
    second window charges 0.70; together they equal the line's 2.30."""
    config = configuration(WINDOWS)
    rater = rated(config, EVENTS, (CUT,))
    by_line: dict[str, list[Charge]] = {}
    for each in window_charges(rater, "USD", config):
        by_line.setdefault(each.line, []).append(each)
    tokens = by_line[line_id(0, "tokens", ())]
    assert [(c.start_us, c.end_us, c.amount) for c in tokens] == [
        (OCTOBER_START, CUT, D("1.60")),
        (CUT, OCTOBER_END, D("0.70")),
    ]
    assert tokens[0].amount == graduated(D(80), TOKEN_TIERS) - graduated(D(0), TOKEN_TIERS)
    assert tokens[1].amount == graduated(D(130), TOKEN_TIERS) - graduated(D(80), TOKEN_TIERS)
    assert [(c.meter, c.unit, c.first_sequence, c.last_sequence) for c in tokens] == [
        ("tokens", "USD", 1, 1),
        ("tokens", "USD", 13, 14),
    ]
    lines = {line.meter: line for line in rater.lines("USD", config)}
    for meter in ("tokens", "images", "calls"):
        charges = by_line[line_id(0, meter, ())]
        assert sum(c.amount for c in charges) == lines[meter].amount
        assert {c.unit for c in charges} == {lines[meter].unit}


def test_window_charges_of_a_volume_price_go_negative_and_release_credit() -> None:
    """Volume tiers (Stripe thresholds page, volume example: a larger quantity can lower
    the total): 100 images cost 100 x 1 = 100, 120 cost 120 x 0.50 = 60, so the second
    window charges -40; in the book the -40 gives back 40 of the 100 drawn."""
    config = configuration(WINDOWS)
    rater = rated(config, EVENTS, (CUT,))
    images = [c for c in window_charges(rater, "USD", config) if c.meter == "images"]
    assert [c.amount for c in images] == [D(100), D(-40)]
    grant = Grant("g", "USD", D(150), effective_us=OCTOBER_START)
    book = CreditBook().run([grant], images)
    book.check()
    assert summary(book, "consume", "release") == [
        ("consume", "g", D(100), CUT),
        ("release", "g", D(40), OCTOBER_END),
    ]
    assert book.balance("g") == D(90)


def test_a_line_minimum_is_settled_in_the_last_window() -> None:
    """A per-unit price of 1 credit with a minimum of 50: 10 calls in the first window
    charge 10; the last window charges 5 calls plus the 35 the minimum adds → 40; in the
    line's credit type."""
    config = configuration(WINDOWS)
    rater = rated(config, EVENTS, (CUT,))
    calls = [c for c in window_charges(rater, "USD", config) if c.meter == "calls"]
    assert [(c.end_us, c.amount, c.unit) for c in calls] == [
        (CUT, D(10), "credits"),
        (OCTOBER_END, D(40), "credits"),
    ]


def test_a_line_minimum_with_no_usage_at_all_is_charged_in_the_last_window() -> None:
    """A price that names every group dimension and has a minimum charges it without
    events: the minimum of 50 falls in the segment's last window only."""
    config = configuration(WINDOWS)
    rater = rated(config, [], (CUT,))
    assert [(c.line, c.start_us, c.amount) for c in window_charges(rater, "USD", config)] == [
        ("0/calls/", CUT, D(50))
    ]


def test_a_segment_discount_reduces_window_charges() -> None:
    """A contract discount of 10% reduces each window's charge: tokens 1.60 and 0.70 become
    1.44 and 0.63; images 100 and -40 become 90 and -36; calls 10 and 40 become 9 and 36."""
    config = configuration(
        WINDOWS.replace(
            "start: 2026-10-01}", "start: 2026-10-01, overrides: {discount_percent: 10}}"
        )
    )
    rater = rated(config, EVENTS, (CUT,))
    amounts = [(c.meter, c.amount) for c in window_charges(rater, "USD", config)]
    assert amounts == [
        ("calls", D(9)),
        ("calls", D(36)),
        ("images", D(90)),
        ("images", D(-36)),
        ("tokens", D("1.44")),
        ("tokens", D("0.63")),
    ]


def test_window_charges_need_a_rater_with_cuts() -> None:
    """``window_charges`` refuses a rater made without ``cuts`` (no windows were kept)."""
    config = configuration(WINDOWS)
    contract = config.contract("c")
    assert contract is not None
    rater = Rater(config, segments(config, contract, OCTOBER_START, OCTOBER_END))
    with pytest.raises(ValueError, match="needs a rater made with cuts"):
        window_charges(rater, "USD", config)


def test_cut_instants_list_every_change_of_the_active_grants_inside_the_range() -> None:
    """``cut_instants``: effective, expiry, reset, rollover expiry and void instants, each
    once, sorted, strictly inside (start, end)."""
    grants = [
        Grant("a", "credits", D(1), effective_us=5, expires_us=50),
        Grant("b", "credits", D(1), effective_us=0, reset_us=30, rollover_expires_us=60),
        Grant("c", "credits", D(1), effective_us=5),
    ]
    voids = [Void("c", 40, "x")]
    assert cut_instants(grants, voids) == [0, 5, 30, 40, 50, 60]
    assert cut_instants(grants, voids, start_us=5, end_us=60) == [30, 40, 50]
