"""Credits in the billing shell: a customer's grants, voids and adjustments, each period's
charges, and what a period's credit ledger puts on its invoice.

Contract grants are derived from the configuration (``core.grants``); grants made by API
or CLI, their voids and manual adjustments are rows in the billing store. The credit
ledger is never stored as balances: ``credit_book`` re-runs ``core.credits.CreditBook``
over the customer's grants and the charges of every period since the contract started.
A finalized invoice keeps its period's charges (and entries) in its ``credits`` section,
so later periods replay exactly what was billed, and ``audit`` re-derives the section
from the events like every other line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

import msgspec
from msgspec import UNSET

from meterline.core.credits import (
    Charge,
    CreditBook,
    Entry,
    Grant,
    ManualAdjustment,
    OverageMode,
    Void,
)
from meterline.core.documents import (
    CreditCharge,
    CreditEntryRecord,
    CreditGrantBalance,
    CreditsSection,
    Invoice,
    LedgerReference,
    PrepaidLine,
    PurchaseLine,
    ThresholdLine,
    decimal_text,
    record_data,
)
from meterline.core.events import decode_exact, encode_canonical, format_timestamp
from meterline.core.invoicing import ExtraLine
from meterline.core.model import Configuration, CreditTerms, Segment
from meterline.core.money import MINOR_UNITS, MONEY_CONTEXT, round_amount
from meterline.core.periods import BillingPeriod
from meterline.ledger.billing_records import CreditAction, StoredGrant

ZERO = Decimal(0)
OPENING_KINDS = ("grant", "settle", "adjust")
"""Entries made as something starts (a grant, its settling carried overage, a manual
adjustment): at a period edge they belong to the period that starts there; every other
entry at an edge (charges, expiries, rollovers, voids) to the period that ends there."""


def in_period(entry: Entry, period: BillingPeriod) -> bool:
    if entry.kind in OPENING_KINDS:
        return period.start_us <= entry.at_us < period.end_us
    return period.start_us < entry.at_us <= period.end_us


# -- grants made by API or CLI ------------------------------------------------------------


def grant_document(grant: Grant) -> bytes:
    """A stored grant's canonical bytes (the grant id is the store's)."""
    return encode_canonical(
        {
            "unit": grant.unit,
            "amount": str(grant.amount),
            "paid": str(grant.paid),
            "paid_currency": grant.paid_currency,
            "priority": grant.priority,
            "effective_us": grant.effective_us,
            "expires_us": grant.expires_us,
            "scope": list(grant.scope),
            "source": grant.source,
            "reason": grant.reason,
            "created_us": grant.created,
        }
    )


def stored_grant(stored: StoredGrant) -> Grant:
    data = decode_exact(stored.document)
    return Grant(
        grant_id=stored.grant_id,
        unit=data["unit"],
        amount=Decimal(data["amount"]),
        effective_us=data["effective_us"],
        expires_us=data["expires_us"],
        priority=data["priority"],
        paid=Decimal(data["paid"]),
        paid_currency=data["paid_currency"],
        scope=tuple(data["scope"]),
        created_us=data["created_us"],
        source=data["source"],
        reason=data["reason"],
    )


def timeline_of(actions: Iterable[CreditAction]) -> tuple[list[Void], list[ManualAdjustment]]:
    voids, adjustments = [], []
    for action in actions:
        if action.kind == "void":
            voids.append(Void(action.grant_id, action.at_us, action.reason))
        else:
            assert action.amount is not None
            adjustments.append(
                ManualAdjustment(
                    action.grant_id, action.at_us, Decimal(action.amount), action.reason
                )
            )
    return voids, adjustments


@dataclass
class CreditInputs:
    """Everything a customer's credit ledger is computed from, apart from usage."""

    grants: list[Grant]
    voids: list[Void]
    adjustments: list[ManualAdjustment]
    terms: CreditTerms

    @property
    def overage(self) -> OverageMode:
        return self.terms.overage

    def is_empty(self) -> bool:
        return not self.grants and not self.voids and self.terms.is_empty()

    def units(self) -> set[str]:
        """The units the customer holds grants in: only charges in these units enter the
        credit ledger (the rest are billed as usual and never carried)."""
        return {grant.unit for grant in self.grants}

    def relevant(self, charges: Iterable[Charge]) -> list[Charge]:
        units = self.units()
        return [charge for charge in charges if charge.unit in units]


