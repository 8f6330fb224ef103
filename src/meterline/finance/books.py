"""The books: the general journal derived from what billing stored (the shell).

Gathers every finalized invoice, credit note and customer's credit book, and asks the
pure core (``core.books``, ``core.revrec``) for their journal entries:

- invoices and credit notes: ``core.books.document_entries`` / ``credit_note_entries``,
  billed on the day (in the invoice's time zone) they were finalized or issued;
- payments, refunds and write-offs: ``core.payments.movement_entries`` (``payment_journal``);
- credit grants: ``core.revrec.credit_entries`` over the movements of each customer's
  credit book (consumption, releases, expiry, rollover, voids), with the grant's breakage
  as the contract declares it (``credits.breakage``, per grant or for the contract), and
  each change of its expected rate in force by the as-of day (its catch-up booked on the
  change's day; a change still to come books nothing yet).
  A purchase posts to unbilled receivable; the invoice line that bills it clears it.
  A customer whose credit inputs hold no grant has no credit book entries (no charge
  enters a book without a grant): its credit history is not read at all.

Nothing here is stored: the journal is re-derived from the ledger and the billing
records every time, so it can never drift from them (``meterline reconcile`` proves the
totals agree). Only a finalized invoice's own entries are kept in memory
(``_invoice_entries``, at most ``BOOKED_INVOICES_KEPT_MAX``), under its id, its
document's bytes and its finalization instant: they are a pure function of those, so a
kept one is what deriving it again gives (a row changed behind the store's back is a
different key).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from meterline.billing.service import Billing, BillingError, Loaded
from meterline.core.books import credit_note_entries, document_entries
from meterline.core.breakage import RateChange
from meterline.core.credit_records import Entry as CreditEntry
from meterline.core.credits import CreditBook, Grant
from meterline.core.documents import Invoice
from meterline.core.exchange import ReportingCurrency
from meterline.core.journal import (
    CHART,
    DEFERRED_CREDITS,
    DEFERRED_FEES,
    RECEIVABLE,
    UNBILLED,
    Balances,
    JournalEntry,
    Rollforward,
    rollforward,
    trial_balance,
    waterfall,
)
from meterline.core.model import CreditTerms as ContractCredits
from meterline.core.payments import movement_entries
from meterline.core.periods import local_date, local_midnight_us
from meterline.core.revrec import CreditTerms, GrantAccount, Movement, credit_entries
from meterline.ledger.billing_records import StoredInvoice

ZERO = Decimal(0)
MOVEMENT_KINDS = {
    "consume": "consume",
    "settle": "consume",
    "release": "release",
    "expire": "expire",
    "rollover": "rollover",
    "void": "void",
}
"""Credit book entry kinds that move revenue, and the revenue movement each one is."""


@dataclass(slots=True)
class Books:
    """The journal (entries in day order) and each grant's revenue figures."""

    entries: list[JournalEntry]
    grants: dict[str, GrantAccount] = field(default_factory=dict)
    as_of: date | None = None
    reporting: ReportingCurrency | None = None
    """The pricing file's reporting currency: each row also carries its amount in it."""

    def currencies(self) -> list[str]:
        return sorted({p.currency for item in self.entries for p in item.postings})

    def trial_balance(self, through: date | None = None) -> Balances:
        return trial_balance(self.entries, through)

    def waterfall(self) -> dict[tuple[str, str, str], Decimal]:
        return waterfall(self.entries)

    def months(self) -> list[str]:
        return sorted({day.strftime("%Y-%m") for day in {item.day for item in self.entries}})

    def rollforwards(self, start: date, end: date) -> list[Rollforward]:
        """Deferred revenue (fees, credits) over [start, end] per currency."""
        return [
            rollforward(self.entries, account, currency, start, end)
            for currency in self.currencies()
            for account in (DEFERRED_FEES, DEFERRED_CREDITS)
        ]

    def for_customer(self, customer: str) -> list[JournalEntry]:
        return [item for item in self.entries if item.customer == customer]


def _day(timezone: str, instant_us: int) -> date:
    return local_date(timezone, instant_us)


BOOKED_INVOICES_KEPT_MAX = 20_000
"""Finalized invoices whose decoded document and journal entries are kept in memory
(a dashboard builds the books after every ledger change; past this many they start
over)."""

_booked: dict[tuple[str, bytes, int], tuple[Invoice, list[JournalEntry]]] = {}
_booked_lock = threading.Lock()


