"""Stored documents as typed, frozen records: invoices, their lines, credit notes (pure).

An invoice is an ``Invoice``; each of its lines one record of the ``InvoiceLine`` union,
told apart by ``kind`` (fee, usage, trial, discount, commitment, coupon, purchase, credit,
overage, carried, prepaid, adjustment, tax, threshold), each with the fields its kind has.
A credit note is a ``CreditNote`` of ``CreditNoteLine``s. Their canonical bytes
(``document_bytes``) are what is hashed, stored and proven against; the store decodes
them once (``decode_invoice``, ``decode_credit_note``).

Invariants: decoding stored bytes and encoding the record gives back the very bytes
(keys sorted at every depth, a field absent from the bytes stays absent: ``UNSET``).
Amounts and quantities are ``DecimalText``: Decimals that remember how the document
spells them, ``str(x)`` (``DecimalText``) or positional ``format(x, "f")``
(``PlainDecimal``, what ``money``'s exact amounts use), so a value read back is written
back as it was read, and an invoice's hash never changes by being read. Unknown fields are
refused when decoding, loudly, rather than dropped from the bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "CREDIT_NOTE_SCHEMA",
    "INVOICE_SCHEMA",
    "AdjustmentLine",
    "Adjusts",
    "CarriedLine",
    "CommitmentLine",
    "ConfigurationReference",
    "CouponLine",
    "CreditCharge",
    "CreditEntryRecord",
    "CreditGrantBalance",
    "CreditLine",
    "CreditNote",
    "CreditNoteLine",
    "CreditsSection",
    "DecimalText",
    "DiscountLine",
    "FeeLine",
    "Invoice",
    "InvoiceLine",
    "LedgerReference",
    "Lineage",
    "MeterUsageLine",
    "OverageLine",
    "PeriodSpan",
    "PlainDecimal",
    "PrepaidLine",
    "PurchaseLine",
    "Service",
    "TaxLine",
    "TermsSpan",
    "ThresholdLine",
    "TrialLine",
    "decimal_text",
    "decode_credit_note",
    "decode_invoice",
    "document_bytes",
    "document_data",
    "document_hash",
    "line_lineage",
    "line_meter",
    "line_of",
    "line_service",
    "plain_decimal",
    "record_data",
    "record_of",
    "spelled_decimal",
]

RecordType = TypeVar("RecordType")
INVOICE_SCHEMA = "meterline.invoice/1"
CREDIT_NOTE_SCHEMA = "meterline.credit-note/1"


class DecimalText(Decimal):
    """A Decimal a document spells as ``str(x)`` (exponent notation when Python's does);
    ``str`` and ``f"{x}"`` give that very text."""

    __slots__ = ()

    def __format__(self, specification: str, context: Any = None, /) -> str:
        if specification == "":
            return str(self)
        return Decimal.__format__(self, specification)


class PlainDecimal(DecimalText):
    """A Decimal a document spells positionally, ``format(x, "f")``: exact amounts."""

    __slots__ = ()

    def __str__(self) -> str:
        return Decimal.__format__(self, "f")


def decimal_text(value: Decimal | int | str) -> DecimalText:
    """``value`` to be written as ``str(value)``."""
    return DecimalText(value)


def plain_decimal(value: Decimal | int | str) -> PlainDecimal:
    """``value`` to be written positionally (no exponent), as exact amounts are."""
    return PlainDecimal(value)


class _Record(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every document record: immutable, fields by name, no field it does not know."""


class Service(_Record, frozen=True, kw_only=True):
    """The stretch of time a line's charge is for (RFC 3339 instants)."""

    start: str
    end: str


class Lineage(_Record, frozen=True, kw_only=True):
    """The events behind a line: how many, their sequence range and their Merkle root."""

    events: int
    first_sequence: int | None
    last_sequence: int | None
    merkle_root: str


class Adjusts(_Record, frozen=True, kw_only=True):
    """Which invoice late usage corrects, the cuts between, and its totals then and now
    (``from_sequence``/``through_sequence`` in documents written before cuts)."""

    invoice: str
    from_cut: list[int] | int | UnsetType = msgspec.field(name="from", default=UNSET)
    through: list[int] | int | UnsetType = UNSET
    billed_total: DecimalText
    rerated_total: DecimalText
    from_sequence: int | UnsetType = UNSET
    through_sequence: int | UnsetType = UNSET

    def after(self) -> list[int] | int:
        """The cut the corrected invoice had billed through (``from``)."""
        return _cut_of(self.from_cut, self.from_sequence, "adjusts.from")

    def until(self) -> list[int] | int:
        """The cut the correction re-rated through (``through``)."""
        return _cut_of(self.through, self.through_sequence, "adjusts.through")


def _cut_of(
    cut: list[int] | int | UnsetType, sequence: int | UnsetType, field: str
) -> list[int] | int:
    """A cut as a document records it, or the single sequence older documents record."""
    if not isinstance(cut, UnsetType):
        return cut
    if not isinstance(sequence, UnsetType):
        return sequence
    raise ValueError(f"{field}: the document records no cut")


class _Line(_Record, frozen=True, kw_only=True, tag_field="kind"):
    """What every invoice line has: its number, text, rounded and exact amounts; a capped
    ``prepaid`` line's ``carried`` surplus; what coupons took from it (``coupons_took``)."""

    number: int
    description: str
    amount: DecimalText
    amount_exact: DecimalText
    carried: DecimalText | UnsetType = UNSET
    coupons_took: DecimalText | UnsetType = UNSET

    @property
    def kind(self) -> str:
        """The line's kind (the tag its record is told apart by)."""
        return str(self.__struct_config__.tag)


class FeeLine(_Line, frozen=True, kw_only=True, tag="fee"):
    """A fee of the plan: recurring (in advance or arrears, prorated) or one-off.
    ``obligations``: (name, standalone price, recognition) of what the fee pays for."""

    fee: str
    plan: str
    recurrence: str
    timing: str
    service: Service | UnsetType = UNSET
    recognition: str | UnsetType = UNSET
    obligations: list[tuple[str, DecimalText, str | None]] | UnsetType = UNSET


class MeterUsageLine(_Line, frozen=True, kw_only=True, tag="usage"):
    """A meter's usage in one group and segment, at the price snapshot it was rated with;
    in a credit type's units (``unit``, ``units``, ``unit_value``) when it is priced so."""

    meter: str
    group: dict[str, str | None]
    quantity: DecimalText
    price: dict[str, Any]
    service: Service
    lineage: Lineage
    unit: str | UnsetType = UNSET
    units: DecimalText | UnsetType = UNSET
    unit_value: DecimalText | UnsetType = UNSET


class TrialLine(_Line, frozen=True, kw_only=True, tag="trial"):
    """Usage a free trial gives back, up to its cap."""

    meter: str | None
    trial_ends: str


class DiscountLine(_Line, frozen=True, kw_only=True, tag="discount"):
    """A percentage off a segment's fees and usage."""

    percent: DecimalText


class CommitmentLine(_Line, frozen=True, kw_only=True, tag="commitment"):
    """The minimum commitment's true-up: what usage fell short of ``minimum``."""

    minimum: DecimalText
    spent: DecimalText


class CouponLine(_Line, frozen=True, kw_only=True, tag="coupon"):
    """What a coupon took off the charges."""

    coupon: str
    applies_to: str
    percent_off: DecimalText | UnsetType = UNSET
    amount_off: DecimalText | UnsetType = UNSET


class TaxLine(_Line, frozen=True, kw_only=True, tag="tax"):
    """One tax rate on the taxable lines; ``included`` is the part within inclusive prices."""

    tax: str
    percent: DecimalText
    inclusive: bool
    jurisdiction: str | None
    taxable: DecimalText
    included: DecimalText


class AdjustmentLine(_Line, frozen=True, kw_only=True, tag="adjustment"):
    """Late usage for an already finalized period: the difference its late events make."""

    adjusts: Adjusts
    lineage: Lineage


class CreditLine(_Line, frozen=True, kw_only=True, tag="credit"):
    """Credits of a grant applied to the charges."""

    grant: str
    unit: str
    units: DecimalText
    unit_value: DecimalText


class CarriedLine(_Line, frozen=True, kw_only=True, tag="carried"):
    """Usage no grant covered, carried to the next grant."""

    unit: str
    units: DecimalText
    unit_value: DecimalText | UnsetType = UNSET


class OverageLine(_Line, frozen=True, kw_only=True, tag="overage"):
    """Usage beyond prepaid credit, at the overage price when there is one."""

    unit: str
    units: DecimalText
    unit_value: DecimalText
    overage_price: DecimalText | UnsetType = UNSET


class PurchaseLine(_Line, frozen=True, kw_only=True, tag="purchase"):
    """A paid grant of credits, billed when it takes effect."""

    grant: str
    unit: str
    units: DecimalText | UnsetType = UNSET


class PrepaidLine(_Line, frozen=True, kw_only=True, tag="prepaid"):
    """An amount a threshold invoice billed early, netted here (``billed_early`` before
    the cap; ``from_period`` when it is a surplus of an earlier period)."""

    billed_early: DecimalText
    invoice: str | UnsetType = UNSET
    from_period: str | UnsetType = UNSET


class ThresholdLine(_Line, frozen=True, kw_only=True, tag="threshold"):
    """A threshold invoice's one line: the usage billed early."""

    threshold: DecimalText | UnsetType = UNSET
    threshold_level: int | UnsetType = UNSET


InvoiceLine = (
    FeeLine
    | MeterUsageLine
    | TrialLine
    | DiscountLine
    | CommitmentLine
    | CouponLine
    | TaxLine
    | AdjustmentLine
    | CreditLine
    | CarriedLine
    | OverageLine
    | PurchaseLine
    | PrepaidLine
    | ThresholdLine
)
"""A line of an invoice, one record type per kind."""


class PeriodSpan(_Record, frozen=True, kw_only=True):
    """The billing period: its instants and its local start date (``label``)."""

    start: str
    end: str
    label: str


class TermsSpan(_Record, frozen=True, kw_only=True):
    """A stretch of the period under one plan version, and whether overrides applied."""

    start: str
    end: str
    plan: str
    overrides: bool


class ConfigurationReference(_Record, frozen=True, kw_only=True):
    """The configuration revision an invoice was rated under, and its hash."""

    revision: int
    hash: str


class LedgerReference(_Record, frozen=True, kw_only=True):
    """The consistent cut of the ledger an invoice was rated through (``core.cuts``): a
    list of partition heads (a bare integer in single-partition documents;
    ``through_sequence`` in documents written before cuts)."""

    through: list[int] | int | UnsetType = UNSET
    through_sequence: int | UnsetType = UNSET


class Invoice(_Record, frozen=True, kw_only=True):
    """An invoice: a period's (``kind`` absent), or off-cycle (``threshold``,
    ``purchase``, which have no ``terms``; a purchase has no period, configuration or
    ledger cut). ``credits``: the period's credit ledger (``core.credit_records``)."""

    schema: str = INVOICE_SCHEMA
    kind: str | UnsetType = UNSET
    number: str | None
    status: str
    customer: str
    currency: str
    timezone: str
    period: PeriodSpan | UnsetType = UNSET
    terms: list[TermsSpan] | UnsetType = UNSET
    configuration: ConfigurationReference | UnsetType = UNSET
    ledger: LedgerReference | UnsetType = UNSET
    lines: list[InvoiceLine]
    total: DecimalText
    finalized_at: str | None
    credits: dict[str, Any] | UnsetType = UNSET
    control: str | UnsetType = UNSET

    def credit_section(self) -> CreditsSection | None:
        """The ``credits`` section as a typed record (None when the invoice has none).
        The field itself keeps the section's data as written, so any section's bytes
        read back unchanged; this reads the one ``billing.credits`` writes."""
        if not self.credits:
            return None
        return record_of(self.credits, CreditsSection)

    def period_span(self) -> PeriodSpan:
        """The invoice's period (ValueError for a purchase invoice, which has none)."""
        if not self.period:
            raise ValueError(f"invoice {self.number}: a {self.kind} invoice has no period")
        return self.period

    def through(self) -> list[int] | int:
        """The ledger cut the invoice was rated through (ValueError when it has none)."""
        if not self.ledger:
            raise ValueError(f"invoice {self.number}: ledger.through: no ledger cut")
        return _cut_of(self.ledger.through, self.ledger.through_sequence, "ledger.through")


class CreditGrantBalance(_Record, frozen=True, kw_only=True):
    """A grant the period touched: its terms, and its balance at the period's start
    (``opening``) and end (``closing``)."""

    grant: str
    unit: str
    amount: DecimalText
    paid: DecimalText
    priority: int
    effective: str
    expires: str | None
    scope: list[str]
    source: str
    opening: DecimalText
    closing: DecimalText


class CreditEntryRecord(_Record, frozen=True, kw_only=True):
    """One balanced movement of credit (``core.credit_records.Entry``) as documents and
    reports write it: ``amount`` from ``credit`` to ``debit`` at the instant ``at``."""

    kind: str
    unit: str
    amount: DecimalText
    debit: str
    credit: str
    grant: str | None
    reason: str
    line: str | None
    meter: str | None
    first_sequence: int | None
    last_sequence: int | None
    at: str


class CreditCharge(_Record, frozen=True, kw_only=True, array_like=True):
    """A charge the period's credit book was run with (``core.credit_records.Charge``),
    kept so later periods replay what was billed; written as an array."""

    start_us: int
    end_us: int
    line: str
    meter: str
    unit: str
    amount: DecimalText
    first_sequence: int | None
    last_sequence: int | None


class CreditsSection(_Record, frozen=True, kw_only=True):
    """An invoice's ``credits`` section: the overage mode, each grant the period touched,
    the period's entries and the charges the book ran with."""

    overage: str
    grants: list[CreditGrantBalance]
    entries: list[CreditEntryRecord]
    charges: list[CreditCharge]


class CreditNoteLine(_Record, frozen=True, kw_only=True):
    """A credit note's line: a void, a late-usage adjustment, or the reversal of an
    invoice line (``credits_line``) of the same kind, with the tax given back."""

    number: int
    kind: str
    description: str
    amount: DecimalText
    credits_line: int | UnsetType = UNSET
    meter: str | UnsetType | None = UNSET
    adjusts: Adjusts | UnsetType = UNSET
    lineage: Lineage | UnsetType = UNSET
    tax: str | UnsetType = UNSET
    percent: DecimalText | UnsetType = UNSET
    inclusive: bool | UnsetType = UNSET
    included: DecimalText | UnsetType = UNSET


class CreditNote(_Record, frozen=True, kw_only=True):
    """A credit note against one invoice: why, its lines, their total, when."""

    schema: str = CREDIT_NOTE_SCHEMA
    number: str
    invoice: str
    customer: str
    currency: str
    reason: str
    void: bool
    lines: list[CreditNoteLine]
    total: DecimalText
    created_at: str


def _encode_hook(value: Any) -> Any:
    if isinstance(value, DecimalText):
        return str(value)
    raise NotImplementedError(f"{type(value).__name__} is not part of a document")


def spelled_decimal(text: str) -> DecimalText:
    """The Decimal ``text`` spells, written back as that very text (ArithmeticError when
    it spells none)."""
    return DecimalText(text) if "e" in text.lower() else PlainDecimal(text)


def _decode_hook(kind: type, value: Any) -> Any:
    if kind is DecimalText and type(value) is str:
        try:
            return spelled_decimal(value)
        except ArithmeticError:
            raise msgspec.ValidationError(f"{value!r} is not a decimal") from None
    raise NotImplementedError(f"{kind} is not part of a document")


_ENCODER = msgspec.json.Encoder(order="sorted", decimal_format="number", enc_hook=_encode_hook)
"""``core.events.CANONICAL_ENCODER`` (sorted keys, Decimals of free-form parts as exact
numbers) that also spells ``DecimalText`` fields as the document does."""
_INVOICE_DECODER = msgspec.json.Decoder(Invoice, dec_hook=_decode_hook, float_hook=Decimal)
_DATA_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_CREDIT_NOTE_DECODER = msgspec.json.Decoder(CreditNote, dec_hook=_decode_hook, float_hook=Decimal)


def document_bytes(document: Invoice | CreditNote) -> bytes:
    """The canonical bytes of a document: what is hashed and stored."""
    return _ENCODER.encode(document)


def document_hash(document: Invoice | CreditNote) -> str:
    """SHA-256 of the canonical bytes, hex: covers every line, its price and lineage root."""
    return hashlib.sha256(document_bytes(document)).hexdigest()


def record_data(record: msgspec.Struct) -> Any:
    """A record as plain data in its fields' declared order, decimal text as written:
    what a section or report puts beside other plain data."""
    return msgspec.to_builtins(record, enc_hook=_encode_hook)


def document_data(document: Invoice | CreditNote | InvoiceLine) -> Any:
    """A document (or one line of it) as plain JSON data, exactly as its canonical bytes
    decode (amounts as strings, free-form parts' numbers as Decimals): what the API shows
    and the dashboard's templates read."""
    return _DATA_DECODER.decode(_ENCODER.encode(document))


def line_service(line: InvoiceLine | CreditNoteLine) -> Service | None:
    """The stretch of time a fee or usage line is for (None for the other lines, and for
    a credit note's: they have none)."""
    if isinstance(line, FeeLine | MeterUsageLine) and line.service:
        return line.service
    return None


def line_lineage(line: InvoiceLine) -> Lineage | None:
    """The events behind a usage or adjustment line (None for the other kinds)."""
    return line.lineage if isinstance(line, MeterUsageLine | AdjustmentLine) else None


def line_meter(line: InvoiceLine) -> str | None:
    """The meter a line is about (usage and trial lines); None for the other kinds."""
    return line.meter if isinstance(line, MeterUsageLine | TrialLine) else None


def line_of(data: Mapping[str, Any]) -> InvoiceLine:
    """An invoice line from its plain data (its ``kind`` names its record)."""
    line: InvoiceLine = msgspec.convert(data, InvoiceLine, dec_hook=_decode_hook)
    return line


def record_of(data: Mapping[str, Any], kind: type[RecordType]) -> RecordType:
    """A document record of ``kind`` from plain data, its decimal text kept as written."""
    return msgspec.convert(data, kind, dec_hook=_decode_hook)


def decode_invoice(data: bytes) -> Invoice:
    """An invoice from its stored bytes (``msgspec.ValidationError`` names what is wrong)."""
    return _INVOICE_DECODER.decode(data)


def decode_credit_note(data: bytes) -> CreditNote:
    """A credit note from its stored bytes."""
    return _CREDIT_NOTE_DECODER.decode(data)
