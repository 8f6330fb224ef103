"""A scan rates a customer's rows of a fetch at once exactly as one by one (hypothesis).

``billing.scan`` hands a job its customer's rows of each fetch through
``Rater.add_batch``, refusing an undecodable body in its place. Whatever the rows (every
aggregation the configuration supports, ints, decimals, strings, values a meter cannot
measure, bodies that do not decode, rows outside the job's period or cut), the rater ends
in the state the one-by-one loop (``Rater.add`` per decoded row, ``Rater.refuse`` per
undecodable one) gives it: the same lines, members, window charges, quantities, problems
in the same order, events outside every segment.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.billing.scan import BODY_DECODER, _rate_bucket, _undecodable
from meterline.core.events import encode_canonical
from meterline.core.rating import Rater
from tests.property.test_rating_batches import OCTOBER, event, new_rater, state

Row = tuple[int, str, str, int, bytes, bytes]


@st.composite
def rows(draw: st.DrawFn) -> tuple[list[Row], int, int]:
    """A customer's rows in ledger order (some undecodable), and the job's cut bounds."""
    drawn = draw(st.lists(event(), min_size=1, max_size=60))
    found: list[Row] = []
    for number, (timestamp, event_type, properties) in enumerate(drawn, start=1):
        if draw(st.integers(0, 9)) == 0:
            body = draw(st.sampled_from([b"{not json", b"[1]", b'{"properties": 3}']))
        else:
            body = encode_canonical({"customer": "acme", "properties": properties})
        if draw(st.integers(0, 9)) == 0:  # outside the period
            timestamp = draw(st.sampled_from([OCTOBER.start_us - 1, OCTOBER.end_us]))
        found.append(
            (number, "acme", event_type, timestamp, body, hashlib.sha256(b"%d" % number).digest())
        )
    low = draw(st.integers(0, 3))
    high = draw(st.integers(len(found) - 3, len(found)))
    return found, low, high


def one_by_one(rater: Rater, bucket: list[Row], low: int, high: int) -> None:
    """The scan's per-row loop before batches (``Rater.add`` of each decoded row)."""
    for sequence, _, event_type, timestamp_us, body, event_hash in bucket:
        if OCTOBER.start_us <= timestamp_us < OCTOBER.end_us and low < sequence <= high:
            try:
                properties = BODY_DECODER.decode(body).properties
            except msgspec.MsgspecError as error:
                rater.refuse(sequence, event_type, "undecodable", _undecodable(error))
                continue
            rater.add(sequence, timestamp_us, event_type, properties, event_hash)


@settings(max_examples=300, deadline=None)
@given(drawn=rows(), split=st.integers(0, 60))
def test_a_fetch_rates_at_once_exactly_as_row_by_row(
    drawn: tuple[list[Row], int, int], split: int
) -> None:
    bucket, low, high = drawn
    expected = new_rater()
    one_by_one(expected, bucket, low, high)
    batched = new_rater()
    # the rows may come in two fetches: each is rated at once, after the one before
    for part in (bucket[:split], bucket[split:]):
        target: tuple[Any, ...] = (
            OCTOBER.start_us,
            OCTOBER.end_us,
            low,
            high,
            batched.add,
            batched.refuse,
            batched.add_batch,
        )
        _rate_bucket(target, part, BODY_DECODER.decode)
    assert state(batched) == state(expected)
