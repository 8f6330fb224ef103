"""Invoices and credit notes as journal entries (pure; the rules are ``core.revrec``'s).

Every line of a finalized invoice is billed on the invoice's day (accounts receivable),
and earns revenue by its kind:

- ``fee`` (recurring): ratably by day over its service period; days served before the
  bill are earned against unbilled receivable, the rest deferred and released day by day.
  A one-off fee is earned on the first day of its service.
- ``usage``, ``overage``, ``carried``, ``prepaid`` (billed early, netted) and
  ``threshold`` lines: usage revenue, delivered in the service period: recognized on its
  last day (a threshold invoice, or a late-usage ``adjustment``, on the day it is billed).
  What a period's invoice could not net of its threshold invoices (a ``prepaid`` line's
  ``carried`` surplus) goes from usage revenue to deferred revenue (billed early) on that
  day; a later invoice netting it (a line ``from_period`` an earlier one) releases it
  from there rather than from revenue.
- ``commitment`` (a minimum commit's true-up): minimum-commitment revenue, the period's
  last day. ``discount``: contra-revenue, the same day.
- ``credit`` (credits applied): money credits (a prepaid commit in the invoice's currency)
  only clear the unbilled usage they paid (the commit's deferred revenue settles it, see
  ``revrec.credit_entries``); credit-type credits reverse the usage revenue of the line
  they paid, because that usage earns credit revenue at the grant's cost basis instead.
- ``purchase`` (prepaid credit bought): clears the unbilled receivable the grant's
  purchase posted (``credit_entries(..., purchase_account=UNBILLED)``).

A credit note reverses: a void note reverses every line of its invoice on the note's day
(a fee's days already earned are reversed against unbilled receivable, the rest out of
deferred revenue); a late-usage note is usage revenue on its day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from meterline.core.allocation import Obligation, allocate_by_ssp
from meterline.core.documents import (
    CreditLine,
    CreditNote,
    CreditNoteLine,
    FeeLine,
    Invoice,
    InvoiceLine,
    PeriodSpan,
    PrepaidLine,
    Service,
    TaxLine,
    line_service,
)
from meterline.core.journal import (
    CONTRA_COUPONS,
    CONTRA_DISCOUNTS,
    CONTRA_TAX_INCLUDED,
    CONTRA_TRIALS,
    DEFERRED_BILLED_EARLY,
    RECEIVABLE,
    REVENUE_MINIMUM,
    REVENUE_SUBSCRIPTION,
    REVENUE_USAGE,
    TAX_PAYABLE,
    UNBILLED,
    JournalEntry,
    entry,
)
from meterline.core.periods import local_date
from meterline.core.revrec import ratable_fee, usage_in_arrears

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
USAGE_KINDS = frozenset({"usage", "overage", "carried", "prepaid", "threshold", "adjustment"})
"""Line kinds that are usage revenue delivered in the service period."""
BILLED_ON_THE_DAY = frozenset({"threshold", "adjustment"})
"""Usage kinds recognized on the day they are billed rather than at the period's end."""
POINT_ACCOUNTS: Mapping[str, str] = {
    **{kind: REVENUE_USAGE for kind in USAGE_KINDS},
    "commitment": REVENUE_MINIMUM,
    "discount": CONTRA_DISCOUNTS,
    "coupon": CONTRA_COUPONS,
    "trial": CONTRA_TRIALS,
}


def instant_us(text: str) -> int:
    """An RFC 3339 timestamp as written on an invoice, in microseconds since the epoch."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - EPOCH) // timedelta(microseconds=1)


def day_of(text: str, timezone: str) -> date:
    """The calendar day of a timestamp in the invoice's time zone."""
    return local_date(timezone, instant_us(text))


def last_day(span: Service | PeriodSpan, timezone: str) -> date:
    """The last day of a [start, end) span: the day before its end, never before its start."""
    start = day_of(span.start, timezone)
    end = day_of(span.end, timezone)
    return max(start, end - timedelta(days=1))


BookedLine = InvoiceLine | CreditNoteLine
"""A line the journal books: an invoice's, or a credit note's (reversing one)."""


