"""What ``verify`` checks besides the chain, and ``verify_ledger``, which never raises.

* **The store itself.** A SQLite file is checked with ``PRAGMA quick_check`` before
  anything else reads it: a truncated or corrupt file is one finding naming the file
  (``the SQLite file is damaged (...)``), not a ``DatabaseError`` mid-walk.
* **The append-only triggers.** Every table that refuses UPDATE and DELETE (the events,
  batches and checkpoints, the billing, control and webhook records) must still carry
  both triggers, enabled and as meterline wrote them; on PostgreSQL the function they
  call must still refuse. A missing, disabled or altered trigger is a finding naming its
  table. Opening a SQLite ledger the ordinary way re-creates missing triggers
  (``CREATE TRIGGER IF NOT EXISTS``), so the proof tools look before they open it, and open it with
  ``create=False``, which leaves the schema as found.
* **The chains** (``Ledger.verify``): every partition's events against its batches'
  Merkle roots and chain, the stored partition heads (the next append continues from
  them), and every checkpoint (stored, or exported to a file): the first bad item, its
  partition and sequence. A checkpoint's signature is checked when the public key is
  known (``ledger.checkpoints``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meterline.core.chain import ChainReport
from meterline.core.checkpoint_note import parse_note
from meterline.core.findings import Finding
from meterline.errors import StoreError
from meterline.ledger import (
    billing_records,
    control_records,
    heads,
    payment_records,
    postgres,
    sqlite,
    webhook_records,
)
from meterline.ledger.checkpoints import check_notes
from meterline.ledger.database import (
    _REFUSE_FUNCTION,
    Connection,
    PostgresConnection,
    database_errors,
)
from meterline.ledger.event_ledger import open_store
from meterline.ledger.location import Location, describe, is_postgres
from meterline.ledger.parallel_verify import verify_chains_parallel
from meterline.ledger.store import LedgerStore

_TRIGGER_STATEMENT = re.compile(
    r"CREATE\s+TRIGGER\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+BEFORE\s+(UPDATE|DELETE)\s+ON\s+(\w+)"
    r"\s+BEGIN\s+SELECT\s+RAISE\s*\(\s*ABORT\s*,\s*('(?:[^']|'')*')\s*\)\s*;\s*END\s*;",
    re.IGNORECASE,
)
_SCRIPTS = (
    sqlite._SCHEMA,
    heads.HEADS_SCHEMA,
    postgres._SCHEMA,
    billing_records._TRIGGERS,
    control_records._TRIGGERS,
    payment_records._TRIGGERS,
    webhook_records._SCHEMA,
)


def open_errors() -> tuple[type[Exception], ...]:
    """What opening a store may raise: its own refusal or any statement's error (``except
    open_errors():``, evaluated when an error passes)."""
    return (StoreError, *database_errors())


"""What opening a store that cannot be read raises."""

_LITERAL = r"'(?:[^']|'')*'"


@dataclass(frozen=True, slots=True)
class ExpectedTrigger:
    """One append-only trigger as meterline creates it (its message may differ between
    versions of meterline; its shape may not)."""

    name: str
    operation: str
    table: str

    def is_sqlite(self, sql: str) -> bool:
        """Whether ``sql`` (from ``sqlite_master``, which drops ``IF NOT EXISTS``) is this
        trigger: before the operation, on the table, raising ABORT and nothing else."""
        shape = (
            rf"CREATE TRIGGER {self.name} BEFORE {self.operation} ON {self.table}"
            rf" BEGIN SELECT RAISE\(ABORT, ?{_LITERAL}\) ?; END"
        )
        return re.fullmatch(shape, _collapsed(sql), re.IGNORECASE) is not None

    def is_postgres(self, definition: str) -> bool:
        """Whether ``definition`` (``pg_get_triggerdef``) is this trigger: before the
        operation, for each row of the table, calling ``meterline_refuse``, no condition."""
        shape = (
            rf"CREATE TRIGGER {self.name} BEFORE {self.operation} ON {self.table}"
            rf" FOR EACH ROW EXECUTE FUNCTION meterline_refuse\({_LITERAL}\)"
        )
        return re.fullmatch(shape, _collapsed(_unqualified(definition))) is not None


def expected_triggers() -> dict[str, ExpectedTrigger]:
    """Every append-only trigger any meterline schema creates, by name."""
    found: dict[str, ExpectedTrigger] = {}
    for script in _SCRIPTS:
        for match in _TRIGGER_STATEMENT.finditer(script):
            name, operation, table = match.groups()[:3]
            found[name] = ExpectedTrigger(name, operation.upper(), table)
    return found


APPEND_ONLY_TABLES = tuple(sorted({trigger.table for trigger in expected_triggers().values()}))
"""The tables that refuse UPDATE and DELETE (each present in a ledger is checked)."""


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def _unqualified(text: str) -> str:
    """A PostgreSQL definition without schema qualifications (``"s".events`` -> ``events``)."""
    return re.sub(r'(?<=\s)(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)\.(?=[A-Za-z_"])', "", text)


def _trigger_finding(trigger: ExpectedTrigger, problem: str) -> Finding:
    return Finding(
        "trigger",
        f"append-only trigger {trigger.name} (BEFORE {trigger.operation}) {problem}",
        table=trigger.table,
    )


def check_triggers(connection: Connection) -> list[Finding]:
    """A finding per append-only trigger missing, disabled or altered, on every
    append-only table the store has (and, on PostgreSQL, if the function they call no
    longer refuses the change)."""
    expected = expected_triggers()
    if isinstance(connection, PostgresConnection):
        tables, stored = _postgres_triggers(connection, expected)
    else:
        tables, stored = _sqlite_triggers(connection, expected)
    findings = []
    for trigger in sorted(expected.values(), key=_trigger_order):
        if trigger.table not in tables:
            continue
        found = stored.get(trigger.name)
        if found is None:
            findings.append(_trigger_finding(trigger, "is missing"))
        elif not found[1]:
            findings.append(_trigger_finding(trigger, "is disabled"))
        elif found[0] != trigger.table or not found[2]:
            findings.append(_trigger_finding(trigger, "was altered"))
    if isinstance(connection, PostgresConnection):
        findings += _check_refuse_function(connection, expected, tables)
    return findings


StoredTriggers = dict[str, tuple[str, bool, bool]]
"""A store's triggers by name: (table, enabled, definition as expected)."""