def credit_book(
    inputs: CreditInputs, charges: Sequence[Charge], until_us: int | None = None
) -> CreditBook:
    return CreditBook(inputs.overage, inputs.terms.semantics).run(
        inputs.grants, inputs.relevant(charges), inputs.voids, inputs.adjustments, until_us
    )


# -- charges kept on invoices ---------------------------------------------------------------


def charge_record(charge: Charge) -> CreditCharge:
    return CreditCharge(
        start_us=charge.start_us,
        end_us=charge.end_us,
        line=charge.line,
        meter=charge.meter,
        unit=charge.unit,
        amount=decimal_text(charge.amount),
        first_sequence=charge.first_sequence,
        last_sequence=charge.last_sequence,
    )


def charge_from_record(record: CreditCharge) -> Charge:
    start, end, line, meter, unit, amount, first, last = msgspec.structs.astuple(record)
    return Charge(start, end, line, meter, unit, Decimal(amount), first, last)


def stored_charges(document: Invoice) -> list[Charge]:
    section = document.credit_section()
    if section is None:
        return []
    return [charge_from_record(record) for record in section.charges]


# -- what a period's credit ledger puts on its invoice -------------------------------------


def _segment_of(entry: Entry) -> int:
    assert entry.line is not None
    return int(entry.line.split("/", 1)[0])


def _value(configuration: Configuration, unit: str, currency: str, at_us: int) -> Decimal:
    if unit == currency:
        return Decimal(1)
    credit = configuration.credit_type(unit)
    if credit is None:
        raise ValueError(f"unit {unit!r} is neither the plan currency nor a credit type")
    return credit.value_at(at_us)


def _units(amount: Decimal, unit: str = "") -> str:
    """Units as text for a line's description (a currency amount to its minor unit)."""
    if unit in MINOR_UNITS:
        return str(round_amount(amount, unit))
    return format(amount.normalize(), "f") if amount == amount.to_integral() else str(amount)


def credit_lines(
    book: CreditBook,
    entries: Sequence[Entry],
    segment_list: Sequence[Segment],
    configuration: Configuration,
    inputs: CreditInputs,
    period: BillingPeriod,
    currency: str,
) -> list[ExtraLine]:
    """Credits applied (per segment and grant), overage and carried usage (per segment
    and unit), and the purchases of paid contract grants effective in the period."""
    applied: dict[tuple[int, str], Decimal] = {}
    uncovered: dict[tuple[str, int, str], Decimal] = {}
    with localcontext(MONEY_CONTEXT):
        for entry in entries:
            if entry.kind in ("consume", "release") and entry.line is not None:
                assert entry.grant is not None
                sign = 1 if entry.kind == "consume" else -1
                key = (_segment_of(entry), entry.grant)
                applied[key] = applied.get(key, ZERO) + sign * entry.amount
            elif entry.kind in ("overage", "carry") and entry.line is not None:
                sign = 1 if entry.debit == "usage" else -1
                ukey = (entry.kind, _segment_of(entry), entry.unit)
                uncovered[ukey] = uncovered.get(ukey, ZERO) + sign * entry.amount
    lines = _applied_lines(book, applied, segment_list, configuration, currency)
    lines += _uncovered_lines(uncovered, segment_list, configuration, inputs, currency)
    return lines + _purchase_lines(inputs, period)


