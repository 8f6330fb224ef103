"""The shape every record store beside the invoices shares (payments, webhooks, the
workspace): one connection to the ledger's file (or PostgreSQL schema), one lock over it,
its tables created when it opens, and write transactions taken under that lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from meterline.ledger.database import Connection, WriteLock, open_connection, write_transaction


class RecordStore:
    """A store whose ``schema`` (tables, indexes, triggers) is created on open (a no-op
    when it exists); subclasses read through ``_connection`` under ``_lock``."""

    schema: ClassVar[str]
    """The SQL that creates the store's tables (``CREATE ... IF NOT EXISTS``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._connection = open_connection(self.path)
        self._lock = threading.Lock()
        with self._lock:
            self._connection.executescript(self.schema)

    @contextmanager
    def _writing(self, *locks: WriteLock) -> Iterator[Connection]:
        """One write transaction (``write_transaction``, holding ``locks``) under the
        store's lock; rolled back on any error."""
        with self._lock, write_transaction(self._connection, *locks) as connection:
            yield connection

    def close(self) -> None:
        with self._lock:
            self._connection.close()
