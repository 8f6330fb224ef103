"""The bytes of a live figures answer (``GET /v1/live/{customer}``), pinned.

The worker answers the route with the customer's figures document and its access answer
(``live.worker``), which the API encodes as it is (``api.answers.json_answer``). Whatever
shape the figures take inside (a dict today, a typed record later), these bytes must not
change: a client reads them. They differ between the stores only in ``through``, the cut
(one partition on SQLite, eight on PostgreSQL).
"""

from __future__ import annotations

from meterline.api.answers import ENCODER
from tests.integration.test_live import (  # noqa: F401 (clock: the fixture)
    EMPTY_BLOCK,
    HOUR_US,
    Clock,
    NewDb,
    clock,
    open_live,
    pricing,
)

THRESHOLDS = '    credits:\n      thresholds: {levels: ["20"], recurring: "30"}\n      grants:'
"""Progressive billing for acme: the answer carries its next threshold."""

_ANSWER = (
    b'{"customer":"acme","currency":"USD","period":{"start":"2026-10-01T00:00:00Z",'
    b'"end":"2026-11-01T00:00:00Z"},"through":THROUGH,"at":"2026-10-15T13:00:00Z",'
    b'"spend":"8.110","cost":"0.08000","margin":"8.03000","prepaid":"1",'
    b'"remaining":{"credits":"0"},"lines":[{"meter":"calls","group":{},"quantity":"11",'
    b'"events":11,"amount":"11","unit":"credits","cost":"0"},{"meter":"tokens","group":{},'
    b'"quantity":"8000","events":11,"amount":"8.000","unit":"USD","cost":"0.08000"}],'
    b'"threshold":{"so_far":"8.110","next":"20","of":"USD"},'
    b'"access":{"customer":"acme","feature":null,"allowed":false,'
    b'"reason":"balance_exhausted empty fired (F-000001)","policy":"empty",'
    b'"remaining":{"credits":"0"},"version":5,'
    b'"threshold":{"so_far":"8.110","next":"20","of":"USD"}}}'
)
GOLDEN = {
    "sqlite": _ANSWER.replace(b"THROUGH", b"[11]"),
    "postgresql": _ANSWER.replace(b"THROUGH", b"[11,0,0,0,0,0,0,0]"),
}


def test_a_figures_answer_keeps_its_bytes(
    new_db: NewDb,
    clock: Clock,  # noqa: F811
    store_kind: str,
) -> None:
    yaml = pricing(EMPTY_BLOCK).replace("    credits:\n      grants:", THRESHOLDS, 1)
    with open_live(new_db(), clock, yaml) as live:
        live.send(4, tokens=250)
        clock.advance(HOUR_US)
        live.send(7, tokens=1_000)  # the pool of 10 credits runs out: a block
        figures = live.engine.projection.figures("acme")
        assert figures is not None
        document = figures.as_dict()  # as the worker answers the route (live.worker)
        document["access"] = live.engine.controls.access("acme")
        answer = ENCODER.encode(document)
    assert answer == GOLDEN[store_kind]