def _invoice_entries(stored: StoredInvoice) -> tuple[Invoice, list[JournalEntry]]:
    """The invoice's document and its journal entries (billed on its finalization day in
    its time zone), derived once per id, document bytes and finalization instant."""
    key = (stored.invoice_id, stored.document, stored.finalized_at_us)
    with _booked_lock:
        found = _booked.get(key)
    if found is not None:
        return found
    document = stored.record
    billed = _day(document.timezone or "UTC", stored.finalized_at_us)
    found = (document, document_entries(document, billed, f"invoice:{stored.invoice_id}"))
    with _booked_lock:
        if len(_booked) >= BOOKED_INVOICES_KEPT_MAX:
            _booked.clear()
        _booked[key] = found
    return found


def build_books(billing: Billing, as_of_us: int | None = None) -> Books:
    """The journal of everything billing knows as of ``as_of_us`` (now)."""
    at = billing.clock() if as_of_us is None else as_of_us
    entries: list[JournalEntry] = []
    documents: dict[str, Invoice] = {}
    for stored in billing.store.invoices():
        if stored.finalized_at_us > at:
            continue
        document, booked = _invoice_entries(stored)
        documents[stored.invoice_id] = document
        entries += booked
    for note in billing.store.credit_notes():
        if note.created_at_us > at or note.invoice_id not in documents:
            continue
        invoice = documents[note.invoice_id]
        issued = _day(invoice.timezone or "UTC", note.created_at_us)
        entries += credit_note_entries(note.record, invoice, issued)
    grant_accounts: dict[str, GrantAccount] = {}
    loaded = billing.load()
    if loaded is not None:
        for contract in loaded.configuration.contracts:
            if contract.start_us > at:
                continue
            try:
                if not _holds_grants(billing, loaded, contract.customer, at):
                    continue  # no charge enters its book, which holds no grant (skipped below)
                book, inputs = billing.credit_history(contract.customer, at)
            except BillingError:
                continue
            if not book.grants:
                continue
            credit, accounts = grant_journal(
                book,
                inputs.terms,
                contract.customer,
                contract.timezone,
                _day(contract.timezone, at),
            )
            entries += credit
            grant_accounts.update(accounts)
    entries += payment_journal(billing, at)
    entries.sort(key=lambda item: (item.day, item.entry_id))
    reporting = None if loaded is None else loaded.configuration.reporting
    return Books(entries, grant_accounts, _day("UTC", at), reporting)


def _holds_grants(billing: Billing, loaded: Loaded, customer: str, at: int) -> bool:
    """Whether the customer's credit inputs up to ``at`` (those ``credit_history`` runs
    on) hold a grant: without one only charges in no unit enter its book
    (``CreditInputs.relevant``), so the book has no grant and its charges (one rating of
    each open period, and every invoice's stored charges) need not be read."""
    configuration = loaded.configuration
    contract = billing.context.contract(loaded, customer)
    return bool(billing.credit_inputs(configuration, contract, at).grants)


def payment_journal(billing: Billing, at_us: int) -> list[JournalEntry]:
    """Payments, refunds and write-offs recorded by ``at_us``, as journal entries
    (``core.payments.movement_entries``: cash, receivable, customer credit, bad debt)."""
    entries: list[JournalEntry] = []
    for standing, movements in billing.receivables(at_us=at_us):
        entries += movement_entries(standing.receivable, movements)
    return entries


def collected(entries: Iterable[JournalEntry]) -> Decimal:
    """What payments, refunds and write-offs took off accounts receivable (positive when
    they collected): what reconciling receivables with invoices adds back."""
    return -sum(
        (
            posting.amount
            for item in entries
            if item.cause.startswith("payment:")
            for posting in item.postings
            if posting.account == RECEIVABLE
        ),
        ZERO,
    )


def grant_journal(
    book: CreditBook,
    terms: ContractCredits,
    customer: str,
    timezone: str,
    through: date | None = None,
) -> tuple[list[JournalEntry], dict[str, GrantAccount]]:
    """The revenue journal of one customer's credit book (its grants named
    ``customer/grant``: grant keys repeat across customers), with the breakage rate
    changes effective by ``through`` (all when None)."""
    grants = [
        _terms(grant, terms, customer, timezone, through)
        for grant in book.grants.values()
        if grant.source != "rollover" and grant.amount > 0
    ]
    known = {item.grant_id for item in grants}
    own = f"{customer}/"
    rolled_at = {
        (entry.credit.removeprefix("grant:"), entry.at_us)
        for entry in book.entries
        if entry.kind == "rollover"
    }
    movements: list[Movement] = []
    for entry in book.entries:
        kind = MOVEMENT_KINDS.get(entry.kind)
        if kind is None or entry.grant is None:
            continue
        grant_id = entry.grant
        target = None
        if kind == "rollover":
            target, grant_id = own + grant_id, entry.credit.removeprefix("grant:")
            known.add(target)
        elif kind == "expire" and (grant_id, entry.at_us) in rolled_at:
            continue  # the reset's rollover ends the grant and recognizes what it lost
        grant_id = own + grant_id
        if grant_id not in known:
            continue
        day = _day(timezone, _used_at(entry, terms.breakage_timing))
        cause = (
            f"grant:{grant_id}/usage:{day.isoformat()}"
            if kind in ("consume", "release")
            else f"grant:{grant_id}/{entry.kind}"
        )
        movements.append(Movement(day, grant_id, kind, entry.amount, target, cause))  # type: ignore[arg-type]
    return credit_entries(grants, _merge(movements), purchase_account=UNBILLED)


