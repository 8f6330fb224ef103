"""Invoicing: priced usage + fees + adjustments -> one invoice document (pure).

The document is a typed record (``core.documents.Invoice``); its canonical bytes
(``invoice_bytes``) are what is hashed, stored and proven against, so building the same
inputs twice gives the same bytes. Amounts are exact decimal text in the bytes. Each
line keeps ``amount_exact`` (what the price models produced) and ``amount``, rounded once,
here, by ``money.round_amount`` to the currency's minor unit with the plan's rounding
mode; the invoice total is the sum of the rounded lines, so the lines a customer reads
always add up to what they owe.

Fees (``fee_lines``), per segment of the period under one set of terms:
- recurring in arrears: the fee times the share of the period the segment covers;
- recurring in advance: charged for the rest of the period from the segment's start
  (the full fee when that is the whole period), and when the segment ends early (an
  amendment, the contract's end) the unused remainder is credited, as Stripe presents
  an upgrade: "unused time on A", "remaining time on B";
- one-off: charged in full in the segment where its terms begin.
Proration is by day (the change day belongs to the new terms) or by second, as the plan
version says. A discount is one line per segment, a percentage off that segment's usage
and fee lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

from msgspec import UNSET

from meterline.core.coupons import Coupon, Discountable, apply_coupons
from meterline.core.cuts import Cut
from meterline.core.documents import (
    ConfigurationReference,
    Invoice,
    InvoiceLine,
    LedgerReference,
    PeriodSpan,
    TermsSpan,
    document_bytes,
    document_hash,
    spelled_decimal,
)
from meterline.core.events import format_timestamp
from meterline.core.invoice_lines import numbered_lines
from meterline.core.model import Configuration, Fee, Segment, Terms
from meterline.core.money import MONEY_CONTEXT, exact_sum, prorate, round_amount
from meterline.core.periods import BillingPeriod, local_date, proration_fraction
from meterline.core.price_snapshot import price_snapshot
from meterline.core.rating import UsageLine
from meterline.core.tax import Taxable, TaxAsk, TaxRequest, tax_lines

HUNDRED = Decimal(100)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class InvoiceHeader:
    """What an invoice is about, apart from the events: who, when, under which revision."""

    customer: str
    currency: str
    timezone: str
    period: BillingPeriod
    configuration_revision: int
    configuration_hash: str
    through: Cut
    """The consistent cut of the ledger the invoice was rated through (``core.cuts``)."""
    number: str | None = None
    finalized_at_us: int | None = None


@dataclass(frozen=True, slots=True)
class Adjustment:
    """Late usage for an already finalized period: the difference its late events make."""

    description: str
    amount: Decimal
    adjusts: dict[str, Any]
    events: int
    first_sequence: int | None
    last_sequence: int | None
    merkle_root: bytes

    def lineage(self) -> dict[str, Any]:
        """The late events behind the adjustment, as an invoice line records them."""
        return {
            "events": self.events,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "merkle_root": self.merkle_root.hex(),
        }


@dataclass(slots=True)
class _Line:
    kind: str
    description: str
    amount: Decimal
    segment: int | None
    detail: dict[str, Any] = field(default_factory=dict)
    gives_back: _Line | None = None
    """The usage line a ``trial`` line gives back (coupons and tax see them as one)."""


def _times(amount: Decimal, fraction: Decimal) -> Decimal:
    return prorate(amount, fraction)


def fee_lines(segment_list: Sequence[Segment], period: BillingPeriod, timezone: str) -> list[_Line]:
    """Every fee line of the period (see the module docstring for the rules)."""
    lines = []
    for index, segment in _fee_segments(segment_list):
        if segment.trial is not None and segment.trial.trial.frees_fees:
            continue  # core.trials: no fee for the trial's stretch
        terms = segment.terms
        by = terms.plan.billing.proration
        label = terms.plan.label
        for fee in terms.fees():
            service = {
                "start": format_timestamp(segment.start_us),
                "end": format_timestamp(segment.end_us),
            }
            detail = _fee_detail(fee, terms, label)
            if fee.kind == "one_off":
                if segment.begins_terms:
                    lines.append(
                        _Line("fee", f"{fee.name} ({label}, one-off)", fee.amount, index, detail)
                    )
                continue
            if fee.timing == "arrears":
                fraction = proration_fraction(
                    period, segment.start_us, segment.end_us, timezone, by
                )
                text = f"{fee.name} ({label}){_share(fraction, segment, timezone)}"
                lines.append(
                    _Line(
                        "fee",
                        text,
                        _times(fee.amount, fraction),
                        index,
                        {**detail, "service": service},
                    )
                )
                continue
            rest = proration_fraction(period, segment.start_us, period.end_us, timezone, by)
            if rest == 1:
                text = f"{fee.name} ({label})"
            else:
                since = local_date(timezone, segment.start_us)
                text = f"{fee.name} ({label}), remaining time from {since}"
            lines.append(
                _Line(
                    "fee",
                    text,
                    _times(fee.amount, rest),
                    index,
                    {**detail, "service": {**service, "end": format_timestamp(period.end_us)}},
                )
            )
            if segment.end_us < period.end_us:
                unused = proration_fraction(period, segment.end_us, period.end_us, timezone, by)
                lines.append(
                    _Line(
                        "fee",
                        f"{fee.name} ({label}), unused time from "
                        + str(local_date(timezone, segment.end_us)),
                        -_times(fee.amount, unused),
                        index,
                        {
                            **detail,
                            "service": {
                                "start": format_timestamp(segment.end_us),
                                "end": format_timestamp(period.end_us),
                            },
                        },
                    )
                )
    return lines


def _fee_detail(fee: Fee, terms: Terms, label: str) -> dict[str, Any]:
    """What a fee line records beside its amount: the fee, plan, recurrence and timing; how
    the journal spreads it (``core.revrec``) and the obligations it pays for
    (``core.allocation``), when not the defaults."""
    detail: dict[str, Any] = {
        "fee": fee.key,
        "plan": label,
        "recurrence": fee.kind,
        "timing": fee.timing,
    }
    if terms.plan.billing.recognition != "day":
        detail["recognition"] = terms.plan.billing.recognition
    if fee.obligations:
        detail["obligations"] = [
            [o.name, str(o.standalone_price), o.recognition] for o in fee.obligations
        ]
    return detail


def _fee_segments(segment_list: Sequence[Segment]) -> list[tuple[int, Segment]]:
    """The segments fees are charged over, with their positions: the end of a trial that
    leaves fees alone does not change the fees, so the segments it splits are one."""
    merged: list[tuple[int, Segment]] = []
    for index, segment in enumerate(segment_list):
        if merged:
            first, before = merged[-1]
            window = before.trial
            keeps_fees = window is not None and not window.trial.frees_fees
            if keeps_fees and before.end_us == window.end_us == segment.start_us:  # type: ignore[union-attr]
                joined = Segment(before.start_us, segment.end_us, before.terms, before.begins_terms)
                merged[-1] = (first, joined)
                continue
        merged.append((index, segment))
    return merged


def _share(fraction: Decimal, segment: Segment, timezone: str) -> str:
    if fraction == 1:
        return ""
    return f", {local_date(timezone, segment.start_us)} to {local_date(timezone, segment.end_us)}"


def usage_lines(
    lines: Sequence[UsageLine], segment_list: Sequence[Segment], configuration: Configuration
) -> list[_Line]:
    result = []
    for usage in lines:
        segment = segment_list[usage.segment]
        amount = usage.amount
        converted: dict[str, Any] = {}
        if usage.unit != segment.terms.plan.currency:
            credit = configuration.credit_type(usage.unit)
            assert credit is not None
            value = credit.value_at(segment.start_us)
            with localcontext(MONEY_CONTEXT):
                amount = usage.amount * value
            converted = {
                "unit": usage.unit,
                "units": str(usage.amount),
                "unit_value": str(value),
            }
        values = [value for _, value in usage.group if value is not None]
        name = usage.price.description or usage.meter
        text = f"{name}{' ' + '/'.join(values) if values else ''} ({segment.terms.plan.label})"
        detail: dict[str, Any] = {
            "meter": usage.meter,
            "group": {dimension: value for dimension, value in usage.group},
            "quantity": str(usage.quantity),
            "price": price_snapshot(usage.price),
            "service": {
                "start": format_timestamp(segment.start_us),
                "end": format_timestamp(segment.end_us),
            },
            "lineage": {
                "events": usage.events,
                "first_sequence": usage.first_sequence,
                "last_sequence": usage.last_sequence,
                "merkle_root": usage.merkle_root.hex(),
            },
            **converted,
        }
        result.append(_Line("usage", text, amount, usage.segment, detail))
    return result


def trial_lines(lines: Sequence[_Line], segment_list: Sequence[Segment]) -> list[_Line]:
    """For each usage line rated in a trial that frees usage, a ``trial`` line giving it
    back, up to what is left of the segment's share of the usage cap (``core.trials``)."""
    result = []
    for index, segment in enumerate(segment_list):
        window = segment.trial
        if window is None or not window.trial.frees_usage:
            continue
        left = window.cap_share(segment.start_us, segment.end_us)
        for line in lines:
            if line.kind != "usage" or line.segment != index or line.amount <= 0:
                continue
            free = line.amount if left is None else min(line.amount, left)
            if left is not None:
                left = exact_sum([left, -free])
            if free > 0:
                detail = {
                    "meter": line.detail.get("meter"),
                    "trial_ends": format_timestamp(window.end_us),
                }
                text = f"Free trial: {line.description}"
                result.append(_Line("trial", text, -free, index, detail, line))
    return result


