"""Finalized periods read in batches (``drafts._finalized_from_buckets``: each billing
period's closed buckets in one statement, the late events of invoices sharing a cut in
one more), on both stores: what it gives equals, field for field, what reading each
invoice on its own gives (``drafts._finalized_one``: its buckets by its customer's key,
its late events through the ledger's head), on a closed October, then with a late event
into it, then with November closed too (two billing periods), then under a newer
revision (the older revision's closed buckets); and unit economics built either way are
identical to the last digit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meterline.billing import drafts
from meterline.billing.scan import RatingJob
from meterline.billing.service import Billing
from meterline.ledger.billing_records import StoredInvoice
from meterline.ledger.location import Location
from tests.integration.test_buckets import kept
from tests.integration.test_economics_batched import november_stream, pricing, shown
from tests.property.test_control_laws import CUSTOMERS, Clock, once_stream
from tests.property.test_rating_batches import us


def _jobs(billing: Billing) -> list[tuple[StoredInvoice, RatingJob]]:
    """Each finalized period invoice with a fresh re-rating job (as ``rated_periods``)."""
    context = billing.context
    pairs = []
    for stored in context.period_invoices():
        pairs.append((stored, drafts.finalized_job(context, stored)))
    return pairs


def _one_by_one(billing: Billing) -> Callable[..., None]:
    def read(context: object, pairs: list[tuple[StoredInvoice, RatingJob]]) -> None:
        for stored, job in pairs:
            drafts._finalized_one(billing.context, stored, job)

    return read


def _compared(billing: Billing, monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Batched and one-by-one reads of every finalized period are equal (each job's days
    and priced lines, and the unit economics made of them); per invoice, whether it was
    read from the buckets."""
    from meterline.finance.economics import usage_slices

    batched = _jobs(billing)
    drafts._finalized_from_buckets(billing.context, batched)
    alone = _jobs(billing)
    _one_by_one(billing)(billing.context, alone)
    read: dict[str, bool] = {}
    for (stored, job), (_, other) in zip(batched, alone, strict=True):
        assert job.days == other.days, stored.invoice_id
        read[stored.invoice_id] = job.days is not None
        if job.days is not None:
            currency = stored.record.currency
            assert repr(job.rater.lines(currency, job.configuration)) == repr(
                other.rater.lines(currency, other.configuration)
            )
    slices = usage_slices(billing)
    with monkeypatch.context() as patch:
        patch.setattr(drafts, "_finalized_from_buckets", _one_by_one(billing))
        assert shown(slices) == shown(usage_slices(billing))
    assert shown(usage_slices(billing, customer=CUSTOMERS[2])) == shown(
        [item for item in slices if item.customer == CUSTOMERS[2]]
    )
    return read


def test_batched_finalized_reads_equal_the_per_invoice_reads(
    new_db: Callable[..., Location], monkeypatch: pytest.MonkeyPatch
) -> None:
    with kept(new_db(), pricing("America/New_York")) as billing:
        clock = billing.context.clock
        assert isinstance(clock, Clock)
        assert billing.ledger.ingest(once_stream(3)).accepted == 36
        clock.now_us = us(2026, 11, 2)
        october = billing.close(us(2026, 11, 1, 6))
        assert len(october) == 3
        assert all(_compared(billing, monkeypatch).values())  # every one from buckets

        late_october = {**once_stream(1)[3], "id": "late-october"}
        assert billing.ledger.ingest([late_october]).accepted == 1
        read = _compared(billing, monkeypatch)
        late_one = next(i for i in billing.context.period_invoices() if i.customer == CUSTOMERS[0])
        assert not read[late_one.invoice_id] and sum(read.values()) == 2  # it is re-rated

        november = november_stream()
        clock.now_us = us(2026, 12, 2)
        assert billing.ledger.ingest(november).accepted == len(november)
        assert len(billing.close(us(2026, 12, 1, 6))) == 3
        read = _compared(billing, monkeypatch)
        assert len(read) == 6 and sum(read.values()) == 5  # only the late October re-rated

        december = pricing("America/New_York", repriced=True).replace("2026-11-15", "2026-12-15")
        billing.apply(december)  # October and November are an older revision's now
        read = _compared(billing, monkeypatch)
        assert len(read) == 6 and sum(read.values()) == 5
