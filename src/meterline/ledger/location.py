"""Where a ledger lives: a SQLite file or a PostgreSQL URL (light: no driver loaded).

The CLI asks these before it opens anything, so ``meterline --help`` and a command on a
SQLite file never import psycopg; ``ledger.database`` re-exports them.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["POSTGRES_SCHEMES", "Location", "describe", "is_postgres", "ledger_exists"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

Location = str | Path


def is_postgres(location: Location) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a SQLite file."""
    return str(location).startswith(POSTGRES_SCHEMES)


def describe(location: Location) -> str:
    """``location`` for messages and logs, without any password in a URL."""
    text = str(location)
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", text) if is_postgres(text) else text


def ledger_exists(location: Location) -> bool:
    """Whether a ledger is already stored at ``location`` (a file, or an events table)."""
    if not is_postgres(location):
        return Path(location).exists()
    from meterline.ledger.database import PostgresConnection

    connection = PostgresConnection(str(location))
    try:
        row = connection.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()
        return bool(row and row[0])
    finally:
        connection.close()
