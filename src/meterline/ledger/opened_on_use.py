"""A store beside a ledger that is opened when first used and closed with its holder.

Most commands never touch the payment or workspace records, so billing holds each as an
``OpenedOnUse`` instead of opening a connection for every command.

Invariants: the store is opened at most once between closes, whichever thread asks
first; ``close`` closes it only when it was opened, and a later use opens it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class _Closable(Protocol):
    def close(self) -> None: ...


StoreT = TypeVar("StoreT", bound=_Closable)


class OpenedOnUse(Generic[StoreT]):
    """The store at ``path``, made by ``open_store(path)`` on first use."""

    def __init__(self, path: str, open_store: Callable[[str], StoreT]) -> None:
        self.path = path
        self._open_store = open_store
        self._store: StoreT | None = None
        self._lock = threading.Lock()

    def store(self) -> StoreT:
        with self._lock:
            if self._store is None:
                self._store = self._open_store(self.path)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
