"""Free trials: N days without fees, usage or both, then paid terms or the end (pure).

A contract's trial (``Trial``) starts with the contract and lasts ``days`` days of 24 hours
(as Stripe's ``trial_period_days``: the trial ends at the contract's start plus that many
days, to the microsecond). During it:

- ``applies_to: fees`` or ``both``: no fee is charged for the trial's stretch of a period;
  at the trial's end the terms begin, so an advance fee is charged for the rest of the
  period from the conversion instant (prorated as the plan prorates) and a one-off fee is
  charged then.
- ``applies_to: usage`` or ``both``: usage rated in the trial's stretch is shown at its
  price and given back by a ``trial`` line per usage line, up to ``usage_cap`` (an amount
  in the plan currency) when one is set; a trial spanning two periods gives each period
  the share of the cap its part of the trial holds (by microseconds).
- Rating restarts at the conversion instant, as at an amendment: tiers and per-period
  maxima count the paid stretch on its own.

At its end the trial converts (``on_end: convert``, the default) or the contract ends
(``on_end: cancel``: the pricing file's loader sets the contract's end to the trial's
end, so nothing is billed after it).

``trial_notices`` says which of a trial's notices are due at an instant (started, ending
``notice_days`` before the end, converted or cancelled at the end), each named by the
contract and the trial's start, so the webhook sent for it is sent once per trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, Inexact, localcontext
from typing import Literal

from meterline.core.money import MONEY_CONTEXT, PRORATION_PLACES, prorate

TrialScope = Literal["fees", "usage", "both"]
TRIAL_SCOPES: tuple[TrialScope, ...] = ("fees", "usage", "both")
TrialEnd = Literal["convert", "cancel"]
TRIAL_ENDS: tuple[TrialEnd, ...] = ("convert", "cancel")
TRIAL_DAYS_LIMIT = 730
"""The longest trial, in days."""
NOTICE_DAYS_DEFAULT = 3
"""The ``trial.ending`` notice goes out this many days before a trial ends."""
NOTICE_LATE_DAYS = 7
"""A notice not sent within this many days of its moment is not sent (a trial long over
is not announced to every endpoint again on each start)."""
MICROSECONDS_PER_DAY = 86_400_000_000


@dataclass(frozen=True, slots=True)
class Trial:
    """A contract's free trial (see the module docstring)."""

    days: int
    applies_to: TrialScope = "both"
    usage_cap: Decimal | None = None
    on_end: TrialEnd = "convert"
    notice_days: int = NOTICE_DAYS_DEFAULT

    @property
    def frees_fees(self) -> bool:
        return self.applies_to in ("fees", "both")

    @property
    def frees_usage(self) -> bool:
        return self.applies_to in ("usage", "both")

    def end_us(self, start_us: int) -> int:
        """The instant the trial of a contract starting at ``start_us`` ends."""
        return start_us + self.days * MICROSECONDS_PER_DAY


@dataclass(frozen=True, slots=True)
class TrialWindow:
    """A contract's trial placed in time: from ``start_us`` (the contract's start)."""

    trial: Trial
    start_us: int

    @property
    def end_us(self) -> int:
        return self.trial.end_us(self.start_us)

    def cap_share(self, start_us: int, end_us: int) -> Decimal | None:
        """The part of the usage cap that ``[start_us, end_us)`` of the trial holds, by
        microseconds (None: no cap)."""
        cap = self.trial.usage_cap
        if cap is None:
            return None
        whole = self.end_us - self.start_us
        covered = max(0, min(end_us, self.end_us) - max(start_us, self.start_us))
        if covered >= whole:
            return cap
        with localcontext(MONEY_CONTEXT) as context:
            context.traps[Inexact] = False
            fraction = (Decimal(covered) / Decimal(whole)).quantize(
                Decimal(1).scaleb(-PRORATION_PLACES), rounding=ROUND_HALF_EVEN
            )
        return prorate(cap, fraction)


@dataclass(frozen=True, slots=True)
class TrialNotice:
    """A notice due: its webhook ``kind``, the moment it is about (``at_us``) and its
    ``key``, the same for one trial however often it is decided."""

    kind: str
    at_us: int
    key: str


def trial_notices(customer: str, window: TrialWindow, now_us: int) -> list[TrialNotice]:
    """The notices of ``customer``'s trial due at ``now_us`` and not yet too late:
    ``trial.started`` and ``trial.ending`` while the trial is on, then ``trial.converted``
    or ``trial.cancelled`` (as ``on_end`` says); none more than ``NOTICE_LATE_DAYS`` after
    its moment."""
    start, end = window.start_us, window.end_us
    ending = max(start, end - window.trial.notice_days * MICROSECONDS_PER_DAY)
    after = "trial.converted" if window.trial.on_end == "convert" else "trial.cancelled"
    moments = [("trial.started", start, end), (after, end, None)]
    if window.trial.notice_days > 0:
        moments.insert(1, ("trial.ending", ending, end))
    late_us = NOTICE_LATE_DAYS * MICROSECONDS_PER_DAY
    return [
        TrialNotice(kind, at_us, f"{customer}:{start}")
        for kind, at_us, until_us in moments
        if at_us <= now_us < min(at_us + late_us, until_us or at_us + late_us)
    ]


def trial_errors(trial: Trial, path: str) -> list[str]:
    """Every problem with a trial's declaration, each naming its field."""
    errors = []
    if type(trial.days) is not int or not 1 <= trial.days <= TRIAL_DAYS_LIMIT:
        errors.append(f"{path}.days: must be a whole number from 1 to {TRIAL_DAYS_LIMIT}")
    if trial.applies_to not in TRIAL_SCOPES:
        errors.append(f"{path}.applies_to: must be one of {', '.join(TRIAL_SCOPES)}")
    if trial.on_end not in TRIAL_ENDS:
        errors.append(f"{path}.on_end: must be one of {', '.join(TRIAL_ENDS)}")
    if type(trial.notice_days) is not int or not 0 <= trial.notice_days <= TRIAL_DAYS_LIMIT:
        errors.append(f"{path}.notice_days: must be a whole number from 0 to {TRIAL_DAYS_LIMIT}")
    if trial.usage_cap is not None:
        if trial.usage_cap < 0:
            errors.append(f"{path}.usage_cap: must not be negative")
        if not trial.frees_usage:
            errors.append(f"{path}.usage_cap: only a trial that frees usage has a usage cap")
    return errors
