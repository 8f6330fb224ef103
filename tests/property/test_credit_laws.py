"""Laws of the credit ledger, checked over generated timelines (hypothesis).

A timeline is a few grants (two units, priorities, effective/expiry/reset instants,
rollover rules, scopes over three meters, paid or free), voids and manual adjustments, and
per-window charges cut at ``cut_instants`` (negative only where the line has drawn at least
as much). Every law is checked in each overage mode (``bill``, ``carry``, ``refuse``). The
last law feeds events in shuffled order through a real ``Rater`` (graduated and volume
prices, so negative window charges arise from the tiers) into the book.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal as D
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.config.schema import parse_configuration
from meterline.config.source import read_yaml
from meterline.core.credits import (
    OVERAGE_MODES,
    Charge,
    CreditBook,
    Grant,
    ManualAdjustment,
    OverageMode,
    RolloverRule,
    Void,
    account,
    cut_instants,
)
from meterline.core.events import timestamp_to_us
from meterline.core.model import Configuration, segments
from meterline.core.rating import Rater, line_id, window_charges

UNITS = ("USD", "credits")
METERS = ("input_tokens", "output_tokens", "tool_calls")
STEP = 10
END = 64 * STEP
ZERO = D(0)

modes = st.sampled_from(OVERAGE_MODES)
amounts = st.integers(1, 20_000).map(lambda cents: D(cents).scaleb(-2))
rules = st.builds(
    RolloverRule,
    percent=st.sampled_from([D(0), D(50), D(100), D("12.5")]),
    minimum=st.sampled_from([ZERO, ZERO, D(20)]),
    maximum=st.sampled_from([None, D(30), D(80)]),
)


@dataclass(frozen=True)
class Timeline:
    """What a ``CreditBook`` is fed."""

    grants: tuple[Grant, ...]
    charges: tuple[Charge, ...]
    voids: tuple[Void, ...]
    adjustments: tuple[ManualAdjustment, ...]

    def run(self, mode: OverageMode, until_us: int | None = None) -> CreditBook:
        return CreditBook(overage_mode=mode).run(
            self.grants, self.charges, self.voids, self.adjustments, until_us
        )

    def instants(self) -> list[int]:
        """Every instant at which the book may do something."""
        found = set(cut_instants(self.grants, self.voids))
        found.update(c.end_us for c in self.charges)
        found.update(a.at_us for a in self.adjustments)
        return sorted(found)


@st.composite
def grants(
    draw: st.DrawFn,
    grant_id: str,
    start: int = 0,
    step: int = STEP,
    units: tuple[str, ...] = UNITS,
    meters: tuple[str, ...] = METERS,
) -> Grant:
    """A grant whose expiry and reset (if any) come strictly after its effective instant."""
    steps = 30
    effective = start + draw(st.integers(0, steps)) * step
    after = st.integers(1, steps).map(lambda k: effective + k * step)
    amount = draw(amounts)
    reset = draw(st.none() | after)
    rollover = draw(st.none() | rules) if reset is not None else None
    rolled_expiry = None
    if reset is not None and draw(st.booleans()):
        rolled_expiry = reset + draw(st.integers(0, steps)) * step
    return Grant(
        grant_id=grant_id,
        unit=draw(st.sampled_from(units)),
        amount=amount,
        effective_us=effective,
        expires_us=draw(st.none() | after),
        priority=draw(st.integers(1, 3)),
        paid=amount if draw(st.booleans()) else ZERO,
        scope=tuple(draw(st.lists(st.sampled_from(meters), max_size=2, unique=True))),
        reset_us=reset,
        rollover=rollover,
        rollover_expires_us=rolled_expiry,
    )


@st.composite
def voids_and_adjustments(
    draw: st.DrawFn, granted: list[Grant], step: int = STEP
) -> tuple[tuple[Void, ...], tuple[ManualAdjustment, ...]]:
    """Voids strictly after the grant is effective (a void at its effective instant comes
    before the grant in the same-instant order and names an unknown grant), adjustments
    from its effective instant on."""
    voids = []
    for _ in range(draw(st.integers(0, 2))):
        grant = draw(st.sampled_from(granted))
        at = grant.effective_us + draw(st.integers(1, 20)) * step
        voids.append(Void(grant.grant_id, at, "generated void"))
    adjustments = []
    for _ in range(draw(st.integers(0, 3))):
        grant = draw(st.sampled_from(granted))
        at = grant.effective_us + draw(st.integers(0, 20)) * step
        amount = draw(amounts) * draw(st.sampled_from([1, -1]))
        adjustments.append(ManualAdjustment(grant.grant_id, at, amount, "generated adjustment"))
    return tuple(voids), tuple(adjustments)


@st.composite
def timelines(draw: st.DrawFn, negatives: bool = True) -> Timeline:
    """Grants, voids, adjustments, and one to three lines charged window by window."""
    granted = [draw(grants(f"g{n}")) for n in range(draw(st.integers(1, 4)))]
    voids, adjustments = draw(voids_and_adjustments(granted))
    lines = [
        (f"0/{meter}/{n}", meter, draw(st.sampled_from(UNITS)))
        for n, meter in enumerate(draw(st.lists(st.sampled_from(METERS), min_size=1, max_size=3)))
    ]
    edges = [0, *cut_instants(granted, voids, 0, END), END]
    net = {name: ZERO for name, _, _ in lines}
    charges = []
    for start, end in pairwise(edges):
        for name, meter, unit in lines:
            choices = ["none", "positive", "positive"]
            if negatives and net[name] > 0:
                choices.append("negative")
            choice = draw(st.sampled_from(choices))
            if choice == "none":
                continue
            if choice == "positive":
                amount = draw(amounts)
            else:
                cents = int(net[name].scaleb(2))
                amount = -D(draw(st.integers(1, cents))).scaleb(-2)
            net[name] += amount
            charges.append(Charge(start, end, name, meter, unit, amount))
    return Timeline(tuple(granted), tuple(charges), voids, adjustments)


def books_at_every_instant(timeline: Timeline, mode: OverageMode) -> Iterator[CreditBook]:
    """The book replayed up to (and including) each instant where something happens."""
    for instant in timeline.instants():
        yield timeline.run(mode, until_us=instant)
    yield timeline.run(mode)


def by_kind(book: CreditBook, unit: str) -> dict[str, D]:
    """Per entry kind (adjust, overage and carry split by direction), the amounts moved."""
    result: dict[str, D] = {}
    for entry in book.entries:
        if entry.unit != unit:
            continue
        kind = entry.kind
        if kind == "adjust":
            kind = "adjust_in" if entry.debit.startswith("grant:") else "adjust_out"
        elif kind in ("overage", "carry"):
            kind = kind if entry.debit == "usage" else f"{kind}_released"
        result[kind] = result.get(kind, ZERO) + entry.amount
    return result


def total(kinds: dict[str, D], *names: str) -> D:
    return sum((kinds.get(name, ZERO) for name in names), ZERO)


def units_of(timeline: Timeline) -> set[str]:
    return {g.unit for g in timeline.grants} | {c.unit for c in timeline.charges}


# -- balances, conservation, entries ------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(timeline=timelines(), mode=modes)
def test_no_grant_balance_ever_goes_below_zero(timeline: Timeline, mode: OverageMode) -> None:
    """Replayed up to every instant, the book passes ``check`` and no balance is below 0."""
    for book in books_at_every_instant(timeline, mode):
        book.check()
        assert all(balance >= 0 for balance in book.balances.values())


@settings(max_examples=150, deadline=None)
@given(timeline=timelines(), mode=modes)
def test_conservation_holds_at_every_instant(timeline: Timeline, mode: OverageMode) -> None:
    """Per unit, at every instant: granted (grant + top_up) + net adjustments = consumed
    (consume + settle - release) + expired + remaining + voided, and each of those agrees
    with its account's total."""
    for book in books_at_every_instant(timeline, mode):
        for unit in units_of(timeline):
            kinds = by_kind(book, unit)
            granted = total(kinds, "grant", "top_up")
            adjusted = total(kinds, "adjust_in") - total(kinds, "adjust_out")
            consumed = total(kinds, "consume", "settle") - total(kinds, "release")
            expired, voided = total(kinds, "expire"), total(kinds, "void")
            remaining = sum(
                (b for g, b in book.balances.items() if book.grants[g].unit == unit), ZERO
            )
            assert granted + adjusted == consumed + expired + remaining + voided
            accounts = book.totals(unit)
            assert accounts.get("issued", ZERO) == -(granted + adjusted)
            assert accounts.get("expired", ZERO) == expired
            assert accounts.get("voided", ZERO) == voided
            billed = total(kinds, "overage") - total(kinds, "overage_released")
            assert accounts.get("overage", ZERO) == -billed


