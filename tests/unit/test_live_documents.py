"""The live path's typed records (``core.live_documents``) encode to the bytes their dicts
had before they were typed: the access state pushed, the access answer, a firing as a
webhook's data and as the API shows it (these bytes were taken from the dict-built
documents). ``tests/integration/test_live_figures_golden.py`` pins a figures answer."""

from __future__ import annotations

from decimal import Decimal

from meterline.api.answers import ENCODER
from meterline.core.control_policies import Block
from meterline.core.events import encode_canonical
from meterline.core.live_documents import ThresholdProgress, plain
from meterline.ledger.control_records import StoredFiring
from meterline.live.control_documents import (
    access_document,
    decision_document,
    firing_document,
    threshold_of,
    trial_end_of,
    trial_state,
)

ENDS_US = 1_790_000_000_000_000
PROGRESS = ThresholdProgress("8.110", "20", "USD")
BLOCKS = (
    Block("spike", ("gpu", "chat"), "spike fired (F-000002)", 5),
    Block("cap", (), "cap fired (F-000001)", 3),
)
FIRING = StoredFiring(
    3,
    "acme",
    "cap",
    "spend_threshold",
    "100%",
    2,
    ENDS_US,
    41,
    {"spend": "10.5", "limit": "10"},
    ("block", "alert"),
)


def test_the_pushed_decision_keeps_its_bytes() -> None:
    whole = decision_document(BLOCKS, {"credits": Decimal("1.50")}, ENDS_US, PROGRESS)
    assert ENCODER.encode(whole) == (
        b'{"blocked":true,"features":[],"reason":"cap fired (F-000001)","policy":"cap",'
        b'"remaining":{"credits":"1.50"},"threshold":{"so_far":"8.110","next":"20","of":"USD"},'
        b'"trial_ends":"2026-09-21T14:13:20Z"}'
    )
    features = decision_document(BLOCKS[:1], {})
    assert ENCODER.encode(features) == (
        b'{"blocked":true,"features":["chat","gpu"],"reason":"spike fired (F-000002)",'
        b'"policy":"spike","remaining":{}}'
    )
    assert (trial_end_of(whole), threshold_of(whole)) == (ENDS_US, PROGRESS)
    assert (trial_end_of(features), threshold_of(features)) == (None, None)


def test_a_stream_replicas_plain_decision_reads_the_same() -> None:
    """In stream mode the mirror holds the access bucket's plain data."""
    decision = plain(decision_document(BLOCKS, {}, ENDS_US, PROGRESS))
    assert (trial_end_of(decision), threshold_of(decision)) == (ENDS_US, PROGRESS)


def test_the_access_answer_keeps_its_bytes() -> None:
    trial = trial_state(ENDS_US, ENDS_US - 1)
    answer = access_document("acme", "gpu", BLOCKS[:1], {"credits": "0"}, True, 7, trial, PROGRESS)
    assert ENCODER.encode(answer) == (
        b'{"customer":"acme","feature":"gpu","allowed":false,"reason":"spike fired (F-000002)",'
        b'"policy":"spike","remaining":{"credits":"0"},"version":7,'
        b'"trial":{"ends_at":"2026-09-21T14:13:20Z","active":true},'
        b'"threshold":{"so_far":"8.110","next":"20","of":"USD"}}'
    )
    assert ENCODER.encode(access_document("nobody", None, (), {}, False, 7)) == (
        b'{"customer":"nobody","feature":null,"allowed":true,'
        b'"reason":"no contract: no restriction","policy":null,"remaining":{},"version":7}'
    )


def test_a_firing_keeps_its_bytes_in_a_webhook_and_in_the_api() -> None:
    assert encode_canonical({"data": firing_document(FIRING)}) == (
        b'{"data":{"actions":["block","alert"],"at":"2026-09-21T14:13:20Z","crossing":2,'
        b'"customer":"acme","firing":"F-000003","kind":"spend_threshold","level":"100%",'
        b'"observed":{"limit":"10","spend":"10.5"},"policy":"cap","sequence":41}}'
    )
    shown = firing_document(FIRING, {(3, "block"): {"blocked": True}})
    assert ENCODER.encode(shown).endswith(
        b'"actions":["block","alert"],"results":{"block":{"blocked":true},"alert":null}}'
    )
