"""Distributed ingest over real NATS JetStream: publish -> stream -> worker -> ledger.

Every test here talks to real nats-server processes: the shared JetStream server at
nats://127.0.0.1:4222 (each test on its own uniquely named stream, subjects and bucket,
deleted afterwards) or a 3-node cluster started for the test (``tests.support``). A
missing server fails the test with how to start it; nothing is skipped or mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.errors import NotFoundError
from nats.js.kv import VALID_KEY_RE

from meterline.clock import system_clock_us
from meterline.core.events import PreparedEvent, prepare_event
from meterline.core.outcomes import EventOutcome
from meterline.core.partitions import partition_of
from meterline.errors import StoreError
from meterline.ledger.sqlite import SqliteStore
from meterline.stream.access import AccessBoard, customer_key, key_customer
from meterline.stream.connection import connect
from meterline.stream.consumer import PartitionConsumer
from meterline.stream.errors import StreamUnavailable
from meterline.stream.publisher import StreamPublisher
from meterline.stream.settings import MESSAGE_BYTES_MIN, StreamSettings
from meterline.stream.worker import StreamWorker
from tests.conftest import FIXED_NOW_US, event
from tests.support.nats_cluster import NatsCluster

LOCAL_NATS = "nats://127.0.0.1:4222"
START_NATS = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server --"
    " -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)
WAIT_S = 60.0
"""The longest any one condition of these tests is waited for."""

PARTITIONS = 4
CUSTOMERS_PER_PARTITION = 3


def customers_covering_every_partition() -> list[str]:
    """``CUSTOMERS_PER_PARTITION`` customers of each partition, in name order."""
    chosen: dict[int, list[str]] = {partition: [] for partition in range(PARTITIONS)}
    number = 0
    while any(len(names) < CUSTOMERS_PER_PARTITION for names in chosen.values()):
        name = f"cust-{number}"
        names = chosen[partition_of(name, PARTITIONS)]
        if len(names) < CUSTOMERS_PER_PARTITION:
            names.append(name)
        number += 1
    return sorted(name for names in chosen.values() for name in names)


CUSTOMERS = customers_covering_every_partition()


# -- helpers -------------------------------------------------------------------------------


def require_local_nats() -> None:
    """Fail (never skip) with how to start it when the shared NATS server is not there."""
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=2):
            return
    except OSError as error:
        pytest.fail(
            f"NATS JetStream is not reachable at {LOCAL_NATS} ({error}); these tests need it."
            f" Start it with: {START_NATS}",
            pytrace=False,
        )


def prepared(number: int, customer: str, padding: int = 0, **overrides: Any) -> PreparedEvent:
    raw = event(number, customer, **overrides)
    if padding:
        raw["properties"] = {**raw["properties"], "padding": "x" * padding}  # type: ignore[dict-item]
    result = prepare_event(raw, FIXED_NOW_US)
    assert isinstance(result, PreparedEvent), result
    return result


def make_batch(batch: int, per_customer: int, padding: int = 0) -> list[PreparedEvent]:
    """``per_customer`` events of every customer, interleaved, numbered after ``batch``."""
    return [
        prepared(batch * 1000 + position, customer, padding)
        for position in range(per_customer)
        for customer in CUSTOMERS
    ]


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting until {what}")
        await asyncio.sleep(0.05)


async def run_worker_until(
    worker: StreamWorker, condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S
) -> None:
    """Run ``worker`` until ``condition`` holds (failing after ``timeout_s``), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await eventually(
            lambda: condition() or task.done(), f"{what} (worker: {worker.stats()})", timeout_s
        )
        if task.done():
            task.result()
            pytest.fail(f"worker ended before {what}: {worker.stats()}")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def assert_exactly_once(
    store: SqliteStore, expected: list[PreparedEvent], in_order: bool = True
) -> None:
    """The ledger holds each expected event once, with its bytes (in per-customer order
    unless ``in_order`` is False: a delivery lost with a killed node is redelivered after
    the ack wait, after later messages of its partition)."""
    records = list(store.records())
    counts = Counter((record.customer, record.id) for record in records)
    duplicated = [key for key, count in counts.items() if count > 1]
    assert not duplicated, f"stored more than once: {duplicated[:5]}"
    expected_keys = {(item.customer, item.id) for item in expected}
    assert set(counts) == expected_keys
    bodies = {(item.customer, item.id): item.body for item in expected}
    assert all(record.body == bodies[(record.customer, record.id)] for record in records)
    for customer in {item.customer for item in expected} if in_order else ():
        stored = [record.id for record in records if record.customer == customer]
        sent = list(dict.fromkeys(item.id for item in expected if item.customer == customer))
        assert stored == sent, f"order of {customer} changed"


