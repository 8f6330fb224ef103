"""The ``invoice_overdue`` control, pure: its condition at the day boundary, firing once and
re-arming when the invoice is paid, an ``extend`` in whole days, and its declaration in
the pricing file (valid and, by path, invalid)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import msgspec
import pytest

from meterline.core.control_policies import (
    LEVEL,
    ControlPolicy,
    Observation,
    OpenInvoice,
    evaluate,
    read,
)
from meterline.core.live_documents import ThresholdProgress
from meterline.core.thresholds import CROSSED_LIMIT, ThresholdLevels
from meterline.core.trials import Trial, TrialWindow, trial_errors, trial_notices
from meterline.live.control_documents import access_document, decision_document
from tests.unit.test_controls import HEAD, PLANS, errors_of, load, us

DUNNING = ControlPolicy("dunning", "invoice_overdue", ("block", "alert"), days=30, net_days=15)
ISSUED = date(2026, 9, 1)
"""Due 2026-09-16; more than 30 days past due from 2026-10-17."""


def owing(today: date, *invoices: OpenInvoice) -> Observation:
    return Observation(open_invoices=invoices, today=today)


def invoice(name: str = "INV-1", issued: date = ISSUED, open_amount: str = "40.00") -> OpenInvoice:
    return OpenInvoice(name, issued, D(open_amount), "USD")


def test_an_invoice_crosses_the_day_after_its_limit() -> None:
    """30 days past due is within the limit; 31 is over it (as ``core.payments.overdue``)."""
    (within,) = read(DUNNING, owing(date(2026, 10, 16), invoice()))
    (over,) = read(DUNNING, owing(date(2026, 10, 17), invoice()))
    assert not within.crossed and within.observed["days_past_due"] == "30"
    assert over.crossed and over.level == LEVEL
    assert over.observed == {
        "days_limit": "30",
        "net_days": "15",
        "invoice": "INV-1",
        "days_past_due": "31",
        "open": "40.00",
        "currency": "USD",
    }


def test_the_most_overdue_invoice_is_named_and_nothing_open_never_crosses() -> None:
    """The oldest open invoice decides; no invoices, nothing open, or no date: not crossed."""
    newer = invoice("INV-2", date(2026, 10, 1))
    (reading,) = read(DUNNING, owing(date(2026, 12, 1), newer, invoice()))
    assert reading.crossed and reading.observed["invoice"] == "INV-1"
    for observation in (
        owing(date(2026, 12, 1)),
        owing(date(2026, 12, 1), invoice(open_amount="0")),
        Observation(open_invoices=(invoice(),)),
    ):
        (quiet,) = read(DUNNING, observation)
        assert not quiet.crossed


def test_it_fires_once_rearms_when_paid_and_an_extension_adds_days() -> None:
    """Fires once while overdue, re-arms when the invoice is no longer open; ``extend`` 5
    moves the limit five days."""
    late = owing(date(2026, 10, 20), invoice())
    first = evaluate((DUNNING,), late, frozenset())
    assert [f.level for f in first.firings] == [LEVEL]
    again = evaluate((DUNNING,), late, first.fired)
    assert not again.firings and not again.rearms
    paid = evaluate((DUNNING,), owing(date(2026, 10, 21)), again.fired)
    assert [r.policy.key for r in paid.rearms] == ["dunning"] and not paid.fired
    extended = evaluate((DUNNING,), late, frozenset(), {"dunning": D(5)})
    assert not extended.firings
    assert evaluate(
        (DUNNING,), owing(date(2026, 10, 22), invoice()), frozenset(), {"dunning": D(5)}
    ).firings


def test_the_control_is_declared_in_the_pricing_file() -> None:
    """``policy: invoice_overdue`` reads ``days`` and ``net_days`` (30 when omitted)."""
    control = "{key: dunning, policy: invoice_overdue, days: 10, actions: [block, alert]}"
    configuration = load(HEAD + PLANS + f"    controls:\n      - {control}\n")
    acme = configuration.contract("acme")
    assert acme is not None
    policies = {p.key: p for p in configuration.controls_for(acme, us(2026, 10, 9))}
    assert policies["dunning"] == ControlPolicy(
        "dunning", "invoice_overdue", ("block", "alert"), days=10, net_days=30
    )


PREFIX = "contracts[0].controls[0]"


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        ("{key: a, policy: invoice_overdue, actions: [block]}", f"{PREFIX}.days: is required"),
        (
            "{key: a, policy: invoice_overdue, days: -1, actions: [block]}",
            f"{PREFIX}.days: must be from 0 to 3650 days",
        ),
        (
            "{key: a, policy: invoice_overdue, days: 5, net_days: '3', actions: [alert]}",
            f"{PREFIX}.net_days: must be a whole number",
        ),
        (
            "{key: a, policy: invoice_overdue, days: 5, actions: [true_up]}",
            f"{PREFIX}.actions: an invoice_overdue control may only block and alert",
        ),
        (
            "{key: a, policy: spend_threshold, amount: 5, days: 5, actions: [alert]}",
            f"{PREFIX}.days: unknown key",
        ),
    ],
)
def test_overdue_control_mistakes_are_named_by_path(control: str, expected: str) -> None:
    """Each mistake names its path and why."""
    problems = errors_of(HEAD + PLANS + f"    controls:\n      - {control}\n")
    assert any(expected in problem for problem in problems), problems


# -- trial notices and threshold levels (the other live notices of issue 19) ------------------

DAY = 86_400_000_000


def test_trial_notices_are_due_at_their_moments_and_named_once_per_trial() -> None:
    """started while on, ending ``notice_days`` before the end, then converted; each with the
    same key for one trial; none a week after its moment."""
    window = TrialWindow(Trial(14, notice_days=3), 1000 * DAY)

    def kinds(day: float) -> list[str]:
        return [n.kind for n in trial_notices("acme", window, 1000 * DAY + int(day * DAY))]

    assert kinds(-1) == []
    assert kinds(0) == ["trial.started"]
    assert kinds(10.5) == []  # a week after it started, before the ending notice
    assert kinds(6) == ["trial.started"]
    assert kinds(11) == ["trial.ending"]
    assert kinds(14) == ["trial.converted"]
    assert kinds(21) == []
    assert {n.key for n in trial_notices("acme", window, 1011 * DAY)} == {f"acme:{1000 * DAY}"}
    cancelled = TrialWindow(Trial(2, on_end="cancel", notice_days=0), 0)
    assert [n.kind for n in trial_notices("x", cancelled, 2 * DAY)] == ["trial.cancelled"]
    assert [n.kind for n in trial_notices("x", cancelled, DAY)] == ["trial.started"]


def test_every_level_crossed_is_listed_fixed_and_recurring() -> None:
    """Fixed levels 10, 50, then every 100: a jump from none to 260 crosses 10, 50, 150,
    250; from there to 349 nothing more; a bound caps one step's list."""
    levels = ThresholdLevels((D(10), D(50)), D(100))
    assert levels.crossed(0, D(260)) == [(1, D(10)), (2, D(50)), (3, D(150)), (4, D(250))]
    assert levels.crossed(4, D(349)) == []
    assert levels.crossed(4, D(350)) == [(5, D(350))]
    assert len(ThresholdLevels((), D(1)).crossed(0, D(10_000))) == CROSSED_LIMIT


def test_a_trial_notice_days_is_declared_and_checked() -> None:
    """``notice_days`` defaults to 3 and is refused outside 0..730, naming its path."""
    assert trial_errors(Trial(14, notice_days=-1), "t") == [
        "t.notice_days: must be a whole number from 0 to 730"
    ]
    assert Trial(14).notice_days == 3


def test_the_access_answer_and_pushed_decision_carry_threshold_progress() -> None:
    """``threshold: {so_far, next, of}`` in both documents when given, absent otherwise."""
    progress = ThresholdProgress("6", "8", "USD")
    decision = decision_document((), {}, None, progress)
    assert decision.threshold == progress and not decision.blocked
    shown = b',"threshold":{"so_far":"6","next":"8","of":"USD"}}'
    assert msgspec.json.encode(decision).endswith(shown)
    assert b"threshold" not in msgspec.json.encode(decision_document((), {}))
    answer = access_document("acme", None, (), {}, True, 7, None, progress)
    assert answer.threshold == progress and answer.allowed
    assert b"threshold" not in msgspec.json.encode(access_document("acme", None, (), {}, True, 7))
