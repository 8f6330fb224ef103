"""The controls' answers as documents (pure): a customer's access decision as the push
stream sends it, the access answer (``GET /v1/access/{customer}``), the push stream's
first message, and a firing as webhooks, the API and the CLI show it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from meterline.core.control_policies import AccessDecision, Block, decide
from meterline.core.events import format_timestamp, timestamp_to_us
from meterline.ledger.control_records import StoredFiring


def decision_document(
    blocks: tuple[Block, ...],
    remaining: dict[str, Decimal],
    trial_ends_us: int | None = None,
    threshold: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A customer's access state (its active ``blocks``, its ``remaining`` balances, when
    its contract's free trial ends, its progress to the next progressive ``threshold``)
    as the push stream sends it."""
    shown = {unit: str(value) for unit, value in sorted(remaining.items())}
    trial: dict[str, Any] = {} if threshold is None else {"threshold": dict(threshold)}
    if trial_ends_us is not None:
        trial["trial_ends"] = format_timestamp(trial_ends_us)
    whole = next((b for b in blocks if not b.features), None)
    if whole is not None:
        return {
            "blocked": True,
            "features": [],
            "reason": whole.reason,
            "policy": whole.policy,
            "remaining": shown,
            **trial,
        }
    features = sorted({f for b in blocks for f in b.features})
    first = blocks[0] if blocks else None
    return {
        "blocked": bool(features),
        "features": features,
        "reason": "" if first is None else first.reason,
        "policy": None if first is None else first.policy,
        "remaining": shown,
        **trial,
    }


def trial_state(trial_ends_us: int | None, now_us: int) -> dict[str, Any]:
    """The access answer's ``trial`` (when the contract has one): when it ends and whether
    it is still on now."""
    if trial_ends_us is None:
        return {}
    return {"trial": {"ends_at": format_timestamp(trial_ends_us), "active": now_us < trial_ends_us}}


def trial_end_of(decision: dict[str, Any] | None) -> int | None:
    """The trial's end a pushed decision carries (``trial_ends``), as an instant."""
    text = (decision or {}).get("trial_ends")
    if text is None:
        return None
    return timestamp_to_us(datetime.fromisoformat(text.replace("Z", "+00:00")))


def access_document(
    customer: str,
    feature: str | None,
    blocks: tuple[Block, ...],
    remaining: dict[str, str],
    has_contract: bool,
    version: int,
    trial: dict[str, Any] | None = None,
    threshold: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The access answer (``GET /v1/access/{customer}``) for the customer's active blocks
    (with ``trial_state`` when the contract has a free trial, and ``threshold``: the
    progress to the next progressive threshold, when there is one)."""
    answer: AccessDecision = decide(blocks, feature)
    return {
        "customer": customer,
        "feature": feature,
        "allowed": answer.allowed,
        "reason": answer.reason or ("allowed" if has_contract else "no contract: no restriction"),
        "policy": answer.policy,
        "remaining": dict(remaining),
        "version": version,
        **(trial or {}),
        **({} if threshold is None else {"threshold": dict(threshold)}),
    }


def snapshot_document(
    decisions: dict[str, dict[str, Any]], version: int, customer: str | None = None
) -> dict[str, Any]:
    """The push stream's first message: every decision (or one customer's) at ``version``."""
    return {
        "version": version,
        "decisions": {
            name: document
            for name, document in decisions.items()
            if customer is None or name == customer
        },
    }


def firing_document(firing: StoredFiring) -> dict[str, Any]:
    """A firing as webhooks, the API and the CLI show it."""
    return {
        "firing": firing.firing_id,
        "customer": firing.customer,
        "policy": firing.policy,
        "kind": firing.kind,
        "level": firing.level,
        "crossing": firing.ordinal,
        "at": format_timestamp(firing.at_us),
        "sequence": firing.sequence,
        "observed": firing.observed,
        "actions": list(firing.actions),
    }