def _sqlite_triggers(
    connection: Connection, expected: dict[str, ExpectedTrigger]
) -> tuple[set[str], StoredTriggers]:
    tables = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    stored = {
        name: (table, True, name in expected and expected[name].is_sqlite(sql or ""))
        for name, table, sql in connection.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"
        )
    }
    return tables, stored


def _trigger_order(trigger: ExpectedTrigger) -> tuple[int, str, str]:
    """Ledger tables first (events, batches, checkpoints), then the rest by name; UPDATE
    before DELETE."""
    rank = {"events": 0, "batches": 1, "checkpoints": 2}.get(trigger.table, 3)
    return (rank, trigger.table, "0" if trigger.operation == "UPDATE" else "1")


def _postgres_triggers(
    connection: PostgresConnection, expected: dict[str, ExpectedTrigger]
) -> tuple[set[str], StoredTriggers]:
    tables = {
        row[0]
        for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    stored = {
        name: (
            table,
            enabled in ("O", "A"),
            name in expected and expected[name].is_postgres(definition),
        )
        for name, table, enabled, definition in connection.execute(
            "SELECT t.tgname, c.relname, t.tgenabled, pg_get_triggerdef(t.oid)"
            " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal"
            " AND t.tgparentid = 0"
        )
    }
    # a partitioned table's triggers are cloned onto each partition's child table
    for name, enabled in connection.execute(
        "SELECT t.tgname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE c.relnamespace = current_schema()::regnamespace AND t.tgparentid <> 0"
    ):
        if enabled not in ("O", "A") and name in stored:
            stored[name] = (stored[name][0], False, stored[name][2])
    return tables, stored


def _check_refuse_function(
    connection: PostgresConnection, expected: dict[str, ExpectedTrigger], tables: set[str]
) -> list[Finding]:
    """A finding if the function every PostgreSQL append-only trigger calls is gone or no
    longer refuses the change."""
    findings = []
    if tables & {trigger.table for trigger in expected.values()}:
        rows = connection.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'meterline_refuse'"
            " AND pronamespace = current_schema()::regnamespace"
        ).fetchall()
        wanted = _refuse_body()
        if not rows or _collapsed(rows[0][0]) != wanted:
            findings.append(
                Finding(
                    "trigger",
                    "function meterline_refuse, which every append-only trigger calls, "
                    + ("is missing" if not rows else "no longer refuses the change"),
                )
            )
    return findings


def _refuse_body() -> str:
    """The body of ``meterline_refuse`` as meterline creates it, spaces collapsed."""
    match = re.search(r"\$\$(.*)\$\$", _REFUSE_FUNCTION, re.DOTALL)
    return _collapsed(match.group(1) if match else "")


