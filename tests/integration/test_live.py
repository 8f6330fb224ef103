"""The live engine through the library, on real ledgers (a SQLite file, a PostgreSQL
schema): each control action
(block, alert, true-up, top-up), exactly-once firing across a restart and across two
engines on one ledger, spike blocks held until an override, the other overrides, the
threaded controller, appends from another process's ledger, and a pricing change.

The clock is injected (``Clock``): a settable "now" the ledger, billing and engine all
read, so every window, period and firing instant is deterministic. Usage is stamped just
before now (the credit ledger as of now consumes what is stamped before it), and the clock
moves on between a grant and the usage meant to draw on it (a grant is effective from its
instant, not before). A restart happens a minute after the records it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal as D
from itertools import count
from typing import Any

import pytest

from meterline.billing.service import Billing, open_billing
from meterline.core.documents import MeterUsageLine
from meterline.core.events import decode_exact, format_timestamp, timestamp_to_us
from meterline.core.live_documents import WebhookData, plain
from meterline.ledger import open_ledger
from meterline.ledger.control_records import ControlStore
from meterline.live.control_overrides import Override
from meterline.live.service import LiveEngine
from tests.conftest import Location

NewDb = Callable[..., Location]

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
EVENT_NUMBERS = count(1)
"""Event ids, unique across the ledgers and engines of a test."""


def us(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))


NOW = us(2026, 10, 15, 12)


class Clock:
    """The injected clock."""

    def __init__(self, now_us: int = NOW) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, microseconds: int) -> None:
        self.now_us += microseconds


PRICING = """\
credit_types:
  - {{key: credits, name: Credits, currency: USD, unit_value: "0.01"}}
meters:
  - {{key: tokens, event_type: llm, aggregation: sum, property: tokens}}
  - {{key: calls, event_type: llm, aggregation: count}}
costs:
  - {{meter: tokens, per_unit: "0.00001"}}
plans:
  - key: pro
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {{meter: tokens, model: per_unit, unit_amount: "0.001"}}
          - {{meter: calls, model: per_unit, unit_amount: 1, credit_type: credits}}
contracts:
  - customer: acme
    plan: pro
    start: 2026-10-01
{overrides}    credits:
      grants:
        - {{key: pool, credit_type: credits, amount: 10, paid: 1, recurrence: period}}
    controls:
{controls}
  - customer: other
    plan: pro
    start: 2026-10-01
