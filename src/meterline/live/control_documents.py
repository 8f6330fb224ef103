"""The controls' answers as typed records (pure; ``core.live_documents``): a customer's
access state as the push stream sends it, the access answer (``GET
/v1/access/{customer}``), the push stream's first message, and a firing as webhooks, the
API and the CLI show it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from msgspec import UNSET

from meterline.core.control_policies import AccessDecision, Block, decide
from meterline.core.events import format_timestamp, timestamp_to_us
from meterline.core.live_documents import (
    AccessAnswer,
    AccessSnapshot,
    AccessState,
    FiringNotice,
    ThresholdProgress,
    TrialState,
)
from meterline.ledger.control_records import StoredFiring

PushedDecision = AccessState | dict[str, Any]
"""A customer's decision as a mirror holds it: the record the live engine decided, or
in stream mode the access bucket's plain data, as the replica decoded it (its keys in
the bucket's sorted order, which the push stream sends on as they are)."""


def decision_document(
    blocks: tuple[Block, ...],
    remaining: dict[str, Decimal],
    trial_ends_us: int | None = None,
    threshold: ThresholdProgress | None = None,
) -> AccessState:
    """A customer's access state (its active ``blocks``, its ``remaining`` balances, when
    its contract's free trial ends, its progress to the next progressive ``threshold``)
    as the push stream sends it."""
    shown = {unit: str(value) for unit, value in sorted(remaining.items())}
    progress = UNSET if threshold is None else threshold
    trial_ends = UNSET if trial_ends_us is None else format_timestamp(trial_ends_us)
    whole = next((b for b in blocks if not b.features), None)
    if whole is not None:
        return AccessState(True, (), whole.reason, whole.policy, shown, progress, trial_ends)
    features = tuple(sorted({f for b in blocks for f in b.features}))
    first = blocks[0] if blocks else None
    return AccessState(
        bool(features),
        features,
        "" if first is None else first.reason,
        None if first is None else first.policy,
        shown,
        progress,
        trial_ends,
    )


def trial_state(trial_ends_us: int | None, now_us: int) -> TrialState | None:
    """The access answer's ``trial`` (when the contract has one): when it ends and whether
    it is still on now."""
    if trial_ends_us is None:
        return None
    return TrialState(format_timestamp(trial_ends_us), now_us < trial_ends_us)


def _decided(decision: PushedDecision | None, field: str) -> Any:
    """One field of a decision, whichever form the mirror holds it in (None: absent)."""
    if decision is None:
        return None
    if isinstance(decision, AccessState):
        value = getattr(decision, field)
        return None if value is UNSET else value
    return decision.get(field)


def trial_end_of(decision: PushedDecision | None) -> int | None:
    """The trial's end a pushed decision carries (``trial_ends``), as an instant."""
    text = _decided(decision, "trial_ends")
    if text is None:
        return None
    return timestamp_to_us(datetime.fromisoformat(str(text).replace("Z", "+00:00")))


def threshold_of(decision: PushedDecision | None) -> ThresholdProgress | None:
    """The progress to the next progressive threshold a pushed decision carries."""
    progress = _decided(decision, "threshold")
    if progress is None or isinstance(progress, ThresholdProgress):
        return progress
    return ThresholdProgress(str(progress["so_far"]), str(progress["next"]), str(progress["of"]))


def access_document(
    customer: str,
    feature: str | None,
    blocks: tuple[Block, ...],
    remaining: dict[str, str],
    has_contract: bool,
    version: int,
    trial: TrialState | None = None,
    threshold: ThresholdProgress | None = None,
) -> AccessAnswer:
    """The access answer (``GET /v1/access/{customer}``) for the customer's active blocks
    (with ``trial_state`` when the contract has a free trial, and ``threshold``: the
    progress to the next progressive threshold, when there is one)."""
    answer: AccessDecision = decide(blocks, feature)
    return AccessAnswer(
        customer,
        feature,
        answer.allowed,
        answer.reason or ("allowed" if has_contract else "no contract: no restriction"),
        answer.policy,
        dict(remaining),
        version,
        UNSET if trial is None else trial,
        UNSET if threshold is None else threshold,
    )


def snapshot_document(
    decisions: Mapping[str, PushedDecision], version: int, customer: str | None = None
) -> AccessSnapshot:
    """The push stream's first message: every decision (or one customer's) at ``version``."""
    return AccessSnapshot(
        version,
        {
            name: document
            for name, document in decisions.items()
            if customer is None or name == customer
        },
    )


def firing_document(
    firing: StoredFiring, results: dict[tuple[int, str], Any] | None = None
) -> FiringNotice:
    """A firing as webhooks, the API and the CLI show it; with ``results`` (the control
    store's outcomes by firing number and action), each of its actions' outcome."""
    return FiringNotice(
        firing.firing_id,
        firing.customer,
        firing.policy,
        firing.kind,
        firing.level,
        firing.ordinal,
        format_timestamp(firing.at_us),
        firing.sequence,
        firing.observed,
        tuple(firing.actions),
        UNSET if results is None else {a: results.get((firing.number, a)) for a in firing.actions},
    )