def discount_lines(lines: Sequence[_Line], segment_list: Sequence[Segment]) -> list[_Line]:
    result = []
    for index, segment in enumerate(segment_list):
        percent = segment.terms.discount_percent
        if not percent:
            continue
        with localcontext(MONEY_CONTEXT):
            base = sum((line.amount for line in lines if line.segment == index), ZERO)
            amount = -(base * percent / HUNDRED)
        result.append(
            _Line(
                "discount",
                f"Discount {percent}% ({segment.terms.plan.label})",
                amount,
                index,
                {"percent": str(percent)},
            )
        )
    return result


def commitment_line(
    lines: Sequence[_Line], segment_list: Sequence[Segment], minimum: Decimal, currency: str
) -> _Line | None:
    """The postpaid minimum commit's true-up: what usage (after discounts) fell short of
    ``minimum`` in the period; None when it did not."""
    with localcontext(MONEY_CONTEXT):
        spent = ZERO
        for index, segment in enumerate(segment_list):
            usage = sum(
                (line.amount for line in lines if line.segment == index and line.kind == "usage"),
                ZERO,
            )
            percent = segment.terms.discount_percent or ZERO
            spent += usage - usage * percent / HUNDRED
        if spent >= minimum:
            return None
        return _Line(
            "commitment",
            f"Minimum commitment true-up (usage {round_amount(spent, currency)}"
            f" of {round_amount(minimum, currency)})",
            minimum - spent,
            None,
            {"minimum": str(minimum), "spent": _plain(spent)},
        )


