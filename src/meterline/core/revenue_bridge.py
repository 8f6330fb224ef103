"""A month's bridge from what was billed to what was recognized (pure).

Billed in a month is what the invoices finalized in it total, with the credit notes
issued in it (each invoice in its own time zone). Recognized is the revenue net of
contra-revenue the journal dates in the month (``core.journal``: the waterfall's
figure). They differ because billing and recognition happen on different days: a fee is
billed once and recognized day by day, usage is recognized on its period's last day and
billed when the period closes, prepaid credit is billed when bought and recognized as it
is consumed, tax is billed and never revenue.

The bridge reads every journal entry dated in the month: each one moves recognized
revenue by what it posts to revenue and contra-revenue accounts (``r``) and billing by
what it posts to accounts receivable for an invoice or credit note (``b``); its share of
the difference is ``r - b``, filed under one named reason (``REASONS``) by the line
kind of the invoice line it books (``line_kinds``: ``invoice:ID/line:N`` to the line's
kind), or by what caused it (a credit note, a grant's consumption, breakage). Timing
reasons come in pairs told apart by sign, netted per cause over the month: a fee billed
and recognized in the same month bridges nothing.

Invariant (checked, ``BridgeError`` otherwise): billed + the lines = recognized, to the
cent, per currency. The billed figure comes from the documents, not from the journal, so
a bridge that does not close names a journal that bills other than the invoices.

``charges_bridge`` goes the other way round the month, from what economics calls
list-price charges (``core.economics``: the rated usage and the fees, true-ups and
discounts of the month's billing periods, drafted or invoiced) to what those periods'
invoices and credit notes bill: per invoice line, what it bills less what it was
charged at list price, filed by the line's kind (tax, prepaid credit bought, credits
applied, usage billed early and netted, credit notes; an open period is charged and not
billed yet). It closes the same way: charges + the lines = billed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext

from meterline.core.books import USAGE_KINDS
from meterline.core.errors import MeterlineError
from meterline.core.journal import (
    CHART,
    CONTRA_COMMIT_DISCOUNTS,
    CONTRA_FREE_CREDITS,
    DEFERRED_BILLED_EARLY,
    RECEIVABLE,
    REVENUE_BREAKAGE,
    TAX_PAYABLE,
    JournalEntry,
)
from meterline.core.money import MONEY_CONTEXT

ZERO = Decimal(0)
BILLED = "billed"
RECOGNIZED = "recognized"
LIST_PRICE_CHARGES = "list-price charges"

TAX = "tax billed: owed to the tax authority, never revenue"
FEES_BILLED_AHEAD = "fees billed, recognized ratably in other months (deferred or earned before)"
FEES_RECOGNIZED = "fees recognized ratably this month, billed in another month"
USAGE_EARNED = "usage delivered this month, billed in another (unbilled receivable)"
USAGE_BILLED = "usage billed, delivered in another month"
LATE_EVENTS = "late-event adjustments billed and recognized on different days"
BILLED_EARLY = "billed early by threshold invoices beyond the period (deferred, then netted)"
COMMITMENT = "minimum-commitment true-ups recognized and billed in different months"
CONTRA = "discounts, coupons and trials (contra revenue) recognized and billed in different months"
CREDITS_APPLIED = "credits applied on invoices: billed down, earned from the credits instead"
CREDIT_BOUGHT = "prepaid credit bought: billed at purchase, recognized as it is consumed"
CREDIT_CONSUMED = "prepaid credit consumed: recognized on consumption, billed at purchase"
CREDIT_DISCOUNT = "free credit and prepaid commits' discount consumed (contra revenue)"
BREAKAGE = "breakage: prepaid credit expected never to be used, recognized"
CREDIT_NOTES = "credit notes: what was billed reversed; revenue reversed on the note's day"
OTHER = "other revenue entries"
NOT_BILLED_YET = "open periods: charged at list price, not billed yet (draft)"
NOT_ON_A_LINE = "charged at list price, on no invoice line"
USAGE_NETTED = "usage billed other than at list price (billed early, netted, overage)"
PURCHASED_ON_INVOICE = "prepaid credit bought: billed, not a charge for usage"

REASONS = (
    TAX,
    FEES_BILLED_AHEAD,
    FEES_RECOGNIZED,
    USAGE_EARNED,
    USAGE_BILLED,
    LATE_EVENTS,
    BILLED_EARLY,
    COMMITMENT,
    CONTRA,
    CREDITS_APPLIED,
    CREDIT_BOUGHT,
    CREDIT_CONSUMED,
    CREDIT_DISCOUNT,
    BREAKAGE,
    CREDIT_NOTES,
    OTHER,
    NOT_BILLED_YET,
    NOT_ON_A_LINE,
    USAGE_NETTED,
    PURCHASED_ON_INVOICE,
)
"""Every reason a bridge line can name, in the order a bridge lists them."""

TIMING_PAIRS: Mapping[str, tuple[str, str]] = {
    "fee": (FEES_RECOGNIZED, FEES_BILLED_AHEAD),
    "usage": (USAGE_EARNED, USAGE_BILLED),
}
"""Line kinds whose net share per cause names one reason when it adds to recognized
revenue (recognized before or without billing) and another when it takes from it."""

POINT_REASONS: Mapping[str, str] = {
    "commitment": COMMITMENT,
    "discount": CONTRA,
    "coupon": CONTRA,
    "trial": CONTRA,
    "tax": TAX,
    "credit": CREDITS_APPLIED,
    "purchase": CREDIT_BOUGHT,
    "adjustment": LATE_EVENTS,
}
"""Invoice line kinds and the one reason their entries are filed under."""


class BridgeError(MeterlineError, ValueError):
    """A bridge that does not close: billed and its lines do not sum to recognized."""

    code = "bridge_failed"
    http_status = 500


@dataclass(frozen=True, slots=True)
class BridgeLine:
    """One reason billed and recognized differ: ``amount`` added to billed on the way to
    recognized, and the invoice lines, credit notes and grants behind it (``causes``)."""

    reason: str
    amount: Decimal
    causes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Bridge:
    """``start`` + the ``lines`` = ``end``, in ``currency``, over [first, last]; the figures
    named ``start_name`` and ``end_name`` (``billed`` and ``recognized``, or
    ``list-price charges`` and ``billed``)."""

    first: date
    last: date
    currency: str
    start_name: str
    start: Decimal
    end_name: str
    end: Decimal
    lines: tuple[BridgeLine, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "currency": self.currency,
            "from": {"figure": self.start_name, "amount": str(self.start)},
            "to": {"figure": self.end_name, "amount": str(self.end)},
            "lines": [
                {"reason": line.reason, "amount": str(line.amount), "causes": list(line.causes)}
                for line in self.lines
            ],
        }


def cause_root(cause: str) -> str:
    """What an entry's cause names at the level a reader looks it up: an invoice or credit
    note line (``invoice:INV-1/line:3``, without a fee's obligation), a grant
    (``grant:acme/g-1``, without the day of its consumption), a payment."""
    parts = cause.split("/")
    if parts[0].startswith(("invoice:", "credit_note:", "grant:")):
        return "/".join(parts[:2])
    return parts[0]


def _line_kind(root: str, line_kinds: Mapping[str, str]) -> str | None:
    """The kind of the invoice line ``root`` names, usage kinds as one (``usage``) but
    late-event adjustments and lines netting what was billed early (``prepaid``)."""
    kind = line_kinds.get(root)
    if kind in USAGE_KINDS and kind not in ("adjustment", "prepaid"):
        return "usage"
    return kind


def _category(item: JournalEntry, root: str, kind: str | None) -> str:
    """The reason an entry is filed under, or its line kind when the reason is a timing
    pair's (told apart by the sign of the cause's net share, ``_reason``)."""
    accounts = {posting.account for posting in item.postings}
    if TAX_PAYABLE in accounts:
        return TAX
    if root.startswith("credit_note:"):
        return CREDIT_NOTES
    if root.startswith("grant:"):
        if REVENUE_BREAKAGE in accounts:
            return BREAKAGE
        if accounts & {CONTRA_FREE_CREDITS, CONTRA_COMMIT_DISCOUNTS}:
            return CREDIT_DISCOUNT
        return CREDIT_CONSUMED
    if DEFERRED_BILLED_EARLY in accounts or kind == "prepaid":
        return BILLED_EARLY
    if kind is not None and kind in TIMING_PAIRS:
        return kind
    if kind is not None and kind in POINT_REASONS:
        return POINT_REASONS[kind]
    return OTHER


def _reason(category: str, share: Decimal) -> str:
    if category in TIMING_PAIRS:
        adds, takes = TIMING_PAIRS[category]
        return adds if share > 0 else takes
    return category


def is_billing_cause(cause: str) -> bool:
    """An entry caused by an invoice or credit note: its receivable is what was billed
    (a payment's or a voided grant's refund is not)."""
    return cause.startswith(("invoice:", "credit_note:"))


def document_of(cause: str) -> str:
    """The invoice or credit note an entry's cause names (``invoice:INV-1``), or ''."""
    head = cause.split("/", 1)[0]
    return head if is_billing_cause(head) else ""