# Which accounts each kind of entry may move between: (debit, credit), "grant" for any
# ``grant:<id>`` account.
SHAPES = {
    "grant": {("grant", "issued")},
    "top_up": {("grant", "issued")},
    "adjust": {("grant", "issued"), ("issued", "grant")},
    "consume": {("usage", "grant")},
    "release": {("grant", "usage")},
    "settle": {("carried", "grant")},
    "expire": {("expired", "grant")},
    "void": {("voided", "grant")},
    "rollover": {("grant", "grant")},
    "overage": {("usage", "overage"), ("overage", "usage")},
    "carry": {("usage", "carried"), ("carried", "usage")},
}


@settings(max_examples=200, deadline=None)
@given(timeline=timelines(), mode=modes)
def test_every_entry_is_balanced_positive_and_balances_are_sums_of_entries(
    timeline: Timeline, mode: OverageMode
) -> None:
    """Each entry moves a positive Decimal between two accounts its kind allows, in its
    grant's unit; a grant pays only its unit, its scope, and charges whose window starts
    while it is active; each unit's entries sum to zero; each balance is its entries' sum."""
    book = timeline.run(mode)
    sums: dict[tuple[str, str], D] = {}
    for entry in book.entries:
        assert isinstance(entry.amount, D) and entry.amount > 0
        assert entry.debit != entry.credit
        sides = tuple(
            "grant" if side.startswith("grant:") else side for side in (entry.debit, entry.credit)
        )
        assert sides in SHAPES[entry.kind], entry
        if entry.grant is not None:
            assert entry.unit == book.grants[entry.grant].unit
            assert account(entry.grant) in (entry.debit, entry.credit)
        if entry.kind in ("consume", "settle"):
            assert entry.grant is not None and entry.meter is not None
            payer = book.grants[entry.grant]
            assert payer.may_pay(entry.unit, entry.meter)
        if entry.kind == "consume":
            assert payer.effective_us < entry.at_us
            assert payer.expires_us is None or entry.at_us <= payer.expires_us
        for side, sign in ((entry.debit, 1), (entry.credit, -1)):
            key = (entry.unit, side)
            sums[key] = sums.get(key, ZERO) + sign * entry.amount
    for unit in units_of(timeline):
        assert sum((v for (u, _), v in sums.items() if u == unit), ZERO) == 0
    for grant_id, balance in book.balances.items():
        assert sums.get((book.grants[grant_id].unit, account(grant_id)), ZERO) == balance