@dataclass(frozen=True, slots=True)
class ExtraLine:
    """A line decided outside rating (credits applied, overage, a purchase, an amount
    billed early): its kind, text, exact amount and detail."""

    kind: str
    description: str
    amount: Decimal
    segment: int | None
    detail: dict[str, Any]


CHARGE_KINDS = ("fee", "usage", "trial", "discount", "commitment", "coupon")
"""Line kinds that are what the period's service costs; the others (credit, overage,
carried, purchase, prepaid, adjustment) say how it is paid or correct another invoice."""


def build_invoice(
    header: InvoiceHeader,
    segment_list: Sequence[Segment],
    rated: Sequence[UsageLine],
    adjustments: Sequence[Adjustment],
    configuration: Configuration,
    minimum_commit: Decimal | None = None,
    extra: Sequence[ExtraLine] = (),
    credits: dict[str, Any] | None = None,
    coupons: Sequence[Coupon] = (),
    tax: TaxAsk | None = None,
) -> Invoice:
    """The invoice document for ``header.period``: usage, fees, discounts, the minimum
    commit's true-up, ``coupons``, the ``extra`` lines (credits), adjustments, then tax;
    with a ``credits`` section (the period's credit ledger) when given."""
    rounding = segment_list[0].terms.plan.billing.rounding if segment_list else "half_up"
    body = _service_lines(header, segment_list, rated, configuration, minimum_commit)
    body += [
        _Line(line.kind, line.description, line.amount, line.segment, line.detail) for line in extra
    ]
    reduced, shares = coupon_lines(body, coupons, header.currency)
    body += reduced
    body.sort(
        key=lambda line: (
            _KIND_ORDER[line.kind] >= _KIND_ORDER["commitment"],
            line.segment if line.segment is not None else -1,
            _KIND_ORDER[line.kind],
        )
    )
    body += [
        _Line(
            "adjustment",
            adjustment.description,
            adjustment.amount,
            None,
            {"adjusts": adjustment.adjusts, "lineage": adjustment.lineage()},
        )
        for adjustment in adjustments
    ]
    if tax is not None:
        body += tax_lines_of(body, shares, tax, header)
    lines, total = numbered_lines(body, header.currency, rounding)
    return _document(header, segment_list, lines, total, credits)


