"""The ingest lag bound's pure parts: the replica's lag book and the decision
(``core.admission``), the workers' decided progress (``stream.progress``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.admission import (
    OUTSTANDING_MAX,
    RETRY_AFTER_MS_MAX,
    RETRY_AFTER_MS_MIN,
    LagBook,
    parse_lag_bound,
    retry_after_header,
    retry_after_ms,
)
from meterline.stream.progress import (
    DecidedProgress,
    Progress,
    decode_progress,
    encode_progress,
    progress_subject,
    progress_subjects,
)
from meterline.stream.settings import StreamSettings


def test_nothing_outstanding_is_no_lag() -> None:
    book = LagBook(2)
    assert book.lag_us(0, 10_000_000) == 0
    assert book.admit([0, 1], 10_000_000, 50) is None


def test_lag_is_the_oldest_undecided_message_age() -> None:
    book = LagBook(2)
    book.stored(0, 5, at_us=1_000_000)
    book.stored(0, 7, at_us=1_020_000)
    assert book.lag_us(0, 1_100_000) == 100_000
    book.decided(0, 5)
    assert book.lag_us(0, 1_100_000) == 80_000
    assert book.outstanding(0) == 1
    book.decided(0, 9)
    assert book.lag_us(0, 1_100_000) == 0
    assert book.lag_us(1, 1_100_000) == 0


def test_a_message_decided_before_its_ack_is_not_outstanding() -> None:
    book = LagBook(1)
    book.decided(0, 12)  # the worker was faster than the publish answer
    book.stored(0, 12, at_us=0)
    book.stored(0, 11, at_us=0)
    assert book.outstanding(0) == 0
    assert book.lag_us(0, 10**9) == 0


def test_progress_never_moves_back() -> None:
    book = LagBook(1)
    book.stored(0, 3, at_us=0)
    book.decided(0, 3)
    book.decided(0, 1)  # a late, repeated or other worker's message
    book.stored(0, 2, at_us=0)
    assert book.outstanding(0) == 0


def test_admit_refuses_only_batches_touching_a_lagging_partition() -> None:
    book = LagBook(3)
    book.stored(1, 1, at_us=0)
    now_us = 80_000  # partition 1: 80 ms
    assert book.admit([0, 2], now_us, 50) is None
    refusal = book.admit([0, 1], now_us, 50)
    assert refusal is not None
    assert (refusal.partition, refusal.lag_ms, refusal.bound_ms) == (1, 80.0, 50)
    assert refusal.retry_after_ms == 25  # half the bound
    assert book.admit([1], now_us, 100) is None  # within a wider bound
    assert book.admit([1], now_us, 0) is None  # the bound is off


def test_admit_names_the_partition_lagging_most() -> None:
    book = LagBook(3)
    book.stored(0, 1, at_us=50_000)
    book.stored(2, 2, at_us=0)
    refusal = book.admit([0, 1, 2], 200_000, 10)
    assert refusal is not None and refusal.partition == 2


def test_a_dead_worker_keeps_every_batch_of_its_partition_out() -> None:
    book = LagBook(1)
    book.stored(0, 1, at_us=0)
    hints = []
    for now_us in (60_000, 1_000_000, 3_600_000_000):
        refusal = book.admit([0], now_us, 50)
        assert refusal is not None
        hints.append(refusal.retry_after_ms)
    assert hints == [25, 237, RETRY_AFTER_MS_MAX]  # asked again less often as it lasts


def test_memory_stays_bounded_and_the_lag_true() -> None:
    book = LagBook(1)
    for sequence in range(1, OUTSTANDING_MAX + 10):
        book.stored(0, sequence, at_us=sequence)
    assert book.outstanding(0) == OUTSTANDING_MAX
    assert book.lag_us(0, 1_000_000) == 1_000_000 - 1


@given(
    st.lists(st.tuples(st.integers(1, 200), st.integers(0, 10**6)), max_size=60),
    st.lists(st.integers(0, 200), max_size=20),
    st.integers(0, 2 * 10**6),
)
def test_lag_matches_the_definition(
    stored: list[tuple[int, int]], decided: list[int], now_us: int
) -> None:
    """However acks and progress interleave (acks first, then progress, here), the lag is
    the age of the lowest sequence above the progress that was stored after it."""
    book = LagBook(1)
    for sequence, at_us in stored:
        book.stored(0, sequence, at_us)
    for sequence in decided:
        book.decided(0, sequence)
    high = max(decided, default=0)
    waiting = sorted(item for item in stored if item[0] > high)
    expected = max(0, now_us - waiting[0][1]) if waiting else 0
    assert book.lag_us(0, now_us) == expected


def test_the_hint_waits_for_the_next_progress_report() -> None:
    """A partition's lag only grows between reports: a refused client is told to come
    back when the next report is due, learnt from the reports while work was waiting."""
    book = LagBook(1)
    for sequence in range(1, 4):
        book.stored(0, sequence, at_us=0)
    book.decided(0, 1, at_us=100_000)  # messages still outstanding: the worker is busy
    assert book.next_report_ms(0, 100_000) is None  # no interval yet
    book.decided(0, 2, at_us=300_000)  # 200 ms later
    assert book.next_report_ms(0, 300_000) == 200.0
    refusal = book.admit([0], 350_000, 50)  # the oldest (3) stored at 0: 350 ms
    assert refusal is not None
    assert refusal.retry_after_ms == 150  # the report is due 200 ms after the last
    assert book.lagging(350_000, 50)[0] == refusal
    # overdue: a quarter of the interval; far behind: a quarter of the excess, as before
    assert book.next_report_ms(0, 900_000) == 50.0
    assert book.admit([0], 900_000, 50) == book.lagging(900_000, 50)[0]
    assert book.admit([0], 900_000, 50).retry_after_ms == 212  # type: ignore[union-attr]
    book.decided(0, 2, at_us=400_000)  # a repeated report moves nothing
    assert book.next_report_ms(0, 300_000) == 200.0
    book.decided(0, 3, at_us=400_000)  # 100 ms: the average moves a quarter of the way
    assert book.next_report_ms(0, 400_000) == 175.0


def test_an_idle_stretch_is_not_a_report_interval() -> None:
    book = LagBook(1)
    book.stored(0, 1, at_us=0)
    book.decided(0, 1, at_us=10_000)  # nothing outstanding after it
    book.stored(0, 2, at_us=5_000_000)
    book.decided(0, 2, at_us=5_020_000)
    assert book.next_report_ms(0, 5_020_000) is None  # the 5 s idle gap is not a pace


@given(st.floats(0, 10**7, allow_nan=False), st.integers(1, 10**4))
def test_retry_hint_is_bounded(lag_ms: float, bound_ms: int) -> None:
    hint = retry_after_ms(lag_ms, bound_ms)
    assert RETRY_AFTER_MS_MIN <= hint <= RETRY_AFTER_MS_MAX
    assert int(retry_after_header(hint)) >= 1


def test_retry_after_header_rounds_up_to_seconds() -> None:
    assert retry_after_header(10) == "1"
    assert retry_after_header(1000) == "1"
    assert retry_after_header(1001) == "2"


def test_parse_lag_bound() -> None:
    assert parse_lag_bound("50") == 50
    assert parse_lag_bound(" 0 ") == 0
    assert parse_lag_bound("OFF") == 0
    for bad in ("", "-5", "1.5", "fast", "9999999999"):
        with pytest.raises(ValueError):
            parse_lag_bound(bad)


# -- the workers' side ----------------------------------------------------------------------


def test_progress_waits_for_the_engine_in_commit_order() -> None:
    progress = DecidedProgress()
    progress.committed(1, stream_sequence=10, ledger_sequence=100)
    progress.committed(1, stream_sequence=14, ledger_sequence=0)  # duplicates only
    progress.committed(1, stream_sequence=20, ledger_sequence=250)
    assert progress.decide([0, 99]) == {}
    assert progress.decide([0, 100]) == {1: 14}  # the empty commit follows at once
    assert progress.decide([0, 249]) == {}
    assert progress.decide([0, 300]) == {1: 20}
    assert progress.latest() == {1: 20}


def test_progress_reads_the_ledger_partition_it_was_given() -> None:
    progress = DecidedProgress()  # a one-partition ledger fed by a 4-partition stream
    progress.committed(3, stream_sequence=7, ledger_sequence=5, ledger_partition=0)
    assert progress.decide([5]) == {3: 7}


def test_progress_of_a_partition_handed_over_is_forgotten() -> None:
    progress = DecidedProgress()
    progress.committed(0, 1, 1)
    progress.committed(1, 2, 1)
    progress.decide([1, 1])
    progress.committed(1, 3, 5)
    progress.keep([0])
    assert progress.latest() == {0: 1}
    assert progress.decide([9, 9]) == {}


def test_progress_messages_round_trip_and_strays_are_ignored() -> None:
    settings = StreamSettings(("nats://127.0.0.1:4222",), partitions=4)
    assert progress_subject(settings, 3) == "meterline.events.progress.3"
    assert progress_subjects(settings) == "meterline.events.progress.*"
    message = Progress(2, 41, "w1")
    assert decode_progress(encode_progress(message), 4) == message
    assert decode_progress(encode_progress(Progress(4, 1)), 4) is None
    assert decode_progress(encode_progress(Progress(0, -1)), 4) is None
    assert decode_progress(b"not json", 4) is None
    assert decode_progress(b'{"partition": "0", "sequence": 1}', 4) is None


def test_balance_only_changes_wait_and_decisions_go_at_once() -> None:
    import asyncio

    from meterline.stream.service import _gate, _Publishing

    def document(blocked: bool, remaining: str) -> dict[str, object]:
        decision = {"blocked": blocked, "features": [], "remaining": {"credits": remaining}}
        return {"customer": "c", "decision": decision, "remaining": {"credits": remaining}}

    loop = asyncio.new_event_loop()
    try:
        publishing = _Publishing(loop)
        first = document(False, "10")
        assert publishing.sort({"c": first}) == {"c": first}  # never put: at once
        publishing.gates["c"] = _gate(first)
        assert publishing.sort({"c": document(False, "9")}) == {}
        assert publishing.balances == {"c": document(False, "9")}
        crossing = document(True, "0")
        assert publishing.sort({"c": crossing}) == {"c": crossing}
        assert publishing.balances == {}  # the newer document replaced the waiting one
    finally:
        loop.close()


def test_offers_from_other_threads_reach_the_loop_in_one_hand_over() -> None:
    import asyncio
    import threading

    from meterline.stream.service import _Publishing

    loop = asyncio.new_event_loop()
    try:
        publishing = _Publishing(loop)

        def offer_burst() -> None:  # a controller cycle: documents, then their progress
            publishing.offer("a", {"n": 1})
            publishing.offer("b", {"n": 1})
            publishing.offer("a", {"n": 2})
            publishing.offer_progress({0: 5, 1: 3})
            publishing.offer_progress({0: 4})

        thread = threading.Thread(target=offer_burst)
        thread.start()
        thread.join()
        assert publishing.waiting == {} and publishing.handing
        loop.call_soon(loop.stop)
        loop.run_forever()  # runs the one scheduled hand-over
        assert publishing.waiting == {"a": {"n": 2}, "b": {"n": 1}}
        assert publishing.progress == {0: 5, 1: 3}
        assert publishing.wake.is_set() and not publishing.handing
        assert publishing.offered == {} and publishing.offered_progress == {}
        publishing.offer("c", {"n": 1})  # the next burst schedules a hand-over again
        assert publishing.handing
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert publishing.waiting["c"] == {"n": 1}
    finally:
        loop.close()