def document_entries(
    document: Invoice,
    billed: date,
    cause: str,
    lines: Sequence[BookedLine] | None = None,
    sign: int = 1,
) -> list[JournalEntry]:
    """The journal of an invoice (or of a note reversing one: ``sign`` -1; or of a note's
    own ``lines``, booked against no period), billed on ``billed``; each entry's cause is
    ``{cause}/line:{number}``."""
    timezone = document.timezone or "UTC"
    currency = document.currency
    customer = document.customer
    period = (document.period or None) if lines is None else None
    entries: list[JournalEntry] = []
    for line in document.lines if lines is None else lines:
        amount = sign * Decimal(line.amount)
        kind = line.kind
        line_cause = f"{cause}/line:{line.number}"
        if isinstance(line, TaxLine | CreditNoteLine) and line.inclusive:
            amount = sign * Decimal(_included(line))
        if amount == 0:
            continue
        service = line_service(line)
        if kind == "fee":
            entries += fee_entries(line, line_cause, customer, currency, amount, billed, timezone)
        elif kind in POINT_ACCOUNTS:
            span = service or period
            earned = billed if kind in BILLED_ON_THE_DAY or not span else last_day(span, timezone)
            carried_in = isinstance(line, PrepaidLine) and bool(line.from_period)
            account = DEFERRED_BILLED_EARLY if carried_in else POINT_ACCOUNTS[kind]
            entries += usage_in_arrears(
                line_cause, customer, currency, [(earned, amount)], billed, account
            )
            if isinstance(line, PrepaidLine) and not carried_in and line.carried:
                entries += _surplus_deferred(
                    line.carried, line_cause, earned, customer, currency, sign
                )
        elif kind == "tax":
            entries += tax_entries(line, line_cause, billed, customer, currency, sign)
        elif isinstance(line, CreditLine) and line.unit != currency:
            span = service or period
            earned = last_day(span, timezone) if span else billed
            entries += usage_in_arrears(
                line_cause, customer, currency, [(earned, amount)], billed, REVENUE_USAGE
            )
        else:  # credit in money, purchase: billing clears what the credit journal posted
            item = entry(
                f"{line_cause}/billed",
                billed,
                f"{kind} billed",
                line_cause,
                customer,
                currency,
                RECEIVABLE,
                UNBILLED,
                amount,
            )
            if item is not None:
                entries.append(item)
    return entries


def _included(line: TaxLine | CreditNoteLine) -> Decimal:
    return Decimal(line.included) if line.included else Decimal(0)


def _surplus_deferred(
    carried: Decimal, cause: str, earned: date, customer: str, currency: str, sign: int
) -> list[JournalEntry]:
    """What a period invoice could not net of a threshold invoice (its ``prepaid`` line's
    ``carried`` surplus) moves from usage revenue to deferred revenue (billed early)."""
    item = entry(
        f"{cause}/carried",
        earned,
        "billed early beyond the period: deferred",
        cause,
        customer,
        currency,
        REVENUE_USAGE,
        DEFERRED_BILLED_EARLY,
        sign * Decimal(carried),
    )
    return [] if item is None else [item]


def fee_entries(
    line: BookedLine,
    cause: str,
    customer: str,
    currency: str,
    amount: Decimal,
    billed: date,
    timezone: str,
) -> list[JournalEntry]:
    """A fee line's revenue: a one-off fee (or one without a service span) on the day its
    service starts, a recurring one ratably over its service; a fee paying for several
    obligations split by standalone price first, each part recognized its own way
    (``core.allocation``: ``point`` on the service's first day, ``ratable`` over it). A
    credit note's fee line has no service: it is booked on the note's day."""
    fee = line if isinstance(line, FeeLine) else None
    service = line_service(line)
    if service is None or (fee is not None and fee.recurrence == "one_off"):
        earned = day_of(service.start, timezone) if service else billed
        parts = [(cause, amount, "point")]
    else:
        earned = day_of(service.start, timezone)
        parts = [(cause, amount, "ratable")]
    if fee is not None and fee.obligations:
        obligations = [
            Obligation(name, Decimal(ssp), recognition)  # type: ignore[arg-type]
            for name, ssp, recognition in fee.obligations
        ]
        shares = allocate_by_ssp(amount, obligations, currency)
        parts = [
            (f"{cause}/{o.name}", share, o.recognition if service else "point")
            for o, share in zip(obligations, shares, strict=True)
        ]
    entries = []
    for part_cause, part, recognition in parts:
        if recognition == "point" or service is None:
            entries += usage_in_arrears(
                part_cause, customer, currency, [(earned, part)], billed, REVENUE_SUBSCRIPTION
            )
        else:
            end = day_of(service.end, timezone)
            how = (fee.recognition if fee is not None else None) or "day"
            entries += ratable_fee(
                part_cause, customer, part, currency, billed, earned, end,
                recognition=how, timezone=timezone,  # type: ignore[arg-type]
            )  # fmt: skip
    return entries


def tax_entries(
    line: BookedLine, cause: str, billed: date, customer: str, currency: str, sign: int
) -> list[JournalEntry]:
    """A tax line's entry on the day it is billed: exclusive tax is owed by the customer
    and payable to the authority (receivable / tax payable); tax included in the prices
    moves out of revenue into tax payable (contra revenue / tax payable)."""
    taxed = line if isinstance(line, TaxLine | CreditNoteLine) else None
    inclusive = bool(taxed is not None and taxed.inclusive)
    amount = sign * (_included(taxed) if taxed is not None and inclusive else Decimal(line.amount))
    debit = CONTRA_TAX_INCLUDED if inclusive else RECEIVABLE
    name = taxed.tax if taxed is not None and taxed.tax else None
    item = entry(
        f"{cause}/tax",
        billed,
        f"tax {name}",
        cause,
        customer,
        currency,
        debit,
        TAX_PAYABLE,
        amount,
    )
    return [] if item is None else [item]


def credit_note_entries(note: CreditNote, invoice: Invoice, issued: date) -> list[JournalEntry]:
    """The journal of a credit note against ``invoice``, issued on ``issued``."""
    cause = f"credit_note:{note.number}"
    if note.void:
        return document_entries(invoice, issued, cause, sign=-1)
    return document_entries(invoice, issued, cause, lines=note.lines)