async def delete_stream_and_bucket(settings: StreamSettings) -> None:
    connection = await nats.connect(list(settings.servers), allow_reconnect=False)
    try:
        js = connection.jetstream()
        for name in settings.stream_names():
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
        with contextlib.suppress(NotFoundError):
            await js.delete_key_value(settings.access_bucket)
    finally:
        await connection.close()


async def stream_messages(settings: StreamSettings) -> int:
    connection = await nats.connect(list(settings.servers), allow_reconnect=False)
    try:
        js = connection.jetstream()
        infos = [await js.stream_info(name) for name in settings.stream_names()]
        return sum(info.state.messages for info in infos)
    finally:
        await connection.close()


async def total_pending(settings: StreamSettings) -> int:
    connection = await connect(settings, "test-pending")
    try:
        total = 0
        for partition in range(settings.partitions):
            total += await PartitionConsumer(connection, settings, partition).pending()
        return total
    finally:
        await connection.close()


def unique_settings(servers: str = LOCAL_NATS, **options: Any) -> StreamSettings:
    suffix = uuid4().hex[:12]
    return StreamSettings.from_url(
        servers,
        stream=f"METERLINE_TEST_{suffix}",
        subject_prefix=f"meterline.test.{suffix}",
        access_bucket=f"meterline_test_{suffix}",
        partitions=PARTITIONS,
        **options,
    )


@contextlib.contextmanager
def own_stream(**options: Any) -> Iterator[StreamSettings]:
    """A stream, subjects and bucket of the caller's own on the shared server (which must
    answer), deleted afterwards."""
    require_local_nats()
    made = unique_settings(**options)
    try:
        yield made
    finally:
        asyncio.run(delete_stream_and_bucket(made))


@pytest.fixture
def make_settings() -> Iterator[Callable[..., StreamSettings]]:
    """Unique stream, subjects and bucket on the shared server; deleted afterwards."""
    require_local_nats()
    made: list[StreamSettings] = []

    def make(**options: Any) -> StreamSettings:
        made.append(unique_settings(**options))
        return made[-1]

    yield make
    for settings in made:
        asyncio.run(delete_stream_and_bucket(settings))


def run(scenario: Awaitable[None]) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


