"""Where a ledger lives: a SQLite file or a PostgreSQL URL (light: no driver loaded).

The CLI asks these before it opens anything, so ``meterline --help`` and a command on a
SQLite file never import psycopg; ``ledger.database`` re-exports them.
"""

from __future__ import annotations

import re
from pathlib import Path

from meterline.errors import StoreError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "POSTGRES_SCHEMES",
    "Location",
    "describe",
    "is_postgres",
    "ledger_exists",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT_S = 10
"""How long opening a PostgreSQL connection may take before the store gives up."""

Location = str | Path


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