@settings(max_examples=100, deadline=None)
@given(timeline=timelines(), mode=modes)
def test_replaying_the_same_timeline_gives_identical_entries(
    timeline: Timeline, mode: OverageMode
) -> None:
    """The book is a pure function of its timeline: two replays post the same entries."""
    first, second = timeline.run(mode), timeline.run(mode)
    assert first.entries == second.entries
    assert first.balances == second.balances
    assert [e.as_dict() for e in first.entries] == [e.as_dict() for e in second.entries]


# -- usage ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(timeline=timelines(), mode=modes)
def test_the_usage_account_equals_the_net_charges(timeline: Timeline, mode: OverageMode) -> None:
    """Per unit, what ``usage`` received (consume + overage + carry, less releases) is the
    sum of the charges, negative ones included, in every mode."""
    book = timeline.run(mode)
    for unit in units_of(timeline):
        charged = sum((c.amount for c in timeline.charges if c.unit == unit), ZERO)
        assert book.totals(unit).get("usage", ZERO) == charged


def consumption_within_usage(timeline: Timeline, book: CreditBook, exact: bool) -> None:
    """Per unit and per line: consume + settle - release <= positive - |negative| charges
    (equal to it less the net overage when ``exact``)."""
    keys = {(c.unit, c.line) for c in timeline.charges} | {(u, None) for u in units_of(timeline)}
    for unit, line in keys:
        charged = sum(
            (c.amount for c in timeline.charges if c.unit == unit and line in (None, c.line)),
            ZERO,
        )
        consumed = overage = ZERO
        for entry in book.entries:
            if entry.unit != unit or (line is not None and entry.line != line):
                continue
            if entry.kind in ("consume", "settle"):
                consumed += entry.amount
            elif entry.kind == "release":
                consumed -= entry.amount
            elif entry.kind == "overage":
                overage += entry.amount if entry.debit == "usage" else -entry.amount
        assert consumed <= charged
        if exact:
            assert consumed + overage == charged


@settings(max_examples=200, deadline=None)
@given(timeline=timelines())
def test_consumption_never_exceeds_usage_when_overage_is_billed(timeline: Timeline) -> None:
    """``bill``: per unit and per line, what grants paid (net of releases) never exceeds
    the net usage, and grants plus billed overage are exactly the net usage."""
    consumption_within_usage(timeline, timeline.run("bill"), exact=True)


@settings(max_examples=200, deadline=None)
@given(timeline=timelines(), mode=st.sampled_from(["carry", "refuse"]))
def test_consumption_never_exceeds_usage_when_overage_is_carried(
    timeline: Timeline, mode: OverageMode
) -> None:
    """``carry``/``refuse``: grants (consume + settle, net of releases) never pay more than
    the usage, including when a release gives back carried overage a grant already paid."""
    consumption_within_usage(timeline, timeline.run(mode), exact=False)


# -- arrival order through the rater --------------------------------------------------------

