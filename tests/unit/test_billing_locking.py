"""Billing's readers-writer lock (``meterline.billing.locking``): readers share it, a
writer is alone, and a waiting writer holds new readers back."""

from __future__ import annotations

import threading
import time

from meterline.billing.locking import ReadersWriterLock


def test_readers_share_the_lock() -> None:
    lock = ReadersWriterLock()
    inside = threading.Barrier(3, timeout=5)

    def read() -> None:
        with lock.reading():
            inside.wait()  # all three readers are inside at once

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert not inside.broken


def test_a_writer_waits_for_readers_and_holds_new_ones_back() -> None:
    lock = ReadersWriterLock()
    order: list[str] = []
    reading = threading.Event()
    release = threading.Event()

    def first_reader() -> None:
        with lock.reading():
            reading.set()
            release.wait(5)
            order.append("reader 1 done")

    def writer() -> None:
        with lock.writing():
            order.append("writer")

    def second_reader() -> None:
        with lock.reading():
            order.append("reader 2")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    reading.wait(5)
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    time.sleep(0.05)  # the writer is waiting now
    threads.append(threading.Thread(target=second_reader))
    threads[2].start()
    time.sleep(0.05)
    assert order == []  # the second reader waits behind the waiting writer
    release.set()
    for thread in threads:
        thread.join(5)
    assert order == ["reader 1 done", "writer", "reader 2"]


def test_the_billing_service_owns_one_lock(tmp_path: object) -> None:
    from pathlib import Path

    from meterline.billing.service import open_billing

    assert isinstance(tmp_path, Path)
    with open_billing(tmp_path / "ledger.db") as billing:
        assert isinstance(billing.lock, ReadersWriterLock)
        assert billing.lock is billing.context.lock