def damaged(location: Location, error: BaseException | str) -> Finding:
    """The finding for a SQLite file that cannot be read."""
    detail = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
    return Finding("store", f"the SQLite file is damaged ({detail})", store=describe(location))


def inspect_store(location: Location) -> list[Finding]:
    """Before the stores open it: whether ``location`` can be read as a ledger (a SQLite
    file: ``PRAGMA quick_check``, an events table) and its append-only triggers as found.
    Never raises for a damaged file; a PostgreSQL server that cannot be reached is a
    ``store`` finding too."""
    if is_postgres(location):
        try:
            connection: Any = PostgresConnection(str(location))
        except StoreError as error:
            problem = " ".join(str(error).split(": ", 1)[-1].split())
            return [Finding("store", problem, store=describe(location))]
        try:
            return check_triggers(connection)
        finally:
            connection.close()
    path = Path(location)
    if not path.is_file():
        return [Finding("store", "no such file", store=describe(location))]
    try:
        connection = sqlite3.connect(path)
    except sqlite3.Error as error:
        return [damaged(location, error)]
    try:
        checked = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
        if checked != ["ok"]:
            return [damaged(location, checked[0] if checked else "quick_check answered nothing")]
        ledger = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
        if ledger is None:
            empty = "it is empty" if path.stat().st_size == 0 else "it has no events table"
            problem = f"the SQLite file holds no ledger ({empty}: truncated or not a ledger)"
            return [Finding("store", problem, store=describe(location))]
        return check_triggers(connection)
    except sqlite3.Error as error:
        return [damaged(location, error)]
    finally:
        connection.close()


def ledger_findings(store: LedgerStore, chain: ChainReport, triggers: bool = True) -> list[Finding]:
    """The chain's first bad item, PostgreSQL's chain heads and (with ``triggers``) the
    append-only triggers as they are now, over an open store."""
    findings: list[Finding] = []
    if triggers:
        findings += check_triggers(store._reader())  # type: ignore[attr-defined]
    if chain.finding is not None:
        findings.append(chain.finding)
    return findings


@dataclass
class VerifyReport:
    """What ``verify_ledger`` found: nothing (passed), or findings, first bad item first."""

    store: str
    """The ledger's location, without any password."""
    findings: list[Finding] = field(default_factory=list)
    chain: ChainReport | None = None
    """The walk of the chain (None when the store could not be read)."""
    partitions: int = 1

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def unreadable(self) -> bool:
        """The store could not be read (a damaged file, an unreachable server): nothing
        else could be checked."""
        return any(finding.check == "store" for finding in self.findings)

    def as_dict(self) -> dict[str, Any]:
        chain = self.chain
        return {
            "passed": self.passed,
            "store": self.store,
            "events": None if chain is None else chain.records,
            "head_sequence": None if chain is None else chain.head_sequence,
            "head_hash": None if chain is None else chain.head_hash.hex(),
            "partitions": self.partitions,
            "findings": [finding.as_dict() for finding in self.findings],
        }


def verify_ledger(
    location: Location,
    checkpoint_notes: Iterable[tuple[str, str]] = (),
    public_key: bytes | None = None,
) -> VerifyReport:
    """Verify the ledger at ``location``: the store, its triggers, every partition's
    events, batches and head, every stored checkpoint and each of ``checkpoint_notes``
    (label and signed note, e.g. from an exported file), their signatures when
    ``public_key`` is given. Never raises on what it finds."""
    report = VerifyReport(describe(location))
    report.findings = inspect_store(location)
    if report.unreadable:
        return report
    try:
        store = open_store(location, create=False)
    except open_errors() as error:
        report.findings.append(unreadable(location, error))
        return report
    try:
        report.partitions = store.partitions
        stored = [(f"stored checkpoint {n}", note) for n, note in store.checkpoint_notes()]
        origin = _origin(stored[-1][1]) if stored else None
        heads, problems = check_notes([*stored, *checkpoint_notes], public_key, origin)
        report.chain = verify_chains_parallel(store, heads)
        report.findings += ledger_findings(store, report.chain, triggers=False) + problems
    except database_errors() as error:
        report.findings.append(unreadable(location, error))
    finally:
        store.close()
    return report


def _origin(note: str) -> str | None:
    try:
        return parse_note(note)[0].origin
    except ValueError:
        return None


def unreadable(location: Location, error: BaseException) -> Finding:
    """The finding for a store that failed while being read (or opened)."""
    if is_postgres(location):
        message = str(error).strip().splitlines()
        detail = message[0] if message else type(error).__name__
        return Finding("store", f"cannot be read ({detail})", store=describe(location))
    return damaged(location, error)
