"""The controls' answers as documents (pure): a customer's access decision as the push
stream sends it, the access answer (``GET /v1/access/{customer}``), the push stream's
first message, and a firing as webhooks, the API and the CLI show it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from meterline.core.control_policies import AccessDecision, Block, decide
from meterline.core.events import format_timestamp
from meterline.ledger.control_records import StoredFiring


def decision_document(blocks: tuple[Block, ...], remaining: dict[str, Decimal]) -> dict[str, Any]:
    """A customer's access state (its active ``blocks``, its ``remaining`` balances) as
    the push stream sends it."""
    shown = {unit: str(value) for unit, value in sorted(remaining.items())}
    whole = next((b for b in blocks if not b.features), None)
    if whole is not None:
        return {
            "blocked": True,
            "features": [],
            "reason": whole.reason,
            "policy": whole.policy,
            "remaining": shown,
        }
    features = sorted({f for b in blocks for f in b.features})
    first = blocks[0] if blocks else None
    return {
        "blocked": bool(features),
        "features": features,
        "reason": "" if first is None else first.reason,
        "policy": None if first is None else first.policy,
        "remaining": shown,
    }


def access_document(
    customer: str,
    feature: str | None,
    blocks: tuple[Block, ...],
    remaining: dict[str, str],
    has_contract: bool,
    version: int,
) -> dict[str, Any]:
    """The access answer (``GET /v1/access/{customer}``) for the customer's active blocks."""
    answer: AccessDecision = decide(blocks, feature)
    return {
        "customer": customer,
        "feature": feature,
        "allowed": answer.allowed,
        "reason": answer.reason or ("allowed" if has_contract else "no contract: no restriction"),
        "policy": answer.policy,
        "remaining": dict(remaining),
        "version": version,
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
