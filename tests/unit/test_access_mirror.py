"""A stream-mode replica's access answers come from the workers' documents, exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from meterline.core.live_documents import AccessSnapshot
from meterline.ledger.event_ledger import open_store
from meterline.live.control_overrides import Override, OverrideError
from meterline.stream.mirror import AccessMirror
from tests.conftest import Location

BLOCKED = {
    "customer": "hooli",
    "known": True,
    "decision": {"blocked": True, "features": [], "reason": "spend cap", "policy": "cap"},
    "blocks": [{"policy": "cap", "features": [], "reason": "spend cap", "since_us": 5}],
    "remaining": {"USD": "0.00"},
    "worker": "w1",
}
FEATURE_BLOCKED = {
    "customer": "acme",
    "known": True,
    "decision": {"blocked": True, "features": ["gpu"], "reason": "spike", "policy": "spike"},
    "blocks": [{"policy": "spike", "features": ["gpu"], "reason": "spike", "since_us": 7}],
    "remaining": {},
    "worker": "w2",
}


@pytest.fixture
def mirror(new_db: Callable[..., Location]) -> Any:
    db = new_db()
    open_store(db).close()
    made = AccessMirror(str(db), clock=lambda: 1_000)
    yield made
    made.stop()


def test_answers_follow_the_documents(mirror: AccessMirror) -> None:
    heard: list[tuple[int, str]] = []
    mirror.listeners.append(lambda version, customer, _: heard.append((version, customer)))
    mirror.load({"hooli": BLOCKED, "acme": FEATURE_BLOCKED})
    assert mirror.access("hooli").allowed is False
    assert mirror.access("hooli").reason == "spend cap"
    assert mirror.access("hooli").remaining == {"USD": "0.00"}
    assert mirror.access("acme").allowed is True
    assert mirror.access("acme", "gpu").allowed is False
    assert mirror.access("nobody").reason == "no contract: no restriction"
    assert mirror.customers == {"hooli", "acme"}
    assert heard == [(1, "hooli"), (2, "acme")]
    mirror.apply("hooli", {**BLOCKED, "decision": {"blocked": False}, "blocks": []})
    assert mirror.access("hooli").allowed is True
    assert mirror.snapshot("hooli") == AccessSnapshot(3, {"hooli": {"blocked": False}})
    mirror.apply("acme", None)
    assert mirror.access("acme", "gpu").allowed is True and "acme" not in mirror.customers


def test_unblock_is_recorded_for_the_owning_worker(mirror: AccessMirror) -> None:
    mirror.load({"hooli": BLOCKED})
    record = mirror.override(Override("hooli", "unblock", "ticket 9", "key k1", policy="cap"))
    assert (record.customer, record.kind, record.policy, record.at_us) == (
        "hooli",
        "unblock",
        "cap",
        1_000,
    )
    assert [o.override_id for o in mirror.store.overrides("hooli")] == [record.override_id]
    with pytest.raises(OverrideError, match="policy"):
        mirror.override(Override("hooli", "unblock", "why", "key k1", policy="other"))
    with pytest.raises(OverrideError, match="kind"):
        mirror.override(Override("hooli", "extend", "why", "key k1", policy="cap"))
