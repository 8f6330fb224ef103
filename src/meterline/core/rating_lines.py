"""A rater's running state, line by line (pure): each line's accumulator, fees and windows
(``LineState``), the routes an event type takes to its lines (``Route``), the Merkle
trees lines share while they meet the same events (``SharedLineage``, ``add_leaf``) and
the picklable state a rater exports (``RaterState``), a priced line (``UsageLine``) and
the order and names of lines (``line_order``, ``line_id``). Feeding the lines is
``core.rating``'s."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import Decimal

from meterline.core.lineage import MerkleBuilder
from meterline.core.meters import Accumulator, Meter, MeterProblem, MeterReader
from meterline.core.model import Price

ZERO = Decimal(0)


class SharedLineage:
    """A line's streaming Merkle tree, shared by every line that has met exactly the same
    events so far (``sharers`` of them), so each leaf is hashed once for all of them:
    e.g. a model's input-token and output-token lines, which two meters fill from the
    same events. A line that meets an event its sharers do not (or misses one they meet)
    leaves with a copy of the tree first, so every line's root is always the RFC 6962 root
    over its own events (tested against ``merkle_root``)."""

    __slots__ = ("add", "builder", "sharers")

    def __init__(self, builder: MerkleBuilder, sharers: int = 1) -> None:
        self.builder = builder
        self.sharers = sharers
        self.add = builder.add

    def __getstate__(self) -> tuple[MerkleBuilder, int]:
        return self.builder, self.sharers

    def __setstate__(self, state: tuple[MerkleBuilder, int]) -> None:
        self.__init__(*state)  # type: ignore[misc]


class LineState:
    """One line's running state; ``add_to_accumulator`` is its accumulator's bound
    ``add``, looked up once, not per event."""

    __slots__ = (
        "accumulator",
        "add_to_accumulator",
        "folds",
        "group",
        "lineage",
        "members",
        "meter",
        "per_event",
        "percentage_base",
        "percentage_total",
        "price",
        "segment",
        "window_bases",
        "window_fees",
        "windows",
    )

    def __init__(
        self,
        segment: int,
        meter: Meter,
        group: tuple[str | None, ...],
        price: Price | None,
        accumulator: Accumulator,
    ) -> None:
        self.segment = segment
        self.meter = meter
        self.group = group
        self.price = price
        self.per_event = price is not None and price.model == "percentage"
        # A sum or count line not priced per event takes a batch's int values folded
        # (``Rater.add_batch``): one accumulator update per window instead of per event.
        self.folds = not self.per_event and accumulator.aggregation in ("sum", "count")
        self.accumulator = accumulator
        self.lineage = SharedLineage(MerkleBuilder())
        self.percentage_total = ZERO
        self.percentage_base = ZERO
        """Under a percentage price: the sum of the bases of the events taken so far."""
        self.members: list[tuple[int, bytes]] | None = None
        self.add_to_accumulator = accumulator.add
        # Per window (see ``Rater(cuts=...)``): the usage of the window alone.
        self.windows: dict[int, Accumulator] | None = None
        self.window_fees: dict[int, Decimal] | None = None
        self.window_bases: dict[int, Decimal] = {}
        """Under a percentage price: the sum of the bases of each window's events."""


class Route:
    """One meter in one segment, prepared for ``Rater.add``: its reader and its lines by
    group (the same objects as ``Rater._lines``)."""

    __slots__ = ("lines", "meter", "prices", "read", "segment")

    def __init__(
        self,
        segment: int,
        meter: Meter,
        prices: tuple[Price, ...],
        lines: dict[tuple[str | None, ...], LineState],
    ) -> None:
        self.segment = segment
        self.meter = meter
        self.prices = prices
        self.lines = lines
        self.read = MeterReader(meter).read


Folds = dict[tuple[LineState, int], list[int]]
"""A batch's folded int values: (line, window index or -1) -> [events, sum, first
sequence, last sequence]."""


@dataclass(frozen=True, slots=True)
class RaterState:
    """A rater's accumulated state, picklable: see ``Rater.export_state``."""

    unbilled_events: int
    problems: tuple[MeterProblem, ...]
    lines: tuple[
        tuple[
            tuple[int, str, tuple[str | None, ...]],
            Accumulator,
            SharedLineage,
            tuple[Decimal, Decimal],
            list[tuple[int, bytes]] | None,
            dict[int, Accumulator] | None,
            dict[int, Decimal] | None,
            dict[int, Decimal],
        ],
        ...,
    ]


def add_leaf(reached: list[LineState], event_hash: bytes, share: bool) -> None:
    """Add the event's leaf to the lineage of every line in ``reached`` (the lines it
    went to), keeping each lineage shared by lines with identical events only."""
    if not share:
        for line in reached:
            line.lineage.add(event_hash)
        return
    groups: dict[SharedLineage, list[LineState]] = {}
    fresh = []
    for line in reached:
        lineage = line.lineage
        if lineage.sharers == 1 and lineage.builder.count == 0:
            fresh.append(line)  # no events yet: any such lines may share from here
        else:
            groups.setdefault(lineage, []).append(line)
    if fresh:
        shared = fresh[0].lineage
        shared.sharers = len(fresh)
        for line in fresh[1:]:
            line.lineage = shared
        groups[shared] = fresh
    for lineage, lines in groups.items():
        if len(lines) < lineage.sharers:  # the others do not take this event
            lineage.sharers -= len(lines)
            lineage = SharedLineage(copy.deepcopy(lineage.builder), len(lines))
            for line in lines:
                line.lineage = lineage
        lineage.add(event_hash)


@dataclass(frozen=True, slots=True)
class UsageLine:
    """A priced line: ``amount`` is exact, in ``unit`` (a currency or a credit type)."""

    segment: int
    meter: str
    group: tuple[tuple[str, str | None], ...]
    price: Price
    quantity: Decimal
    amount: Decimal
    unit: str
    events: int
    first_sequence: int | None
    last_sequence: int | None
    merkle_root: bytes


def line_order(
    key: tuple[int, str, tuple[str | None, ...]],
) -> tuple[int, str, tuple[tuple[int, str], ...]]:
    segment, meter, group = key
    return segment, meter, tuple((0, "") if v is None else (1, v) for v in group)


def line_id(segment: int, meter: str, group: tuple[str | None, ...]) -> str:
    """A usage line's name in the credit ledger: ``segment/meter/value,...``."""
    return f"{segment}/{meter}/" + ",".join("" if value is None else value for value in group)