def revenue_bridge(
    entries: Iterable[JournalEntry],
    line_kinds: Mapping[str, str],
    billed: Mapping[str, Decimal],
    first: date,
    last: date,
    documents: Collection[str] | None = None,
) -> list[Bridge]:
    """The bridges (one per currency) from ``billed`` to the revenue the journal
    recognized over [first, last], line by line. ``billed`` (per currency) is what the
    invoices finalized and credit notes issued over [first, last] total; or, with
    ``documents`` (``invoice:ID``, ``credit_note:NUMBER``), what those documents total,
    whenever they were billed (the invoices for the month's billing periods).
    ``line_kinds``: each invoice line's kind by its cause (``invoice:ID/line:N``).
    Raises ``BridgeError`` when one does not close."""
    recognized: dict[str, Decimal] = defaultdict(Decimal)
    journal_billed: dict[str, Decimal] = defaultdict(Decimal)
    shares: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    with localcontext(MONEY_CONTEXT):
        for item in entries:
            in_month = first <= item.day <= last
            if documents is None:
                billing = in_month and is_billing_cause(item.cause)
            else:
                billing = document_of(item.cause) in documents
            if not (in_month or billing):
                continue
            root = cause_root(item.cause)
            category = _category(item, root, _line_kind(root, line_kinds))
            for posting in item.postings:
                if in_month and CHART[posting.account] in ("revenue", "contra_revenue"):
                    recognized[posting.currency] -= posting.amount
                    shares[(posting.currency, category, root)] -= posting.amount
                elif billing and posting.account == RECEIVABLE:
                    journal_billed[posting.currency] += posting.amount
                    shares[(posting.currency, category, root)] -= posting.amount
        lines: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(dict)
        for (currency, category, root), share in shares.items():
            if share != 0:
                lines[(currency, _reason(category, share))][root] = share
        bridges = []
        for currency in sorted(set(billed) | set(recognized) | set(journal_billed)):
            start = billed.get(currency, ZERO)
            end = recognized.get(currency, ZERO)
            bridge_lines = _nonzero(
                BridgeLine(
                    reason,
                    sum(lines[(currency, reason)].values(), ZERO),
                    tuple(sorted(lines[(currency, reason)])),
                )
                for reason in REASONS
                if lines.get((currency, reason))
            )
            if start == end == ZERO and not bridge_lines:
                continue
            bridge = Bridge(first, last, currency, BILLED, start, RECOGNIZED, end, bridge_lines)
            check_closes(bridge, journal_billed.get(currency, ZERO))
            bridges.append(bridge)
    return bridges


