"""Payment records beside the invoices in the ledger's file (or PostgreSQL schema),
append-only like them.

Table ``payment_records``: each payment, refund and write-off recorded against an
invoice: the caller's payment id, the customer, the invoice, the kind, the amount (exact
decimal text) in the invoice's currency, when it was recorded, and the request that made
it (canonical JSON). ``UNIQUE (customer, payment_id)`` makes recording idempotent: the
same id with the same request is the record already stored, with another request a
``PaymentConflict``. Triggers refuse UPDATE and DELETE: a payment is undone by a refund,
never by an edit.

Locks (PostgreSQL; SQLite has one writer per file): a record is decided and stored under
its invoice's ``payment-invoice`` lock, reading the invoice's earlier records inside the
same transaction, so two payments racing on one invoice cannot both take its last open
amount; records of different invoices never wait for each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterline.ledger.append_only import append_only_triggers
from meterline.ledger.billing_records import BillingConflict
from meterline.ledger.database import (
    Connection,
    WriteLock,
    integrity_errors,
    rows_of,
)
from meterline.ledger.record_store import RecordStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payment_records (
    record_number INTEGER PRIMARY KEY,
    payment_id TEXT NOT NULL,
    customer TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('payment', 'refund', 'write_off')),
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    request TEXT NOT NULL,
    UNIQUE (customer, payment_id)
);
CREATE INDEX IF NOT EXISTS payment_records_by_invoice
    ON payment_records (invoice_id, record_number);
"""
_TABLES = ("payment_records",)
_TRIGGERS = append_only_triggers(_TABLES, "a payment is undone by a refund")
INVOICE_LOCK = "payment-invoice"
"""The ``WriteLock`` purpose of one invoice's payment records (keyed by the invoice id)."""
_COLUMNS = "record_number, payment_id, customer, invoice_id, kind, amount, currency, at_us, request"


class PaymentConflict(BillingConflict):
    """A payment id already recorded for the customer with another request."""

    code = "payment_conflict"


@dataclass(frozen=True, slots=True)
class StoredPayment:
    """A payment, refund or write-off as stored (``number``: the order of recording)."""

    number: int
    payment_id: str
    customer: str
    invoice_id: str
    kind: str
    amount: Decimal
    currency: str
    at_us: int
    request: str


def _payment(row: tuple[Any, ...]) -> StoredPayment:
    number, payment_id, customer, invoice_id, kind, amount, currency, at_us, request = row
    return StoredPayment(
        int(number),
        payment_id,
        customer,
        invoice_id,
        kind,
        Decimal(amount),
        currency,
        int(at_us),
        request,
    )


Decision = Callable[[list[StoredPayment]], tuple[str, Decimal, str]]
"""Given the invoice's records so far: the new record's kind, amount and currency (or an
exception, which stores nothing)."""


class PaymentStore(RecordStore):
    """Payments, refunds and write-offs in the ledger's file."""

    schema = _SCHEMA + _TRIGGERS

    def _same(self, connection: Connection, customer: str, payment_id: str) -> Any:
        return connection.execute(
            f"SELECT {_COLUMNS} FROM payment_records WHERE customer = ? AND payment_id = ?",
            (customer, payment_id),
        ).fetchone()

    @staticmethod
    def _replayed(row: tuple[Any, ...], request: str) -> StoredPayment:
        stored = _payment(row)
        if stored.request != request:
            raise PaymentConflict(
                f"payment {stored.payment_id!r} was recorded with another request"
                f" ({stored.kind} of {stored.amount} {stored.currency} on {stored.invoice_id})"
            )
        return stored

    def record(
        self,
        customer: str,
        payment_id: str,
        invoice_id: str,
        at_us: int,
        request: str,
        decide: Decision,
    ) -> tuple[StoredPayment, bool]:
        """Record ``payment_id`` for ``customer`` on ``invoice_id`` as ``decide`` says, under
        the invoice's lock; ``(record, True)`` when stored now, ``(record, False)`` when the
        same request was recorded before. ``PaymentConflict`` for another request."""
        try:
            with self._writing(WriteLock(INVOICE_LOCK, invoice_id)) as connection:
                row = self._same(connection, customer, payment_id)
                if row is not None:
                    return self._replayed(row, request), False
                kind, amount, currency = decide(self._of_invoice(connection, invoice_id))
                row = connection.execute(
                    "INSERT INTO payment_records (payment_id, customer, invoice_id, kind, amount,"
                    " currency, at_us, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    f" RETURNING {_COLUMNS}",
                    (payment_id, customer, invoice_id, kind, str(amount), currency, at_us, request),
                ).fetchone()
            return _payment(row), True
        except integrity_errors():  # the same id recorded meanwhile on another invoice
            with self._lock:
                row = self._same(self._connection, customer, payment_id)
            if row is None:
                raise
            return self._replayed(row, request), False

    @staticmethod
    def _of_invoice(connection: Connection, invoice_id: str) -> list[StoredPayment]:
        rows = connection.execute(
            f"SELECT {_COLUMNS} FROM payment_records WHERE invoice_id = ? ORDER BY record_number",
            (invoice_id,),
        )
        return [_payment(row) for row in rows.fetchall()]

    def of_invoice(self, invoice_id: str) -> list[StoredPayment]:
        """An invoice's records in the order they were recorded."""
        with self._lock:
            return self._of_invoice(self._connection, invoice_id)

    def payment(self, customer: str, payment_id: str) -> StoredPayment | None:
        with self._lock:
            row = self._same(self._connection, customer, payment_id)
        return None if row is None else _payment(row)

    def payments(self, customer: str | None = None) -> list[StoredPayment]:
        """Every record (or one customer's) in the order they were recorded."""
        with self._lock:
            rows = rows_of(
                self._connection,
                f"SELECT {_COLUMNS} FROM payment_records",
                "record_number",
                customer,
            )
        return [_payment(row) for row in rows]

    def customers_after(self, number: int) -> tuple[int, set[str]]:
        """The newest record's number (0: none), and the customers with a record after
        ``number`` (how the live engine hears of records another process made)."""
        with self._lock:
            newest = self._connection.execute(
                "SELECT COALESCE(MAX(record_number), 0) FROM payment_records"
            ).fetchone()[0]
            if newest <= number:
                return int(newest), set()
            rows = self._connection.execute(
                "SELECT DISTINCT customer FROM payment_records WHERE record_number > ?",
                (number,),
            ).fetchall()
        return int(newest), {str(row[0]) for row in rows}
