"""The append-only rule of the record tables, as SQL: triggers that refuse UPDATE and
DELETE on a table, saying why (the billing, payment, control and workspace records).

Invariant: a table given here is only ever appended to; a correction is a new record.
The triggers are written in SQLite's dialect, in the one statement form
(``CREATE TRIGGER IF NOT EXISTS <name> BEFORE UPDATE|DELETE ON <table> BEGIN SELECT
RAISE(ABORT, '<message>'); END;``) that ``ledger.database`` translates for PostgreSQL and
``ledger.integrity`` reads back to check that each trigger is still there.
"""

from __future__ import annotations


def append_only_triggers(tables: tuple[str, ...], why: str) -> str:
    """SQL that makes each of ``tables`` refuse UPDATE and DELETE, saying ``why``."""
    return "".join(
        f"""
CREATE TRIGGER IF NOT EXISTS {table}_append_only_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, '{table} are append-only: {why}'); END;
CREATE TRIGGER IF NOT EXISTS {table}_append_only_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, '{table} are append-only: {why}'); END;
"""
        for table in tables
    )