def _service_lines(
    header: InvoiceHeader,
    segment_list: Sequence[Segment],
    rated: Sequence[UsageLine],
    configuration: Configuration,
    minimum_commit: Decimal | None,
) -> list[_Line]:
    """Usage, fees, trials, discounts and the minimum commit's true-up: what the service
    costs."""
    body = usage_lines(rated, segment_list, configuration) + fee_lines(
        segment_list, header.period, header.timezone
    )
    body += trial_lines(body, segment_list)
    body += discount_lines(body, segment_list)
    if minimum_commit is not None:
        true_up = commitment_line(body, segment_list, minimum_commit, header.currency)
        if true_up is not None:
            body.append(true_up)
    return body


def _document(
    header: InvoiceHeader,
    segment_list: Sequence[Segment],
    lines: list[InvoiceLine],
    total: Decimal,
    credits: dict[str, Any] | None,
) -> Invoice:
    period, timezone = header.period, header.timezone
    return Invoice(
        number=header.number,
        status="draft" if header.number is None else "finalized",
        customer=header.customer,
        currency=header.currency,
        timezone=timezone,
        period=PeriodSpan(
            start=format_timestamp(period.start_us),
            end=format_timestamp(period.end_us),
            label=str(local_date(timezone, period.start_us)),
        ),
        terms=[
            TermsSpan(
                start=format_timestamp(segment.start_us),
                end=format_timestamp(segment.end_us),
                plan=segment.terms.plan.label,
                overrides=not segment.terms.overrides.is_empty(),
            )
            for segment in segment_list
        ],
        configuration=ConfigurationReference(
            revision=header.configuration_revision, hash=header.configuration_hash
        ),
        ledger=LedgerReference(through=header.through.to_json()),
        lines=lines,
        # exact already; rounding fixes the scale
        total=spelled_decimal(str(round_amount(total, header.currency))),
        finalized_at=None
        if header.finalized_at_us is None
        else format_timestamp(header.finalized_at_us),
        credits=UNSET if credits is None else credits,
    )


_KIND_ORDER = {
    "fee": 0,
    "usage": 1,
    "trial": 2,
    "discount": 2,
    "commitment": 3,
    "coupon": 4,
    "purchase": 5,
    "credit": 6,
    "overage": 7,
    "carried": 8,
    "prepaid": 9,
    "adjustment": 10,
    "tax": 11,
}


COUPON_BASE_KINDS = ("fee", "usage", "discount", "commitment")
"""Lines coupons reduce (``core.coupons``): what the period's service costs."""
TAXABLE_KINDS = ("fee", "usage", "discount", "commitment", "coupon", "adjustment")
"""Lines tax is computed on (``core.tax``): the charges after coupons, and late usage.
Credits (prepaid, promotional, carried) pay an invoice and do not lower its taxable
amount, as Stripe's customer balance does not; purchases of credits are not taxed."""


