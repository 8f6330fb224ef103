"""Rated-usage buckets kept beside a stream worker: a ``BucketKeeper`` (the fold
``meterline keeper`` runs in a process of its own; here in the test's, nudged after each
commit) folds the committed batches in the background, off the commit path; the buckets
then equal a re-derivation from raw events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meterline.billing import bucket_checks, bucket_keeper, buckets
from meterline.billing.service import open_billing
from meterline.clock import system_clock_us
from meterline.ledger import bucket_records
from meterline.stream.publisher import StreamPublisher
from meterline.stream.settings import StreamSettings
from meterline.stream.worker import StreamWorker
from tests.conftest import FIXED_NOW_US
from tests.integration.test_stream import (
    CUSTOMERS,
    PARTITIONS,
    eventually,
    make_batch,
    own_stream,
    run_worker_until,
)


@pytest.fixture(autouse=True)
def _buckets_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buckets are kept by default (``METERLINE_BUCKETS`` unset)."""
    monkeypatch.delenv(buckets.BUCKETS_SETTING, raising=False)


PRICING = """\
meters:
  - {key: input, event_type: llm.completion, aggregation: sum, property: input_tokens,
     group_by: [model]}
  - {key: calls, event_type: llm.completion, aggregation: count}
plans:
  - key: pro
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: input, model: graduated, tiers: [{up_to: 3000, unit_amount: "0.001"},
             {unit_amount: "0.0002"}]}
          - {meter: calls, model: per_unit, unit_amount: "0.01"}
contracts:
""" + "".join(f"  - {{customer: {c}, plan: pro, start: 2026-10-01}}\n" for c in CUSTOMERS)


@pytest.fixture
def settings() -> Iterator[StreamSettings]:
    """A unique stream on the shared NATS server, deleted afterwards."""
    with own_stream() as made:
        yield made


def test_a_keeper_folds_a_workers_commits_into_buckets(
    settings: StreamSettings, tmp_path: Path
) -> None:
    """Every applied event reaches the buckets without a read asking, and they agree with
    the raw events."""
    batches = [make_batch(0, 2), make_batch(1, 3)]
    sent = sum(len(batch) for batch in batches)
    with open_billing(tmp_path / "ledger.db", lambda: FIXED_NOW_US) as billing:
        billing.apply(PRICING)
        store = billing.ledger.store
        context = billing.context
        keeper = bucket_keeper.BucketKeeper(context, interval_s=60)  # only nudges wake it
        keeper.start()

        def committed(*_: Any) -> None:
            keeper.nudge()

        def folded() -> int:
            mark = bucket_records.watermark(context.connection, context.current().revision)
            return 0 if mark is None else mark.through.events

        async def scenario() -> None:
            publisher = await StreamPublisher.connect(settings)
            try:
                for number, batch in enumerate(batches):
                    await publisher.publish(batch, system_clock_us() + number)
                worker = StreamWorker(
                    store, settings, range(PARTITIONS), system_clock_us, on_committed=committed
                )
                await run_worker_until(worker, lambda: store.head()[0] == sent, "all applied")
                await eventually(lambda: folded() == sent, "every commit folded")
            finally:
                await publisher.close()

        try:
            asyncio.run(scenario())
        finally:
            keeper.stop()
        assert keeper.folded == sent
        rows = bucket_records.revision_buckets(context.connection, context.current().revision)
        calls = sum(row[6] for row in rows if row[3] == "calls")
        assert calls == sent
        assert bucket_checks.check_buckets(context) is None
