"""Credits: grant burn-down, expiry, rollover, voids and carried overage, as a ledger (pure).

A ``CreditBook`` is fed a timeline (grants, charges, voids, adjustments) and decides every
movement of credit as a balanced ``Entry``: a debit to one account and a credit to another,
for the same amount in the same unit (the records it reads and writes are
``core.credit_records``'s; this module owns the rules that move credit). A grant's
balance is the sum of the entries on its account (``grant:<id>``), never a number updated
in place. The accounts, per unit:

- ``issued``: where grants, rollover top-ups and manual adjustments come from;
- ``grant:<id>``: what a grant still holds;
- ``usage``: what usage consumed (debited by charges, credited by releases);
- ``expired``, ``voided``: what left grants unused;
- ``overage``: usage no grant paid, billed in currency at the contract's overage price;
- ``carried``: usage no grant paid, carried as debt (``carry``/``refuse``) and burnt from
  the next grant that becomes active and may pay for it.

Rules (the defaults; docs/credits.md, "Semantics", says which are configurable):

- Burn order: ``Grant.burn_key`` (priority, expiry, creation, id; ``semantics`` adds
  tie-breaks). A grant pays only units of its own ``unit`` and only for meters its
  ``scope`` allows (an empty scope: every meter).
- A charge is the price of one line's usage over one window ``[start, end)``: the windows
  are cut at every grant's effective, expiry, reset and void instant, so a grant is active
  for a whole window or not at all, and the charge is drawn from the grants active at the
  window's start. A window's charge is ``amount(cumulative usage at its end) - amount(at
  its start)``, so graduated and volume tiers stay exact; the charges of one window are
  drawn line by line in line order. A negative charge (a volume tier lowering the price of
  every unit) releases what that line drew, last draw first; a release to a grant that is
  no longer active expires again at once.
- At the same instant: charges of windows ending there, then voids, expiries and resets,
  then grants becoming effective, then carried overage burnt from those grants, then
  manual adjustments.
- Reset (a recurring grant's period end): the grant keeps ``min(maximum, max(minimum,
  balance x percent))``. The kept amount moves to a rollover grant with its own expiry; a
  kept amount above the balance is a top-up from ``issued``; the rest expires. A grant
  whose expiry is at or before its reset rolls nothing. The rollover grant is
  ``<id>/rollover`` (a grant ends once, so rolls once; rolled credit does not roll again).

Invariant (checked by ``CreditBook.check``): for every unit, granted + adjusted =
consumed + expired + remaining + voided, and no grant's balance is ever below zero.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from meterline.core.credit_records import (
    OVERAGE_MODES,
    ZERO,
    Charge,
    CreditError,
    Debt,
    Draw,
    Entry,
    EntryKind,
    Grant,
    ManualAdjustment,
    OverageMode,
    RolloverRule,
    Void,
    account,
    burn_order,
    cut_instants,
)
from meterline.core.money import MONEY_CONTEXT
from meterline.core.semantics import DEFAULT, Semantics

__all__ = [
    "OVERAGE_MODES",
    "Charge",
    "CreditBook",
    "CreditError",
    "Entry",
    "EntryKind",
    "Grant",
    "ManualAdjustment",
    "OverageMode",
    "RolloverRule",
    "Void",
    "account",
    "burn_order",
    "cut_instants",
]


@dataclass
class CreditBook:
    """Applies a timeline of grants, charges, voids and adjustments, in time order."""

    overage_mode: OverageMode = "bill"
    semantics: Semantics = DEFAULT
    entries: list[Entry] = field(default_factory=list)
    grants: dict[str, Grant] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)
    debts: list[Debt] = field(default_factory=list)
    _draws: dict[str, list[Draw]] = field(default_factory=dict)
    _settled: dict[str, list[tuple[str, Decimal]]] = field(default_factory=dict)
    _steps: list[tuple[int, int, int, object]] = field(default_factory=list)
    _scheduled_grants: list[Grant] = field(default_factory=list)
    _pending_voids: dict[str, Void] = field(default_factory=dict)
    _order: int = 0

    # -- the timeline -----------------------------------------------------------------------

    def run(
        self,
        grants: Iterable[Grant],
        charges: Iterable[Charge] = (),
        voids: Iterable[Void] = (),
        adjustments: Iterable[ManualAdjustment] = (),
        until_us: int | None = None,
    ) -> CreditBook:
        """Apply everything up to ``until_us`` (inclusive; everything when None), in order
        (see the module docstring for the order at one instant)."""
        self._steps: list[tuple[int, int, int, object]] = []
        self._scheduled_grants = list(grants)
        for grant in self._scheduled_grants:
            self._schedule(grant.effective_us, 4, grant)
            self._schedule(grant.effective_us, 5, grant.effective_us)
            self._schedule_end(grant)
        for charge in charges:
            self._schedule(charge.end_us, 0, charge)
        known = {grant.grant_id for grant in self._scheduled_grants}
        for void in voids:
            if void.grant_id not in known:
                raise CreditError(f"void of unknown grant {void.grant_id}")
            self._schedule(void.at_us, 1, void)
        for adjustment in adjustments:
            self._schedule(adjustment.at_us, 6, adjustment)
        while self._steps:
            at, rank, _, item = self._steps[0]
            if until_us is not None and at > until_us:
                break
            heapq.heappop(self._steps)
            if rank == 0:
                assert isinstance(item, Charge)
                self.charge(item)
            elif rank == 1:
                assert isinstance(item, Void)
                self.void(item)
            elif rank == 2:
                assert isinstance(item, Grant)
                self.end(item, at)
            elif rank == 4:
                assert isinstance(item, Grant)
                self.grant(item)
            elif rank == 5:
                assert isinstance(item, int)
                self.settle(item)
            else:
                assert isinstance(item, ManualAdjustment)
                self.adjust(item)
        return self

    def _schedule(self, at_us: int, rank: int, item: object) -> None:
        self._order += 1
        heapq.heappush(self._steps, (at_us, rank, self._order, item))

    def _schedule_end(self, grant: Grant) -> None:
        ends = [t for t in (grant.expires_us, grant.reset_us) if t is not None]
        if ends:
            self._schedule(min(ends), 2, grant)

    # -- movements --------------------------------------------------------------------------

    def _post(
        self,
        at_us: int,
        kind: EntryKind,
        unit: str,
        amount: Decimal,
        debit: str,
        credit: str,
        grant: str | None,
        reason: str,
        charge: Charge | Debt | None = None,
    ) -> None:
        if amount <= 0:
            raise CreditError(f"{kind} of {amount} {unit}: entries move positive amounts")
        with localcontext(MONEY_CONTEXT):
            for side, sign in ((debit, 1), (credit, -1)):
                if side.startswith("grant:"):
                    key = side[6:]
                    self.balances[key] = self.balances.get(key, ZERO) + sign * amount
        self.entries.append(
            Entry(
                at_us,
                kind,
                unit,
                amount,
                debit,
                credit,
                grant,
                reason,
                None if charge is None else charge.line,
                None if charge is None else charge.meter,
                None if charge is None else charge.first_sequence,
                None if charge is None else charge.last_sequence,
            )
        )

    def grant(self, grant: Grant) -> None:
        if grant.grant_id in self.grants:
            raise CreditError(f"grant {grant.grant_id}: granted twice")
        if grant.amount < 0:
            raise CreditError(f"grant {grant.grant_id}: amount is negative")
        for name, instant in (("expires", grant.expires_us), ("resets", grant.reset_us)):
            if instant is not None and instant <= grant.effective_us:
                raise CreditError(f"grant {grant.grant_id}: {name} at or before it starts")
        self.grants[grant.grant_id] = grant
        self.balances.setdefault(grant.grant_id, ZERO)
        kind: EntryKind = "rollover" if grant.source == "rollover" else "grant"
        if kind == "grant" and grant.amount > 0:
            self._post(
                grant.effective_us,
                "grant",
                grant.unit,
                grant.amount,
                account(grant.grant_id),
                "issued",
                grant.grant_id,
                grant.reason or f"{grant.source} grant",
            )
        pending = self._pending_voids.pop(grant.grant_id, None)
        if pending is not None:
            self.void(Void(grant.grant_id, grant.effective_us, pending.reason))

    def _active(self, grant: Grant, at_us: int) -> bool:
        if grant.grant_id in self.voided or grant.grant_id in self.closed:
            return False
        return grant.effective_us <= at_us and (
            grant.expires_us is None or at_us < grant.expires_us
        )

    def _burn_key(self, grant: Grant) -> tuple[int, int, int, Decimal, int, str]:
        return grant.burn_key(self.semantics)

    def _payers(self, unit: str, meter: str, at_us: int) -> list[Grant]:
        found = [
            grant
            for grant in self.grants.values()
            if grant.may_pay(unit, meter)
            and self._active(grant, at_us)
            and self.balances[grant.grant_id] > 0
        ]
        return sorted(found, key=self._burn_key)

    def charge(self, charge: Charge) -> None:
        if charge.amount == 0:
            return
        if charge.amount < 0:
            self._release(charge)
            return
        remaining = charge.amount
        draws = self._draws.setdefault(charge.line, [])
        for grant in self._payers(charge.unit, charge.meter, charge.start_us):
            with localcontext(MONEY_CONTEXT):
                taken = min(remaining, self.balances[grant.grant_id])
                remaining -= taken
            self._post(
                charge.end_us,
                "consume",
                charge.unit,
                taken,
                "usage",
                account(grant.grant_id),
                grant.grant_id,
                charge.reason,
                charge,
            )
            draws.append(Draw(grant.grant_id, taken, "consume"))
            if remaining == 0:
                return
        if self.overage_mode == "bill":
            self._post(
                charge.end_us,
                "overage",
                charge.unit,
                remaining,
                "usage",
                "overage",
                None,
                f"{charge.reason}: no grant covers it",
                charge,
            )
            draws.append(Draw("", remaining, "overage"))
            return
        self._post(
            charge.end_us,
            "carry",
            charge.unit,
            remaining,
            "usage",
            "carried",
            None,
            f"{charge.reason}: no grant covers it, carried",
            charge,
        )
        draws.append(Draw("", remaining, "carry"))
        self.debts.append(
            Debt(
                charge.line,
                charge.meter,
                charge.unit,
                remaining,
                charge.first_sequence,
                charge.last_sequence,
            )
        )

    def _release(self, charge: Charge) -> None:
        """Give back ``-charge.amount`` of what ``charge.line`` drew, last draw first."""
        with localcontext(MONEY_CONTEXT):
            remaining = -charge.amount
            draws = self._draws.get(charge.line, [])
            while remaining > 0:
                if not draws:
                    raise CreditError(f"line {charge.line}: releases more than it drew")
                draw = draws[-1]
                given = min(remaining, draw.amount)
                remaining -= given
                draw.amount -= given
                if draw.amount == 0:
                    draws.pop()
                reason = f"{charge.reason}: price lowered, released"
                if draw.kind == "consume":
                    grant = self.grants[draw.target]
                    self._post(
                        charge.end_us,
                        "release",
                        charge.unit,
                        given,
                        account(grant.grant_id),
                        "usage",
                        grant.grant_id,
                        reason,
                        charge,
                    )
                    if not self._active(grant, charge.start_us):
                        self._leave(grant, charge.end_us, given)
                elif draw.kind == "overage":
                    self._post(
                        charge.end_us, "overage", charge.unit, given, "overage", "usage", None,
                        reason, charge,
                    )  # fmt: skip
                else:
                    forgiven = self._forgive(charge.line, given)
                    if forgiven > 0:
                        self._post(
                            charge.end_us, "carry", charge.unit, forgiven, "carried", "usage",
                            None, reason, charge,
                        )  # fmt: skip
                    self._refund_settled(charge, given - forgiven, reason)

    def _forgive(self, line: str, amount: Decimal) -> Decimal:
        """Cancel up to ``amount`` of ``line``'s outstanding carried debt, newest first;
        returns how much was cancelled."""
        cancelled = ZERO
        with localcontext(MONEY_CONTEXT):
            for debt in reversed(self.debts):
                if debt.line != line or amount == 0:
                    continue
                taken = min(amount, debt.amount)
                debt.amount -= taken
                amount -= taken
                cancelled += taken
        self.debts = [debt for debt in self.debts if debt.amount > 0]
        return cancelled

    def _refund_settled(self, charge: Charge, amount: Decimal, reason: str) -> None:
        """Carried usage already paid by grants (settled) and now released: give it back to
        the grants that paid it, last settle first."""
        settled = self._settled.get(charge.line, [])
        with localcontext(MONEY_CONTEXT):
            while amount > 0:
                if not settled:
                    raise CreditError(f"line {charge.line}: releases more than it drew")
                grant_id, paid = settled[-1]
                given = min(amount, paid)
                amount -= given
                if given == paid:
                    settled.pop()
                else:
                    settled[-1] = (grant_id, paid - given)
                grant = self.grants[grant_id]
                self._post(
                    charge.end_us, "release", charge.unit, given, account(grant_id), "usage",
                    grant_id, reason, charge,
                )  # fmt: skip
                if not self._active(grant, charge.start_us):
                    self._leave(grant, charge.end_us, given)

    def _leave(self, grant: Grant, at_us: int, amount: Decimal) -> None:
        """Move ``amount`` out of a grant that is no longer active (voided or ended)."""
        if grant.grant_id in self.voided:
            self._post(
                at_us, "void", grant.unit, amount, "voided", account(grant.grant_id),
                grant.grant_id, "released to a voided grant",
            )  # fmt: skip
        else:
            self._post(
                at_us, "expire", grant.unit, amount, "expired", account(grant.grant_id),
                grant.grant_id, "released to an ended grant",
            )  # fmt: skip

    def settle(self, at_us: int) -> None:
        """The grants that became active at ``at_us`` pay the carried overage they may pay:
        each debt, oldest first, from those grants in burn order."""
        if not self.debts:
            return
        fresh = sorted(
            (
                grant
                for grant in self.grants.values()
                if grant.effective_us == at_us and self._active(grant, at_us)
            ),
            key=self._burn_key,
        )
        for debt in self.debts:
            for grant in fresh:
                balance = self.balances[grant.grant_id]
                if debt.amount == 0:
                    break
                if balance == 0 or not grant.may_pay(debt.unit, debt.meter):
                    continue
                with localcontext(MONEY_CONTEXT):
                    taken = min(balance, debt.amount)
                    debt.amount -= taken
                self._post(
                    at_us,
                    "settle",
                    debt.unit,
                    taken,
                    "carried",
                    account(grant.grant_id),
                    grant.grant_id,
                    "carried overage paid",
                    debt,
                )
                self._settled.setdefault(debt.line, []).append((grant.grant_id, taken))
        self.debts = [debt for debt in self.debts if debt.amount > 0]

    def void(self, void: Void) -> None:
        grant = self.grants.get(void.grant_id)
        if grant is None:
            # voided before it starts: it will be voided as it is granted
            self._pending_voids.setdefault(void.grant_id, void)
            return
        if void.grant_id in self.voided:
            return
        balance = self.balances[void.grant_id]
        self.voided.add(void.grant_id)
        if balance > 0 and void.grant_id not in self.closed:
            self._post(
                void.at_us,
                "void",
                grant.unit,
                balance,
                "voided",
                account(grant.grant_id),
                grant.grant_id,
                void.reason,
            )

    def end(self, grant: Grant, at_us: int) -> None:
        """The grant's expiry or reset, whichever comes first (a grant ends once)."""
        if grant.grant_id not in self.grants:
            raise CreditError(f"grant {grant.grant_id}: ends at or before it starts")
        if grant.grant_id in self.closed or grant.grant_id in self.voided:
            return
        self.closed.add(grant.grant_id)
        balance = self.balances[grant.grant_id]
        expired_first = grant.expires_us is not None and (
            grant.reset_us is None or grant.expires_us <= grant.reset_us
        )
        kept = ZERO
        if not expired_first and grant.rollover is not None:
            kept = grant.rollover.kept(balance)
        moved = min(kept, balance)
        with localcontext(MONEY_CONTEXT):
            lost = balance - moved
            topped = kept - moved
        child = f"{grant.grant_id}/rollover"
        if kept > 0 and child in self.grants:
            raise CreditError(f"grant {child}: already exists; it cannot take a rollover")
        if lost > 0:
            self._post(
                at_us,
                "expire",
                grant.unit,
                lost,
                "expired",
                account(grant.grant_id),
                grant.grant_id,
                "expired" if expired_first else "reset: not rolled over",
            )
        if kept == 0:
            return
        successor = Grant(
            grant_id=child,
            unit=grant.unit,
            amount=kept,
            effective_us=at_us,
            expires_us=grant.rollover_expires_us,
            priority=grant.priority,
            paid_currency=grant.paid_currency,
            scope=grant.scope,
            created_us=grant.created,
            source="rollover",
            reason=f"rolled over from {grant.grant_id}",
        )
        self.grants[child] = successor
        self.balances.setdefault(child, ZERO)
        if moved > 0:
            self._post(
                at_us,
                "rollover",
                grant.unit,
                moved,
                account(child),
                account(grant.grant_id),
                child,
                f"rolled over from {grant.grant_id}",
            )
        if topped > 0:
            self._post(
                at_us,
                "top_up",
                grant.unit,
                topped,
                account(child),
                "issued",
                child,
                f"rollover minimum for {grant.grant_id}",
            )
        if grant.rollover_expires_us is not None and grant.rollover_expires_us <= at_us:
            self.end(successor, at_us)
            return
        self._schedule_end(successor)
        self._schedule(at_us, 5, at_us)

    def adjust(self, adjustment: ManualAdjustment) -> None:
        grant = self.grants.get(adjustment.grant_id)
        if grant is None:
            raise CreditError(f"adjustment of unknown grant {adjustment.grant_id}")
        if adjustment.amount == 0:
            return
        if adjustment.amount > 0:
            self._post(
                adjustment.at_us, "adjust", grant.unit, adjustment.amount,
                account(grant.grant_id), "issued", grant.grant_id, adjustment.reason,
            )  # fmt: skip
            if grant.grant_id in self.voided or grant.grant_id in self.closed:
                # a grant no longer in force cannot hold it: it leaves at once
                self._leave(grant, adjustment.at_us, adjustment.amount)
            return
        taken = min(-adjustment.amount, self.balances[grant.grant_id])
        if taken > 0:
            self._post(
                adjustment.at_us, "adjust", grant.unit, taken, "issued",
                account(grant.grant_id), grant.grant_id, adjustment.reason,
            )  # fmt: skip

    # -- reading ----------------------------------------------------------------------------

    def balance(self, grant_id: str) -> Decimal:
        return self.balances.get(grant_id, ZERO)

    def totals(self, unit: str) -> dict[str, Decimal]:
        """Per account, the net amount moved into it (debits minus credits) in ``unit``."""
        result: dict[str, Decimal] = {}
        with localcontext(MONEY_CONTEXT):
            for entry in self.entries:
                if entry.unit != unit:
                    continue
                result[entry.debit] = result.get(entry.debit, ZERO) + entry.amount
                result[entry.credit] = result.get(entry.credit, ZERO) - entry.amount
        return result

    def check(self) -> None:
        """Raise ``CreditError`` unless every invariant of the module docstring holds."""
        for grant_id, balance in self.balances.items():
            if balance < 0:
                raise CreditError(f"grant {grant_id}: balance {balance} is below zero")
        for unit in {entry.unit for entry in self.entries}:
            totals = self.totals(unit)
            with localcontext(MONEY_CONTEXT):
                if sum(totals.values(), ZERO) != 0:
                    raise CreditError(f"{unit}: entries do not balance")
            for grant_id, balance in self.balances.items():
                grant = self.grants[grant_id]
                if grant.unit == unit and totals.get(account(grant_id), ZERO) != balance:
                    raise CreditError(f"grant {grant_id}: balance is not the sum of its entries")