def _applied_lines(
    book: CreditBook,
    applied: dict[tuple[int, str], Decimal],
    segment_list: Sequence[Segment],
    configuration: Configuration,
    currency: str,
) -> list[ExtraLine]:
    """A ``credit`` line per segment and grant: the units drawn at their unit value."""
    lines = []
    for (segment, grant_id), units in sorted(applied.items()):
        if units == 0:
            continue
        grant = book.grants[grant_id]
        value = _value(configuration, grant.unit, currency, segment_list[segment].start_us)
        with localcontext(MONEY_CONTEXT):
            amount = -(units * value)
        name = grant.reason or grant_id
        lines.append(
            ExtraLine(
                "credit",
                f"Credits applied: {name} ({grant_id}), {_units(units, grant.unit)} {grant.unit}",
                amount,
                segment,
                {
                    "grant": grant_id,
                    "unit": grant.unit,
                    "units": str(units),
                    "unit_value": str(value),
                },
            )
        )
    return lines


def _uncovered_lines(
    uncovered: dict[tuple[str, int, str], Decimal],
    segment_list: Sequence[Segment],
    configuration: Configuration,
    inputs: CreditInputs,
    currency: str,
) -> list[ExtraLine]:
    """``carried`` and ``overage`` lines per segment and unit: usage no grant covered."""
    lines = []
    prices = dict(inputs.terms.overage_prices)
    for (kind, segment, unit), units in sorted(uncovered.items()):
        if units == 0:
            continue
        value = _value(configuration, unit, currency, segment_list[segment].start_us)
        detail = {"unit": unit, "units": str(units), "unit_value": str(value)}
        if kind == "carry":
            with localcontext(MONEY_CONTEXT):
                amount = -(units * value)
            lines.append(
                ExtraLine(
                    "carried",
                    f"Carried: {_units(units)} {unit} no grant covered, paid by the next grant",
                    amount,
                    segment,
                    detail,
                )
            )
            continue
        price = prices.get(unit)
        with localcontext(MONEY_CONTEXT):
            amount = ZERO if price is None else units * (price - value)
        text = f"Overage: {_units(units)} {unit} beyond prepaid credit"
        if price is not None:
            text += f", at {price} instead of {value}"
            detail["overage_price"] = str(price)
        lines.append(ExtraLine("overage", text, amount, segment, detail))
    return lines


def _purchase_lines(inputs: CreditInputs, period: BillingPeriod) -> list[ExtraLine]:
    """A ``purchase`` line per paid contract grant effective in the period."""
    return [
        ExtraLine(
            "purchase",
            f"Prepaid credit: {grant.reason or grant.grant_id} ({grant.grant_id}),"
            f" {_units(grant.amount, grant.unit)} {grant.unit}",
            grant.paid,
            None,
            {"grant": grant.grant_id, "unit": grant.unit, "units": str(grant.amount)},
        )
        for grant in inputs.grants
        if grant.paid > 0
        and grant.source in ("contract", "commit")
        and period.contains(grant.effective_us)
    ]


def credits_section(
    book: CreditBook,
    entries: Sequence[Entry],
    charges: Sequence[Charge],
    period: BillingPeriod,
    overage: OverageMode,
) -> CreditsSection:
    """The invoice's ``credits`` section: each grant's opening and closing balance, the
    period's entries and charges (kept so later periods replay what was billed)."""
    opening: dict[str, Decimal] = {}
    closing: dict[str, Decimal] = {}
    with localcontext(MONEY_CONTEXT):
        for entry in book.entries:
            before = not in_period(entry, period) and entry.at_us <= period.start_us
            after = before or in_period(entry, period)
            for side, sign in ((entry.debit, 1), (entry.credit, -1)):
                if not side.startswith("grant:"):
                    continue
                grant_id = side[6:]
                if before:
                    opening[grant_id] = opening.get(grant_id, ZERO) + sign * entry.amount
                if after:
                    closing[grant_id] = closing.get(grant_id, ZERO) + sign * entry.amount
    touched = {e.grant for e in entries if e.grant is not None}
    touched.update(g for g, amount in opening.items() if amount != 0)
    grants = []
    for grant_id in sorted(touched, key=lambda g: book.grants[g].burn_key()):
        grant = book.grants[grant_id]
        balance = CreditGrantBalance(
            grant=grant_id,
            unit=grant.unit,
            amount=decimal_text(grant.amount),
            paid=decimal_text(grant.paid),
            priority=grant.priority,
            effective=format_timestamp(grant.effective_us),
            expires=None if grant.expires_us is None else format_timestamp(grant.expires_us),
            scope=list(grant.scope),
            source=grant.source,
            opening=decimal_text(opening.get(grant_id, ZERO)),
            closing=decimal_text(closing.get(grant_id, ZERO)),
        )
        grants.append(balance)
    return CreditsSection(
        overage=overage,
        grants=grants,
        entries=[entry_record(entry) for entry in entries],
        charges=[charge_record(charge) for charge in charges],
    )


