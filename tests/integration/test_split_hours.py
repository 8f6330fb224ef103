"""A customer's credit book from hour buckets when its windows end inside an hour (now,
a grant made mid-hour): the hours the edges cut are folded from their raw events on
either side of each edge (``billing.split_hours``). Differential, on both stores: the
book, the credit report and the charges equal the ones re-rated from raw events, with
events exactly at the hour's and the edges' instants, future-timed ones inside the hour,
and late events timed back into hours already folded."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import pytest

from meterline.billing import balances, buckets, split_hours
from meterline.billing.scan import RatingJob
from meterline.billing.service import Billing, open_billing
from meterline.core.buckets import HOUR_US
from meterline.core.events import format_timestamp
from meterline.ledger.location import Location
from tests.property.test_control_laws import CUSTOMERS, Clock, once_stream, once_yaml
from tests.property.test_rating_batches import us

HOUR = us(2026, 10, 12, 7)
"""The hour the clock is in (the credit window that ends now cuts it)."""
GRANT_AT = us(2026, 10, 12, 5, 20) + 500_000
"""A mid-hour grant's instant: a second hour cut by a window edge."""


@pytest.fixture(autouse=True)
def _buckets_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buckets.BUCKETS_SETTING, raising=False)


def _event(customer: str, name: str, at_us: int, tokens: int = 900) -> dict[str, Any]:
    return {
        "id": f"{customer}-{name}",
        "customer": customer,
        "type": "llm",
        "timestamp": format_timestamp(at_us),
        "properties": {"model": "m", "tokens": tokens},
    }


def _edge_events(customer: str, now_us: int, edges: Iterable[int]) -> list[dict[str, Any]]:
    """Events exactly at each edge, the hour it cuts and the next hour, a microsecond
    either side, and a few minutes later (future-timed ones inside the skew limit)."""
    instants = set()
    for edge in edges:
        hour = edge - edge % HOUR_US
        instants.update({hour, hour + 1, edge - 1, edge, edge + 1, hour + HOUR_US - 1})
        instants.update({hour + HOUR_US, edge + 120_000_000})
    return [
        _event(customer, f"edge-{index}", instant, 100 + index)
        for index, instant in enumerate(sorted(i for i in instants if i <= now_us + 240_000_000))
    ]


def _late_events(customer: str, now_us: int) -> list[dict[str, Any]]:
    """Timed back into hours already folded (the cut hours included)."""
    return [
        _event(customer, "late-0", us(2026, 10, 3, 3), 700),
        _event(customer, "late-1", GRANT_AT - 1, 300),
        _event(customer, "late-2", max(HOUR, now_us - 60_000_000), 500),
    ]


def _credit_figures(billing: Billing, customer: str) -> tuple[Any, Any]:
    book, _ = billing.credit_history(customer, billing.clock())
    return book, billing.credits(customer)


def _run(
    new_db: Callable[..., Location], now_us: int, grant: bool, rerated: list[RatingJob]
) -> int:
    """The credit figures of both customers from buckets equal them re-rated; returns how
    many jobs the read from buckets re-rated (``rerated``: every job re-rated)."""
    clock = Clock(GRANT_AT if grant else now_us)
    with open_billing(new_db(), clock) as billing:
        assert billing.context.keeps_buckets
        billing.apply(once_yaml(2))
        edges = [now_us, GRANT_AT] if grant else [now_us]
        if grant:
            for customer in CUSTOMERS[:2]:
                billing.grant(customer, "credits", Decimal(6), "mid-hour top-up")
        clock.now_us = now_us
        stream = once_stream(2)
        for customer in CUSTOMERS[:2]:
            stream += _edge_events(customer, now_us, edges)
        assert billing.ledger.ingest(stream).accepted == len(stream)
        buckets.ensure_built(billing.context)  # fold them, then late events past the fold
        late = [event for customer in CUSTOMERS[:2] for event in _late_events(customer, now_us)]
        assert billing.ledger.ingest(late).accepted == len(late)
        fast = [_credit_figures(billing, customer) for customer in CUSTOMERS[:2]]
        fast_rerated = len(rerated)
        billing.context.keeps_buckets = False  # reads re-rate from raw events
        rerated = [_credit_figures(billing, customer) for customer in CUSTOMERS[:2]]
        assert fast == rerated
        assert any(entry for book, _ in fast for entry in book.entries)
        assert len(rerated) > fast_rerated  # the reference did re-rate
        return fast_rerated


@pytest.mark.parametrize(
    "now_us",
    [HOUR, HOUR + 1, HOUR + 58 * 60_000_000 + 500_000, HOUR + HOUR_US - 1],
    ids=["on-the-hour", "just-past", "mid-hour", "last-microsecond"],
)
@pytest.mark.parametrize("grant", [False, True], ids=["now", "now-and-a-grant"])
def test_credit_book_from_split_hours_equals_the_rerating(
    new_db: Callable[..., Location],
    monkeypatch: pytest.MonkeyPatch,
    now_us: int,
    grant: bool,
) -> None:
    """The book and the credit report from hours and the cut hours' raw events equal the
    re-rated ones; with buckets, the open period is never re-rated."""
    rerated: list[RatingJob] = []
    run_jobs = balances.run_jobs

    def counting(connection: Any, jobs: Iterable[RatingJob]) -> None:
        listed = list(jobs)
        rerated.extend(listed)
        run_jobs(connection, listed)

    monkeypatch.setattr(balances, "run_jobs", counting)
    split_calls: list[int] = []
    split = split_hours.split_hour_rater

    def splitting(*arguments: Any) -> Any:
        found = split(*arguments)
        split_calls.append(found is not None)
        return found

    monkeypatch.setattr(buckets, "split_hour_rater", splitting)
    # from buckets nothing is re-rated; edges inside an hour go through the split
    assert _run(new_db, now_us, grant, rerated) == 0
    assert bool(split_calls) == (now_us % HOUR_US != 0 or grant)
    assert all(split_calls)


def test_the_journal_skips_only_customers_without_grants(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``build_books`` reads no credit history of a customer without a grant: the journal
    equals the one that runs every customer's (a customer with grants, one without, the
    period open and closed)."""
    from meterline.finance import books

    plain = "  - {customer: c2, plan: pro, start: 2026-10-01}\n"
    clock = Clock(HOUR + 1)
    with open_billing(new_db(), clock) as billing:
        billing.apply(once_yaml(1) + plain)
        stream = once_stream(1)
        stream += [_event("c2", f"plain-{n}", us(2026, 10, 2 + n, 5)) for n in range(3)]
        assert billing.ledger.ingest(stream).accepted == len(stream)
        for closed in (False, True):
            if closed:
                clock.now_us = us(2026, 11, 3)
                billing.close(us(2026, 11, 1))
            fast = books.build_books(billing).entries
            with monkeypatch.context() as patched:
                patched.setattr(books, "_holds_grants", lambda *arguments: True)
                assert books.build_books(billing).entries == fast
            assert any(entry.entry_id.startswith("grant:c0") for entry in fast)
