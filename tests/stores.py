"""Raw SQL on a test ledger of either store, behind meterline's back (to tamper with it or
to read what it stored)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from meterline.ledger.database import translate_statement
from meterline.ledger.location import is_postgres


def rows(location: Path | str, statement: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
    """Every row ``statement`` (SQLite dialect, ``?`` placeholders) returns."""
    if is_postgres(location):
        with psycopg.connect(str(location), autocommit=True) as connection:
            return connection.execute(translate_statement(statement), parameters).fetchall()
    connection = sqlite3.connect(location)
    try:
        return connection.execute(statement, parameters).fetchall()
    finally:
        connection.close()


def write(location: Path | str, statement: str, parameters: tuple[Any, ...] = ()) -> None:
    """Run one writing ``statement`` (SQLite dialect) and commit it, triggers and all (a
    trigger still in place refuses it)."""
    if is_postgres(location):
        with psycopg.connect(str(location), autocommit=True) as connection:
            connection.execute(translate_statement(statement), parameters)
        return
    connection = sqlite3.connect(location, isolation_level=None)
    try:
        connection.execute(statement, parameters)
    finally:
        connection.close()


def tamper(location: Path | str, *statements: str) -> None:
    """Run ``statements`` with the append-only triggers out of the way (as an attacker with
    write access to the file or the database would), in one transaction that leaves the
    triggers as they were: the edits are the only trace."""
    if is_postgres(location):
        with psycopg.connect(str(location)) as connection:
            connection.execute("SET LOCAL session_replication_role = replica")
            for statement in statements:
                connection.execute(translate_statement(statement))
        return
    connection = sqlite3.connect(location, isolation_level=None)
    try:
        triggers = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall()
        connection.execute("BEGIN")
        for name, _ in triggers:
            connection.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            connection.execute(statement)
        for _, sql in triggers:
            connection.execute(sql)
        connection.execute("COMMIT")
    finally:
        connection.close()


def drop_triggers(location: Path | str, table: str) -> None:
    """Drop ``table``'s append-only triggers for good (as an attacker who wants later edits
    to go through would)."""
    for operation in ("update", "delete"):
        name = f"{table}_append_only_{operation}"
        if is_postgres(location):
            with psycopg.connect(str(location), autocommit=True) as connection:
                connection.execute(f"DROP TRIGGER {name} ON {table}")
        else:
            connection = sqlite3.connect(location, isolation_level=None)
            try:
                connection.execute(f"DROP TRIGGER {name}")
            finally:
                connection.close()
