"""The records of a credit timeline (pure): what a ``CreditBook`` (``core.credits``) is
fed (grants, charges, voids, manual adjustments) and what it writes (balanced entries),
the accounts they name, the order usage burns grants in and the instants charges are cut
at. The rules that move credit between accounts are ``core.credits``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Literal

from meterline.core.errors import MeterlineError
from meterline.core.money import MONEY_CONTEXT
from meterline.core.semantics import DEFAULT, Semantics, compared_expiry, cost_rank

ZERO = Decimal(0)
HUNDRED = Decimal(100)

OverageMode = Literal["bill", "carry", "refuse"]
OVERAGE_MODES: tuple[OverageMode, ...] = ("bill", "carry", "refuse")
EntryKind = Literal[
    "grant",
    "consume",
    "release",
    "expire",
    "rollover",
    "top_up",
    "void",
    "adjust",
    "overage",
    "carry",
    "settle",
]


@dataclass(frozen=True, slots=True)
class RolloverRule:
    """What a recurring grant keeps at a reset: ``min(maximum, max(minimum, balance x
    percent / 100))``; the kept amount lives on in a rollover grant expiring at the
    instant the shell computed from the rule (``Grant.rollover_expires_us``)."""

    percent: Decimal = HUNDRED
    minimum: Decimal = ZERO
    maximum: Decimal | None = None

    def kept(self, balance: Decimal) -> Decimal:
        with localcontext(MONEY_CONTEXT):
            share = balance * self.percent / HUNDRED
        kept = max(self.minimum, share)
        if self.maximum is not None:
            kept = min(self.maximum, kept)
        return kept


@dataclass(frozen=True, slots=True)
class Grant:
    """An amount of ``unit`` (a currency or a credit type) a customer may spend.

    ``paid`` is what the customer paid for the whole grant (its cost basis, in
    ``paid_currency``; zero for free or promotional credit). Active on
    ``[effective_us, expires_us)``. ``reset_us``: the instant a recurring grant's period
    ends, when ``rollover`` decides what is kept (without a rule, nothing is).
    """

    grant_id: str
    unit: str
    amount: Decimal
    effective_us: int
    expires_us: int | None = None
    priority: int = 50
    paid: Decimal = ZERO
    paid_currency: str = ""
    scope: tuple[str, ...] = ()
    reset_us: int | None = None
    rollover: RolloverRule | None = None
    rollover_expires_us: int | None = None
    created_us: int | None = None
    source: str = "contract"
    reason: str = ""

    @property
    def created(self) -> int:
        return self.effective_us if self.created_us is None else self.created_us

    def may_pay(self, unit: str, meter: str) -> bool:
        return self.unit == unit and (not self.scope or meter in self.scope)

    def burn_key(self, semantics: Semantics = DEFAULT) -> tuple[int, int, int, Decimal, int, str]:
        """Where the grant stands in the burn order: priority, then soonest expiry (none
        last; compared as ``semantics.burn_expiry`` says), then the cost-basis tie-break
        (``semantics.burn_cost_basis``), then the creation instant, then the id."""
        expiry = self.expires_us
        return (
            self.priority,
            0 if expiry is not None else 1,
            compared_expiry(expiry, semantics) if expiry is not None else 0,
            cost_rank(self.paid, self.amount, semantics),
            self.created,
            self.grant_id,
        )


@dataclass(frozen=True, slots=True)
class Charge:
    """The price of one line's usage over the window ``[start_us, end_us)``, in ``unit``;
    ``first_sequence``/``last_sequence``: the ledger sequences of the usage behind it."""

    start_us: int
    end_us: int
    line: str
    meter: str
    unit: str
    amount: Decimal
    first_sequence: int | None = None
    last_sequence: int | None = None
    reason: str = "usage"


@dataclass(frozen=True, slots=True)
class Void:
    grant_id: str
    at_us: int
    reason: str


@dataclass(frozen=True, slots=True)
class ManualAdjustment:
    """A signed change to a grant's balance by hand (a correction), with its reason."""

    grant_id: str
    at_us: int
    amount: Decimal
    reason: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One balanced movement: ``amount`` (> 0) from ``credit`` to ``debit``, in ``unit``."""

    at_us: int
    kind: EntryKind
    unit: str
    amount: Decimal
    debit: str
    credit: str
    grant: str | None
    reason: str
    line: str | None = None
    meter: str | None = None
    first_sequence: int | None = None
    last_sequence: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "at_us": self.at_us,
            "kind": self.kind,
            "unit": self.unit,
            "amount": str(self.amount),
            "debit": self.debit,
            "credit": self.credit,
            "grant": self.grant,
            "reason": self.reason,
            "line": self.line,
            "meter": self.meter,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
        }


class CreditError(MeterlineError, ValueError):
    """A timeline the book cannot apply (an unknown grant, a negative amount)."""

    code = "invalid_credit"
    http_status = 422


def account(grant_id: str) -> str:
    return f"grant:{grant_id}"


@dataclass
class Draw:
    """One part of a charge: drawn from a grant, billed as overage or carried."""

    target: str  # a grant id, or "" for overage/carried
    amount: Decimal
    kind: EntryKind


@dataclass
class Debt:
    """Usage no grant paid, carried until a grant that may pay for it becomes active."""

    line: str
    meter: str
    unit: str
    amount: Decimal
    first_sequence: int | None
    last_sequence: int | None


def burn_order(grants: Sequence[Grant], semantics: Semantics = DEFAULT) -> list[Grant]:
    """Grants in the order usage draws them."""
    return sorted(grants, key=lambda grant: grant.burn_key(semantics))


def cut_instants(
    grants: Iterable[Grant],
    voids: Iterable[Void] = (),
    start_us: int | None = None,
    end_us: int | None = None,
) -> list[int]:
    """Every instant in ``(start_us, end_us)`` where the set of active grants may change:
    the window edges charges must be cut at."""
    instants: set[int] = set()
    for grant in grants:
        instants.add(grant.effective_us)
        for instant in (grant.expires_us, grant.reset_us, grant.rollover_expires_us):
            if instant is not None:
                instants.add(instant)
    instants.update(void.at_us for void in voids)
    return sorted(
        t for t in instants if (start_us is None or t > start_us) and (end_us is None or t < end_us)
    )
