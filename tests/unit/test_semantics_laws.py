"""Laws every vendor-semantics choice keeps (hypothesis): under any combination of the
options, a line's window charges add up to its invoice amount (the window options only
spread it), no window of a capped line goes past its maximum when ``line_maximum`` is
``every_window``, and the rating options never change a line whose meter they do not
concern."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.model import Configuration, segments
from meterline.core.rating import Rater, line_id, window_charges
from meterline.core.semantics import OPTIONS, Semantics
from tests.unit.test_semantics_rating import DAY, NOVEMBER, OCTOBER, load

BASE = load()
KINDS = {"llm": "tokens", "img": "count", "pay": "amount", "seats": "seats"}
"""Event type -> the property its meter reads."""
events = st.lists(
    st.tuples(
        st.integers(0, 30 * DAY),
        st.sampled_from(sorted(KINDS)),
        st.integers(0, 200),
    ),
    max_size=25,
)
choices = st.fixed_dictionaries({name: st.sampled_from(values) for name, values in OPTIONS.items()})
cuts = st.lists(st.integers(1, 30 * DAY), max_size=6, unique=True)


def rate(configuration: Configuration, feed: list[tuple[int, str, int]], edges: list[int]) -> Rater:
    contract = configuration.contract("c")
    assert contract is not None
    rater = Rater(
        configuration,
        segments(configuration, contract, OCTOBER, NOVEMBER),
        cuts=tuple(OCTOBER + edge for edge in edges),
    )
    for sequence, (offset, kind, value) in enumerate(feed, start=1):
        digest = hashlib.sha256(sequence.to_bytes(8, "big")).digest()
        rater.add(sequence, OCTOBER + offset, kind, {KINDS[kind]: value}, digest)
    return rater


@settings(max_examples=60, deadline=None)
@given(events, choices, cuts)
def test_window_charges_add_up_to_the_line_under_every_choice(
    feed: list[tuple[int, str, int]], chosen: dict[str, str], edges: list[int]
) -> None:
    configuration = replace(BASE, semantics=Semantics(**chosen))  # type: ignore[arg-type]
    rater = rate(configuration, feed, edges)
    charged: dict[str, D] = {}
    for charge in window_charges(rater, "USD", configuration):
        charged[charge.line] = charged.get(charge.line, D(0)) + charge.amount
    for line in rater.lines("USD", configuration):
        name = line_id(line.segment, line.meter, tuple(value for _, value in line.group))
        assert charged.get(name, D(0)) == line.amount
    if chosen["line_maximum"] == "every_window":
        so_far = D(0)
        for charge in window_charges(rater, "USD", configuration):
            if charge.meter == "tokens":
                so_far += charge.amount
                assert so_far <= 50


@settings(max_examples=40, deadline=None)
@given(events, choices)
def test_options_leave_the_lines_they_do_not_concern_alone(
    feed: list[tuple[int, str, int]], chosen: dict[str, str]
) -> None:
    """Tokens (per unit) and images (volume) lines are the same under every choice;
    seats only move with ``gauge``, payments only with the percentage options."""
    configuration = replace(BASE, semantics=Semantics(**chosen))  # type: ignore[arg-type]
    default = {line.meter: line.amount for line in rate(BASE, feed, []).lines("USD", BASE)}
    rater = rate(configuration, feed, [])
    chosen_lines = {line.meter: line.amount for line in rater.lines("USD", configuration)}
    for meter in ("tokens", "images"):
        assert chosen_lines.get(meter) == default.get(meter)
    if chosen["gauge"] == "period":
        assert chosen_lines.get("seats") == default.get("seats")
    if chosen["percentage_free"] == "fixed_fee" and chosen["free_event_minimum"] == "applies":
        assert chosen_lines.get("payments") == default.get("payments")
