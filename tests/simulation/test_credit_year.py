"""A year of monthly credit pools, simulated through the real billing shell and checked
against a reference model written here, independently of ``meterline.core.credits``.

Everything is drawn from ``random.Random(seed)``: the pool (amount, price paid, rollover
percent and cap), a promotional grant expiring mid-year, the overage price, one to three
mid-month amendments switching the plan (a tool call costs 2 credits on ``pro``, 3 on
``max``), each day's tool calls (some days spike), the shuffled batches they are ingested
in, and the late events sent for a month after it was closed. A failure names its seed
and month: ``simulate(scenario(SEED), location)`` replays it exactly. Every year runs on
both stores (a SQLite file, a PostgreSQL schema).

The reference model burns every on-time event, in timestamp order, from the grants active
at its instant (priority, then soonest expiry with none last, then creation time);
whatever no grant covers is overage. The engine burns per daily window instead; with
per-unit prices, one meter and every grant edge at a UTC midnight both give the same
ledger, so the two must agree exactly (``Decimal``).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Context, Inexact, localcontext
from decimal import Decimal as D
from typing import Any

import pytest

from meterline.billing.service import open_billing
from meterline.core.documents import AdjustmentLine, Invoice
from meterline.core.events import decode_exact, format_timestamp, timestamp_to_us
from tests.conftest import Databases, Location

SEEDS = (10, 12, 24, 31, 34)
CUSTOMER = "sim-agents"
CREDIT = D("0.01")  # what one credit is worth, in USD
CENT = D("0.01")
PRICES = {"pro": D(2), "max": D(3)}  # credits per tool call
POOL_PRIORITY = 10
PROMO_PRIORITY = 1
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
ZERO = D(0)
EXACT = Context(prec=200, traps=[Inexact])  # the reference never rounds but at a line


def midnight(day: date) -> int:
    return int(timestamp_to_us(datetime(day.year, day.month, day.day, tzinfo=UTC)))


def month_start(year: int, month: int) -> int:
    return midnight(date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1))


def day_of(at_us: int) -> str:
    return datetime.fromtimestamp(at_us // 1_000_000, UTC).date().isoformat()


def money(amount: D) -> D:
    """One line's rounding: half-up to the cent."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP, context=Context(prec=200))


# -- the scenario, drawn from the seed ------------------------------------------------------


@dataclass(frozen=True)
class Month:
    number: int  # 1..12 (2026)
    start_us: int
    end_us: int
    times: tuple[int, ...]  # on-time tool calls
    batches: tuple[tuple[dict[str, Any], ...], ...]  # the same events, shuffled and split
    late: tuple[int, ...]  # tool calls of this month sent after it was closed


@dataclass(frozen=True)
class Scenario:
    seed: int
    pool: D
    paid: D
    percent: D
    maximum: D | None
    promo: D
    promo_expires: date
    overage_price: D
    amendments: tuple[tuple[date, str], ...]  # (effective, plan)
    months: tuple[Month, ...]

    def plan_at(self, at_us: int) -> str:
        plan = "pro"
        for effective, switched in self.amendments:
            if midnight(effective) <= at_us:
                plan = switched
        return plan

    def price_at(self, at_us: int) -> D:
        return PRICES[self.plan_at(at_us)]

    def segment_edges(self, month: Month) -> list[int]:
        """The instants cutting ``month`` into segments under one plan, ends included."""
        cuts = [
            midnight(day)
            for day, _ in self.amendments
            if month.start_us < midnight(day) < month.end_us
        ]
        return [month.start_us, *cuts, month.end_us]

    def yaml(self) -> str:
        maximum = "" if self.maximum is None else f", maximum: {self.maximum}"
        amendments = "\n".join(
            f"      - {{effective: {day.isoformat()}, plan: {plan}}}"
            for day, plan in self.amendments
        )
        plans = "\n".join(
            f"""  - key: {plan}
    name: {plan.title()}
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        billing: {{cycle: monthly, anchor: calendar, proration: day}}
        prices:
          - {{meter: tool_calls, model: per_unit, unit_amount: "{price}",
             credit_type: credits, description: Tool calls}}"""
            for plan, price in PRICES.items()
        )
        return f"""
credit_types:
  - {{key: credits, name: Agent credits, currency: USD, unit_value: "{CREDIT}"}}
meters:
  - {{key: tool_calls, event_type: agent.tool_call, aggregation: count}}
plans:
{plans}
contracts:
  - customer: {CUSTOMER}
    plan: pro
    start: 2026-01-01
    amendments:
{amendments}
    credits:
      overage: bill
      overage_prices: {{credits: "{self.overage_price}"}}
      grants:
        - key: pool
          credit_type: credits
          amount: {self.pool}
          paid: "{self.paid}"
          priority: {POOL_PRIORITY}
          recurrence: period
          rollover: {{percent: "{self.percent}"{maximum}, expires_after_periods: 1}}
          description: Monthly pool
        - key: promo
          credit_type: credits
          amount: {self.promo}
          priority: {PROMO_PRIORITY}
          expires: {self.promo_expires.isoformat()}
          description: Launch promotion
"""


