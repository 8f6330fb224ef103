"""The dashboard's unbillable report, kept and extended with only the events past its cut,
is the full re-rating's report on both stores: new unbillable and billable events in the
open period, a late one in a closed period, one of a customer with no contract; a close or
another customer filter rates everything again."""

from __future__ import annotations

from typing import Any

import pytest

from meterline.billing import unbillable_report as reports
from meterline.billing.unbillable_report import UnbillableTracker, unbillable_report
from meterline.core.cuts import Cut
from tests.integration.test_unbillable import (  # noqa: F401 (poisoned: the fixture)
    EVENTS,
    THROUGH,
    Ledger,
    _at,
    llm,
    poisoned,
)

AT = _at("2026-11-23T12:00:00Z")


def scanned_after(monkeypatch: pytest.MonkeyPatch) -> list[Cut | None]:
    """Each rating job's ``after`` cut (None: from the first event), as the tracker runs
    them."""
    seen: list[Cut | None] = []
    run_jobs = reports.run_jobs

    def recording(connection: Any, jobs: list[Any]) -> None:
        seen.extend(job.after for job in jobs)
        run_jobs(connection, jobs)

    monkeypatch.setattr(reports, "run_jobs", recording)
    return seen


def assert_same(
    tracker: UnbillableTracker, ledger: Ledger, seen: list[Cut | None], customer: str | None = None
) -> list[Cut | None]:
    """The tracker's report equals the full re-rating's; the ``after`` cuts of the
    tracker's jobs."""
    billing = ledger.billing
    seen.clear()
    kept = tracker.report(billing, customer, AT).as_dict()
    afters = list(seen)
    assert kept == unbillable_report(billing, customer, AT).as_dict()
    assert kept["customers"]
    return afters


def test_an_extended_report_equals_the_full_rerating(
    poisoned: Ledger,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each report the tracker extends (rating only the new events) equals the full
    re-rating's; a close, or another customer filter, rates everything again."""
    billing = poisoned.billing
    tracker = UnbillableTracker()
    seen = scanned_after(monkeypatch)
    first = assert_same(tracker, poisoned, seen)
    assert first and not any(first)  # the first report rates everything
    billing.close(_at(THROUGH))  # finalized periods: the jobs change
    closed = assert_same(tracker, poisoned, seen)
    assert closed and not any(closed)
    before = billing.context.ledger_cut()
    arrivals = [
        llm("a-new", "acme", "lots", "2026-11-20"),  # unbillable, the open period
        llm("a-fine", "acme", 5, "2026-11-21"),
        llm("b-late", "bad", "late and wrong", "2026-10-30"),  # late, in a closed period
        llm("n-2", "nobody", 9, "2026-11-02"),  # no contract
        llm("l-before", "late", 1, "2026-10-01"),  # before its contract
    ]
    for event in arrivals:
        assert billing.ledger.ingest([event]).accepted == 1
        extended = assert_same(tracker, poisoned, seen)
        assert extended and all(after is not None for after in extended)  # only the new
    assert before != billing.context.ledger_cut()
    kept = tracker.report(billing, None, AT).as_dict()
    found = {
        (record["event_id"], record["reason"])
        for customer in kept["customers"]
        for record in customer["usage"]
    }
    assert {("a-new", "not_a_number"), ("b-late", "not_a_number")} <= found
    assert {("n-2", "no_contract"), ("l-before", "before_contract")} <= found
    filtered = assert_same(tracker, poisoned, seen, "bad")  # another filter: all again
    assert filtered and not any(filtered)
    assert len(EVENTS) + len(arrivals) == billing.context.ledger_cut().events
