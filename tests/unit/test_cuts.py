"""Consistent cuts (core.cuts) and the SQL condition that reads between two of them."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.cuts import Cut
from meterline.ledger.cut_sql import cut_condition


def test_a_cut_covers_each_partition_up_to_its_head() -> None:
    cut = Cut((3, 0, 5))
    assert cut.covers(0, 3) and not cut.covers(0, 4) and not cut.covers(1, 1)
    assert cut.events == 8 and cut.partitions == 3 and str(cut) == "[3, 0, 5]"
    assert str(Cut((7,))) == "7"


def test_cuts_compare_partition_by_partition() -> None:
    early, late = Cut((1, 4)), Cut((3, 4))
    assert late.includes(early) and not early.includes(late)
    assert early.union(Cut((2, 1))) == Cut((2, 4))
    assert late.intersection(Cut((2, 9))) == Cut((2, 4))
    assert late.between(early) == [(0, 1, 3)]
    assert early.advanced(1, 2) is early and early.advanced(1, 6) == Cut((1, 6))
    with pytest.raises(ValueError, match="cuts of 2 and 1 partitions"):
        early.includes(Cut((1,)))


def test_document_form_round_trips_and_bad_ones_are_named() -> None:
    assert Cut.from_json([4, 2]) == Cut((4, 2)) and Cut((4, 2)).to_json() == [4, 2]
    assert Cut.from_json(9) == Cut((9,))
    with pytest.raises(ValueError, match=r"^through: a cut is a list"):
        Cut.from_json("12")
    with pytest.raises(ValueError, match=r"^ledger\.through: cut: partition 1.s head"):
        Cut.from_json([1, -2], "ledger.through")
    with pytest.raises(ValueError, match="a cut names 1 to"):
        Cut(())


def _events(heads: tuple[int, ...]) -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE events (partition_number INTEGER, sequence INTEGER)")
    connection.executemany(
        "INSERT INTO events VALUES (?, ?)",
        [(p, s) for p, head in enumerate(heads) for s in range(1, head + 1)],
    )
    return connection


heads_strategy = st.lists(st.integers(0, 6), min_size=1, max_size=4).map(tuple)


@given(heads_strategy, st.data())
def test_the_condition_selects_exactly_the_events_between_two_cuts(
    heads: tuple[int, ...], data: st.DataObject
) -> None:
    through = Cut(tuple(data.draw(st.integers(0, head)) for head in heads))
    after = Cut(tuple(data.draw(st.integers(0, head)) for head in through.heads))
    partitions = data.draw(
        st.none() | st.lists(st.integers(0, len(heads) - 1), unique=True).map(sorted)
    )
    condition, parameters = cut_condition(through, after, partitions)
    if len(heads) == 1:
        assert "partition_number" not in condition  # the SQLite store has one partition
    connection = _events(heads)
    found = set(
        connection.execute(
            f"SELECT partition_number, sequence FROM events WHERE {condition}", parameters
        ).fetchall()
    )
    chosen = range(len(heads)) if partitions is None else partitions
    expected = {
        (p, s)
        for p in chosen
        for s in range(1, heads[p] + 1)
        if not after.covers(p, s) and through.covers(p, s)
    }
    assert found == expected
    open_ended, values = cut_condition(None, after, partitions)
    beyond = set(
        connection.execute(
            f"SELECT partition_number, sequence FROM events WHERE {open_ended}", values
        ).fetchall()
    )
    assert beyond == {
        (p, s) for p in chosen for s in range(1, heads[p] + 1) if not after.covers(p, s)
    }