OCTOBER_START = timestamp_to_us(datetime(2026, 10, 1, tzinfo=UTC))
OCTOBER_END = timestamp_to_us(datetime(2026, 11, 1, tzinfo=UTC))
DAY = 86_400_000_000

PRICED = """\
meters:
  - {key: input_tokens, event_type: llm, aggregation: sum, property: input}
  - {key: output_tokens, event_type: llm, aggregation: sum, property: output}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - meter: input_tokens
            model: graduated
            tiers: [{up_to: 1000, unit_amount: "0.003"}, {up_to: 5000, unit_amount: "0.002"},
                    {unit_amount: "0.001", flat_amount: 2}]
          - meter: output_tokens
            model: volume
            tiers: [{up_to: 500, unit_amount: "0.006"}, {up_to: 2000, unit_amount: "0.004"},
                    {unit_amount: "0.002"}]
contracts:
  - {customer: c, plan: p, start: 2026-10-01}
"""


def configuration(text: str) -> Configuration:
    data, positions = read_yaml(text)
    return parse_configuration(data, positions)


CONFIGURATION = configuration(PRICED)
PRICED_METERS = ("input_tokens", "output_tokens")


def rate_and_burn(
    timeline: Timeline,
    events: list[tuple[int, int, int]],
    mode: OverageMode,
) -> tuple[list[Charge], CreditBook, Rater]:
    """Feed ``events`` (timestamp, input, output) in the given order with ascending
    sequences to a rater cut at the grants' instants, and burn its window charges."""
    contract = CONFIGURATION.contract("c")
    assert contract is not None
    spans = segments(CONFIGURATION, contract, OCTOBER_START, OCTOBER_END)
    cuts = tuple(cut_instants(timeline.grants, timeline.voids))
    rater = Rater(CONFIGURATION, spans, cuts=cuts)
    for sequence, (timestamp_us, used, produced) in enumerate(events, start=1):
        digest = hashlib.sha256(sequence.to_bytes(8, "big")).digest()
        rater.add(sequence, timestamp_us, "llm", {"input": used, "output": produced}, digest)
    charges = window_charges(rater, "USD", CONFIGURATION)
    book = CreditBook(overage_mode=mode).run(
        timeline.grants, charges, timeline.voids, timeline.adjustments
    )
    return charges, book, rater


@st.composite
def priced_timelines(draw: st.DrawFn) -> tuple[Timeline, list[tuple[int, int, int]]]:
    granted = [
        draw(grants(f"g{n}", OCTOBER_START, DAY, ("USD",), PRICED_METERS))
        for n in range(draw(st.integers(1, 3)))
    ]
    voids, adjustments = draw(voids_and_adjustments(granted, step=DAY))
    inner = cut_instants(granted, voids, OCTOBER_START, OCTOBER_END)
    edges = [OCTOBER_START, *inner, OCTOBER_END]
    # Events window by window (one at the window's first instant, which opens it, now and
    # then), small quantities too, so a window may cross a volume bound by a little and
    # lower the line's amount: a negative charge.
    tokens = st.integers(0, 400) | st.integers(0, 3000)
    events: list[tuple[int, int, int]] = []
    for start, end in pairwise(edges):
        when = st.integers(start, end - 1) | st.just(start)
        events += draw(st.lists(st.tuples(when, tokens, tokens), max_size=5))
    return Timeline(tuple(granted), (), voids, adjustments), events


@settings(max_examples=150, deadline=None)
@given(drawn=priced_timelines(), mode=modes, data=st.data())
def test_arrival_order_within_a_period_does_not_change_the_ledger(
    drawn: tuple[Timeline, list[tuple[int, int, int]]], mode: OverageMode, data: st.DataObject
) -> None:
    """The same events arriving in any order (sequences assigned by arrival) give the same
    window charges, the same balances and the same (kind, grant, amount, at) entries; each
    line's window charges add up to its ``lines()`` amount."""
    timeline, events = drawn
    charges, book, rater = rate_and_burn(timeline, events, mode)
    shuffled = data.draw(st.permutations(events))
    charges_again, book_again, _ = rate_and_burn(timeline, shuffled, mode)

    def windows(found: list[Charge]) -> list[tuple[int, int, str, D]]:
        return [(c.start_us, c.end_us, c.line, c.amount) for c in found]

    def moves(found: CreditBook) -> list[tuple[str, str | None, D, int]]:
        return [(e.kind, e.grant, e.amount, e.at_us) for e in found.entries]

    assert windows(charges_again) == windows(charges)
    assert moves(book_again) == moves(book)
    assert book_again.balances == book.balances
    book.check()
    for line in rater.lines("USD", CONFIGURATION):
        name = line_id(line.segment, line.meter, tuple(value for _, value in line.group))
        assert sum((c.amount for c in charges if c.line == name), ZERO) == line.amount