def coupon_lines(
    body: Sequence[_Line], coupons: Sequence[Coupon], currency: str
) -> tuple[list[_Line], dict[int, Decimal]]:
    """One ``coupon`` line per coupon that takes anything from the charge lines, and what
    the coupons took from each line altogether (by the line's ``id``)."""
    if not coupons:
        return [], {}
    base = [
        Discountable(id(line), line.kind, line.detail.get("meter"), amount)
        for line, amount in _netted(body, COUPON_BASE_KINDS, {})
    ]
    result = []
    taken_from: dict[int, Decimal] = {}
    for taken in apply_coupons(base, coupons, currency):
        coupon = taken.coupon
        off = {"percent_off": str(coupon.percent_off)} if coupon.percent_off else {}
        if coupon.amount_off is not None:
            off = {"amount_off": str(coupon.amount_off)}
        detail = {"coupon": coupon.code, "applies_to": coupon.applies_to, **off}
        result.append(_Line("coupon", taken.description(currency), taken.amount, None, detail))
        for key, share in taken.shares:
            taken_from[key] = exact_sum([taken_from.get(key, ZERO), share])
    for line in body:  # what coupons took from a line, so a credit note can give it back
        if id(line) in taken_from:
            line.detail["coupons_took"] = _plain(taken_from[id(line)])
    return result, taken_from


def _netted(
    body: Sequence[_Line], kinds: Sequence[str], taken_from: dict[int, Decimal]
) -> list[tuple[_Line, Decimal]]:
    """The lines of ``kinds`` with their amounts less what coupons took from them, each
    usage line netted with the trial lines giving it back (which are not listed)."""
    given_back: dict[int, Decimal] = {}
    for line in body:
        if line.gives_back is not None:
            key = id(line.gives_back)
            given_back[key] = exact_sum([given_back.get(key, ZERO), line.amount])
    return [
        (
            line,
            exact_sum(
                [line.amount, given_back.get(id(line), ZERO), -taken_from.get(id(line), ZERO)]
            ),
        )
        for line in body
        if line.kind in kinds and line.gives_back is None
    ]


def tax_lines_of(
    body: Sequence[_Line], taken_from: dict[int, Decimal], tax: TaxAsk, header: InvoiceHeader
) -> list[_Line]:
    """One ``tax`` line per rate that applies, on each taxable line's amount less what the
    coupons took from it."""
    taxables = tuple(
        Taxable(id(line), line.kind, line.detail.get("meter"), None, amount)
        for line, amount in _netted(body, TAXABLE_KINDS, taken_from)
        if line.kind != "coupon"
    )
    request = TaxRequest(header.customer, tax.jurisdiction, header.currency, taxables)
    result = []
    for found in tax_lines(taxables, tax.provider.rates(request), header.currency, tax.rounding):
        detail = {
            "tax": found.rate.name,
            "percent": str(found.rate.percent),
            "inclusive": found.rate.inclusive,
            "jurisdiction": found.rate.jurisdiction,
            "taxable": str(found.taxable),
            "included": str(found.included),
        }
        result.append(_Line("tax", found.description(), found.amount, None, detail))
    return result


def charges_total(document: Invoice) -> Decimal:
    """The sum of the rounded lines of ``CHARGE_KINDS``: what the period's service costs,
    however it was paid (credits, amounts billed early)."""
    with localcontext(MONEY_CONTEXT):
        return sum(
            (line.amount for line in document.lines if line.kind in CHARGE_KINDS),
            ZERO,
        )


def _plain(amount: Decimal) -> str:
    """Exact decimal text without exponent notation, trailing zeros kept as computed."""
    text = format(amount, "f")
    return text


def invoice_bytes(document: Invoice) -> bytes:
    """The canonical bytes of an invoice document: what is hashed and stored."""
    return document_bytes(document)


def invoice_hash(document: Invoice) -> str:
    """SHA-256 of the canonical bytes, hex: covers every line, its price and lineage root."""
    return document_hash(document)


def line_sum(document: Invoice) -> Decimal:
    """The sum of an invoice's rounded line amounts (equals ``total`` for a sound document)."""
    with localcontext(MONEY_CONTEXT):
        return sum((line.amount for line in document.lines), ZERO)
