"""What a worker puts in the access bucket for a customer (``access_entry``): the
decision, the active blocks and the remaining balances, as its live engine's controls
have them. Read under the controls' lock (the listener calls it there), so a document
is the state that was decided."""

from __future__ import annotations

from typing import Any

from meterline.core.control_policies import Block
from meterline.core.live_documents import plain
from meterline.live.service import LiveEngine


def blocks_document(blocks: tuple[Block, ...]) -> list[dict[str, Any]]:
    return [
        {
            "policy": block.policy,
            "features": list(block.features),
            "reason": block.reason,
            "since_us": block.since_us,
        }
        for block in blocks
    ]


def access_entry(engine: LiveEngine, customer: str, worker: str) -> dict[str, Any]:
    """What the access bucket holds for ``customer``: the decision, the active blocks and
    the remaining balances, as the controls have them now."""
    controls = engine.controls
    state = controls.state.get(customer)
    blocks = tuple((state.blocks or {}).values()) if state else ()
    remaining = {
        unit: str(value) for unit, value in sorted(((state and state.remaining) or {}).items())
    }
    return {
        "customer": customer,
        "known": customer in engine.projection.customers,
        "decision": plain(controls.decision_document(customer)),
        "blocks": blocks_document(blocks),
        "remaining": remaining,
        "worker": worker,
    }
