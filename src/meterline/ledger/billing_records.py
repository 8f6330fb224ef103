"""Billing records beside the events in the same SQLite file, append-only like them.

Tables: ``configuration_revisions`` (every applied pricing file: its source text, its
canonical content, that content's SHA-256 and the revision's own hash, which covers the
source text too: see ``revision_digest``), ``invoices`` (finalized invoices: canonical
document bytes and their hash; one ``period`` invoice per customer and period, and
off-cycle ``purchase`` and ``threshold`` invoices), ``credit_notes``, ``credit_grants``
(grants made by API or CLI) and ``credit_actions`` (their voids and manual adjustments).
Triggers refuse UPDATE and DELETE on all of them: a correction is a new row (a credit
note, an adjustment on the next invoice, a void), never an edit. ``meterline
audit`` re-derives every stored invoice from the events and the stored revision, so a
row changed behind the triggers' back is caught.

Numbers: revisions, invoices, credit notes and grants are numbered ``MAX + 1``, gap-free
across the ledger, and credit actions are read by number (``live.projection`` asks for
those past the last one it saw). Each kind's writes hold that number's lock
(``revision-numbers``, ``invoice-numbers``, ...; see ``ledger/database.py``), so its
numbers commit in order; nothing else serializes them (a grant with a purchase invoice
holds both, in key order). A threshold invoice's guard (no other threshold invoice of
that customer and period meanwhile) runs under ``invoice-numbers`` too.
Index ``invoices_by_customer``: one customer's invoices by number without reading all
(added on opening an older ledger, either store). Documents are decoded once per
distinct bytes (``ledger.invoice_documents``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from meterline.core.documents import CreditNote, Invoice, decode_credit_note
from meterline.errors import MeterlineError
from meterline.ledger.append_only import append_only_triggers
from meterline.ledger.database import (
    Connection,
    PostgresConnection,
    WriteLock,
    integrity_errors,
    open_connection,
    rows_of,
    write_transaction,
)
from meterline.ledger.invoice_documents import decoded_invoice

_SCHEMA = """
CREATE TABLE IF NOT EXISTS configuration_revisions (
    revision INTEGER PRIMARY KEY,
    applied_at_us INTEGER NOT NULL,
    source_name TEXT NOT NULL,
    source_text TEXT NOT NULL,
    content BLOB NOT NULL,
    content_sha256 BLOB NOT NULL,
    revision_sha256 BLOB
);
CREATE TABLE IF NOT EXISTS invoices (
    invoice_number INTEGER PRIMARY KEY,
    invoice_id TEXT NOT NULL UNIQUE,
    customer TEXT NOT NULL,
    period_start_us INTEGER NOT NULL,
    period_end_us INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    through_sequence INTEGER NOT NULL,
    finalized_at_us INTEGER NOT NULL,
    document BLOB NOT NULL,
    document_sha256 BLOB NOT NULL,
    kind TEXT NOT NULL DEFAULT 'period'
);
CREATE UNIQUE INDEX IF NOT EXISTS invoices_one_per_period
    ON invoices (customer, period_start_us) WHERE kind = 'period';