def scenario(seed: int) -> Scenario:
    rng = random.Random(seed)
    pool = D(rng.randint(10, 50) * 100 + rng.choice([0, 0, 25, 50]))
    paid = rng.choice([ZERO, pool * D("0.008"), pool * D("0.0075")])
    percent = rng.choice([D(25), D(50), D(50), D("12.5"), D(75), D(100)])
    maximum = rng.choice([None, D(250), D(600), D(1500)])
    promo = D(rng.randint(5, 120) * 100)  # at times more than is used before it expires
    promo_expires = date(2026, rng.randint(2, 7), rng.randint(1, 28))
    overage_price = rng.choice([D("0.012"), D("0.015"), D("0.02"), D("0.0125")])
    amended = sorted(rng.sample(range(2, 12), rng.randint(1, 3)))
    amendments = tuple(
        (date(2026, month, rng.randint(2, 27)), "max" if index % 2 == 0 else "pro")
        for index, month in enumerate(amended)
    )
    busy = rng.randint(9, 12)  # one month far beyond the pool: overage is certain
    months = []
    for number in range(1, 13):
        start, end = month_start(2026, number), month_start(2026, number + 1)
        days = (end - start) // DAY_US
        # tool calls a day: the pool's worth at 2.5 credits a call, times the month's intensity
        # (percent); integers only, so a replay never depends on floating point
        intensity = 320 if number == busy else rng.choice([30, 60, 90, 110, 140])
        daily = int(pool) * intensity // (250 * days)
        times: list[int] = []
        for day in range(days):
            count = max(1, rng.randint(daily * 3 // 4, daily * 5 // 4))
            if rng.random() < 0.1:
                count *= rng.randint(3, 8)  # a spike
            base = start + day * DAY_US
            times.extend(base + rng.randrange(DAY_US // 1000) * 1000 for _ in range(count))
        events = [tool_call(f"s{seed}-m{number}-{n}", t) for n, t in enumerate(times)]
        rng.shuffle(events)
        cuts = sorted(rng.sample(range(1, len(events)), rng.randint(2, 5)))
        batches = tuple(
            tuple(events[a:b]) for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)
        )
        late: tuple[int, ...] = ()
        if rng.random() < 0.5:
            late = tuple(start + rng.randrange(end - start) for _ in range(rng.randint(1, 4)))
        months.append(Month(number, start, end, tuple(times), batches, late))
    return Scenario(
        seed,
        pool,
        paid,
        percent,
        maximum,
        promo,
        promo_expires,
        overage_price,
        amendments,
        tuple(months),
    )


def tool_call(event_id: str, at_us: int) -> dict[str, Any]:
    return {
        "id": event_id,
        "customer": CUSTOMER,
        "type": "agent.tool_call",
        "timestamp": format_timestamp(at_us),
        "properties": {"agent": "a1"},
    }


# -- the reference model ---------------------------------------------------------------------


@dataclass
class RefGrant:
    grant_id: str
    amount: D
    effective_us: int
    expires_us: int | None  # a declared expiry (burn order); a pool only resets
    ends_us: int  # when it leaves: its expiry or its reset
    priority: int
    created_us: int
    resets: bool
    balance: D = ZERO

    def burn_key(self) -> tuple[int, bool, int, int, str]:
        expiry = self.expires_us
        return (
            self.priority,
            expiry is None,
            expiry or 0,
            self.created_us,
            self.grant_id,
        )


@dataclass
class Expected:
    """What one month's invoice and credit ledger must show."""

    month: Month
    lines: list[tuple[str, str, D, D]] = field(default_factory=list)  # kind, key, units, amount
    entries: Counter[tuple[str, str, D, str]] = field(default_factory=Counter)  # at: RFC 3339
    sections: dict[str, tuple[D, D]] = field(default_factory=dict)  # grant: (opening, closing)
    balances: dict[str, D] = field(default_factory=dict)  # as of the month's end
    consumed: D = ZERO
    overage: D = ZERO
    expired: D = ZERO

    @property
    def total(self) -> D:
        return sum((amount for _, _, _, amount in self.lines), ZERO)


class Reference:
    """Per-event burn-down of the year, month by month (the rules of the module docstring)."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.grants: dict[str, RefGrant] = {}
        self.live: list[RefGrant] = []
        self.month: Expected | None = None
        self.touched: set[str] = set()

    def add(self, grant: RefGrant, record: bool = True) -> None:
        self.grants[grant.grant_id] = grant
        self.live.append(grant)
        grant.balance = grant.amount
        if record:
            self.entry("grant", grant.grant_id, grant.amount, grant.effective_us)

    def entry(self, kind: str, grant_id: str, amount: D, at_us: int) -> None:
        assert self.month is not None
        self.month.entries[(kind, grant_id, amount, format_timestamp(at_us))] += 1
        self.touched.add(grant_id)

    def end(self, grant: RefGrant, at_us: int) -> None:
        self.live.remove(grant)
        assert self.month is not None
        kept = ZERO
        if grant.resets:
            kept = grant.balance * self.sc.percent / 100
            if self.sc.maximum is not None:
                kept = min(self.sc.maximum, kept)
        lost = grant.balance - kept
        grant.balance = ZERO
        if lost > 0:
            self.entry("expire", grant.grant_id, lost, at_us)
            self.month.expired += lost
        if kept > 0:
            child = RefGrant(
                f"{grant.grant_id}/rollover",
                kept,
                at_us,
                self.next_month_end(at_us),
                self.next_month_end(at_us),
                grant.priority,
                at_us,
                resets=False,
            )
            self.add(child, record=False)
            self.entry("rollover", child.grant_id, kept, at_us)

    @staticmethod
    def next_month_end(at_us: int) -> int:
        day = datetime.fromtimestamp(at_us // 1_000_000, UTC).date()
        return month_start(day.year, day.month + 1)

    def end_until(self, at_us: int) -> None:
        """Every grant leaving at or before ``at_us`` leaves (its expiry, its reset)."""
        for grant in sorted(self.live, key=lambda g: (g.ends_us, g.grant_id)):
            if grant.ends_us <= at_us:
                self.end(grant, grant.ends_us)

    def open_pool(self, start_us: int, end_us: int) -> RefGrant:
        pool = RefGrant(
            f"pool@{day_of(start_us)}",
            self.sc.pool,
            start_us,
            None,
            end_us,
            POOL_PRIORITY,
            start_us,
            resets=True,
        )
        self.add(pool)
        return pool

    def burn(self, at_us: int, cost: D, segment: int, consumed: dict[tuple[int, str], D]) -> D:
        """Draw ``cost`` in burn order; return what no grant covered."""
        for grant in sorted(self.live, key=RefGrant.burn_key):
            if cost == 0:
                break
            if grant.balance <= 0 or not grant.effective_us <= at_us < grant.ends_us:
                continue
            taken = min(cost, grant.balance)
            grant.balance -= taken
            cost -= taken
            consumed[(segment, grant.grant_id)] = (
                consumed.get((segment, grant.grant_id), ZERO) + taken
            )
            self.touched.add(grant.grant_id)
        return cost

    def balances(self) -> dict[str, D]:
        return {grant_id: grant.balance for grant_id, grant in self.grants.items()}

    def run(self) -> list[Expected]:
        with localcontext(EXACT):
            return self._run()

    def _run(self) -> list[Expected]:
        sc = self.sc
        result: list[Expected] = []
        previous: Month | None = None
        for month in sc.months:
            self.month = expected = Expected(month)
            self.touched = set()
            opening = self.balances()
            if month.number == 1:
                promo_end = midnight(sc.promo_expires)
                promo = RefGrant(
                    "promo",
                    sc.promo,
                    month.start_us,
                    promo_end,
                    promo_end,
                    PROMO_PRIORITY,
                    month.start_us,
                    resets=False,
                )
                self.add(promo)
            pool = self.open_pool(month.start_us, month.end_us)
            edges = sc.segment_edges(month)
            consumed: defaultdict[tuple[int, str], D] = defaultdict(D)
            overage: defaultdict[int, D] = defaultdict(D)
            quantity: Counter[int] = Counter()
            for at_us in sorted(month.times):
                self.end_until(at_us)
                segment = sum(1 for edge in edges[1:-1] if edge <= at_us)
                quantity[segment] += 1
                overage[segment] += self.burn(at_us, sc.price_at(at_us), segment, consumed)
            self.end_until(month.end_us)
            closing = self.balances()
            for grant_id in sorted(self.grants):
                before = opening.get(grant_id, ZERO)
                if grant_id in self.touched or before != 0:
                    expected.sections[grant_id] = (before, closing[grant_id])
            # the invoice: usage per segment, the pool's price, credits applied per segment
            # and grant, overage per segment, the previous month's late usage
            for segment, start in enumerate(edges[:-1]):
                units = quantity[segment] * sc.price_at(start)
                expected.lines.append(
                    ("usage", format_timestamp(start), units, money(units * CREDIT))
                )
            if sc.paid > 0:
                expected.lines.append(("purchase", pool.grant_id, sc.pool, money(sc.paid)))
            for (_, grant_id), units in sorted(consumed.items()):
                expected.lines.append(("credit", grant_id, units, money(-units * CREDIT)))
                expected.consumed += units
            for _, units in sorted(overage.items()):
                if units:
                    amount = money(units * (sc.overage_price - CREDIT))
                    expected.lines.append(("overage", "", units, amount))
                    expected.overage += units
            if previous is not None and previous.late:
                amount = money(sum((sc.price_at(t) * CREDIT for t in previous.late), ZERO))
                expected.lines.append(("adjustment", "previous", D(len(previous.late)), amount))
            previous = month
            # as of the month's end, the next month's pool is in force already
            expected.balances = {**closing, f"pool@{day_of(month.end_us)}": sc.pool}
            result.append(expected)
        return result


# -- the engine, through the real shell ------------------------------------------------------


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


@dataclass
class Run:
    documents: list[dict[str, Any]]
    raw: list[bytes]
    balances: list[dict[str, D]]  # as of each month's end, asked right after its close
    history: list[dict[str, D]]  # the same, asked again after the year
    totals: dict[str, D]
    audit_passed: bool
    audit_mismatches: list[str]
    next_draft: Invoice


def grant_balances(report: dict[str, Any]) -> dict[str, D]:
    return {grant["grant"]: D(grant["balance"]) for grant in report["grants"]}


def simulate(sc: Scenario, location: Location) -> Run:
    clock = Clock(month_start(2026, 1) - DAY_US)
    documents, raw, balances = [], [], []
    with open_billing(location, clock=clock) as billing:
        billing.apply(sc.yaml())
        for month in sc.months:
            clock.now_us = month.end_us + HOUR_US
            for batch in month.batches:
                outcome = billing.ledger.ingest(list(batch))
                assert outcome.accepted == len(batch), f"seed={sc.seed}: ingest refused events"
            invoices = billing.close()
            assert len(invoices) == 1, f"seed={sc.seed} month={month.number}: {invoices}"
            raw.append(bytes(invoices[0].document))
            documents.append(decode_exact(invoices[0].document))
            balances.append(grant_balances(billing.credits(CUSTOMER, as_of_us=month.end_us)))
            if month.late:
                clock.now_us += HOUR_US
                late = [
                    tool_call(f"s{sc.seed}-late-m{month.number}-{n}", t)
                    for n, t in enumerate(month.late)
                ]
                assert billing.ledger.ingest(late).accepted == len(late)
        history = [
            grant_balances(billing.credits(CUSTOMER, as_of_us=month.end_us)) for month in sc.months
        ]
        year_end = sc.months[-1].end_us
        totals = billing.credits(CUSTOMER, as_of_us=year_end)["totals"]["credits"]
        audit = billing.audit()
        next_draft = billing.draft(CUSTOMER, year_end + 14 * DAY_US)
    return Run(
        documents,
        raw,
        balances,
        history,
        {key: D(value) for key, value in totals.items()},
        audit.passed,
        list(audit.mismatches),
        next_draft,
    )


def engine_lines(document: dict[str, Any], previous: str | None) -> list[tuple[str, str, D, D]]:
    """The invoice's lines in the reference's shape (kind, key, units, amount); an
    adjustment of the ``previous`` invoice is keyed ``previous``."""
    lines = []
    for line in document["lines"]:
        kind, amount = line["kind"], D(line["amount"])
        if kind == "usage":
            lines.append((kind, line["service"]["start"], D(line["units"]), amount))
        elif kind in ("credit", "purchase"):
            lines.append((kind, line["grant"], D(line["units"]), amount))
        elif kind == "overage":
            lines.append((kind, "", D(line["units"]), amount))
        elif kind == "adjustment":
            adjusted = line["adjusts"]["invoice"]
            key = "previous" if adjusted == previous else adjusted
            lines.append((kind, key, D(line["lineage"]["events"]), amount))
        else:
            lines.append((kind, line["description"], ZERO, amount))
    return sorted(lines)


# -- the tests --------------------------------------------------------------------------------

KINDS = ("usage", "purchase", "credit", "overage", "adjustment")


@dataclass
class Year:
    scenario: Scenario
    expected: list[Expected]
    run: Run


@pytest.fixture(scope="module")
def year(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases
) -> Iterator[Callable[[int], Year]]:
    """Each seed's year, simulated once for every test that asks for it."""
    done: dict[int, Year] = {}

    def get(seed: int) -> Year:
        if seed not in done:
            sc = scenario(seed)
            location = databases.new(tmp_path_factory.mktemp(f"seed-{seed}"))
            done[seed] = Year(sc, Reference(sc).run(), simulate(sc, location))
        return done[seed]

    yield get


@pytest.mark.parametrize("seed", SEEDS)
def test_every_invoice_matches_the_reference(seed: int, year: Callable[[int], Year]) -> None:
    sc, expected, run = year(seed).scenario, year(seed).expected, year(seed).run
    assert sum(month.overage for month in expected) > 0, f"seed={seed}: no overage drawn"
    for index, (want, document) in enumerate(zip(expected, run.documents, strict=True)):
        where = f"seed={seed} month={want.month.number}"
        previous = run.documents[index - 1]["number"] if index else None
        got = engine_lines(document, previous)
        for kind in KINDS:
            mine = sorted(line for line in want.lines if line[0] == kind)
            theirs = [line for line in got if line[0] == kind]
            assert theirs == mine, f"{where}: {kind} lines"
        assert [line for line in got if line[0] not in KINDS] == [], f"{where}: unexpected lines"
        assert D(document["total"]) == want.total, f"{where}: total"
        assert [t["plan"] for t in document["terms"]] == [
            f"{sc.plan_at(t)}@1" for t in sc.segment_edges(want.month)[:-1]
        ], f"{where}: terms"


@pytest.mark.parametrize("seed", SEEDS)
def test_every_credit_section_matches_the_reference(seed: int, year: Callable[[int], Year]) -> None:
    expected, run = year(seed).expected, year(seed).run
    for want, document in zip(expected, run.documents, strict=True):
        where = f"seed={seed} month={want.month.number}"
        section = document["credits"]
        movements = Counter(
            (entry["kind"], entry["grant"], D(entry["amount"]), entry["at"])
            for entry in section["entries"]
            if entry["kind"] in ("grant", "expire", "rollover")
        )
        assert movements == want.entries, f"{where}: grant, expire and rollover entries"
        kinds = {entry["kind"] for entry in section["entries"]}
        assert kinds <= {"grant", "consume", "expire", "rollover", "overage"}, where
        consumed = sum((D(e["amount"]) for e in section["entries"] if e["kind"] == "consume"), ZERO)
        overage = sum((D(e["amount"]) for e in section["entries"] if e["kind"] == "overage"), ZERO)
        assert (consumed, overage) == (want.consumed, want.overage), f"{where}: burn"
        grants = {g["grant"]: (D(g["opening"]), D(g["closing"])) for g in section["grants"]}
        assert grants == want.sections, f"{where}: opening and closing balances"


@pytest.mark.parametrize("seed", SEEDS)
def test_balances_as_of_every_month_end_match_the_reference(
    seed: int, year: Callable[[int], Year]
) -> None:
    expected, run = year(seed).expected, year(seed).run
    for want, balances, later in zip(expected, run.balances, run.history, strict=True):
        where = f"seed={seed} month={want.month.number}"
        assert balances == want.balances, f"{where}: balances as of the month's end"
        assert later == balances, f"{where}: late events changed the credit history"


@pytest.mark.parametrize("seed", SEEDS)
def test_the_year_audits_and_late_december_usage_rides_on_january(
    seed: int, year: Callable[[int], Year]
) -> None:
    sc, run = year(seed).scenario, year(seed).run
    assert run.audit_passed, f"seed={seed}: {run.audit_mismatches}"
    december = sc.months[-1]
    adjustments = [line for line in run.next_draft.lines if isinstance(line, AdjustmentLine)]
    if not december.late:
        assert adjustments == [], f"seed={seed}"
        return
    (line,) = adjustments
    assert line.adjusts.invoice == run.documents[-1]["number"], f"seed={seed}"
    assert line.lineage.events == len(december.late), f"seed={seed}"
    late = sum((sc.price_at(t) * CREDIT for t in december.late), ZERO)
    assert D(line.amount) == money(late), f"seed={seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_credit_totals_conserve_what_was_granted(seed: int, year: Callable[[int], Year]) -> None:
    sc, expected, run = year(seed).scenario, year(seed).expected, year(seed).run
    totals = run.totals
    consumed = sum((month.consumed for month in expected), ZERO)
    overage = sum((month.overage for month in expected), ZERO)
    expired = sum((month.expired for month in expected), ZERO)
    remaining = sum(expected[-1].balances.values(), ZERO)
    granted = 13 * sc.pool + sc.promo  # twelve pools, the promotion, and January 2027's pool
    assert granted == consumed + expired + remaining, f"seed={seed}: the reference leaks"
    assert (totals["granted"], totals["expired"], totals["remaining"], totals["voided"]) == (
        granted,
        expired,
        remaining,
        ZERO,
    ), f"seed={seed}"
    assert totals["overage"] == overage, f"seed={seed}"
    assert totals["granted"] == (
        totals["consumed"] + totals["expired"] + totals["remaining"] + totals["voided"]
    ), f"seed={seed}: {totals}"
    assert totals["consumed"] == consumed, f"seed={seed}"


def test_a_zero_percent_rollover_keeps_nothing(new_db: Callable[..., Location]) -> None:
    seed = SEEDS[0]
    sc = dataclasses.replace(scenario(seed), percent=ZERO)
    expected = Reference(sc).run()
    assert any(want.expired for want in expected), f"seed={seed}: no pool was left over"
    run = simulate(sc, new_db())
    for want, document, balances in zip(expected, run.documents, run.balances, strict=True):
        where = f"seed={seed} percent=0 month={want.month.number}"
        rolled = [e for e in document["credits"]["entries"] if e["kind"] == "rollover"]
        assert rolled == [], f"{where}: rolled over"
        assert balances == want.balances, f"{where}: balances as of the month's end"
        assert D(document["total"]) == want.total, f"{where}: total"


def test_a_seed_replays_to_identical_invoice_bytes(
    new_db: Callable[..., Location], year: Callable[[int], Year]
) -> None:
    seed = SEEDS[0]
    again = simulate(scenario(seed), new_db())
    first = year(seed).run
    assert len(again.raw) == 12
    for number, (one, other) in enumerate(zip(first.raw, again.raw, strict=True), start=1):
        assert one == other, f"seed={seed} month={number}: invoice bytes differ on replay"
