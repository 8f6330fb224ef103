"""Revenue recognition (ASC 606) as balanced journal entries (pure; ``core.journal``).

What each kind of consideration earns, and when (docs/finance.md, "Revenue recognition"):

- **Fees billed in advance** (``ratable_fee``): billed to accounts receivable and deferred;
  recognized ratably by day over the service period. A day counts from the period's first
  date up to, not including, its end date (Stripe's daily amortization: a 4-month period
  from June 15 to October 13 is 120 days); day k recognizes the rounded cumulative
  amount less the rounded amount before it (``money.cumulative_shares``), so the revenue
  recognized by every day is within half a cent of the exact figure and the days sum to
  the fee.
- **Usage billed in arrears** (``usage_in_arrears``): recognized as delivered, day by day,
  against unbilled receivable; billing moves it to accounts receivable. Each day's figure
  is the rounded cumulative amount less the rounded amount before it, so the days sum to
  the invoice line exactly.
- **Prepaid credits** (``credit_entries``): a paid grant is billed and deferred at
  purchase; as its units are consumed, the deferred amount is released at the grant's
  cost basis (what was paid per unit; cumulative, rounded once). Where usage is priced in
  the grant's currency, the consumption settles the usage's unbilled receivable: the
  basis part from deferred revenue, the unpaid part (free credit, or a discount on a
  prepaid commit) as contra-revenue; where usage is priced in a credit type, the basis
  part is recognized as credit revenue and free credit earns nothing.
- **Breakage** (per grant): ``proportional`` to the pattern of use, given an expected
  breakage rate r (ASC 606-10-55-48: each unit consumed brings r / (1 - r) of its value as
  breakage, never more than what is still deferred; ``core.breakage``: a change of the
  rate books one catch-up on its day, earlier entries untouched); ``expiry`` (all that
  is unused when the grant expires: "remote"); ``never`` (unused credit stays deferred, e.g.
  refundable). At expiry a proportional grant's remainder is recognized too.
- **Rollover** moves the deferred value of the kept units to the rollover grant, with no
  revenue; **a void** reverses what is still deferred against accounts receivable (the
  credit note that goes with it).

Invariant, per grant and in total: billed = recognized (revenue, breakage, contra) +
deferred + moved + reversed; ``check_grant`` asserts it after every movement.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, Inexact, localcontext
from typing import Literal

from meterline.core.breakage import RateChange, catch_up, check_rates
from meterline.core.journal import (
    CONTRA_COMMIT_DISCOUNTS,
    CONTRA_FREE_CREDITS,
    DEFERRED_CREDITS,
    DEFERRED_FEES,
    RECEIVABLE,
    REVENUE_BREAKAGE,
    REVENUE_CREDITS,
    REVENUE_SUBSCRIPTION,
    REVENUE_USAGE,
    UNBILLED,
    JournalEntry,
    JournalError,
    Posting,
    entry,
)
from meterline.core.money import (
    MONEY_CONTEXT,
    cumulative_shares,
    round_amount,
    rounded_ratio,
    weighted_shares,
)
from meterline.core.periods import local_midnight_us

ZERO = Decimal(0)

BreakageMode = Literal["proportional", "expiry", "never"]
BREAKAGE_MODES: tuple[BreakageMode, ...] = ("proportional", "expiry", "never")
MovementKind = Literal["consume", "release", "expire", "void", "rollover"]


# -- fees in advance --------------------------------------------------------------------------


def service_days(start: date, end: date) -> list[date]:
    """The days a service period [start, end) is recognized over (at least its first)."""
    count = max(1, (end - start).days)
    return [start + timedelta(days=number) for number in range(count)]


Recognition = Literal["day", "second", "month", "month_prorated"]
RECOGNITIONS: tuple[Recognition, ...] = ("day", "second", "month", "month_prorated")
"""How a ratable fee spreads over its service: evenly per day (the default); per second
(a 25-hour day across a clock change earns 25/24 of a day); evenly per service month
(each month from the start date earns the same, spread over its days); evenly per
calendar month with the first and last months prorated by their days."""


def day_weights(days: list[date], recognition: Recognition, timezone: str = "UTC") -> list[Decimal]:
    """The weight of each service day under ``recognition`` (see ``RECOGNITIONS``)."""
    if recognition == "day":
        return [Decimal(1)] * len(days)
    if recognition == "second":
        return [
            Decimal(
                local_midnight_us(timezone, day + timedelta(days=1))
                - local_midnight_us(timezone, day)
            )
            for day in days
        ]
    if recognition == "month_prorated":
        return [Decimal(1) / Decimal(calendar.monthrange(d.year, d.month)[1]) for d in days]
    if recognition == "month":
        start = days[0]
        weights = []
        for day in days:
            months = (day.year - start.year) * 12 + day.month - start.month
            if day.day < start.day:
                months -= 1
            first = _months_after(start, months)
            weights.append(Decimal(1) / Decimal((_months_after(start, months + 1) - first).days))
        return weights
    raise JournalError(f"recognition: {recognition!r} is not one of {', '.join(RECOGNITIONS)}")


def _months_after(start: date, months: int) -> date:
    """``start`` moved ``months`` calendar months on (the month's last day when shorter)."""
    year, index = divmod(start.month - 1 + months, 12)
    last = calendar.monthrange(start.year + year, index + 1)[1]
    return date(start.year + year, index + 1, min(start.day, last))


def ratable_fee(
    cause: str,
    customer: str,
    amount: Decimal,
    currency: str,
    billed: date,
    start: date,
    end: date,
    account: str = REVENUE_SUBSCRIPTION,
    recognition: Recognition = "day",
    timezone: str = "UTC",
) -> list[JournalEntry]:
    """A fee billed on ``billed`` for the service period [start, end), recognized a share
    per day (weighted by ``recognition``). Days served before the bill are earned against
    unbilled receivable (a fee in arrears, or one billed late); the rest is deferred when
    billed and released day by day. A negative amount (a credit note on the fee) reverses
    the same way."""
    days = service_days(start, end)
    if recognition == "day":
        shares = cumulative_shares(abs(amount), len(days), currency)
    else:
        weights = day_weights(days, recognition, timezone)
        with localcontext(MONEY_CONTEXT) as context:
            context.traps[Inexact] = False
            weights = [weight.quantize(Decimal(1).scaleb(-30)) for weight in weights]
        shares = weighted_shares(abs(amount), weights, currency)
    sign = -1 if amount < 0 else 1
    entries: list[JournalEntry | None] = []
    earned_before = ZERO
    with localcontext(MONEY_CONTEXT):
        for day, share in zip(days, shares, strict=True):
            early = day < billed
            if early:
                earned_before += sign * share
            entries.append(
                entry(
                    f"{cause}/{day.isoformat()}",
                    day,
                    "fee earned for the day (unbilled)" if early else "fee recognized for the day",
                    cause,
                    customer,
                    currency,
                    UNBILLED if early else DEFERRED_FEES,
                    account,
                    sign * share,
                )
            )
        postings = [
            Posting(RECEIVABLE, amount, currency),
            Posting(UNBILLED, -earned_before, currency),
            Posting(DEFERRED_FEES, earned_before - amount, currency),
        ]
    postings = [p for p in postings if p.amount != 0]
    if postings:
        entries.insert(
            0,
            JournalEntry(f"{cause}/billed", billed, "fee billed", cause, customer, tuple(postings)),
        )
    return [item for item in entries if item is not None]


# -- usage in arrears -------------------------------------------------------------------------


def usage_in_arrears(
    cause: str,
    customer: str,
    currency: str,
    deliveries: Sequence[tuple[date, Decimal]],
    billed: date | None,
    account: str = REVENUE_USAGE,
) -> list[JournalEntry]:
    """Usage delivered per day (exact amounts, in day order) recognized as it is
    delivered (on ``account``); billed (when ``billed``) for the rounded total, the
    invoice line's amount."""
    entries: list[JournalEntry | None] = []
    cumulative = recognized = ZERO
    with localcontext(MONEY_CONTEXT):
        for day, amount in deliveries:
            cumulative += amount
            target = round_amount(cumulative, currency)
            entries.append(
                entry(
                    f"{cause}/{day.isoformat()}",
                    day,
                    "usage delivered",
                    cause,
                    customer,
                    currency,
                    UNBILLED,
                    account,
                    target - recognized,
                )
            )
            recognized = target
    if billed is not None:
        entries.append(
            entry(
                f"{cause}/billed",
                billed,
                "usage billed in arrears",
                cause,
                customer,
                currency,
                RECEIVABLE,
                UNBILLED,
                recognized,
            )
        )
    return [item for item in entries if item is not None]


# -- prepaid credits ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditTerms:
    """A grant as revenue sees it: ``units`` of ``unit`` bought for ``paid`` ``currency``
    on ``purchased`` (zero: free). ``unit == currency`` when the grant pays usage priced
    in money (a prepaid commit); otherwise it pays usage priced in a credit type.
    ``breakage_rate``: the share of units expected never to be used (proportional mode).
    ``rolled``: a rollover grant, whose deferred value moved in rather than was billed.
    ``breakage_changes``: later estimates of the rate, each from its effective day."""

    grant_id: str
    customer: str
    unit: str
    units: Decimal
    paid: Decimal
    currency: str
    purchased: date
    breakage: BreakageMode = "expiry"
    breakage_rate: Decimal = ZERO
    rolled: bool = False
    breakage_changes: tuple[RateChange, ...] = ()

    def __post_init__(self) -> None:
        if self.units <= 0:
            raise JournalError(f"grant {self.grant_id}: units must be above zero")
        if self.paid < 0:
            raise JournalError(f"grant {self.grant_id}: paid must not be negative")
        if self.breakage not in BREAKAGE_MODES:
            raise JournalError(f"grant {self.grant_id}: breakage {self.breakage!r} unknown")
        if not ZERO <= self.breakage_rate < 1:
            raise JournalError(f"grant {self.grant_id}: breakage_rate must be in [0, 1)")
        check_rates(self.breakage_rate, self.breakage_changes)

    @property
    def pays_money(self) -> bool:
        return self.unit == self.currency


@dataclass(frozen=True, slots=True)
class Movement:
    """What the credit book did to a grant on ``day``: ``consume`` (``units`` used),
    ``release`` (units given back), ``expire`` (units left unused), ``void``, or
    ``rollover`` (``units`` kept, moved to the grant ``to``)."""

    day: date
    grant_id: str
    kind: MovementKind
    units: Decimal
    to: str | None = None
    cause: str = ""


@dataclass(slots=True)
class GrantAccount:
    """One grant's running revenue figures (all in its currency)."""

    terms: CreditTerms
    consumed: Decimal = ZERO
    """Net units consumed (consumptions less releases)."""
    left: Decimal = ZERO
    """Units still on the grant."""
    billed: Decimal = ZERO
    released: Decimal = ZERO
    """Deferred value released by consumption (at the cost basis)."""
    settled: Decimal = ZERO
    """Face value of the consumption that settled money-priced usage."""
    breakage: Decimal = ZERO
    moved: Decimal = ZERO
    reversed: Decimal = ZERO
    closed: bool = False
    entries: list[JournalEntry] = field(default_factory=list)
    named: dict[str, int] = field(default_factory=dict)
    """How many movements each entry id stem has named (a stem repeats only when a grant
    moves twice the same way on one day)."""
    rate: Decimal = ZERO
    """The expected breakage rate in force (proportional breakage)."""
    pending: list[RateChange] = field(default_factory=list)
    """Changes of the rate not yet in force, in date order."""

    @property
    def deferred(self) -> Decimal:
        with localcontext(MONEY_CONTEXT):
            return self.billed - self.released - self.breakage - self.moved - self.reversed


def check_grant(account: GrantAccount) -> None:
    """billed = released + breakage + moved + reversed + deferred, deferred >= 0, breakage
    never above what was left unused."""
    terms = account.terms
    if account.deferred < 0:
        raise JournalError(f"grant {terms.grant_id}: deferred below zero ({account.deferred})")
    unused = account.billed - account.released - account.moved - account.reversed
    if not ZERO <= account.breakage <= unused:
        raise JournalError(
            f"grant {terms.grant_id}: breakage {account.breakage} outside [0, unused {unused}]"
        )


def credit_entries(
    grants: Iterable[CreditTerms],
    movements: Iterable[Movement],
    purchase_account: str = RECEIVABLE,
) -> tuple[list[JournalEntry], dict[str, GrantAccount]]:
    """The journal of ``grants`` under ``movements`` (in day order), and each grant's
    figures after them. A purchase debits ``purchase_account``: accounts receivable when
    the grant is its own bill, unbilled receivable when an invoice line bills it."""
    accounts: dict[str, GrantAccount] = {}
    for terms in grants:
        _open(accounts, terms, purchase_account=purchase_account)
    for movement in movements:
        account = accounts.get(movement.grant_id)
        if account is None:
            raise JournalError(f"movement: grant {movement.grant_id!r} unknown")
        _revise_estimates(accounts, movement.day)
        _move(accounts, account, movement)
        check_grant(account)
    _revise_estimates(accounts, None)
    journal = [item for account in accounts.values() for item in account.entries]
    journal.sort(key=lambda item: (item.day, item.entry_id))
    return journal, accounts


def _open(
    accounts: dict[str, GrantAccount],
    terms: CreditTerms,
    moved_in: Decimal = ZERO,
    purchase_account: str = RECEIVABLE,
) -> None:
    if terms.grant_id in accounts:
        raise JournalError(f"grant {terms.grant_id!r} twice")
    account = GrantAccount(
        terms, left=terms.units, rate=terms.breakage_rate, pending=list(terms.breakage_changes)
    )
    accounts[terms.grant_id] = account
    if terms.rolled:
        account.billed = moved_in  # no entry: the value stays in deferred revenue
        return
    account.billed = terms.paid
    _post(
        account,
        entry(
            f"grant:{terms.grant_id}/purchased",
            terms.purchased,
            "credits purchased",
            f"grant:{terms.grant_id}",
            terms.customer,
            terms.currency,
            purchase_account,
            DEFERRED_CREDITS,
            terms.paid,
        ),
    )


def _post(account: GrantAccount, item: JournalEntry | None) -> None:
    if item is not None:
        account.entries.append(item)


def _share(account: GrantAccount, units: Decimal) -> Decimal:
    """The deferred value (billed, for the grant's units) of ``units``, rounded."""
    return rounded_ratio(account.billed, units, account.terms.units, account.terms.currency)


def _ident(account: GrantAccount, movement: Movement) -> str:
    """A movement's entry id, from the facts alone: the grant, the day and what happened
    (``usage`` for consumption and releases), so ids do not change as later movements
    arrive or as the books are read on a later day."""
    what = "usage" if movement.kind in ("consume", "release") else movement.kind
    stem = f"grant:{account.terms.grant_id}/{movement.day.isoformat()}/{what}"
    seen = account.named.get(stem, 0)
    account.named[stem] = seen + 1
    return stem if seen == 0 else f"{stem}/{seen + 1}"


def _move(accounts: dict[str, GrantAccount], account: GrantAccount, movement: Movement) -> None:
    terms = account.terms
    if account.closed:
        raise JournalError(f"movement: grant {terms.grant_id!r} has ended")
    cause = movement.cause or f"grant:{terms.grant_id}"
    ident = _ident(account, movement)
    with localcontext(MONEY_CONTEXT):
        if movement.kind in ("consume", "release"):
            units = movement.units if movement.kind == "consume" else -movement.units
            account.consumed += units
            account.left -= units
            _consume(account, movement.day, ident, cause)
        elif movement.kind == "rollover":
            if movement.to is None:
                raise JournalError("movement: a rollover names the grant it moves to")
            kept = min(movement.units, account.left)
            value = (
                ZERO
                if account.left == 0
                else rounded_ratio(account.deferred, kept, account.left, terms.currency)
            )
            account.moved += value
            account.left -= kept
            _open(
                accounts,
                CreditTerms(
                    movement.to,
                    terms.customer,
                    terms.unit,
                    movement.units,
                    value,
                    terms.currency,
                    movement.day,
                    terms.breakage,
                    account.rate,
                    rolled=True,
                    breakage_changes=tuple(account.pending),
                ),
                moved_in=value,
            )
            _end_unused(account, movement.day, ident, cause)
        elif movement.kind == "expire":
            account.left -= movement.units
            _end_unused(account, movement.day, ident, cause)
        elif movement.kind == "void":
            reversed_value = account.deferred
            account.reversed += reversed_value
            account.closed = True
            _post(
                account,
                entry(
                    ident,
                    movement.day,
                    "grant voided: unused value reversed",
                    cause,
                    terms.customer,
                    terms.currency,
                    DEFERRED_CREDITS,
                    RECEIVABLE,
                    reversed_value,
                ),
            )
        else:
            raise JournalError(f"movement: kind {movement.kind!r} unknown")


def _consume(account: GrantAccount, day: date, ident: str, cause: str) -> None:
    """Bring the released value (and, proportionally, breakage) to their cumulative
    targets for the units consumed so far."""
    terms = account.terms
    released = _share(account, account.consumed) if account.consumed > 0 else ZERO
    released = min(released, account.billed - account.moved - account.reversed)
    delta = released - account.released
    account.released = released
    if terms.pays_money:
        face = round_amount(account.consumed, terms.currency) - account.settled
        account.settled += face
        postings = [
            Posting(DEFERRED_CREDITS, delta, terms.currency),
            # promotional credit (nothing paid) or a commit's discount: separate contras
            Posting(
                CONTRA_FREE_CREDITS if terms.paid == 0 else CONTRA_COMMIT_DISCOUNTS,
                face - delta,
                terms.currency,
            ),
            Posting(UNBILLED, -face, terms.currency),
        ]
        postings = [p for p in postings if p.amount != 0]
        if postings:
            account.entries.append(
                JournalEntry(
                    ident, day, "credits applied to usage", cause, terms.customer, tuple(postings)
                )
            )
    else:
        _post(
            account,
            entry(
                ident,
                day,
                "credits consumed",
                cause,
                terms.customer,
                terms.currency,
                DEFERRED_CREDITS,
                REVENUE_CREDITS,
                delta,
            ),
        )
    if terms.breakage == "proportional":
        _breakage(account, _catch_up(account), day, f"{ident}/breakage", cause)


def _catch_up(account: GrantAccount) -> Decimal:
    """What brings the grant's breakage to its target at the rate in force for what was
    consumed so far, never above the value consumption has not released."""
    terms = account.terms
    with localcontext(MONEY_CONTEXT):
        unused = account.billed - account.moved - account.reversed - account.released
    booked = account.breakage
    return catch_up(
        account.billed, terms.units, account.consumed, unused, account.rate, booked, terms.currency
    )


def _revise_estimates(accounts: dict[str, GrantAccount], through: date | None) -> None:
    """Put in force each grant's rate changes effective by ``through`` (all when None):
    a proportional grant still open books its catch-up on the change's day."""
    for account in list(accounts.values()):
        while account.pending and (through is None or account.pending[0].effective <= through):
            change = account.pending.pop(0)
            before, account.rate = account.rate, change.rate
            terms = account.terms
            if account.closed or terms.breakage != "proportional":
                continue
            _breakage(
                account,
                _catch_up(account),
                change.effective,
                f"grant:{terms.grant_id}/{change.effective.isoformat()}/breakage-estimate",
                f"grant:{terms.grant_id}",
                f"breakage estimate {before} -> {change.rate}: cumulative catch-up",
            )
            check_grant(account)


def _breakage(
    account: GrantAccount,
    amount: Decimal,
    day: date,
    ident: str,
    cause: str,
    description: str = "breakage recognized",
) -> None:
    account.breakage += amount
    _post(
        account,
        entry(
            ident,
            day,
            description,
            cause,
            account.terms.customer,
            account.terms.currency,
            DEFERRED_CREDITS,
            REVENUE_BREAKAGE,
            amount,
        ),
    )


def _end_unused(account: GrantAccount, day: date, ident: str, cause: str) -> None:
    """The grant ended (expired, or rolled what it kept): what is still deferred becomes
    breakage, unless the grant's breakage is ``never``."""
    account.closed = True
    if account.terms.breakage != "never":
        _breakage(account, account.deferred, day, f"{ident}/unused", cause)