"""
"""Each call costs one credit (the pool of 10 is empty after the 10th) and its tokens
0.001 USD each."""

EMPTY_BLOCK = "      - {key: empty, policy: balance_exhausted, unit: credits, actions: [block]}"


def pricing(*controls: str, overrides: str = "") -> str:
    return PRICING.format(controls="\n".join(controls), overrides=overrides)


@dataclass
class Live:
    """A billing over a ledger, its live engine, and what the engine published."""

    path: Location
    billing: Billing
    engine: LiveEngine
    clock: Clock
    published: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)

    def send(
        self, calls: int, tokens: int = 100, customer: str = "acme", at_us: int | None = None
    ) -> int:
        """Ingest ``calls`` llm events (one batch, stamped just before now unless
        ``at_us``) and run one controller cycle."""
        events = []
        for _ in range(calls):
            events.append(
                {
                    "id": f"call-{next(EVENT_NUMBERS)}",
                    "customer": customer,
                    "type": "llm",
                    "timestamp": format_timestamp(self.clock() - 1 if at_us is None else at_us),
                    "properties": {"tokens": tokens},
                }
            )
        outcome = self.billing.ledger.ingest(events)
        assert outcome.accepted == calls, outcome
        self.engine.cycle()
        return self.billing.ledger.head()[0]

    def access(self, feature: str | None = None, customer: str = "acme") -> dict[str, Any]:
        """The access answer as plain data, as the API answers it."""
        answer: dict[str, Any] = plain(self.engine.controls.access(customer, feature))
        return answer

    def firings(self) -> list[tuple[str, str, str, int]]:
        return [(f.customer, f.policy, f.level, f.ordinal) for f in self.engine.store.firings()]

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.published]


@contextmanager
def open_live(
    path: Location, clock: Clock, yaml: str | None = None, thread: bool = False
) -> Iterator[Live]:
    """A billing over ``path`` (``yaml`` applied first), its engine started, stopped after."""
    with open_billing(path, clock) as billing:
        if yaml is not None:
            billing.apply(yaml)
        published: list[tuple[str, dict[str, Any], str]] = []

        def publish(kind: str, data: WebhookData | dict[str, Any], event_id: str) -> list[str]:
            # as the webhook's body carries it: plain data
            published.append((kind, data if isinstance(data, dict) else plain(data), event_id))
            return [f"delivery-{len(published)}"]

        engine = LiveEngine(billing, publish=publish).start(thread=thread)
        try:
            yield Live(path, billing, engine, clock, published)
        finally:
            engine.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def live_over(
    new_db: NewDb, clock: Clock, *controls: str, thread: bool = False
) -> AbstractContextManager[Live]:
    return open_live(new_db(), clock, pricing(*controls), thread)


def threshold_invoices(billing: Billing, customer: str = "acme") -> list[dict[str, Any]]:
    return [
        decode_exact(i.document) for i in billing.store.invoices(customer) if i.kind == "threshold"
    ]


# -- actions ----------------------------------------------------------------------------------


def test_block_denies_access_with_the_reason_and_policy(new_db: NewDb, clock: Clock) -> None:
    with live_over(new_db, clock, EMPTY_BLOCK) as live:
        live.send(9)
        live.engine.cycle()  # idle: the exact balance is computed again (not just bounded)
        assert live.access()["allowed"] and live.access()["remaining"] == {"credits": "1"}
        assert live.firings() == []
        live.send(1)  # the 10th call empties the pool
        assert live.firings() == [("acme", "empty", "crossed", 1)]
        answer = live.access()
        assert not answer["allowed"]
        assert answer["policy"] == "empty"
        assert answer["reason"] == "balance_exhausted empty fired (F-000001)"
        assert answer["remaining"] == {"credits": "0"}
        assert not live.access("chat")["allowed"]  # a whole-customer block
        # another customer is not affected
        assert live.access(customer="other")["allowed"]
        assert live.access(customer="nobody")["reason"] == "no contract: no restriction"
        (blocked,) = [p for p in live.published if p[0] == "customer.blocked"]
        assert blocked[1]["policy"] == "empty" and blocked[1]["firing"] == "F-000001"
        results = live.engine.store.results()
        assert results[(1, "block")] == {"blocked": True}


def test_a_feature_block_denies_only_that_feature(new_db: NewDb, clock: Clock) -> None:
    control = (
        "      - {key: empty, policy: balance_exhausted, unit: credits, actions: [block],"
        " features: [images]}"
    )
    with live_over(new_db, clock, control) as live:
        live.send(10)
        images = live.access("images")
        assert not images["allowed"] and images["policy"] == "empty"
        assert live.access("chat")["allowed"]
        assert live.access()["allowed"]  # the customer as a whole may go on
        document = live.engine.controls.decision_document("acme")
        assert document.blocked and document.features == ("images",)


def test_alerts_publish_balance_low_or_control_fired(new_db: NewDb, clock: Clock) -> None:
    controls = (
        "      - {key: low, policy: balance_exhausted, unit: credits, remaining_at_most: 3,"
        " actions: [alert]}",
        "      - {key: empty, policy: balance_exhausted, unit: credits, actions: [alert]}",
        "      - {key: budget, policy: spend_threshold, amount: 1, percents: [50, 100],"
        " actions: [alert]}",
    )
    with live_over(new_db, clock, *controls) as live:
        live.send(5)  # 0.5 spent, 5 credits left
        assert live.published == [("control.fired", live.published[0][1], "control.fired:F-000001")]
        assert live.published[0][1]["policy"] == "budget"
        assert live.published[0][1]["level"] == "50%"
        live.send(2)  # 7 calls: 3 credits left
        kind, data, event_id = live.published[-1]
        assert (kind, event_id) == ("balance.low", "balance.low:F-000002")
        assert data["policy"] == "low" and data["observed"]["remaining"] == "3"
        assert data["crossing"] == 1 and data["actions"] == ["alert"]
        live.send(3)  # 10 calls: empty, and 1.0 spent
        assert sorted(live.kinds()[2:]) == ["control.fired", "control.fired"]
        assert {p[1]["policy"] for p in live.published[2:]} == {"empty", "budget"}
        # each alert's outcome is recorded with the deliveries the publisher returned
        results = live.engine.store.results()
        assert all(results[(n, "alert")]["webhooks"] for n in (1, 2, 3, 4))
        assert live.access()["allowed"]  # alerts do not block


def test_true_up_bills_now_and_the_period_invoice_nets_it(new_db: NewDb, clock: Clock) -> None:
    control = (
        "      - {key: empty, policy: balance_exhausted, unit: credits, actions: [block, true_up]}"
    )
    with live_over(new_db, clock, control) as live:
        live.send(12, tokens=1000)  # 12 USD of tokens; 12 credits for 10 in the pool
        live.engine.controls.drain()
        (firing,) = live.engine.store.firings()
        (invoice,) = threshold_invoices(live.billing)
        assert invoice["control"] == firing.firing_id == "F-000001"
        assert live.engine.store.results()[(firing.number, "true_up")] == {
            "invoice": invoice["number"]
        }
        assert ("invoice.finalized", invoice["number"]) in [
            (kind, data.get("invoice")) for kind, data, _ in live.published
        ]
        billed = D(invoice["total"])
        assert billed > 0
        # a second true-up for the same firing returns the same invoice
        again = live.billing.true_up("acme", "again", firing.firing_id)
        assert again is not None and again.invoice_id == invoice["number"]
        assert len(threshold_invoices(live.billing)) == 1
        # the period closes: its invoice nets what the true-up billed
        clock.now_us = us(2026, 11, 1, 1)
        closed = live.billing.close()
        (period,) = [decode_exact(i.document) for i in closed if i.customer == "acme"]
        prepaid = [line for line in period["lines"] if line["kind"] == "prepaid"]
        assert len(prepaid) == 1
        assert D(prepaid[0]["amount"]) == -billed
        assert invoice["number"] in prepaid[0]["description"]
        audit = live.billing.audit()
        assert audit.passed, audit.mismatches


def test_a_top_up_to_a_target_balance_grants_what_brings_it_back(
    new_db: NewDb, clock: Clock
) -> None:
    """The balance falls to 0 (the pool was empty): a top-up to a target of 120, at most
    100 per top-up and 0.009 a credit, grants 100 for 0.90."""
    control = (
        "      - {key: low, policy: balance_exhausted, unit: credits, actions: [top_up],"
        " top_up: {credit_type: credits, target_balance: 120, minimum: 20, maximum: 100,"
        " unit_cost: '0.009'}}"
    )
    with live_over(new_db, clock, control) as live:
        live.send(10)
        live.engine.controls.drain()
        (grant,) = live.billing.store.grants("acme")
        document = decode_exact(grant.document)
        assert D(document["amount"]) == 100 and D(document["paid"]) == D("0.90")


def test_top_up_grants_invoices_and_lifts_the_balance_block(new_db: NewDb, clock: Clock) -> None:
    control = (
        "      - {key: empty, policy: balance_exhausted, unit: credits,"
        " actions: [block, top_up],"
        " top_up: {credit_type: credits, amount: 50, paid: '0.45', expires_after_days: 30}}"
    )
    with live_over(new_db, clock, control) as live:
        live.send(10)
        assert not live.access()["allowed"]
        live.engine.controls.drain()
        (firing,) = live.engine.store.firings()
        grants = live.billing.store.grants("acme")
        assert len(grants) == 1
        document = decode_exact(grants[0].document)
        assert D(document["amount"]) == 50 and D(document["paid"]) == D("0.45")
        assert document["unit"] == "credits" and firing.firing_id in document["reason"]
        assert document["expires_us"] == NOW + 30 * 24 * HOUR_US
        (purchase,) = [i for i in live.billing.store.invoices("acme") if i.kind == "purchase"]
        outcome = live.engine.store.results()[(firing.number, "top_up")]
        assert outcome == {"grant": grants[0].grant_id, "invoice": purchase.invoice_id}
        # the grant reaches the engine as a billing change: the block lifts
        live.engine.cycle()
        answer = live.access()
        assert answer["allowed"], answer
        assert answer["remaining"] == {"credits": "50"}
        assert len(live.engine.store.rearms("acme")) == 1
        assert "customer.unblocked" in live.kinds()
        # usage goes on against the new grant (after it took effect); no second top-up
        # until it runs out again
        clock.advance(MINUTE_US)
        live.send(49)
        live.engine.controls.drain()
        assert live.access()["allowed"] and len(live.billing.store.grants("acme")) == 1
        live.send(1)
        live.engine.controls.drain()
        assert live.firings() == [
            ("acme", "empty", "crossed", 1),
            ("acme", "empty", "crossed", 2),
        ]
        assert len(live.billing.store.grants("acme")) == 2


# -- exactly once ----------------------------------------------------------------------------


def test_a_restart_fires_nothing_again_and_keeps_the_block(new_db: NewDb, clock: Clock) -> None:
    path = new_db()
    controls = (
        EMPTY_BLOCK,
        "      - {key: budget, policy: spend_threshold, amount: 1, actions: [alert]}",
    )
    with open_live(path, clock, pricing(*controls)) as live:
        live.send(10)
        before = live.firings()
        assert sorted(before) == [
            ("acme", "budget", "100%", 1),
            ("acme", "empty", "crossed", 1),
        ]
        assert not live.access()["allowed"]
    clock.advance(MINUTE_US)
    with open_live(path, clock) as again:
        assert again.firings() == before
        assert again.published == []  # nothing fired, nothing re-run
        answer = again.access()
        assert not answer["allowed"] and answer["policy"] == "empty"
        again.send(1)  # still exhausted: still nothing new
        assert again.firings() == before and not again.access()["allowed"]


def test_an_action_without_outcome_runs_on_start_once(new_db: NewDb, clock: Clock) -> None:
    path = new_db()
    control = "      - {key: empty, policy: balance_exhausted, unit: credits, actions: [true_up]}"
    with open_billing(path, clock) as billing:
        billing.apply(pricing(control))
        events = [
            {
                "id": f"e{n}",
                "customer": "acme",
                "type": "llm",
                "timestamp": format_timestamp(NOW - MINUTE_US),
                "properties": {"tokens": 1000},
            }
            for n in range(12)
        ]
        assert billing.ledger.ingest(events).accepted == 12
    # A crash after recording the crossing: one firing with no outcome, and a second
    # one whose invoice was made but whose outcome was not recorded.
    store = ControlStore(path)
    first = store.add_firing(
        "acme", "empty", "balance_exhausted", "crossed", 1, NOW, 12, {}, ("true_up",)
    )
    assert first is not None
    store.close()
    clock.advance(MINUTE_US)
    with open_live(path, clock) as live:
        live.engine.controls.drain()
        (invoice,) = threshold_invoices(live.billing)
        assert invoice["control"] == first.firing_id
        assert live.engine.store.results()[(first.number, "true_up")] == {
            "invoice": invoice["number"]
        }
        assert live.firings() == [("acme", "empty", "crossed", 1)]  # no second firing
    # the outcome is recorded now: another start runs nothing
    with open_live(path, clock) as live:
        live.engine.controls.drain()
        assert len(threshold_invoices(live.billing)) == 1


def test_a_repeated_true_up_after_a_crash_makes_one_invoice(new_db: NewDb, clock: Clock) -> None:
    path = new_db()
    control = "      - {key: empty, policy: balance_exhausted, unit: credits, actions: [true_up]}"
    with open_billing(path, clock) as billing:
        billing.apply(pricing(control))
        events = [
            {
                "id": f"e{n}",
                "customer": "acme",
                "type": "llm",
                "timestamp": format_timestamp(NOW - MINUTE_US),
                "properties": {"tokens": 1000},
            }
            for n in range(12)
        ]
        assert billing.ledger.ingest(events).accepted == 12
        store = ControlStore(path)
        firing = store.add_firing(
            "acme", "empty", "balance_exhausted", "crossed", 1, NOW, 12, {}, ("true_up",)
        )
        assert firing is not None
        store.close()
        # the action ran (the invoice exists) but the crash came before its outcome
        made = billing.true_up("acme", "before the crash", firing.firing_id)
        assert made is not None
    clock.advance(MINUTE_US)
    with open_live(path, clock) as live:
        live.engine.controls.drain()
        (invoice,) = threshold_invoices(live.billing)
        assert invoice["number"] == made.invoice_id
        assert live.engine.store.results()[(firing.number, "true_up")] == {
            "invoice": made.invoice_id
        }


def test_two_engines_on_one_ledger_record_a_crossing_once(new_db: NewDb, clock: Clock) -> None:
    path = new_db()
    control = "      - {key: empty, policy: balance_exhausted, unit: credits, actions: [alert]}"
    with open_live(path, clock, pricing(control)) as first, open_live(path, clock) as second:
        first.send(10)  # the first engine hears the append and fires
        second.engine.catch_up()  # the second reads it from the ledger: same crossing
        assert second.engine.projection.cut == second.billing.ledger_cut()
        assert first.firings() == second.firings() == [("acme", "empty", "crossed", 1)]
        assert first.kinds() == ["control.fired"]
        assert second.published == []  # only the engine whose record won acts
        assert second.engine.controls.state["acme"].fired == {("empty", "crossed")}
        # the same again the other way round, for the next crossing
        grant = first.billing.grant("acme", "credits", D(5), "goodwill")
        assert grant[1] is None
        second.engine.catch_up()
        first.engine.catch_up()
        assert len(second.engine.store.rearms("acme")) == 1  # one re-arm recorded
        clock.advance(MINUTE_US)  # usage after the grant took effect
        second.send(5)
        first.engine.catch_up()
        assert second.firings() == [
            ("acme", "empty", "crossed", 1),
            ("acme", "empty", "crossed", 2),
        ]
        assert second.kinds() == ["control.fired"] and first.kinds() == ["control.fired"]


# -- spikes and overrides ------------------------------------------------------------------------

SPIKE = (
    "      - {key: rogue, policy: usage_spike, meter: tokens, window: 1m, baseline: 10m,"
    " factor: 11, minimum: 5000, actions: [block, alert]}"
)


def test_a_spike_blocks_at_once_and_holds_until_unblocked(new_db: NewDb, clock: Clock) -> None:
    with live_over(new_db, clock, SPIKE) as live:
        # a steady baseline: 100 tokens a call, ten calls a minute, for ten minutes
        for _ in range(10):
            live.send(10, tokens=100)
            clock.advance(MINUTE_US)
        assert live.firings() == [] and live.access()["allowed"]
        # 20x the baseline rate within the window: blocked in that very cycle
        live.send(20, tokens=1000)
        assert live.firings() == [("acme", "rogue", "crossed", 1)]
        answer = live.access()
        assert not answer["allowed"] and answer["policy"] == "rogue"
        (alert,) = [p for p in live.published if p[0] == "control.fired"]
        assert alert[1]["observed"]["window"] == "20000"
        # quiet again: the level re-arms, but a spike's block is held
        clock.advance(5 * MINUTE_US)
        live.send(1, tokens=10)
        assert len(live.engine.store.rearms("acme")) == 1
        assert not live.access()["allowed"]
        # only an override lifts it, recorded with who and why
        record = live.engine.controls.override(
            Override(
                "acme", "unblock", "agent fixed by the customer", "finance@example.com", "rogue"
            )
        )
        assert live.access()["allowed"]
        (stored,) = live.engine.store.overrides("acme")
        assert (stored.kind, stored.policy, stored.actor, stored.reason) == (
            "unblock",
            "rogue",
            "finance@example.com",
            "agent fixed by the customer",
        )
        assert stored.override_id == record.override_id == "O-000001"
        assert "customer.unblocked" in live.kinds()
        # once the first burst is out of the baseline too, a new burst is a new
        # crossing: it fires (ordinal 2) and blocks again
        clock.advance(11 * MINUTE_US)
        live.send(20, tokens=1000)
        assert live.firings()[-1] == ("acme", "rogue", "crossed", 2)
        assert not live.access()["allowed"]


def test_an_unblocked_spike_does_not_fire_again_until_it_rearms(
    new_db: NewDb, clock: Clock
) -> None:
    with live_over(new_db, clock, SPIKE) as live:
        live.send(20, tokens=1000)  # no baseline: 20000 >= the minimum
        assert not live.access()["allowed"]
        live.engine.controls.override(Override("acme", "unblock", "known batch job", "ops"))
        assert live.access()["allowed"]
        # still spiking, within the same window: the level has fired and not re-armed
        live.send(20, tokens=1000)
        clock.advance(10_000_000)
        live.send(5, tokens=1000)
        assert live.firings() == [("acme", "rogue", "crossed", 1)]
        assert live.engine.store.rearms("acme") == []
        assert live.access()["allowed"]
        # the window empties: re-armed; the next burst fires again
        clock.advance(2 * MINUTE_US)
        live.send(1, tokens=1)
        assert len(live.engine.store.rearms("acme")) == 1
        assert live.firings() == [("acme", "rogue", "crossed", 1)]
        # the next burst, once the last one has left the baseline, fires again
        clock.advance(11 * MINUTE_US)
        live.send(20, tokens=1000)
        assert live.firings() == [
            ("acme", "rogue", "crossed", 1),
            ("acme", "rogue", "crossed", 2),
        ]
        assert not live.access()["allowed"]


def test_extend_lifts_a_balance_block_and_is_recorded(new_db: NewDb, clock: Clock) -> None:
    control = (
        "      - {key: low, policy: balance_exhausted, unit: credits, remaining_at_most: 4,"
        " actions: [block]}"
    )
    with live_over(new_db, clock, control) as live:
        live.send(6)  # 4 credits left: at the limit
        assert not live.access()["allowed"]
        record = live.engine.controls.override(
            Override("acme", "extend", "bridge to the renewal", "cfo", "low", amount=D(3))
        )
        assert live.access()["allowed"]  # the limit is 1 now: re-armed, block lifted
        (stored,) = live.engine.store.overrides("acme")
        assert (stored.kind, stored.policy, stored.amount, stored.actor, stored.reason) == (
            "extend",
            "low",
            "3",
            "cfo",
            "bridge to the renewal",
        )
        assert stored.override_id == record.override_id
        (rearm,) = live.engine.store.rearms("acme")
        assert rearm.observed["limit"] == "1"
        # the extended limit crosses like any other: 2 left is fine, 1 left blocks again
        live.send(2)
        assert live.access()["allowed"]
        live.send(1)
        assert not live.access()["allowed"]
        assert live.firings() == [("acme", "low", "crossed", 1), ("acme", "low", "crossed", 2)]


def test_grant_override_adds_credit_and_lifts(new_db: NewDb, clock: Clock) -> None:
    with live_over(new_db, clock, EMPTY_BLOCK) as live:
        live.send(10)
        assert not live.access()["allowed"]
        record = live.engine.controls.override(
            Override(
                "acme",
                "grant",
                "make good",
                "support",
                amount=D(20),
                credit_type="credits",
                paid=D("0.10"),
            )
        )
        answer = live.access()
        assert answer["allowed"] and answer["remaining"] == {"credits": "20"}
        (grant,) = live.billing.store.grants("acme")
        (purchase,) = [i for i in live.billing.store.invoices("acme") if i.kind == "purchase"]
        assert record.detail == {"grant": grant.grant_id, "invoice": purchase.invoice_id}
        assert "make good (override by support)" in decode_exact(grant.document)["reason"]
        assert live.billing.credits("acme")["totals"]["credits"]["remaining"] == "20"


def test_override_mistakes_are_refused(new_db: NewDb, clock: Clock) -> None:
    from meterline.live.control_overrides import OverrideError

    with live_over(new_db, clock, EMPTY_BLOCK) as live:
        controls = live.engine.controls
        with pytest.raises(OverrideError, match="reason"):
            controls.override(Override("acme", "unblock", "  ", "ops"))
        with pytest.raises(OverrideError, match="no contract"):
            controls.override(Override("nobody", "unblock", "why", "ops"))
        with pytest.raises(OverrideError, match="no control"):
            controls.override(Override("acme", "unblock", "why", "ops", "nope"))
        with pytest.raises(OverrideError, match="amount"):
            controls.override(Override("acme", "extend", "why", "ops", "empty"))
        with pytest.raises(OverrideError, match="kind"):
            controls.override(Override("acme", "forgive", "why", "ops"))
        assert live.engine.store.overrides() == []


# -- the controller thread, other writers, configuration -------------------------------------------


def test_the_threaded_engine_blocks_as_usage_arrives(new_db: NewDb, clock: Clock) -> None:
    with live_over(new_db, clock, EMPTY_BLOCK, thread=True) as live:
        events = [
            {
                "id": f"t{n}",
                "customer": "acme",
                "type": "llm",
                "timestamp": format_timestamp(NOW - n),
                "properties": {"tokens": 10},
            }
            for n in range(10)
        ]
        for event in events:
            assert live.billing.ledger.ingest([event]).accepted == 1
        head = live.billing.ledger_cut()
        assert live.engine.wait_applied(head)
        answer = live.access()
        assert not answer["allowed"] and answer["policy"] == "empty"
        assert live.firings() == [("acme", "empty", "crossed", 1)]
        assert live.engine.status()["applied"] == head.to_json()


def test_another_processs_appends_are_read_from_the_ledger(new_db: NewDb, clock: Clock) -> None:
    with live_over(new_db, clock, EMPTY_BLOCK) as live:
        live.send(4)
        writer = open_ledger(live.path, clock=clock)
        try:
            events = [
                {
                    "id": f"w{n}",
                    "customer": "acme",
                    "type": "llm",
                    "timestamp": format_timestamp(NOW),
                    "properties": {"tokens": 10},
                }
                for n in range(6)
            ]
            assert writer.ingest(events).accepted == 6
        finally:
            writer.close()
        acme = live.engine.projection.partition("acme")
        assert live.engine.projection.cut.head(acme) == 4  # nothing heard yet
        live.engine.catch_up()
        assert live.engine.projection.cut.head(acme) == 10
        assert not live.access()["allowed"]
        figures = live.engine.projection.figures("acme")
        assert figures is not None
        assert figures.remaining == {"credits": D(0)}
        assert {line.meter: line.quantity for line in figures.lines} == {
            "calls": D(10),
            "tokens": D(460),
        }


def test_the_idle_wake_reads_another_processs_appends(new_db: NewDb, clock: Clock) -> None:
    with live_over(new_db, clock, EMPTY_BLOCK, thread=True) as live:
        writer = open_ledger(live.path, clock=clock)
        try:
            events = [
                {
                    "id": f"w{n}",
                    "customer": "acme",
                    "type": "llm",
                    "timestamp": format_timestamp(NOW),
                    "properties": {"tokens": 10},
                }
                for n in range(10)
            ]
            assert writer.ingest(events).accepted == 10
        finally:
            writer.close()
        assert live.engine.wait_applied(live.billing.ledger_cut())
        assert not live.access()["allowed"]


def test_a_pricing_change_rebuilds_the_projection(new_db: NewDb, clock: Clock) -> None:
    with live_over(new_db, clock, EMPTY_BLOCK) as live:
        live.send(5, tokens=1000)
        figures = live.engine.projection.figures("acme")
        assert figures is not None and figures.spend == D("5.05")  # 5 USD + 5 credits
        revision = live.engine.projection.revision
        # a plan version is immutable: the new price comes as a contract override,
        # with a new control
        changed = pricing(
            EMPTY_BLOCK,
            "      - {key: budget, policy: spend_threshold, amount: 10, percents: [50],"
            " actions: [alert]}",
            overrides="    overrides:\n      prices:\n"
            '        - {meter: tokens, model: per_unit, unit_amount: "0.002"}\n',
        )
        live.billing.apply(changed)
        live.engine.cycle()
        assert live.engine.projection.revision != revision
        figures = live.engine.projection.figures("acme")
        assert figures is not None and figures.spend == D("10.05")
        # the new control is in force and fired on the rebuilt figures
        assert live.firings() == [("acme", "budget", "50%", 1)]
        assert [p.key for p in live.engine.projection.customers["acme"].policies] == [
            "empty",
            "budget",
        ]


def test_a_grant_by_another_process_lifts_the_block(new_db: NewDb, clock: Clock) -> None:
    with live_over(new_db, clock, EMPTY_BLOCK) as live:
        live.send(10)
        assert not live.access()["allowed"]
        # the CLI, say: its own Billing on the ledger, whose changes no listener here hears
        with open_billing(live.path, clock) as other:
            other.grant("acme", "credits", D(5), "granted from the command line")
        live.engine.catch_up()
        answer = live.access()
        assert answer["allowed"] and answer["remaining"] == {"credits": "5"}
        assert len(live.engine.store.rearms("acme")) == 1
        # a void from there too (at the instant of the last exact balance: another
        # process's clock need not be ahead): the balance is gone, and so is access
        with open_billing(live.path, clock) as other:
            (grant,) = other.store.grants("acme")
            other.void_grant("acme", grant.grant_id, "granted by mistake")
        live.engine.catch_up()
        assert not live.access()["allowed"]
        assert live.firings()[-1] == ("acme", "empty", "crossed", 2)


# -- reconcile --------------------------------------------------------------------------------


def test_reconcile_passes_with_events_stamped_at_or_ahead_of_now(
    new_db: NewDb, clock: Clock
) -> None:
    from meterline.live.reconcile import reconcile

    with live_over(new_db, clock, EMPTY_BLOCK) as live:
        live.send(2, at_us=NOW - MINUTE_US)
        live.send(1, at_us=NOW)
        live.send(3, at_us=NOW + 2 * MINUTE_US)  # within the clock-skew limit
        live.send(1, at_us=NOW - 1, customer="other")
        # the live balance has consumed all six calls; the credit ledger as of now only
        # the two stamped before it, as of just after the newest all six
        assert live.engine.projection.remaining("acme") == {"credits": D(4)}
        as_of_now = live.billing.credits("acme", NOW)["totals"]["credits"]["remaining"]
        after = live.billing.credits("acme", NOW + 2 * MINUTE_US + 1)
        assert (as_of_now, after["totals"]["credits"]["remaining"]) == ("8", "4")
        report = reconcile(live.billing)
        assert report.passed, report.as_dict()
        (acme, _) = report.customers
        assert acme.checked["remaining credits"] == ("4", "4")


def test_reconcile_passes_with_zero_usage_lines(new_db: NewDb, clock: Clock) -> None:
    from meterline.live.reconcile import reconcile

    with live_over(new_db, clock, EMPTY_BLOCK) as live:
        live.send(2, tokens=0)  # calls with no tokens: a tokens line of 0 for 0
        lines = [
            line for line in live.billing.draft("acme").lines if isinstance(line, MeterUsageLine)
        ]
        assert [(line.meter, str(line.quantity)) for line in lines] == [
            ("calls", "2"),
            ("tokens", "0"),
        ]
        report = reconcile(live.billing)
        assert report.passed, report.as_dict()
        assert report.customers[0].checked["usage lines"] == ("2", "2")


def test_reconcile_compares_each_segment_of_an_amended_period(
    new_db: NewDb, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import meterline.live.reconcile as reconciling

    amended = pricing(EMPTY_BLOCK).replace(
        "    start: 2026-10-01\n    credits:",
        "    start: 2026-10-01\n"
        "    amendments:\n"
        "      - effective: 2026-10-10\n"
        "        overrides:\n"
        "          prices:\n"
        '            - {meter: tokens, model: per_unit, unit_amount: "0.002"}\n'
        "    credits:",
    )
    with open_live(new_db(), clock, amended) as live:
        live.send(3, tokens=100, at_us=us(2026, 10, 5))  # before the amendment
        live.send(2, tokens=100, at_us=us(2026, 10, 12))  # after it
        figures = live.engine.projection.figures("acme")
        assert figures is not None
        tokens = [(line.quantity, line.amount) for line in figures.lines if line.meter == "tokens"]
        assert tokens == [(D(300), D("0.300")), (D(200), D("0.400"))]
        report = reconciling.reconcile(live.billing)
        assert report.passed, report.as_dict()
        assert report.customers[0].checked["usage lines"] == ("4", "4")
        # a server whose first segment's line is one unit off: found, though the last
        # segment's line for the same meter is right
        served = figures.as_dict()
        first = next(line for line in served["lines"] if line["meter"] == "tokens")
        first["quantity"] = "301"

        def fetch(url: str, token: str, customer: str) -> dict[str, Any] | None:
            return served if customer == "acme" else None

        monkeypatch.setattr(reconciling, "_live_from_server", fetch)
        report = reconciling.reconcile(live.billing, url="http://live.invalid", token="t")
        (acme, other) = report.customers
        assert acme.differences == ["line tokens #1: live 301 for 0.300, draft 300 for 0.300"]
        assert other.differences == ["no live figures"]


def test_the_access_answer_says_when_a_free_trial_ends(new_db: NewDb, clock: Clock) -> None:
    """A contract on a 60-day trial: its access answer and pushed decision carry the
    trial's end, and whether it is still on; a contract without one carries none."""
    yaml = pricing(EMPTY_BLOCK, overrides="    trial: {days: 60}\n")
    with open_live(new_db(), clock, yaml) as live:
        live.send(1)
        answer = live.access()
        assert answer["trial"] == {"ends_at": "2026-11-30T00:00:00Z", "active": True}
        assert live.engine.controls.decisions["acme"].trial_ends == "2026-11-30T00:00:00Z"
        assert "trial" not in live.access(customer="other")
        clock.now_us = us(2026, 11, 30)
        assert live.access()["trial"]["active"] is False


def test_live_figures_show_progress_to_the_next_progressive_threshold(
    new_db: NewDb, clock: Clock
) -> None:
    """Levels at 10 and 50 then every 100 (USD): after 12.00 of usage the figures say
    12.00 so far and 50 next."""
    from tests.integration.test_commerce import PROGRESSIVE

    yaml = PROGRESSIVE.replace("start: 2026-11-01", "start: 2026-10-01")
    with open_live(new_db(), clock, yaml) as live:
        live.billing.ledger.ingest(
            [
                {
                    "id": "p-1",
                    "customer": "lago-co",
                    "type": "llm",
                    "timestamp": format_timestamp(clock() - 1),
                    "properties": {"tokens": 1200},
                }
            ]
        )
        live.engine.cycle()
        figures = live.engine.projection.figures("lago-co")
        assert figures is not None
        assert figures.as_dict()["threshold"] == {"so_far": "12.00", "next": "50", "of": "USD"}
