"""Partitions split over several JetStream streams, against the real shared nats-server.

Each stream holds exactly its partitions' messages, a worker applies every event once
across streams, ``meterline status`` sees every stream, and a process configured for
another stream count is refused with ``StreamLayoutError`` (or JetStream refuses its
publish) instead of storing a message where no consumer reads it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from meterline.clock import system_clock_us
from meterline.ledger.sqlite import SqliteStore
from meterline.stream.errors import StreamLayoutError, StreamUnavailable
from meterline.stream.naming import stream_settings
from meterline.stream.publisher import StreamPublisher
from meterline.stream.settings import StreamSettings
from meterline.stream.setup import ensure_stream
from meterline.stream.status import cluster_status
from meterline.stream.worker import StreamWorker
from tests.integration.test_stream import (
    LOCAL_NATS,
    PARTITIONS,
    assert_exactly_once,
    make_batch,
    make_settings,  # noqa: F401  (the fixture)
    run_worker_until,
    total_pending,
)


def with_streams(settings: StreamSettings, streams: int) -> StreamSettings:
    """The same names and partitions with another stream count."""
    return StreamSettings(
        servers=settings.servers,
        stream=settings.stream,
        subject_prefix=settings.subject_prefix,
        partitions=settings.partitions,
        streams=streams,
        access_bucket=settings.access_bucket,
    )


async def messages_by_stream(settings: StreamSettings) -> dict[str, int]:
    connection = await nats.connect(list(settings.servers), allow_reconnect=False)
    try:
        js = connection.jetstream()
        return {
            name: (await js.stream_info(name)).state.messages for name in settings.stream_names()
        }
    finally:
        await connection.close()


@pytest.mark.parametrize("streams", [2, 3])
def test_each_stream_holds_its_partitions_and_a_worker_applies_every_event_once(
    make_settings: Callable[..., StreamSettings],  # noqa: F811
    tmp_path: Path,
    streams: int,
) -> None:
    settings = make_settings(streams=streams)
    batches = [make_batch(0, 4), make_batch(1, 4)]
    sent = [item for batch in batches for item in batch]
    store = SqliteStore(tmp_path / "ledger.db")

    async def scenario() -> None:
        publisher = await StreamPublisher.connect(settings)
        try:
            for number, batch in enumerate(batches):
                assert await publisher.publish(batch, system_clock_us() + number) == PARTITIONS
            # one message per partition and batch, each in its partition's stream only
            expected = {name: 0 for name in settings.stream_names()}
            for partition in range(PARTITIONS):
                expected[settings.stream_of(partition)] += len(batches)
            assert await messages_by_stream(settings) == expected
            assert len([count for count in expected.values() if count]) == streams

            # a retry of a whole batch is dropped by each stream's duplicate window
            assert await publisher.publish(batches[0], system_clock_us()) == PARTITIONS
            assert publisher.stats()["duplicate_messages"] == PARTITIONS
            assert await messages_by_stream(settings) == expected

            worker = StreamWorker(store, settings, range(PARTITIONS), system_clock_us)
            await run_worker_until(
                worker, lambda: store.head()[0] == len(sent), "every event is applied"
            )
            assert_exactly_once(store, sent)
            assert worker.stats()["duplicates"] == 0
            assert await total_pending(settings) == 0

            status = await cluster_status(publisher.connection, settings, system_clock_us(), {})
            assert status["stream"]["count"] == streams
            assert status["stream"]["messages"] == sum(expected.values())
            assert [row["name"] for row in status["streams"]] == list(settings.stream_names())
            assert [row["messages"] for row in status["streams"]] == list(expected.values())
            for row in status["partitions"]:
                assert row["stream"] == settings.stream_of(row["partition"])
                assert row["lag"] == 0
        finally:
            await publisher.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_another_stream_count_is_refused_and_nothing_lands_in_the_wrong_stream(
    make_settings: Callable[..., StreamSettings],  # noqa: F811
    tmp_path: Path,
) -> None:
    two = make_settings(streams=2)
    one, four = with_streams(two, 1), with_streams(two, 4)
    store = SqliteStore(tmp_path / "ledger.db")

    async def scenario() -> None:
        publisher = await StreamPublisher.connect(two)
        try:
            assert await publisher.publish(make_batch(0, 1), system_clock_us()) == PARTITIONS
        finally:
            await publisher.close()
        before = await messages_by_stream(two)

        for other in (one, four):
            with pytest.raises(StreamLayoutError, match=r"^--streams: stream .*-0") as refused:
                await StreamPublisher.connect(other)
            assert f"expects {other.streams} stream(s)" in str(refused.value)
            assert "Changing the stream count" in str(refused.value)

        # a publisher that skips creating the streams is refused by JetStream itself
        stale = await StreamPublisher.connect(one, create_stream=False)
        try:
            with pytest.raises(StreamUnavailable):
                await stale.publish(make_batch(1, 1), system_clock_us())
        finally:
            await stale.close()

        # a worker with the wrong count stops with the error instead of retrying forever
        worker = StreamWorker(store, one, range(PARTITIONS), system_clock_us)
        with pytest.raises(StreamLayoutError):
            await asyncio.wait_for(worker.run(asyncio.Event()), 30)
        assert store.head()[0] == 0

        # nothing was created, moved or added: the two streams hold what they held
        connection = await nats.connect(list(two.servers), allow_reconnect=False)
        try:
            js = connection.jetstream()
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.stream_info(one.stream)
            for index in range(2):
                info = await js.stream_info(two.stream_name(index))
                assert info.config.subjects == two.stream_subjects(index)
        finally:
            await connection.close()
        assert await messages_by_stream(two) == before

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_serve_with_another_stream_count_fails_with_one_line(tmp_path: Path) -> None:
    """``meterline serve --stream`` checks the layout before it starts: a replica given
    another stream count than the deployment's exits 2 naming ``--streams``, not with the
    app's startup traceback."""
    namespace = f"lay{uuid.uuid4().hex[:8]}"
    laid_out = stream_settings(LOCAL_NATS, 2, namespace, 1, 2)

    async def streams(create: bool) -> None:
        connection = await nats.connect(list(laid_out.servers), allow_reconnect=False)
        try:
            js = connection.jetstream()
            if create:
                await ensure_stream(js, laid_out)
            else:
                for name in laid_out.stream_names():
                    await js.delete_stream(name)
        finally:
            await connection.close()

    asyncio.run(streams(create=True))
    try:
        db = tmp_path / "ledger.db"
        served = subprocess.run(
            [
                sys.executable,
                "-m",
                "meterline",
                "serve",
                "--db",
                str(db),
                "--port",
                "1",
                "--stream",
                LOCAL_NATS,
                "--namespace",
                namespace,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert served.returncode == 2, served.stderr
        assert served.stderr.startswith("error: --streams: stream "), served.stderr
        assert "Traceback" not in served.stderr
    finally:
        asyncio.run(streams(create=False))