def _used_at(entry: CreditEntry, breakage_timing: str = "expiry") -> int:
    """When a movement happened: usage paid by a grant (``consume``, ``release``) at the
    last instant of the window it was used in (the book stamps it at the window's end, the
    midnight that ends its day, which is the next day); an expiry's breakage at the expiry
    instant, or with ``breakage_timing: lapse`` at the last instant its rights existed (a
    pool lapsing at a month's end books its breakage in that month); anything else at its
    instant."""
    if entry.kind in ("consume", "release") and entry.line is not None:
        return entry.at_us - 1
    if entry.kind == "expire" and breakage_timing == "lapse":
        return entry.at_us - 1
    return entry.at_us


def _merge(movements: Iterable[Movement]) -> list[Movement]:
    """Consumption and releases of one grant on one day as one net movement (the journal
    reads per day; the credit book moves per window)."""
    merged: list[Movement] = []
    for movement in movements:
        last = merged[-1] if merged else None
        if (
            last is not None
            and movement.kind in ("consume", "release")
            and last.kind in ("consume", "release")
            and last.grant_id == movement.grant_id
            and last.day == movement.day
        ):
            signed = (last.units if last.kind == "consume" else -last.units) + (
                movement.units if movement.kind == "consume" else -movement.units
            )
            merged[-1] = Movement(
                last.day,
                last.grant_id,
                "consume" if signed >= 0 else "release",
                abs(signed),
                None,
                last.cause,
            )
            continue
        merged.append(movement)
    return [m for m in merged if m.units != 0 or m.kind not in ("consume", "release")]


def _terms(
    grant: Grant, terms: ContractCredits, customer: str, timezone: str, through: date | None
) -> CreditTerms:
    mode, rate = terms.breakage_of(grant.grant_id)
    purchased = grant.created if grant.source in ("api", "purchase") else grant.effective_us
    dated = (
        RateChange(_day(timezone, effective_us), changed)
        for effective_us, changed in terms.breakage_changes_of(grant.grant_id)
    )
    changes = tuple(c for c in dated if through is None or c.effective <= through)
    return CreditTerms(
        f"{customer}/{grant.grant_id}",
        customer,
        grant.unit,
        grant.amount,
        grant.paid,
        grant.paid_currency or grant.unit,
        _day(timezone, purchased),
        mode,  # type: ignore[arg-type]
        rate if mode == "proportional" else ZERO,
        breakage_changes=changes if mode == "proportional" else (),
    )


POSTING_FIELDS = ("debit", "credit", "currency", "customer", "cause", "description")
"""The fields of a journal row after its entry, date and account (``journal_rows``), in
the order the journal's files and tables list them."""


def journal_rows(books: Books) -> list[dict[str, Any]]:
    """One row per posting, as a general ledger imports it: entry, date, account, debit,
    credit, currency, customer, cause, description; with a reporting currency, the debit
    and credit in it beside them."""
    rows = []
    for item in books.entries:
        for posting in item.postings:
            rows.append(
                {
                    "entry_id": item.entry_id,
                    "date": item.day,
                    "account": posting.account,
                    "account_kind": CHART[posting.account],
                    "debit": posting.amount if posting.amount > 0 else ZERO,
                    "credit": -posting.amount if posting.amount < 0 else ZERO,
                    "currency": posting.currency,
                    "customer": item.customer,
                    "cause": item.cause,
                    "description": item.description,
                    **_reporting_amounts(
                        books.reporting, item.day, posting.amount, posting.currency
                    ),
                }
            )
    return rows


def _reporting_amounts(
    reporting: ReportingCurrency | None, day: date, amount: Decimal, currency: str
) -> dict[str, Any]:
    """A posting's debit and credit in the reporting currency, at the rate in force at the
    start of its day (UTC), rounded once (``core.exchange``); nothing without one."""
    if reporting is None:
        return {}
    converted = reporting.reported(amount, currency, local_midnight_us("UTC", day))
    return {
        "reporting_currency": reporting.currency,
        "reporting_debit": converted if converted > 0 else ZERO,
        "reporting_credit": -converted if converted < 0 else ZERO,
    }
