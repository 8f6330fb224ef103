"""Stream mode's early refusal (``api.stream_front``): while partitions lag past the
ingest lag bound, a replica looks into a batch only as far as it needs to find a valid
event going to a lagging partition, and refuses it without preparing the rest. The
answer must be exactly the general path's: the batch prepared whole (``prepare_body``),
then the bound checked on its valid events' partitions (``LagBook.admit``), at the same
moment, over any lag book, batch, content type and customer-bound key."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.api.bodies import EARLY_DECISIONS_MAX, prepare_body, valid_event_partition
from meterline.api.stream_front import _prepare_unless_lagging
from meterline.core.admission import LagBook, Refusal
from meterline.core.limits import DEFAULT_LIMITS
from meterline.core.partitions import PartitionMap
from meterline.ledger.event_ledger import Ledger
from tests.conftest import FIXED_NOW_US
from tests.property.test_event_batch_path import NotJson, plain_events, to_json
from tests.property.test_ingest_laws import raw_events

PARTITIONS = 4
BOUND_MS = 50
CUSTOMERS = ["acme", "globex", "c1", "c2", "c3", "c4", "c8"]
"""Customers over the 4 partitions (acme and c8: 0, c2: 1, c3 and c4: 2, globex, c1: 3)."""

LAG_NOW_US = 10_000_000_000
"""The replica's monotonic reading the lag book is checked at."""


def ledger() -> Ledger:
    return Ledger(store=None, clock=lambda: FIXED_NOW_US, limits=DEFAULT_LIMITS)  # type: ignore[arg-type]


def outcome(prepare: Any) -> object:
    try:
        return prepare()
    except Exception as error:
        return (type(error), str(error))


def admitted(answer: object, book: LagBook, partition_of: PartitionMap) -> object:
    """What the replica answers once a batch is prepared: the refusal ``admit`` gives for
    its valid events' partitions, else the prepared batch (an error stays as it is)."""
    if type(answer) is not tuple or type(answer[0]) is not list or not answer[0]:
        return answer
    touched = sorted({partition_of(event.customer) for _, event in answer[0]})
    return book.admit(touched, LAG_NOW_US, BOUND_MS) or answer


def general(body: bytes, content_type: str, only: str | None, book: LagBook) -> object:
    partition_of = PartitionMap(PARTITIONS)
    prepared = outcome(lambda: prepare_body(ledger(), content_type, {}, body, only))
    return admitted(prepared, book, partition_of)


def early(body: bytes, content_type: str, only: str | None, book: LagBook) -> object:
    partition_of = PartitionMap(PARTITIONS)
    lagging = book.lagging(LAG_NOW_US, BOUND_MS)
    request = (content_type, {}, body, only)
    answer = outcome(lambda: _prepare_unless_lagging(ledger(), request, partition_of, lagging))
    return answer if isinstance(answer, Refusal) else admitted(answer, book, partition_of)


@st.composite
def books(draw: st.DrawFn) -> LagBook:
    """A lag book with up to three messages per partition, stored up to 0.2 s ago, some
    decided; ages repeat, so partitions often lag exactly as long as one another."""
    book = LagBook(PARTITIONS)
    for partition in range(PARTITIONS):
        for sequence in range(1, draw(st.integers(0, 3)) + 1):
            age_us = draw(st.sampled_from([0, 10_000, 50_000, 50_001, 120_000, 200_000]))
            book.stored(partition, sequence, LAG_NOW_US - age_us)
        if draw(st.booleans()):
            book.decided(partition, draw(st.integers(0, 3)))
    return book


