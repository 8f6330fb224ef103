"""Laws of ingestion, checked over generated inputs (hypothesis), on each store."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline import Ledger
from meterline.core.events import prepare_event, prepare_event_checked
from meterline.ledger.event_ledger import open_store
from tests.conftest import FIXED_NOW_US, Databases
from tests.property.event_strategies import nested_values, tricky_numbers, tricky_texts

customers = st.sampled_from(["acme", "globex", "initech"])
scalars = st.one_of(
    st.text(max_size=8).filter(lambda text: "\x00" not in text),
    st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1),
    st.decimals(-(10**12), 10**12, allow_nan=False, allow_infinity=False, places=6),
    st.booleans(),
    st.none(),
)
storable_names = st.text(min_size=1, max_size=6).filter(lambda text: "\x00" not in text)
properties = st.dictionaries(storable_names, scalars, max_size=4)
timestamps = st.sampled_from(
    [
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00.5+02:00",
        "2026-10-31T23:59:59.999999Z",
    ]
)


@st.composite
def distinct_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=25))
    events = []
    for number in range(count):
        events.append(
            {
                "id": f"e{number}",
                "customer": draw(customers),
                "type": draw(st.sampled_from(["llm.completion", "gpu.runtime"])),
                "timestamp": draw(timestamps),
                "properties": draw(properties),
            }
        )
    return events


def stored_bodies(ledger: Ledger) -> dict[tuple[str, str], bytes]:
    return {(r.customer, r.id): r.body for r in ledger.store.records()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=distinct_events(), data=st.data())
def test_any_permutation_duplication_and_split_stores_each_event_once(
    databases: Databases, events: list[dict[str, Any]], data: st.DataObject
) -> None:
    """However a set of events is shuffled, repeated and batched, the ledger ends the same."""
    with tempfile.TemporaryDirectory() as folder:
        reference_at = databases.new(Path(folder), "a")
        with Ledger(open_store(reference_at), lambda: FIXED_NOW_US) as reference:
            reference.ingest(events)
            expected = stored_bodies(reference)
        repeats = data.draw(st.lists(st.sampled_from(events), max_size=30))
        sent = data.draw(st.permutations(events + repeats))
        cuts = sorted(data.draw(st.lists(st.integers(0, len(sent)), max_size=5)))
        batches = [sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)], strict=True)]
        shuffled_at = databases.new(Path(folder), "b")
        with Ledger(open_store(shuffled_at), lambda: FIXED_NOW_US) as shuffled:
            accepted = 0
            for batch in batches:
                outcome = shuffled.ingest(batch)
                outcome.check()
                assert outcome.conflict == 0 and outcome.rejected == 0
                accepted += outcome.accepted
            assert accepted == len(events)
            assert stored_bodies(shuffled) == expected
            assert shuffled.verify().intact


raw_values = st.one_of(
    scalars,
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(),
    tricky_numbers,
    tricky_texts,
    nested_values,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=3), scalars, max_size=3),
    st.sampled_from([b"bytes", object(), Decimal("NaN")]),
)
raw_texts = st.one_of(st.text(max_size=300), st.none(), st.integers(), st.just("   "), tricky_texts)


@st.composite
def raw_events(draw: st.DrawFn) -> object:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=3)))
    raw: dict[Any, Any] = {}
    for field in ("id", "customer", "type"):
        if draw(st.integers(0, 10)):
            raw[field] = draw(st.one_of(st.sampled_from(["evt-1", "acme", "llm"]), raw_texts))
    if draw(st.integers(0, 10)):
        raw["timestamp"] = draw(
            st.one_of(
                timestamps,
                st.text(max_size=30),
                tricky_texts,
                st.integers(),
                st.sampled_from(
                    [
                        "2026-11-01T10:00:00",
                        "2099-01-01T00:00:00Z",
                        "2026-11-23T12:04:59Z",
                        "2026-11-23T12:05:01+00:00",
                    ]
                ),
            )
        )
    if draw(st.integers(0, 10)):
        raw["properties"] = draw(
            st.one_of(
                st.dictionaries(
                    st.one_of(st.text(max_size=4), tricky_texts, st.integers()),
                    raw_values,
                    max_size=4,
                ),
                raw_values,
            )
        )
    if draw(st.integers(0, 6)) == 0:
        raw[draw(st.sampled_from(["source", "extra", "tokens"]))] = draw(raw_texts)
    return raw


@settings(max_examples=1500, deadline=None)
@given(raw=raw_events())
def test_fast_path_always_agrees_with_specification(raw: object) -> None:
    """prepare_event (fast path) answers exactly what prepare_event_checked specifies."""
    assert prepare_event(raw, FIXED_NOW_US) == prepare_event_checked(raw, FIXED_NOW_US)
