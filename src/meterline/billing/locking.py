"""Billing's readers-writer lock: many readers at once, or one writer alone.

Why billing owns it: the billing store shares one SQLite connection between the threads
of a process, so a reader could see a close's or a credit note's transaction before it
commits (or rolls back), and two closes racing would both number invoices from the same
head. Every caller that runs billing from several threads (the HTTP routes, the
dashboard's pages, the live overrides) takes ``reading()`` or ``writing()`` of the one
lock its ``Billing`` holds (``BillingContext.lock``), so they exclude each other
whichever door they came in by. Within one process only; other processes are kept
apart by the database's own write locks.

A waiting writer holds new readers back, so a steady stream of reads cannot starve a
close. The lock is not reentrant: a writer must not take ``reading()`` inside
``writing()`` (it would wait for itself).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadersWriterLock:
    """Many readers at once or one writer alone; a waiting writer holds new readers back."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            while self._writing or self._writers_waiting:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._condition.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()