def test_every_partition_is_covered_by_the_test_customers() -> None:
    assert {partition_of(customer, PARTITIONS) for customer in CUSTOMERS} == set(range(PARTITIONS))


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:4222", "not a nats:// URL"),
        ("tls://127.0.0.1:4222", "not a nats:// URL"),
        ("127.0.0.1:4222", "not a nats:// URL"),
        ("", "empty server"),
        ("nats://a:4222,,nats://b:4222", "empty server"),
        ("nats://", "names no host"),
        ("nats://h:99999", "not a valid URL"),
        ("nats://h:4222/path", "only nats://host:port"),
    ],
)
def test_bad_stream_urls_are_refused_naming_the_option(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^--stream: .*{reason}"):
        StreamSettings.from_url(url)


def test_settings_parse_several_servers_and_name_subjects_and_consumers() -> None:
    settings = StreamSettings.from_url("nats://10.0.0.1:4222, nats://nats-2")
    assert settings.servers == ("nats://10.0.0.1:4222", "nats://nats-2:4222")
    assert settings.stream == "METERLINE_EVENTS"
    assert settings.subject(3) == "meterline.events.3"
    assert settings.durable(3) == "meterline-worker-p3"
    with pytest.raises(ValueError, match="partition must be from 0 to 7"):
        settings.subject(8)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"partitions": 0}, "partitions must be an integer from 1 to 1024"),
        ({"replicas": 6}, "replicas must be an integer from 1 to 5"),
        ({"stream": "a.b"}, "stream must be letters"),
        ({"subject_prefix": "a.*"}, "subject_prefix token"),
        ({"subject_prefix": "a..b"}, "subject_prefix token"),
        ({"access_bucket": "a b"}, "access_bucket must be letters"),
        ({"max_message_bytes": 2 * 1024 * 1024}, "max_message_bytes must be from"),
        ({"max_message_bytes": 1000}, "max_message_bytes must be from"),
        ({"ack_wait_s": 0}, "ack_wait_s must be above 0"),
    ],
)
def test_settings_refuse_invalid_values(options: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        StreamSettings.from_url(LOCAL_NATS, **options)


# -- access keys ---------------------------------------------------------------------------


def test_customer_keys_escape_what_a_kv_key_cannot_hold() -> None:
    assert customer_key("acme") == "acme"
    assert customer_key("Acme_Corp-2") == "Acme_Corp-2"
    assert customer_key("acme.eu") == "acme=2Eeu"
    assert customer_key("a=b") == "a=3Db"
    assert customer_key("été") == "=C3=A9t=C3=A9"
    for key in ("acme=2eeu", "=41", "a.b", "a=4", "", "=FF"):
        with pytest.raises(ValueError):
            key_customer(key)


@given(st.text(min_size=1, max_size=64))
def test_customer_keys_are_valid_kv_keys_and_decode_back(customer: str) -> None:
    key = customer_key(customer)
    assert VALID_KEY_RE.match(key) and not key.startswith(".") and not key.endswith(".")
    assert key_customer(key) == customer


# -- the shared server ---------------------------------------------------------------------


@pytest.mark.parametrize("streams", [1, 3])
def test_published_batches_are_applied_once_in_order_and_retries_deduplicated(
    make_settings: Callable[..., StreamSettings],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    streams: int,
) -> None:
    """One stream, or the four partitions over three streams (0-1, 2, 3): the same."""
    settings = make_settings(max_message_bytes=MESSAGE_BYTES_MIN, streams=streams)
    batches = [make_batch(0, 5), make_batch(1, 5), make_batch(2, 20, padding=2000)]
    sent = [item for batch in batches for item in batch]
    store = SqliteStore(tmp_path / "ledger.db")
    applied: list[tuple[int, int, PreparedEvent]] = []

    async def scenario() -> None:
        publisher = await StreamPublisher.connect(settings)
        try:
            counts = [
                await publisher.publish(batch, system_clock_us() + number)
                for number, batch in enumerate(batches)
            ]
            assert counts[:2] == [PARTITIONS, PARTITIONS]  # one message per partition
            assert counts[2] > PARTITIONS  # ~500 KB split under the 128 KiB limit
            worker = StreamWorker(
                store,
                settings,
                range(PARTITIONS),
                system_clock_us,
                on_applied=lambda partition, pairs: applied.extend(
                    (partition, sequence, item) for sequence, item in pairs
                ),
            )
            await run_worker_until(
                worker, lambda: store.head()[0] == len(sent), "every event is applied"
            )
            assert_exactly_once(store, sent)
            stats = worker.stats()
            assert stats["events_applied"] == len(sent)
            assert stats["duplicates"] == stats["conflicts"] == stats["store_errors"] == 0
            assert stats["messages"] == sum(counts)
            assert set(stats["last_applied_us"]) == set(range(PARTITIONS))  # type: ignore[call-overload]
            records = {record.sequence: record for record in store.records()}
            assert len(applied) == len(sent)
            for partition, sequence, item in applied:
                assert (records[sequence].customer, records[sequence].id) == (
                    item.customer,
                    item.id,
                )
                assert partition == partition_of(item.customer, PARTITIONS)
            assert await total_pending(settings) == 0

            # The same batch again, even received later: JetStream drops every message.
            messages = await stream_messages(settings)
            assert await publisher.publish(batches[0], system_clock_us()) == PARTITIONS
            assert await publisher.publish(batches[0], system_clock_us() + 5) == PARTITIONS
            assert await stream_messages(settings) == messages
            assert publisher.stats()["duplicate_messages"] == 2 * PARTITIONS

            # The same events in other messages (other ids) reach the ledger as duplicates.
            regrouped = list(reversed(batches[0]))
            conflicting = prepared(0, CUSTOMERS[0], type="llm.changed")  # evt-0, other bytes
            await publisher.publish([*regrouped, conflicting], system_clock_us())
            assert await stream_messages(settings) == messages + PARTITIONS
            head = store.head()
            second = StreamWorker(store, settings, range(PARTITIONS), system_clock_us)
            with caplog.at_level(logging.WARNING, logger="meterline.stream.worker"):
                await run_worker_until(
                    second,
                    lambda: (
                        second.stats()["duplicates"] == len(regrouped)
                        and second.stats()["conflicts"] == 1
                    ),
                    "the regrouped events come back as duplicates",
                )
            assert store.head() == head
            assert second.stats()["events_applied"] == 0
            assert_exactly_once(store, sent)
            (conflict,) = [r for r in caplog.records if "conflicts" in r.getMessage()]
            assert (conflict.customer, conflict.event_id) == (CUSTOMERS[0], "evt-0")  # type: ignore[attr-defined]
        finally:
            await publisher.close()

    try:
        run(scenario())
    finally:
        store.close()


class DownStore:
    """A ledger store whose appends fail (the first ``failures`` of them, or all)."""

    def __init__(self, store: SqliteStore, failures: int | None = None) -> None:
        self.store = store
        self.failures = failures
        self.attempts = 0
        self.partitions_tried: set[int] = set()

    def append(self, batch: list[tuple[int, PreparedEvent]], now_us: int) -> list[EventOutcome]:
        self.attempts += 1
        self.partitions_tried.update(partition_of(item.customer, PARTITIONS) for _, item in batch)
        if self.failures is None or self.attempts <= self.failures:
            raise StoreError("database is down")
        return self.store.append(batch, now_us)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_failed_append_is_never_acknowledged_and_is_applied_later_exactly_once(
    make_settings: Callable[..., StreamSettings], tmp_path: Path
) -> None:
    settings = make_settings(ack_wait_s=1.0)
    sent = make_batch(0, 4) + make_batch(1, 4)
    store = SqliteStore(tmp_path / "ledger.db")

    async def scenario() -> None:
        publisher = await StreamPublisher.connect(settings)
        try:
            published = sum(
                [await publisher.publish(sent[:48], 1), await publisher.publish(sent[48:], 2)]
            )
        finally:
            await publisher.close()
        down = DownStore(store)
        failing = StreamWorker(down, settings, range(PARTITIONS), system_clock_us)  # type: ignore[arg-type]
        await run_worker_until(
            failing,
            lambda: down.partitions_tried == set(range(PARTITIONS)) and down.attempts >= 8,
            "every partition retried its append",
        )
        assert failing.stats()["store_errors"] == down.attempts
        assert failing.stats()["events_applied"] == 0
        assert store.head()[0] == 0
        assert await total_pending(settings) == published  # nothing was acknowledged

        fresh = StreamWorker(store, settings, range(PARTITIONS), system_clock_us)
        await run_worker_until(fresh, lambda: store.head()[0] == len(sent), "redelivery applied")
        assert_exactly_once(store, sent)
        assert await total_pending(settings) == 0
        assert fresh.stats()["duplicates"] == 0

        # A store that recovers: the same worker retries the batch it holds, in order.
        more = make_batch(2, 3)
        publisher = await StreamPublisher.connect(settings)
        try:
            await publisher.publish(more, 3)
        finally:
            await publisher.close()
        flaky = DownStore(store, failures=2)
        worker = StreamWorker(flaky, settings, range(PARTITIONS), system_clock_us)  # type: ignore[arg-type]
        await run_worker_until(
            worker, lambda: store.head()[0] == len(sent) + len(more), "recovered store applied"
        )
        assert worker.stats()["store_errors"] == 2
        assert worker.stats()["events_applied"] == len(more)
        assert_exactly_once(store, sent + more)

    try:
        run(scenario())
    finally:
        store.close()


def test_access_documents_put_on_one_board_reach_every_mirror(
    make_settings: Callable[..., StreamSettings],
) -> None:
    settings = make_settings()

    async def scenario() -> None:
        first_connection = await connect(settings, "test-board-1")
        second_connection = await connect(settings, "test-board-2")
        boards: list[AccessBoard] = []
        try:
            first = await AccessBoard.open(first_connection, settings)
            second = await AccessBoard.open(second_connection, settings)
            boards += [first, second]
            changes: list[tuple[str, dict[str, Any] | None]] = []
            second.watch(lambda customer, document: changes.append((customer, document)))
            acme = {"blocked": False, "balance": Decimal("12.50"), "reasons": []}
            odd = "org.eu/été=1"
            await first.put("acme", acme)
            await first.put(odd, {"blocked": True, "reasons": ["balance_exhausted"]})
            await eventually(lambda: len(second.mirror) == 2, "the second board sees both")
            assert second.mirror["acme"] == acme
            assert second.get("acme")["balance"] == Decimal("12.50")  # type: ignore[index]
            assert second.mirror[odd] == {"blocked": True, "reasons": ["balance_exhausted"]}
            assert first.mirror == second.mirror
            assert changes == [("acme", acme), (odd, second.mirror[odd])]

            late = await AccessBoard.open(second_connection, settings)  # initial values
            boards.append(late)
            assert late.mirror == second.mirror

            await second.put("acme", {**acme, "blocked": True})
            await eventually(lambda: first.mirror["acme"]["blocked"] is True, "update seen")
            await first.delete(odd)
            await eventually(lambda: odd not in second.mirror and odd not in late.mirror, "delete")
            assert changes[-1] == (odd, None)
        finally:
            for board in boards:
                await board.close()
            await first_connection.close()
            await second_connection.close()

    run(scenario())


def test_an_unreachable_server_raises_stream_unavailable() -> None:
    settings = unique_settings(f"nats://127.0.0.1:{free_loopback_port()}")

    async def scenario() -> None:
        with pytest.raises(StreamUnavailable, match="cannot reach NATS"):
            await StreamPublisher.connect(settings, timeout_s=1.0)

    run(scenario())


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- a 3-node cluster ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_replicated_stream_survives_a_node_stopping_and_the_leader_being_killed(
    tmp_path: Path,
) -> None:
    with NatsCluster(tmp_path / "cluster") as cluster:
        settings = unique_settings(",".join(cluster.urls), replicas=3, ack_wait_s=3.0)
        store = SqliteStore(tmp_path / "ledger.db")
        acknowledged: list[PreparedEvent] = []
        refused: list[StreamUnavailable] = []

        async def publish_until_acknowledged(publisher: StreamPublisher, batch: int) -> None:
            """Publish like a client retrying on 503 until the API answers 200."""
            events = make_batch(batch, 3)
            deadline = time.monotonic() + WAIT_S
            while True:
                try:
                    await publisher.publish(events, system_clock_us())
                    acknowledged.extend(events)
                    return
                except StreamUnavailable as error:
                    refused.append(error)
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.25)

        def connected_node(publisher: StreamPublisher) -> int:
            url = publisher.connection.connected_url
            assert url is not None and url.port is not None
            return cluster.index_of_port(url.port)

        async def stream_leader(publisher: StreamPublisher) -> int:
            info = await publisher.connection.jetstream().stream_info(settings.stream)
            assert info.config.num_replicas == 3 and info.cluster is not None
            (leader,) = [node.index for node in cluster.nodes if node.name == info.cluster.leader]
            return leader

        async def put_until_acknowledged(board: AccessBoard, customer: str, blocked: bool) -> None:
            deadline = time.monotonic() + WAIT_S
            while True:
                try:
                    await board.put(customer, {"blocked": blocked})
                    return
                except StreamUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.25)

        async def wait_until_replicas_current(publisher: StreamPublisher) -> None:
            """Wait until the restarted node has caught up: every replica current."""
            js = publisher.connection.jetstream()
            deadline = time.monotonic() + WAIT_S
            while True:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    info = await js.stream_info(settings.stream)
                    replicas = (info.cluster.replicas or []) if info.cluster else []
                    if len(replicas) == 2 and all(
                        peer.current and not peer.offline for peer in replicas
                    ):
                        return
                if time.monotonic() > deadline:
                    pytest.fail("the restarted node did not catch up")
                await asyncio.sleep(0.2)

        async def scenario() -> None:
            publisher = await StreamPublisher.connect(settings)
            reader_connection = await connect(settings, "test-access-reader")
            writer = await AccessBoard.open(publisher.connection, settings)
            reader = await AccessBoard.open(reader_connection, settings)
            await writer.put("acme", {"blocked": False})
            stop = asyncio.Event()
            worker = StreamWorker(store, settings, range(PARTITIONS), system_clock_us)
            working = asyncio.create_task(worker.run(stop))
            try:
                for batch in range(3):
                    await publish_until_acknowledged(publisher, batch)

                # A node shut down cleanly: the publisher's own node.
                stopped = connected_node(publisher)
                await asyncio.to_thread(cluster.stop, stopped)
                for batch in range(3, 6):
                    await publish_until_acknowledged(publisher, batch)
                assert connected_node(publisher) != stopped  # failed over
                await asyncio.to_thread(cluster.start, stopped)
                await cluster.ready()
                await wait_until_replicas_current(publisher)

                # The stream leader killed outright: clients see 503s until a new election.
                killed = await stream_leader(publisher)
                await asyncio.to_thread(cluster.kill, killed)
                for batch in range(6, 9):
                    await publish_until_acknowledged(publisher, batch)
                assert await stream_leader(publisher) != killed
                await put_until_acknowledged(writer, "acme", True)
                await eventually(
                    lambda: reader.get("acme") == {"blocked": True}, "the mirror follows"
                )

                await eventually(
                    lambda: store.head()[0] >= len(acknowledged) or working.done(),
                    f"every acknowledged event is applied (worker: {worker.stats()})",
                )
                assert not working.done(), working
            finally:
                stop.set()
                await asyncio.wait_for(working, 30)
                await writer.close()
                await reader.close()
                await reader_connection.close()
                await publisher.close()
            assert_exactly_once(store, acknowledged, in_order=False)
            assert store.head()[0] == len(acknowledged) == 9 * 3 * len(CUSTOMERS)

        try:
            run(scenario())
        finally:
            store.close()