def entry_record(entry: Entry) -> CreditEntryRecord:
    """A credit entry as invoices' credits sections and credit reports write it."""
    return CreditEntryRecord(
        kind=entry.kind,
        unit=entry.unit,
        amount=decimal_text(entry.amount),
        debit=entry.debit,
        credit=entry.credit,
        grant=entry.grant,
        reason=entry.reason,
        line=entry.line,
        meter=entry.meter,
        first_sequence=entry.first_sequence,
        last_sequence=entry.last_sequence,
        at=format_timestamp(entry.at_us),
    )


# -- reports and off-cycle invoice documents ------------------------------------------------


def grant_status(book: CreditBook, grant: Grant, at_us: int, balance: Decimal) -> str:
    if grant.grant_id in book.voided:
        return "voided"
    if grant.effective_us > at_us:
        return "pending"
    if grant.grant_id in book.closed or (
        grant.expires_us is not None and grant.expires_us <= at_us
    ):
        return "expired" if grant.reset_us is None else "reset"
    return "active" if balance > 0 else "exhausted"


def credit_report(
    customer: str,
    at_us: int,
    book: CreditBook,
    inputs: CreditInputs,
    pending: Sequence[Grant] = (),
) -> dict[str, Any]:
    """Balances per grant and per unit (sums of entries) and the entries, as of ``at_us``;
    ``pending``: grants made already that take effect later (listed, balance zero)."""
    # ``CreditBook.balances`` moves only with the entries it posts (``check`` proves it)
    balances = dict(book.balances)
    for grant in pending:
        balances.setdefault(grant.grant_id, ZERO)
    grants = []
    listed = {**{g.grant_id: g for g in pending}, **book.grants}
    for grant in sorted(listed.values(), key=Grant.burn_key):
        balance = balances[grant.grant_id]
        grants.append(
            {
                "grant": grant.grant_id,
                "unit": grant.unit,
                "amount": str(grant.amount),
                "paid": str(grant.paid),
                "priority": grant.priority,
                "effective": format_timestamp(grant.effective_us),
                "expires": None if grant.expires_us is None else format_timestamp(grant.expires_us),
                "resets": None if grant.reset_us is None else format_timestamp(grant.reset_us),
                "scope": list(grant.scope),
                "source": grant.source,
                "reason": grant.reason,
                "balance": str(balance),
                "status": grant_status(book, grant, at_us, balance),
            }
        )
    totals = {}
    for unit in sorted({grant.unit for grant in listed.values()}):
        moved = book.totals(unit)
        with localcontext(MONEY_CONTEXT):
            remaining = sum((balances[g.grant_id] for g in listed.values() if g.unit == unit), ZERO)
            totals[unit] = {
                "granted": str(-moved.get("issued", ZERO)),
                "consumed": str(consumed(book, unit)),
                "expired": str(moved.get("expired", ZERO)),
                "voided": str(moved.get("voided", ZERO)),
                "remaining": str(remaining),
                "overage": str(-moved.get("overage", ZERO)),
                "carried": str(-moved.get("carried", ZERO)),
            }
    return {
        "customer": customer,
        "as_of": format_timestamp(at_us),
        "overage": inputs.overage,
        "grants": grants,
        "totals": totals,
        "entries": [record_data(entry_record(entry)) for entry in book.entries],
    }


def consumed(book: CreditBook, unit: str) -> Decimal:
    """What grants paid for usage: consumed and settled (carried overage paid later),
    less what was released back to them."""
    with localcontext(MONEY_CONTEXT):
        total = ZERO
        for entry in book.entries:
            if entry.unit == unit and entry.kind in ("consume", "settle"):
                total += entry.amount
            elif entry.unit == unit and entry.kind == "release":
                total -= entry.amount
        return total


