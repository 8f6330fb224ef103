"""Payments and receivables (pure): what an invoice's payments, refunds, write-offs and
credit notes leave owed, the state that follows, the journal movements they make, the
aging of what is owed at a date, and who is overdue.

An invoice bills its ``total``; every credit note on it adds its (signed) total, so a
void note brings what is billed to zero. Against what is billed, in the order they were
recorded:

- a **payment** pays what is open; more than is open is refused unless it is declared an
  overpayment, whose excess is held as the customer's **credit balance** (a liability);
- a **refund** returns money paid: first what the invoice holds as credit balance, then
  what it had applied (which re-opens the receivable); never more than was paid net of
  earlier refunds; a void or uncollectible invoice refunds only its credit balance;
- a **write-off** makes the whole open amount uncollectible (bad-debt expense);
- a credit note that leaves less billed than was paid and written off moves the surplus:
  written off first (a recovery of bad debt), then paid (to the credit balance).

Payments on a void or uncollectible invoice are refused, as is a write-off of a void
invoice or of one with nothing open. The law every step keeps (tested by hypothesis):
``paid + open + written_off == billed`` for every invoice whose billed amount is not
negative, where ``paid`` is what is applied to the invoice (received - refunded - held
as credit balance).

States: ``void`` (a void credit note), ``uncollectible`` (written off), ``paid`` (nothing
open), ``partially_paid`` (something applied, something open), ``open``.

Aging: an invoice is due ``net_days`` (default 30) after the day it was issued; at a date
each open amount falls in one bucket by days past due: ``current`` (not yet due),
``1-30``, ``31-60``, ``61-90``, ``90+``. A customer is overdue by N days when an invoice
of theirs has an open amount more than N days past due; an ``OverduePolicy`` turns that
into an alert or a block (``core.control_policies.Block``, read by
``core.control_policies.decide``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal, localcontext
from typing import Literal

from meterline.core.control_policies import Block
from meterline.core.errors import MeterlineError
from meterline.core.journal import (
    BAD_DEBT,
    CASH,
    CUSTOMER_CREDIT,
    RECEIVABLE,
    JournalEntry,
    Posting,
)
from meterline.core.money import MONEY_CONTEXT, MoneyError, minor_units
from meterline.core.periods import local_date

ZERO = Decimal(0)
NET_DAYS_DEFAULT = 30
RecordKind = Literal["payment", "refund", "write_off"]
RECORD_KINDS: tuple[RecordKind, ...] = ("payment", "refund", "write_off")
InvoiceState = Literal["open", "partially_paid", "paid", "void", "uncollectible"]
INVOICE_STATES: tuple[InvoiceState, ...] = (
    "open",
    "partially_paid",
    "paid",
    "void",
    "uncollectible",
)
AGING_BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")
OverdueAction = Literal["alert", "block"]


class PaymentError(MeterlineError, ValueError):
    """A payment, refund or write-off the invoice's receivable refuses; ``field`` names
    what is wrong, ``invalid`` tells a malformed request (an amount, a currency) from a
    refusal by the rules (more than is open, a void invoice)."""

    code = "payment_refused"
    http_status = 409

    def __init__(self, field: str, message: str, invalid: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.invalid = invalid


@dataclass(frozen=True, slots=True)
class Receivable:
    """What an invoice bills: its total in its currency, issued on a day."""

    invoice_id: str
    customer: str
    currency: str
    total: Decimal
    issued: date
    issued_at_us: int
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class NoteChange:
    """A credit note on the invoice: its signed total (a void note's is minus the
    invoice's total), created at ``at_us``."""

    note_id: str
    at_us: int
    amount: Decimal
    void: bool


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A payment, refund or write-off as recorded (``number``: the order of recording)."""

    number: int
    payment_id: str
    kind: RecordKind
    amount: Decimal
    at_us: int
    overpayment: bool = False


@dataclass(frozen=True, slots=True)
class Movement:
    """What one step did to the books, as signed changes: ``cash`` (+ received),
    ``receivable`` (+ owed by the customer), ``credit_balance`` (+ owed to the customer),
    ``bad_debt`` (+ expense). ``cash + receivable - credit_balance + bad_debt == 0``."""

    cause: str
    kind: str
    at_us: int
    cash: Decimal = ZERO
    receivable: Decimal = ZERO
    credit_balance: Decimal = ZERO
    bad_debt: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Standing:
    """An invoice's receivable after its records: what is billed, paid (applied), open,
    written off, held as credit balance; received and refunded in total; its state."""

    receivable: Receivable
    state: InvoiceState
    billed: Decimal
    paid: Decimal
    open: Decimal
    written_off: Decimal
    credit_balance: Decimal
    received: Decimal
    refunded: Decimal
    void: bool

    def due(self, net_days: int = NET_DAYS_DEFAULT) -> date:
        return self.receivable.issued + timedelta(days=net_days)


@dataclass(slots=True)
class _Walk:
    """The running figures of one invoice while its changes are replayed."""

    billed: Decimal
    paid: Decimal = ZERO
    written_off: Decimal = ZERO
    credit: Decimal = ZERO
    received: Decimal = ZERO
    refunded: Decimal = ZERO
    void: bool = False
    movements: list[Movement] = field(default_factory=list)

    @property
    def open(self) -> Decimal:
        return max(self.billed - self.paid - self.written_off, ZERO)


def check_amount(amount: Decimal, currency: str) -> None:
    """An amount above zero with no digit below the currency's minor unit."""
    if not amount.is_finite() or amount <= 0:
        raise PaymentError("amount", f"{amount} must be above zero", invalid=True)
    try:
        places = minor_units(currency)
    except MoneyError:
        return  # a credit type or an unlisted code: any exact amount
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise PaymentError(
            "amount", f"{amount} has digits below the minor unit of {currency}", invalid=True
        )


def _note(walk: _Walk, note: NoteChange) -> None:
    walk.billed += note.amount
    walk.void = walk.void or note.void
    surplus = walk.paid + walk.written_off - max(walk.billed, ZERO)
    if surplus <= 0:
        return
    recovered = min(surplus, walk.written_off)
    if recovered:
        walk.written_off -= recovered
        walk.movements.append(
            Movement(
                note.note_id, "recovery", note.at_us, receivable=recovered, bad_debt=-recovered
            )
        )
    moved = surplus - recovered
    if moved:
        walk.paid -= moved
        walk.credit += moved
        walk.movements.append(
            Movement(note.note_id, "reclassify", note.at_us, receivable=moved, credit_balance=moved)
        )


def _closed(walk: _Walk) -> InvoiceState | None:
    if walk.void:
        return "void"
    if walk.written_off > 0:
        return "uncollectible"
    return None


def _payment(walk: _Walk, record: PaymentRecord) -> None:
    closed = _closed(walk)
    if closed is not None:
        raise PaymentError("invoice", f"the invoice is {closed}: it takes no payment")
    applied = min(record.amount, walk.open)
    excess = record.amount - applied
    if excess and not record.overpayment:
        raise PaymentError(
            "amount",
            f"{record.amount} is more than the {walk.open} open (declare an overpayment to"
            " hold the excess as credit balance)",
        )
    walk.paid += applied
    walk.credit += excess
    walk.received += record.amount
    walk.movements.append(
        Movement(
            record.payment_id,
            "payment",
            record.at_us,
            cash=record.amount,
            receivable=-applied,
            credit_balance=excess,
        )
    )


def _refund(walk: _Walk, record: PaymentRecord) -> None:
    refundable = walk.paid + walk.credit
    if record.amount > refundable:
        raise PaymentError("amount", f"{record.amount} is more than the {refundable} paid")
    from_credit = min(record.amount, walk.credit)
    from_paid = record.amount - from_credit
    closed = _closed(walk)
    if from_paid and closed is not None:
        raise PaymentError(
            "amount",
            f"the invoice is {closed}: only its credit balance ({walk.credit}) can be refunded",
        )
    walk.credit -= from_credit
    walk.paid -= from_paid
    walk.refunded += record.amount
    walk.movements.append(
        Movement(
            record.payment_id,
            "refund",
            record.at_us,
            cash=-record.amount,
            receivable=from_paid,
            credit_balance=-from_credit,
        )
    )


def _write_off(walk: _Walk, record: PaymentRecord) -> None:
    closed = _closed(walk)
    if closed is not None:
        raise PaymentError("invoice", f"the invoice is {closed} already")
    if walk.open <= 0:
        raise PaymentError("invoice", "nothing is open to write off")
    if record.amount != walk.open:
        raise PaymentError("amount", f"a write-off is of the whole {walk.open} open")
    walk.written_off += record.amount
    walk.movements.append(
        Movement(
            record.payment_id,
            "write_off",
            record.at_us,
            receivable=-record.amount,
            bad_debt=record.amount,
        )
    )


_STEPS = {"payment": _payment, "refund": _refund, "write_off": _write_off}


def _state(walk: _Walk) -> InvoiceState:
    closed = _closed(walk)
    if closed is not None:
        return closed
    if walk.open == 0:
        return "paid"
    return "partially_paid" if walk.paid > 0 else "open"


def settle(
    receivable: Receivable,
    notes: Iterable[NoteChange],
    records: Iterable[PaymentRecord],
    through_us: int | None = None,
) -> tuple[Standing, list[Movement]]:
    """Replay an invoice's credit notes and records (those at or before ``through_us``;
    all when None) in the order they happened: its standing and each step's movement.
    Raises ``PaymentError`` at the first step the rules refuse."""
    walk = _Walk(receivable.total)
    changes: list[tuple[int, int, int, NoteChange | PaymentRecord]] = [
        (note.at_us, 0, index, note) for index, note in enumerate(notes)
    ]
    changes += [(record.at_us, 1, record.number, record) for record in records]
    with localcontext(MONEY_CONTEXT):
        for at_us, _, _, change in sorted(changes, key=lambda item: item[:3]):
            if through_us is not None and at_us > through_us:
                continue
            if isinstance(change, NoteChange):
                _note(walk, change)
            else:
                _STEPS[change.kind](walk, change)
        standing = Standing(
            receivable,
            _state(walk),
            walk.billed,
            walk.paid,
            walk.open,
            walk.written_off,
            walk.credit,
            walk.received,
            walk.refunded,
            walk.void,
        )
    return standing, walk.movements


def decide(
    receivable: Receivable,
    notes: Sequence[NoteChange],
    records: Sequence[PaymentRecord],
    new: PaymentRecord,
) -> tuple[Standing, Movement]:
    """Whether ``new`` may be recorded after ``records``: the standing it leaves and its
    movement, or ``PaymentError``. A write-off's amount is what is open (``new.amount``
    is ignored for it)."""
    if new.kind == "write_off":
        before, _ = settle(receivable, notes, records)
        new = replace(new, amount=before.open)
    else:
        check_amount(new.amount, receivable.currency)
    standing, movements = settle(receivable, notes, [*records, new])
    return standing, movements[-1]


# -- the journal ---------------------------------------------------------------------------

MOVEMENT_DESCRIPTIONS = {
    "payment": "payment received",
    "refund": "payment refunded",
    "write_off": "receivable written off",
    "reclassify": "paid beyond what is billed, to credit balance",
    "recovery": "write-off recovered by a credit note",
}


def movement_entries(receivable: Receivable, movements: Iterable[Movement]) -> list[JournalEntry]:
    """The journal of an invoice's movements, each on its day in the invoice's time zone:
    a payment debits cash and credits accounts receivable (the excess of an overpayment,
    customer credit); a refund the reverse; a write-off debits bad-debt expense and
    credits receivable. Cause and id: ``payment:{invoice}/{kind}:{payment or note id}``."""
    entries = []
    for movement in movements:
        cause = f"payment:{receivable.invoice_id}/{movement.kind}:{movement.cause}"
        postings = tuple(
            Posting(account, amount, receivable.currency)
            for account, amount in (
                (CASH, movement.cash),
                (RECEIVABLE, movement.receivable),
                (CUSTOMER_CREDIT, -movement.credit_balance),
                (BAD_DEBT, movement.bad_debt),
            )
            if amount != 0
        )
        if postings:
            entries.append(
                JournalEntry(
                    cause,
                    local_date(receivable.timezone, movement.at_us),
                    MOVEMENT_DESCRIPTIONS[movement.kind],
                    cause,
                    receivable.customer,
                    postings,
                )
            )
    return entries


# -- aging and overdue ----------------------------------------------------------------------


def days_past_due(standing: Standing, on: date, net_days: int = NET_DAYS_DEFAULT) -> int:
    """Days ``on`` is past the invoice's due date (zero or less: not yet due)."""
    return (on - standing.due(net_days)).days


def bucket(days: int) -> str:
    """The aging bucket of an amount ``days`` past due."""
    if days <= 0:
        return "current"
    if days <= 30:
        return "1-30"
    if days <= 60:
        return "31-60"
    if days <= 90:
        return "61-90"
    return "90+"


@dataclass(frozen=True, slots=True)
class AgingRow:
    """One customer's open receivables in one currency, per bucket."""

    customer: str
    currency: str
    buckets: dict[str, Decimal]
    invoices: tuple[str, ...]

    @property
    def total(self) -> Decimal:
        with localcontext(MONEY_CONTEXT):
            return sum(self.buckets.values(), ZERO)


def aging(
    standings: Iterable[Standing], on: date, net_days: int = NET_DAYS_DEFAULT
) -> list[AgingRow]:
    """Open receivables at ``on`` by customer and currency, each invoice's open amount in
    the bucket of its days past due; rows in (customer, currency) order."""
    rows: dict[tuple[str, str], tuple[dict[str, Decimal], list[str]]] = {}
    with localcontext(MONEY_CONTEXT):
        for standing in standings:
            if standing.open <= 0 or standing.state in ("void", "uncollectible"):
                continue
            key = (standing.receivable.customer, standing.receivable.currency)
            buckets, invoices = rows.setdefault(key, (dict.fromkeys(AGING_BUCKETS, ZERO), []))
            buckets[bucket(days_past_due(standing, on, net_days))] += standing.open
            invoices.append(standing.receivable.invoice_id)
    return [
        AgingRow(customer, currency, buckets, tuple(invoices))
        for (customer, currency), (buckets, invoices) in sorted(rows.items())
    ]


@dataclass(frozen=True, slots=True)
class Overdue:
    """An invoice with an amount open more than the policy's days past due."""

    customer: str
    invoice_id: str
    currency: str
    open: Decimal
    days_past_due: int
    due: date


def overdue(
    standings: Iterable[Standing], on: date, days: int, net_days: int = NET_DAYS_DEFAULT
) -> list[Overdue]:
    """Invoices open more than ``days`` past due at ``on``, by customer then invoice."""
    found = []
    for standing in standings:
        if standing.open <= 0 or standing.state in ("void", "uncollectible"):
            continue
        late = days_past_due(standing, on, net_days)
        if late > days:
            item = standing.receivable
            found.append(
                Overdue(
                    item.customer,
                    item.invoice_id,
                    item.currency,
                    standing.open,
                    late,
                    standing.due(net_days),
                )
            )
    return sorted(found, key=lambda item: (item.customer, item.invoice_id))


def overdue_customers(overdue_invoices: Iterable[Overdue]) -> list[str]:
    """The customers with an overdue invoice, in order."""
    return sorted({item.customer for item in overdue_invoices})


@dataclass(frozen=True, slots=True)
class OverduePolicy:
    """A control on receivables: ``alert`` or ``block`` (``features``: all when empty)
    a customer with an invoice open more than ``days`` past due (due ``net_days`` after
    issue)."""

    name: str
    action: OverdueAction
    days: int
    net_days: int = NET_DAYS_DEFAULT
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.action not in ("alert", "block"):
            raise PaymentError("action", f"{self.action!r} is not alert or block", invalid=True)
        if self.days < 0 or self.net_days < 0:
            raise PaymentError("days", "days and net days are zero or more", invalid=True)


def overdue_blocks(
    policy: OverduePolicy, overdue_invoices: Iterable[Overdue], since_us: int
) -> dict[str, Block]:
    """Per overdue customer, the block a ``block`` policy sets (none for ``alert``): the
    blocks ``core.control_policies.decide`` reads beside the live controls' own."""
    if policy.action != "block":
        return {}
    blocks: dict[str, Block] = {}
    for item in overdue_invoices:
        if item.customer in blocks:
            continue
        reason = (
            f"invoice {item.invoice_id} is {item.days_past_due} days past due"
            f" ({item.open} {item.currency} open; the limit is {policy.days} days)"
        )
        blocks[item.customer] = Block(policy.name, policy.features, reason, since_us)
    return blocks
