"""Issue 19's live side end to end over HTTP: a real server process (its live worker on the
second core), a real webhook receiver, on a clock the test moves by whole days.

One server holds three customers: ``late`` owes a September invoice under an
``invoice_overdue`` control (3 days, net 0); ``trialist`` is on a 7-day free trial with a
3-day notice; ``stepper`` bills progressively at 2 USD, then every 3 USD. The test shows
the overdue customer denied by the same access answer the product asks (and the alert
delivered) once the day turns past the limit, and released by a payment; the trial's
webhooks; and one ``threshold.reached`` per level, fixed and recurring, with the progress
in the access answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterline.billing.payments import PaymentRequest
from meterline.billing.service import open_billing
from meterline.core.events import timestamp_to_us
from meterline.ledger.webhook_records import WebhookStore
from meterline.live.service import LiveEngine
from meterline.live.webhook_service import ALLOW_PRIVATE_ENV, Webhooks
from meterline.sdk.gate import Gate
from tests.conftest import Location, make_keys
from tests.integration.test_credits_http import shift_clock
from tests.integration.test_live_http import LiveServer, Receiver, access, ingest, wait_for
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

PRICING = """\
meters:
  - {key: calls, event_type: call, aggregation: count}
plans:
  - key: pro
    controls:
      - {key: dunning, policy: invoice_overdue, days: 3, net_days: 0, actions: [block, alert]}
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: calls, model: per_unit, unit_amount: "1"}
contracts:
  - {customer: late, plan: pro, start: 2026-09-01}
  - customer: trialist
    plan: pro
    start: 2026-09-28
    trial: {days: 7, notice_days: 3, applies_to: fees}
  - customer: stepper
    plan: pro
    start: 2026-10-01
    credits:
      thresholds: {levels: ["2"], recurring: "3"}
"""


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


def calls(customer: str, count: int, day: str) -> list[dict[str, Any]]:
    return [
        {"id": f"{customer}-{day}-{n}", "customer": customer, "type": "call", "timestamp": day}
        for n in range(count)
    ]


@pytest.fixture
def served(
    new_db: Callable[..., Location], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LiveServer, Receiver, str]]:
    """September billed (``late`` owes 5 USD, issued 2026-10-02), a receiver subscribed to
    every kind before the server starts, the server's clock at 2026-10-04 noon."""
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    db = new_db("receivables")
    receiver = Receiver()
    with open_billing(db, clock=lambda: at(2026, 10, 2, 12)) as billing:
        assert billing.ledger.ingest(calls("late", 5, "2026-09-10T10:00:00Z")).accepted == 5
        billing.apply(PRICING)
        billing.close(at(2026, 10, 1))
        invoice = next(i for i in billing.store.invoices("late") if i.kind == "period")
        webhooks = Webhooks(WebhookStore(billing.store.path))
        webhooks.subscribe(receiver.url, ["*"])
        webhooks.store.close()
    keys = make_keys(db)
    offset_file = tmp_path / "server.clock"
    shift_clock(offset_file, datetime(2026, 10, 4, 12, tzinfo=UTC))
    server = LiveServer(db, free_port(), keys, offset_file)
    try:
        yield server.start(), receiver, invoice.invoice_id
    finally:
        server.kill()
        receiver.close()


def delivered(receiver: Receiver, kind: str, customer: str) -> list[dict[str, Any]]:
    envelopes = [json.loads(hook.body) for hook in list(receiver.hooks)]
    return [e for e in envelopes if e["kind"] == kind and e["data"].get("customer") == customer]