def grant_errors(
    configuration: Configuration,
    unit: str,
    amount: Decimal,
    paid: Decimal,
    priority: int,
    scope: Sequence[str],
    reason: str,
    effective_us: int | None,
    expires_us: int | None,
) -> list[str]:
    """Every problem with a grant request, each naming its field."""
    errors = []
    if configuration.credit_type(unit) is None and unit not in MINOR_UNITS:
        known = ", ".join(sorted(c.key for c in configuration.credit_types)) or "none declared"
        errors.append(f"credit_type: unknown credit type {unit!r} (credit types: {known})")
    if amount <= 0:
        errors.append("amount: must be above zero")
    if paid < 0:
        errors.append("paid: must not be negative")
    if not 0 <= priority <= 1000:
        errors.append("priority: must be between 0 and 1000 (lower burns first)")
    for index, meter in enumerate(scope):
        if configuration.meter(meter) is None:
            errors.append(f"scope[{index}]: unknown meter {meter!r}")
    if not reason.strip():
        errors.append("reason: a grant needs a reason")
    if expires_us is not None and effective_us is not None and expires_us <= effective_us:
        errors.append("expires: must be after effective")
    return errors


def purchase_document(
    invoice_id: str,
    customer: str,
    currency: str,
    timezone: str,
    grant: Grant,
    grant_id: str,
    now_us: int,
) -> Invoice:
    """The invoice for a paid grant made by API or CLI: billed when granted."""
    amount = decimal_text(round_amount(grant.paid, currency))
    line = PurchaseLine(
        number=1,
        description=f"Prepaid credit: {grant.reason} ({grant_id}),"
        f" {_units(grant.amount)} {grant.unit}",
        amount=amount,
        amount_exact=decimal_text(grant.paid),
        grant=grant_id,
        unit=grant.unit,
        units=decimal_text(grant.amount),
    )
    return Invoice(
        kind="purchase",
        number=invoice_id,
        status="finalized",
        customer=customer,
        currency=currency,
        timezone=timezone,
        lines=[line],
        total=amount,
        finalized_at=format_timestamp(now_us),
    )


BILLED_EARLY_KINDS = ("usage", "discount", "credit", "overage", "carried", "prepaid")
"""The draft lines a threshold measures: usage net of discounts and credits, less what
earlier threshold invoices billed and no period invoice netted yet (a ``prepaid`` line's
``billed_early``, not its capped amount); fees and purchases bill on schedule."""


def unbilled_usage(draft: Invoice) -> Decimal:
    with localcontext(MONEY_CONTEXT):
        return sum(
            (
                -line.billed_early if isinstance(line, PrepaidLine) else line.amount
                for line in draft.lines
                if line.kind in BILLED_EARLY_KINDS
            ),
            ZERO,
        )


def threshold_document(
    invoice_id: str,
    draft: Invoice,
    unbilled: Decimal,
    threshold: Decimal | None,
    through: list[int],
    now_us: int,
    reason: str | None = None,
    control: str | None = None,
) -> Invoice:
    """An invoice billing the period's unbilled usage now (the threshold was reached, or
    a control's ``true_up`` fired: ``control`` is the firing's id); the period's own
    invoice nets it as billed early, no further than it owes (a surplus carries to the
    next period invoices: ``billing.netting``)."""
    line = ThresholdLine(
        number=1,
        description=reason or f"Usage to date (unbilled usage reached {threshold})",
        amount=decimal_text(unbilled),
        amount_exact=decimal_text(unbilled),
        threshold=UNSET if threshold is None else decimal_text(threshold),
    )
    return Invoice(
        kind="threshold",
        number=invoice_id,
        status="finalized",
        customer=draft.customer,
        currency=draft.currency,
        timezone=draft.timezone,
        period=draft.period,
        configuration=draft.configuration,
        ledger=LedgerReference(through=through),
        lines=[line],
        total=decimal_text(unbilled),
        finalized_at=format_timestamp(now_us),
        control=UNSET if control is None else control,
    )