def _nonzero(lines: Iterable[BridgeLine]) -> tuple[BridgeLine, ...]:
    """The lines that move the figure: causes of one reason whose shares cancel out (a
    fee billed early in one invoice and late in another) explain no difference."""
    return tuple(line for line in lines if line.amount != 0)


def check_closes(bridge: Bridge, journal_figure: Decimal) -> None:
    """Start + every line = end; else a ``BridgeError`` naming the gap, with what the
    journal (or the documents' lines) made of the start figure beside it."""
    with localcontext(MONEY_CONTEXT):
        total = bridge.start + sum((line.amount for line in bridge.lines), ZERO)
    if total != bridge.end:
        raise BridgeError(
            f"bridge {bridge.first}..{bridge.last} {bridge.currency}: {bridge.start_name}"
            f" {bridge.start} + lines = {total}, not {bridge.end_name} {bridge.end}"
            f" (from the entries: {journal_figure})"
        )


CHARGE_REASONS: Mapping[str, str] = {
    "tax": TAX,
    "purchase": PURCHASED_ON_INVOICE,
    "credit": CREDITS_APPLIED,
    "prepaid": BILLED_EARLY,
    "threshold": BILLED_EARLY,
    "adjustment": LATE_EVENTS,
}
"""Invoice line kinds billed beside (or instead of) list-price charges, and their reason;
any other kind billed other than charged is usage netted (``USAGE_NETTED``)."""

DRAFT_PREFIX = "draft:"
"""The cause of an open period's charges: ``draft:customer/period``."""


def charges_bridge(
    charges: Mapping[str, Decimal],
    billed_lines: Mapping[str, tuple[str, Decimal]],
    billed: Decimal,
    currency: str,
    first: date,
    last: date,
) -> Bridge:
    """The bridge from list-price ``charges`` (by the invoice line charged,
    ``invoice:ID/line:N``, or ``draft:customer/period`` for an open period) to ``billed``,
    what the documents total, through their lines (``billed_lines``: each line's kind and
    amount by ``invoice:ID/line:N`` or ``credit_note:NUMBER/line:N``): charges + lines =
    billed. Raises ``BridgeError`` when it does not close."""
    lines: dict[str, dict[str, Decimal]] = defaultdict(dict)
    with localcontext(MONEY_CONTEXT):
        start = sum(charges.values(), ZERO)
        for root in sorted(set(charges) | set(billed_lines)):
            kind, amount = billed_lines.get(root, ("", ZERO))
            difference = amount - charges.get(root, ZERO)
            if difference == 0:
                continue
            if root.startswith(DRAFT_PREFIX):
                reason = NOT_BILLED_YET
            elif root.startswith("credit_note:"):
                reason = TAX if kind == "tax" else CREDIT_NOTES
            elif root not in billed_lines:
                reason = NOT_ON_A_LINE
            else:
                reason = CHARGE_REASONS.get(kind, USAGE_NETTED)
            lines[reason][root] = difference
        bridge = Bridge(
            first,
            last,
            currency,
            LIST_PRICE_CHARGES,
            start,
            BILLED,
            billed,
            _nonzero(
                BridgeLine(reason, sum(lines[reason].values(), ZERO), tuple(sorted(lines[reason])))
                for reason in REASONS
                if reason in lines
            ),
        )
    check_closes(bridge, sum((amount for _, amount in billed_lines.values()), ZERO))
    return bridge
