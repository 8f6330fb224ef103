"""Where a ledger lives: a SQLite file or a PostgreSQL URL (light: no driver loaded).

The CLI asks these before it opens anything, so ``meterline --help`` and a command on a
SQLite file never import psycopg; ``ledger.database`` re-exports them.

A SQLite ledger ``LEDGER.db`` keeps its rated-usage buckets (a projection, rebuildable
from the events) in a file of its own beside it, ``LEDGER.db-buckets`` (``bucket_file``;
with its own ``-wal`` and ``-shm``), so folding them never takes the ledger's one writer
(``ledger.bucket_records``). Copying a ledger: copy the bucket file with it (the
buckets are kept), or not at all (they are rebuilt on first use); a bucket file that
belongs to another ledger is started over (``bucket_records``' ledger check).
"""

from __future__ import annotations

import re
from pathlib import Path

from meterline.errors import StoreError

__all__ = [
    "BUCKET_FILE_SUFFIX",
    "CONNECT_TIMEOUT_S",
    "POSTGRES_SCHEMES",
    "Location",
    "bucket_file",
    "describe",
    "is_postgres",
    "ledger_exists",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT_S = 10
"""How long opening a PostgreSQL connection may take before the store gives up."""

Location = str | Path

BUCKET_FILE_SUFFIX = "-buckets"
"""What a SQLite ledger's bucket file adds to the ledger file's name."""
_IN_MEMORY = ":memory:"


def bucket_file(location: Location) -> str:
    """The file holding the rated-usage buckets of the SQLite ledger at ``location``
    (an in-memory ledger's are in memory too)."""
    text = str(location)
    return _IN_MEMORY if text in ("", _IN_MEMORY) else text + BUCKET_FILE_SUFFIX


def is_postgres(location: Location) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a SQLite file."""
    return str(location).startswith(POSTGRES_SCHEMES)


def describe(location: Location) -> str:
    """``location`` for messages and logs, without any password in a URL."""
    text = str(location)
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", text) if is_postgres(text) else text


def ledger_exists(location: Location) -> bool:
    """Whether a ledger is already stored at ``location`` (a file, or an events table in
    the URL's schema). ``StoreError`` when PostgreSQL cannot be reached or the URL names
    no schema (as the stores say it)."""
    if not is_postgres(location):
        return Path(location).exists()
    import psycopg  # here: a SQLite ledger never loads the driver

    url = str(location)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as raw:
            schema = raw.execute("SELECT current_schema()").fetchone()
            if schema is None or schema[0] is None:
                raise StoreError(f"{describe(url)}: no schema on the search path")
            row = raw.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()
            return bool(row and row[0])
    except psycopg.OperationalError as error:
        raise StoreError(f"{describe(url)}: cannot connect to PostgreSQL: {error}") from None