def test_overdue_block_payment_release_trial_and_threshold_webhooks(
    served: tuple[LiveServer, Receiver, str],
) -> None:
    """Overdue past the limit denies the access answer and alerts; a payment releases it;
    trial notices and threshold levels arrive once each."""
    server, receiver, invoice = served
    with server.client("admin") as admin:
        # 2 days past due: within the limit
        assert access(admin, "late")["allowed"]
        # the trial started and ends on 2026-10-05: both notices are due now
        wait_for("trial notices", lambda: delivered(receiver, "trial.ending", "trialist"))
        assert len(delivered(receiver, "trial.started", "trialist")) == 1

        # 6 USD of usage crosses the fixed level 2 and the first recurring step, 5
        ingest(server, calls("stepper", 6, "2026-10-04T09:00:00Z"))
        steps = wait_for(
            "two levels", lambda: len(delivered(receiver, "threshold.reached", "stepper")) >= 2
        )
        assert steps
        reached = delivered(receiver, "threshold.reached", "stepper")
        assert [(e["data"]["level"], e["data"]["recurring"]) for e in reached] == [
            ("2", False),
            ("5", True),
        ]
        assert wait_for(
            "progress in the access answer",
            lambda: access(admin, "stepper").get("threshold"),
        ) == {"so_far": "6", "next": "8", "of": "USD"}
        with Gate(server.url, server.keys["read"]) as gate:
            checked = gate.check("stepper")
            assert checked.allowed and checked.threshold == {
                "so_far": "6",
                "next": "8",
                "of": "USD",
            }

        # two days on: 4 days past due, over the limit of 3
        shift_clock(server.offset_file, datetime(2026, 10, 6, 12, tzinfo=UTC))
        admin.get("/v1/live/late")  # the server tells its worker the clock moved
        denied = wait_for(
            "the overdue block", lambda: (a := access(admin, "late"))["allowed"] is False and a
        )
        assert denied["policy"] == "dunning" and "dunning" in denied["reason"]
        (alert,) = wait_for("the alert", lambda: delivered(receiver, "invoice.overdue", "late"))
        assert alert["data"]["observed"]["invoice"] == invoice
        assert alert["data"]["observed"]["days_past_due"] == "4"
        wait_for("trial converted", lambda: delivered(receiver, "trial.converted", "trialist"))

        paid = admin.post(
            f"/v1/invoices/{invoice}/payments", json={"payment_id": "wire-1", "amount": "5.00"}
        )
        assert paid.status_code == 201, paid.text
        wait_for("the release", lambda: access(admin, "late")["allowed"])
        wait_for("unblocked", lambda: delivered(receiver, "customer.unblocked", "late"))

    # every notice once, however many cycles ran
    for kind, customer in (
        ("trial.started", "trialist"),
        ("trial.ending", "trialist"),
        ("trial.converted", "trialist"),
        ("invoice.overdue", "late"),
    ):
        assert len(delivered(receiver, kind, customer)) == 1, kind


class Clock:
    """A settable "now" shared by the billing services and the engine."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def test_in_process_the_day_turning_blocks_and_another_process_payment_releases(
    new_db: Callable[..., Location],
) -> None:
    """An engine in this process, its clock injected: the block comes with the day that
    passes the limit (not before), and a payment recorded through another billing service
    on the same ledger (as the CLI would) releases it at the next poll."""
    db = new_db("in-process")
    clock = Clock(at(2026, 10, 2, 12))
    with open_billing(db, clock=clock) as billing, open_billing(db, clock=clock) as other:
        assert billing.ledger.ingest(calls("late", 5, "2026-09-10T10:00:00Z")).accepted == 5
        billing.apply(PRICING)
        billing.close(at(2026, 10, 1))
        invoice = next(i for i in billing.store.invoices("late") if i.kind == "period")
        engine = LiveEngine(billing).start(thread=False)
        try:
            clock.now_us = at(2026, 10, 5, 23, 59)  # 3 days past due: the limit
            engine._polled = 0.0  # the once-a-second look, now
            engine.cycle()
            assert engine.controls.access("late").allowed
            clock.now_us = at(2026, 10, 6, 0, 1)  # the day turns: 4 days past due
            engine._polled = 0.0
            engine.cycle()
            denied = engine.controls.access("late")
            assert (denied.allowed, denied.policy) == (False, "dunning")
            other.record_payment(
                PaymentRequest(invoice.invoice_id, "cli-1", "payment", Decimal("5.00"))
            )
            assert not engine.controls.access("late").allowed  # not heard of yet
            engine._polled = 0.0
            engine.cycle()
            assert engine.controls.access("late").allowed
            firings = engine.store.firings("late")
            assert [(f.policy, f.observed["days_past_due"]) for f in firings] == [("dunning", "4")]
        finally:
            engine.stop()