CREATE INDEX IF NOT EXISTS invoices_by_customer ON invoices (customer, invoice_number);
CREATE TABLE IF NOT EXISTS credit_notes (
    note_number INTEGER PRIMARY KEY,
    note_id TEXT NOT NULL UNIQUE,
    invoice_id TEXT NOT NULL,
    customer TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    document BLOB NOT NULL,
    document_sha256 BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS credit_grants (
    grant_number INTEGER PRIMARY KEY,
    grant_id TEXT NOT NULL UNIQUE,
    customer TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    document BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS credit_actions (
    action_number INTEGER PRIMARY KEY,
    grant_id TEXT NOT NULL,
    customer TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('void', 'adjust')),
    amount TEXT,
    reason TEXT NOT NULL
);
"""
_TABLES = (
    "configuration_revisions",
    "invoices",
    "credit_notes",
    "credit_grants",
    "credit_actions",
)
_TRIGGERS = append_only_triggers(_TABLES, "corrections are new records")
INVOICE_ID_FORMAT = "INV-{:06d}"
GRANT_ID_FORMAT = "G-{:06d}"
_MIGRATE_INVOICES = """
DROP TRIGGER IF EXISTS invoices_append_only_update;
DROP TRIGGER IF EXISTS invoices_append_only_delete;
ALTER TABLE invoices RENAME TO invoices_before_kind;
"""
CREDIT_NOTE_ID_FORMAT = "CN-{:06d}"
REVISION_HASH_SCHEME = "meterline.revision/2"
"""The scheme of ``revision_sha256``; revisions stored before it have none (NULL)."""
_REVISION_COLUMNS = (
    "revision, applied_at_us, source_name, source_text, content, content_sha256, revision_sha256"
)


def revision_digest(
    revision: int,
    applied_at_us: int,
    source_name: str,
    source_text: str,
    content_sha256: bytes,
) -> bytes:
    """A revision's own hash (``revision_sha256``): SHA-256 of the canonical JSON (keys
    sorted, compact, ASCII) of ``{"applied_at_us", "content_sha256", "revision", "scheme",
    "source_name", "source_sha256"}``, the digests as hex: the row's ``content_sha256``
    and SHA-256 of the exact source text (UTF-8). An edit to any column of the row, the
    source text included, is caught by this hash or by ``content_sha256`` (which alone
    covers the content, and is what invoices cite)."""
    header = {
        "applied_at_us": applied_at_us,
        "content_sha256": content_sha256.hex(),
        "revision": revision,
        "scheme": REVISION_HASH_SCHEME,
        "source_name": source_name,
        "source_sha256": hashlib.sha256(source_text.encode("utf-8", "surrogatepass")).hexdigest(),
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).digest()


def revision_problems(revision: Revision) -> list[str]:
    """What does not check in a stored revision: its content against ``content_sha256``,
    and (revisions stored since ``REVISION_HASH_SCHEME``) its other columns, the source
    text included, against ``revision_sha256``."""
    problems = []
    if hashlib.sha256(revision.content).digest() != revision.content_sha256:
        problems.append("content does not match its hash")
    if revision.revision_sha256 is not None:
        digest = revision_digest(
            revision.revision,
            revision.applied_at_us,
            revision.source_name,
            revision.source_text,
            revision.content_sha256,
        )
        if digest != revision.revision_sha256:
            problems.append(
                "the revision hash does not match its source text, name, time or content hash"
            )
    return problems


def _blob(value: object) -> bytes:
    """A stored BLOB as bytes, even if someone rewrote it as TEXT behind our back (audit
    must report such a row as a mismatch, not crash on it)."""
    if isinstance(value, str):
        return value.encode()
    return bytes(value)  # type: ignore[call-overload,no-any-return]


def _revision(row: tuple[Any, ...]) -> Revision:
    number, applied, name, text, content, digest, own = row
    return Revision(
        number,
        applied,
        str(name),
        str(text),
        _blob(content),
        _blob(digest),
        None if own is None else _blob(own),
    )


def _invoice(row: tuple[Any, ...]) -> StoredInvoice:
    number, customer, start, end, revision, through, finalized, document, digest, kind = row
    return StoredInvoice(
        number,
        customer,
        start,
        end,
        revision,
        through,
        finalized,
        _blob(document),
        _blob(digest),
        kind,
    )


def _note(row: tuple[Any, ...]) -> StoredCreditNote:
    number, invoice, customer, created, document, digest = row
    return StoredCreditNote(number, invoice, customer, created, _blob(document), _blob(digest))


def _insert_invoice(connection: Connection, number: int, invoice: StoredInvoice) -> None:
    connection.execute(
        f"INSERT INTO invoices (invoice_number, {_INVOICE_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            number,
            invoice.invoice_id,
            invoice.customer,
            invoice.period_start_us,
            invoice.period_end_us,
            invoice.revision,
            invoice.through_sequence,
            invoice.finalized_at_us,
            invoice.document,
            invoice.document_sha256,
            invoice.kind,
        ),
    )


class BillingConflict(MeterlineError, RuntimeError):
    """A record that would contradict one already stored (e.g. a period finalized twice)."""

    code = "billing_conflict"
    http_status = 409


@dataclass(frozen=True, slots=True)
class Revision:
    revision: int
    applied_at_us: int
    source_name: str
    source_text: str
    content: bytes
    content_sha256: bytes
    revision_sha256: bytes | None = None
    """``revision_digest`` of the row; None on revisions stored before the scheme (their
    source text is not covered by any hash)."""


@dataclass(frozen=True, slots=True)
class StoredInvoice:
    """A stored invoice: its canonical ``document`` bytes (what is hashed) and, decoded
    once on first use, the typed ``record`` of them (``core.documents.Invoice``)."""

    invoice_id: str
    customer: str
    period_start_us: int
    period_end_us: int
    revision: int
    through_sequence: int
    finalized_at_us: int
    document: bytes
    document_sha256: bytes
    kind: str = "period"
    """``period`` (one per customer and period), or off-cycle: ``threshold``, ``purchase``."""
    _record: Invoice | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def record(self) -> Invoice:
        """The invoice as a typed record (``msgspec.ValidationError`` when its bytes are
        not an invoice: a row changed behind the store's back; ``audit`` names it),
        decoded once per distinct document."""
        if self._record is None:
            object.__setattr__(self, "_record", decoded_invoice(self.document))
        return cast("Invoice", self._record)


@dataclass(frozen=True, slots=True)
class StoredGrant:
    """A grant made by API or CLI (contract grants are derived from the configuration)."""

    grant_id: str
    customer: str
    created_at_us: int
    document: bytes


@dataclass(frozen=True, slots=True)
class CreditAction:
    """A void or a manual adjustment of a grant, by hand, with its reason."""

    grant_id: str
    customer: str
    at_us: int
    kind: str
    amount: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class StoredCreditNote:
    """A stored credit note: its canonical bytes and, decoded once, its typed ``record``."""

    note_id: str
    invoice_id: str
    customer: str
    created_at_us: int
    document: bytes
    document_sha256: bytes
    _record: CreditNote | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def record(self) -> CreditNote:
        """The credit note as a typed record (``core.documents.CreditNote``)."""
        if self._record is None:
            object.__setattr__(self, "_record", decode_credit_note(self.document))
        return cast("CreditNote", self._record)


_INVOICE_COLUMNS = (
    "invoice_id, customer, period_start_us, period_end_us, revision, through_sequence,"
    " finalized_at_us, document, document_sha256, kind"
)
_NOTE_COLUMNS = "note_id, invoice_id, customer, created_at_us, document, document_sha256"
REVISION_NUMBERS = WriteLock("revision-numbers")
"""Held while a configuration revision is numbered and stored."""
INVOICE_NUMBERS = WriteLock("invoice-numbers")
"""Held while invoices (period, threshold, purchase) are numbered and stored."""
CREDIT_NOTE_NUMBERS = WriteLock("credit-note-numbers")
"""Held while a credit note is numbered and stored."""
GRANT_NUMBERS = WriteLock("grant-numbers")
"""Held while a credit grant is numbered and stored."""
CREDIT_ACTION_NUMBERS = WriteLock("credit-action-numbers")
"""Held while a credit action (a void, an adjustment) is stored."""


class BillingStore:
    """Configuration revisions, finalized invoices and credit notes in the ledger's file."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        """The billing records at ``path``; ``create=False`` (the proof tools) leaves an
        existing schema exactly as found (no trigger re-created, no column added)."""
        self.path = str(path)
        self._connection = open_connection(self.path)
        self._lock = threading.Lock()
        self._revision_columns = _REVISION_COLUMNS
        with self._lock:
            if create or not self._has_tables():
                self._migrate()
                self._connection.executescript(_SCHEMA + _TRIGGERS)
                self._add_revision_hash()
            elif not self._has_revision_hash():
                self._revision_columns = _REVISION_COLUMNS.replace(
                    "revision_sha256", "NULL AS revision_sha256"
                )

    def _columns(self, table: str) -> list[str]:
        connection = self._connection
        if isinstance(connection, PostgresConnection):
            rows = connection.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ?",
                (table,),
            )
            return [row[0] for row in rows]
        return [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]

    def _has_tables(self) -> bool:
        """Every billing table, in its current shape (``invoices`` with ``kind``)."""
        return all(self._columns(table) for table in _TABLES) and "kind" in self._columns(
            "invoices"
        )

    def _has_revision_hash(self) -> bool:
        return "revision_sha256" in self._columns("configuration_revisions")

    def _migrate(self) -> None:
        """A file made before off-cycle invoices: rebuild ``invoices`` with a ``kind``
        column (every existing row is a period invoice), in one transaction."""
        connection = self._connection
        if isinstance(connection, PostgresConnection):
            return  # PostgreSQL ledgers were created with ``kind``
        columns = [row[1] for row in connection.execute("PRAGMA table_info(invoices)")]
        if not columns or "kind" in columns:
            return
        with write_transaction(connection):  # __init__ holds the store's lock already
            for statement in _MIGRATE_INVOICES.strip().split(";"):
                if statement.strip():
                    connection.execute(statement)
            for statement in _SCHEMA.split(";"):
                if "invoices" in statement and statement.strip():
                    connection.execute(statement)
            connection.execute(
                "INSERT INTO invoices (invoice_number, invoice_id, customer, period_start_us,"
                " period_end_us, revision, through_sequence, finalized_at_us, document,"
                " document_sha256, kind) SELECT invoice_number, invoice_id, customer,"
                " period_start_us, period_end_us, revision, through_sequence, finalized_at_us,"
                " document, document_sha256, 'period' FROM invoices_before_kind"
            )
            connection.execute("DROP TABLE invoices_before_kind")

    def _add_revision_hash(self) -> None:
        """A ledger made before ``revision_sha256``: add the column (NULL on the revisions
        already stored, which keep their content-only check). Appends nothing."""
        if self._has_revision_hash():
            return
        connection = self._connection
        if isinstance(connection, PostgresConnection):
            with connection.migration_lock():
                connection.execute(
                    "ALTER TABLE configuration_revisions"
                    " ADD COLUMN IF NOT EXISTS revision_sha256 BYTEA"
                )
            return
        connection.execute("ALTER TABLE configuration_revisions ADD COLUMN revision_sha256 BLOB")

    # -- configuration --------------------------------------------------------------------

    def add_revision(
        self, applied_at_us: int, source_name: str, source_text: str, content: bytes
    ) -> Revision:
        """Store a revision, numbered next, with its content hash and its own hash
        (``revision_digest``, which covers the source text)."""
        digest = hashlib.sha256(content).digest()
        with self._writing(REVISION_NUMBERS) as connection:
            row = connection.execute("SELECT MAX(revision) FROM configuration_revisions").fetchone()
            number = (row[0] or 0) + 1
            own = revision_digest(number, applied_at_us, source_name, source_text, digest)
            connection.execute(
                f"INSERT INTO configuration_revisions ({_REVISION_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (number, applied_at_us, source_name, source_text, content, digest, own),
            )
        return Revision(number, applied_at_us, source_name, source_text, content, digest, own)

    def revision(self, number: int | None = None) -> Revision | None:
        """Revision ``number``, or the latest when None (None when nothing was applied)."""
        query = f"SELECT {self._revision_columns} FROM configuration_revisions"
        if number is None:
            row = self._connection.execute(query + " ORDER BY revision DESC LIMIT 1").fetchone()
        else:
            row = self._connection.execute(query + " WHERE revision = ?", (number,)).fetchone()
        return None if row is None else _revision(row)

    def revisions(self) -> list[Revision]:
        rows = self._connection.execute(
            f"SELECT {self._revision_columns} FROM configuration_revisions ORDER BY revision"
        )
        return [_revision(row) for row in rows]

    # -- invoices ---------------------------------------------------------------------------

    def next_invoice_id(self) -> str:
        row = self._connection.execute("SELECT MAX(invoice_number) FROM invoices").fetchone()
        return INVOICE_ID_FORMAT.format((row[0] or 0) + 1)

    def add_invoices(
        self,
        invoices: list[StoredInvoice],
        guard: Callable[[Connection], None] | None = None,
    ) -> None:
        """Store finalized invoices atomically (all or none), numbered as given; ``guard``
        runs first inside the transaction and raises ``BillingConflict`` to refuse."""
        try:
            with self._writing(INVOICE_NUMBERS) as connection:
                if guard is not None:
                    guard(connection)
                for invoice in invoices:
                    _insert_invoice(connection, int(invoice.invoice_id.split("-")[1]), invoice)
        except integrity_errors() as error:
            raise BillingConflict(f"invoice already finalized: {error}") from None

    def invoice(self, invoice_id: str) -> StoredInvoice | None:
        row = self._connection.execute(
            f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE invoice_id = ?", (invoice_id,)
        ).fetchone()
        return None if row is None else _invoice(row)

    def invoices(self, customer: str | None = None) -> list[StoredInvoice]:
        """Finalized invoices in number order, all or one customer's."""
        select = f"SELECT {_INVOICE_COLUMNS} FROM invoices"
        rows = rows_of(self._connection, select, "invoice_number", customer)
        return [_invoice(row) for row in rows]

    # -- credit notes -------------------------------------------------------------------------

    def add_credit_note(
        self,
        invoice_id: str,
        customer: str,
        created_at_us: int,
        make_document: Callable[[str], bytes],
    ) -> StoredCreditNote:
        """Number and store a credit note; ``make_document(note_id) -> bytes``."""
        with self._writing(CREDIT_NOTE_NUMBERS) as connection:
            row = connection.execute("SELECT MAX(note_number) FROM credit_notes").fetchone()
            number = (row[0] or 0) + 1
            note_id = CREDIT_NOTE_ID_FORMAT.format(number)
            document: bytes = make_document(note_id)
            digest = hashlib.sha256(document).digest()
            connection.execute(
                f"INSERT INTO credit_notes (note_number, {_NOTE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (number, note_id, invoice_id, customer, created_at_us, document, digest),
            )
        return StoredCreditNote(note_id, invoice_id, customer, created_at_us, document, digest)

    def credit_notes(self, invoice_id: str | None = None) -> list[StoredCreditNote]:
        select = f"SELECT {_NOTE_COLUMNS} FROM credit_notes"
        rows = rows_of(self._connection, select, "note_number", invoice_id, column="invoice_id")
        return [_note(row) for row in rows]

    # -- credit grants and their voids and adjustments -------------------------------------

    def add_grant(
        self,
        customer: str,
        created_at_us: int,
        make_document: Callable[[str], bytes],
        make_invoice: Callable[[str, str], StoredInvoice] | None = None,
    ) -> tuple[StoredGrant, StoredInvoice | None]:
        """Number and store a grant (``make_document(grant_id)``) and, atomically with it,
        its purchase invoice (``make_invoice(grant_id, invoice_id)``) when one is due."""
        locks = (GRANT_NUMBERS,) if make_invoice is None else (GRANT_NUMBERS, INVOICE_NUMBERS)
        with self._writing(*locks) as connection:
            row = connection.execute("SELECT MAX(grant_number) FROM credit_grants").fetchone()
            number = (row[0] or 0) + 1
            grant_id = GRANT_ID_FORMAT.format(number)
            document = make_document(grant_id)
            connection.execute(
                "INSERT INTO credit_grants (grant_number, grant_id, customer, created_at_us,"
                " document) VALUES (?, ?, ?, ?, ?)",
                (number, grant_id, customer, created_at_us, document),
            )
            invoice = None
            if make_invoice is not None:
                row = connection.execute("SELECT MAX(invoice_number) FROM invoices").fetchone()
                invoice_number = (row[0] or 0) + 1
                invoice = make_invoice(grant_id, INVOICE_ID_FORMAT.format(invoice_number))
                _insert_invoice(connection, invoice_number, invoice)
        return StoredGrant(grant_id, customer, created_at_us, document), invoice

    def grants(self, customer: str | None = None) -> list[StoredGrant]:
        select = "SELECT grant_id, customer, created_at_us, document FROM credit_grants"
        rows = rows_of(self._connection, select, "grant_number", customer)
        return [StoredGrant(g, c, t, _blob(d)) for g, c, t, d in rows]

    def add_action(self, action: CreditAction) -> None:
        with self._writing(CREDIT_ACTION_NUMBERS) as connection:
            connection.execute(
                "INSERT INTO credit_actions (grant_id, customer, at_us, kind, amount, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    action.grant_id,
                    action.customer,
                    action.at_us,
                    action.kind,
                    action.amount,
                    action.reason,
                ),
            )

    def actions(self, customer: str) -> list[CreditAction]:
        rows = self._connection.execute(
            "SELECT grant_id, customer, at_us, kind, amount, reason FROM credit_actions"
            " WHERE customer = ? ORDER BY action_number",
            (customer,),
        )
        return [CreditAction(*row) for row in rows]

    @contextmanager
    def _writing(self, *locks: WriteLock) -> Iterator[Connection]:
        """One write transaction (``write_transaction``, holding ``locks``) under the
        store's lock."""
        with self._lock, write_transaction(self._connection, *locks) as connection:
            yield connection

    def close(self) -> None:
        self._connection.close()