@st.composite
def events(draw: st.DrawFn) -> object:
    event = draw(st.one_of(plain_events(), plain_events(), raw_events()))
    if type(event) is dict and draw(st.integers(0, 3)):
        event["customer"] = draw(st.sampled_from(CUSTOMERS))
    return event


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    document: Any = draw(st.lists(events(), max_size=8))
    if document and draw(st.integers(0, 15)) == 0:
        document = document[0]  # one event, not in an array
    try:
        text = to_json(document)
    except NotJson:
        text = "[]"
    if draw(st.integers(0, 20)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # malformed
    return text.encode()


@settings(max_examples=1500, deadline=None)
@given(
    body=bodies(),
    book=books(),
    content_type=st.sampled_from(["application/json"] * 6 + ["text/plain", ""]),
    only=st.sampled_from([None, None, "acme", "c3"]),
)
def test_early_refusal_answers_as_preparing_the_whole_batch(
    body: bytes, book: LagBook, content_type: str, only: str | None
) -> None:
    assert early(body, content_type, only, book) == general(body, content_type, only, book)


@settings(max_examples=500, deadline=None)
@given(book=books(), data=st.data())
def test_lagging_lists_what_admit_answers(book: LagBook, data: st.DataObject) -> None:
    """For any set of partitions, ``admit`` is the first refusal of ``lagging`` whose
    partition is in it (or None), so refusing from ``lagging`` names the same one."""
    touched = sorted(data.draw(st.sets(st.integers(0, PARTITIONS - 1))))
    lagging = book.lagging(LAG_NOW_US, BOUND_MS)
    first = next((refusal for refusal in lagging if refusal.partition in touched), None)
    assert book.admit(touched, LAG_NOW_US, BOUND_MS) == first
    assert [refusal.lag_ms for refusal in lagging] == sorted(
        (refusal.lag_ms for refusal in lagging), reverse=True
    )
    assert book.lagging(LAG_NOW_US, 0) == []


def lagging_book(*partitions: int) -> LagBook:
    """``partitions`` lag 0.1 s, the first most (by a microsecond each)."""
    book = LagBook(PARTITIONS)
    for rank, partition in enumerate(partitions):
        book.stored(partition, 1, LAG_NOW_US - 100_000 - len(partitions) + rank)
    return book


def event(customer: str, number: int, valid: bool = True) -> dict[str, Any]:
    return {
        "id": f"evt-{number}",
        "customer": customer,
        "type": "llm" if valid else " ",
        "timestamp": "2026-11-01T10:00:00Z",
        "properties": {"tokens": number},
    }


def test_a_valid_event_to_a_lagging_partition_is_refused_without_preparing() -> None:
    body = to_json([event("c2", 1), event("acme", 2)]).encode()
    book = lagging_book(0)
    lagging = book.lagging(LAG_NOW_US, BOUND_MS)
    request = ("application/json", {}, body, None)
    answer = _prepare_unless_lagging(ledger(), request, PartitionMap(PARTITIONS), lagging)
    assert answer == lagging[0]
    assert isinstance(answer, Refusal) and answer.partition == 0


def test_invalid_events_to_lagging_partitions_leave_the_batch_to_the_general_path() -> None:
    """An invalid event touches no partition; past ``EARLY_DECISIONS_MAX`` of them the
    batch is prepared whole, and the refusal is still the one ``admit`` names."""
    invalid = [event("acme", number, valid=False) for number in range(EARLY_DECISIONS_MAX - 1)]
    more = event("acme", 98, valid=False)
    book = lagging_book(0, 2)
    partitions = [refusal.partition for refusal in book.lagging(LAG_NOW_US, BOUND_MS)]
    assert partitions == [0, 2]
    for batch, found in (
        (invalid, None),
        ([*invalid, event("c3", 99)], 2),  # partition 0's invalid events, partition 2's valid
        ([*invalid, more, event("c3", 99)], None),  # the valid one past the count: not known
        ([*invalid, more, event("acme", 99)], None),
        ([event("c2", 1)], None),  # partition 1 does not lag
    ):
        body = to_json(batch).encode()
        assert (
            valid_event_partition(
                ledger(), "application/json", {}, body, None, PartitionMap(4), partitions
            )
            == found
        )
        assert early(body, "application/json", None, book) == general(
            body, "application/json", None, book
        )
    refused = general(
        to_json([*invalid, event("acme", 99)]).encode(), "application/json", None, book
    )
    assert isinstance(refused, Refusal) and refused.partition == 0
