"""Rating: one customer's events in one billing period -> priced usage lines (pure).

A ``Rater`` is fed the customer's events in ascending ledger sequence (the order the
ledger stores them) and keeps, per line (segment x meter x group), the meter's
accumulator, a streaming Merkle root over the events' ledger hashes, and for
``percentage`` prices the running per-event fees. ``lines()`` prices every line with the
price its terms give it. Events outside every segment (before the contract starts, after
it ends) are counted in ``unbilled_events`` and priced nowhere. Feeding the same events
always gives the same lines: rating is a pure function of (events, configuration, period).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

from meterline.core.lineage import MerkleBuilder
from meterline.core.meters import (
    _MISSING,
    Accumulator,
    Meter,
    MeterProblem,
    exact_number,
    property_value,
)
from meterline.core.model import Configuration, Price, Segment
from meterline.core.money import MONEY_CONTEXT
from meterline.core.pricing import (
    after_allowance,
    bounded,
    graduated,
    matrix_unit_amount,
    package,
    per_unit,
    volume,
)

ZERO = Decimal(0)


class RatingError(ValueError):
    """A line cannot be priced (e.g. a matrix without a price for a group and no default)."""


@dataclass
class _LineState:
    segment: int
    meter: Meter
    group: tuple[str | None, ...]
    price: Price | None
    accumulator: Accumulator
    merkle: MerkleBuilder = field(default_factory=MerkleBuilder)
    percentage_total: Decimal = ZERO
    members: list[tuple[int, bytes]] | None = None


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


def price_for(
    prices: tuple[Price, ...], meter: Meter, group: tuple[str | None, ...]
) -> Price | None:
    """The first price for ``meter`` whose ``where`` matches ``group`` (prices come most
    specific first, see ``Terms.prices``)."""
    for price in prices:
        if price.meter == meter.key and price.applies_to(meter.group_by, group):
            return price
    return None


def price_quantity(price: Price, quantity: Decimal, group: tuple[str | None, ...]) -> Decimal:
    """The amount ``price`` charges for ``quantity`` (not for ``percentage``, which is per
    event), before the line minimum and maximum."""
    billable = after_allowance(quantity, price.free_units)
    if price.model == "per_unit":
        return per_unit(billable, price.unit_amount or ZERO)
    if price.model == "package":
        return package(billable, price.package_size or Decimal(1), price.package_amount or ZERO)
    if price.model == "graduated":
        return graduated(billable, price.tiers, price.first_flat_at_zero)
    if price.model == "volume":
        return volume(billable, price.tiers)
    if price.model == "matrix":
        key = tuple("" if value is None else value for value in group)
        try:
            unit = matrix_unit_amount(dict(price.matrix), key, price.matrix_default)
        except KeyError as error:
            raise RatingError(f"price for meter {price.meter}: {error.args[0]}") from None
        return per_unit(billable, unit)
    raise RatingError(f"price for meter {price.meter}: {price.model} is priced per event")


def percentage_fee(price: Price, amount: Decimal, position: int) -> Decimal:
    """The fee on one event of ``amount`` that is the ``position``-th (from 0) of its line."""
    with localcontext(MONEY_CONTEXT):
        fee = amount * (price.rate or ZERO)
        if position >= price.free_events:
            fee += price.fixed_fee
    if price.per_event_minimum is not None:
        fee = max(fee, price.per_event_minimum)
    if price.per_event_maximum is not None:
        fee = min(fee, price.per_event_maximum)
    return fee


class Rater:
    """Rates one customer's events over the segments of one billing period."""

    def __init__(
        self, configuration: Configuration, segment_list: list[Segment], keep_events: bool = False
    ) -> None:
        self.segments = segment_list
        self.keep_events = keep_events
        self.unbilled_events = 0
        self.problems: list[MeterProblem] = []
        self._lines: dict[tuple[int, str, tuple[str | None, ...]], _LineState] = {}
        # per segment: event type -> (meter, prices) pairs that may take it
        self._by_type: list[dict[str, list[tuple[Meter, tuple[Price, ...]]]]] = []
        for segment in segment_list:
            prices = segment.terms.prices()
            wanted = {price.meter for price in prices}
            table: dict[str, list[tuple[Meter, tuple[Price, ...]]]] = {}
            for meter in configuration.meters:
                if meter.key in wanted:
                    table.setdefault(meter.event_type, []).append((meter, prices))
            self._by_type.append(table)
        self._bounds = [(s.start_us, s.end_us) for s in segment_list]

    def _segment_of(self, timestamp_us: int) -> int:
        for index, (start, end) in enumerate(self._bounds):
            if start <= timestamp_us < end:
                return index
        return -1

    def add(
        self,
        sequence: int,
        timestamp_us: int,
        event_type: str,
        properties: Mapping[str, Any],
        event_hash: bytes,
    ) -> None:
        """Rate one event; events must come in ascending ``sequence``."""
        index = self._segment_of(timestamp_us)
        if index < 0:
            self.unbilled_events += 1
            return
        candidates = self._by_type[index].get(event_type)
        if not candidates:
            return
        for meter, prices in candidates:
            if meter.filters and not all(f.matches(properties) for f in meter.filters):
                continue
            raw: Any = None
            number: Decimal | None = None
            if meter.aggregation != "count":
                raw = property_value(properties, meter.property or "")
                if raw is _MISSING:
                    self.problems.append(MeterProblem(sequence, f"{meter.property} is missing"))
                    continue
                number = exact_number(raw)
                if number is None and meter.aggregation != "unique_count":
                    self.problems.append(
                        MeterProblem(sequence, f"{meter.property}={raw!r} is not a number")
                    )
                    continue
            group = meter.group_of(properties) if meter.group_by else ()
            key = (index, meter.key, group)
            line = self._lines.get(key)
            if line is None:
                price = price_for(prices, meter, group)
                line = _LineState(index, meter, group, price, Accumulator(meter.aggregation))
                if self.keep_events:
                    line.members = []
                self._lines[key] = line
            price = line.price
            if price is not None and price.model == "percentage":
                base = number
                if price.property and price.property != meter.property:
                    base = exact_number(property_value(properties, price.property))
                if base is None:
                    self.problems.append(
                        MeterProblem(
                            sequence, f"{price.property or meter.property} is not a number"
                        )
                    )
                    continue
                fee = percentage_fee(price, base, line.accumulator.events)
                with localcontext(MONEY_CONTEXT):
                    line.percentage_total += fee
            line.accumulator.add(sequence, timestamp_us, number, raw)
            line.merkle.add(event_hash)
            if line.members is not None:
                line.members.append((sequence, event_hash))

    def members(
        self, segment: int, meter: str, group: tuple[str | None, ...]
    ) -> list[tuple[int, bytes]]:
        """The (sequence, ledger hash) of each event behind a line, in ledger order (only
        when the rater was made with ``keep_events``)."""
        line = self._lines.get((segment, meter, group))
        return [] if line is None or line.members is None else list(line.members)

    def _idle_lines(self) -> None:
        """Lines for prices that charge at zero usage (a first-tier flat fee, a minimum)
        but met no event: only where the price names every group dimension."""
        for index, table in enumerate(self._by_type):
            for candidates in table.values():
                for meter, prices in candidates:
                    for price in prices:
                        if price.meter != meter.key:
                            continue
                        values = dict(price.where)
                        if set(values) != set(meter.group_by):
                            continue
                        group = tuple(values[name] for name in meter.group_by)
                        key = (index, meter.key, group)
                        if key not in self._lines and price_for(prices, meter, group) is price:
                            accumulator = Accumulator(meter.aggregation)
                            self._lines[key] = _LineState(index, meter, group, price, accumulator)

    def lines(self, currency: str, configuration: Configuration) -> list[UsageLine]:
        """Every priced line, in (segment, meter, group) order; zero-usage lines only when
        their price charges something at zero."""
        self._idle_lines()
        result = []
        for key in sorted(self._lines, key=_line_order):
            state = self._lines[key]
            price = state.price
            if price is None:
                continue
            quantity = state.accumulator.quantity()
            if price.model == "percentage":
                amount = state.percentage_total
            else:
                amount = price_quantity(price, quantity, state.group)
            amount = bounded(amount, price.minimum, price.maximum)
            if state.accumulator.events == 0 and amount == 0:
                continue
            unit = currency
            if price.credit_type is not None:
                credit = configuration.credit_type(price.credit_type)
                if credit is None:
                    raise RatingError(f"price for meter {price.meter}: unknown credit type")
                unit = credit.key
            result.append(
                UsageLine(
                    segment=state.segment,
                    meter=state.meter.key,
                    group=tuple(zip(state.meter.group_by, state.group, strict=True)),
                    price=price,
                    quantity=quantity,
                    amount=amount,
                    unit=unit,
                    events=state.accumulator.events,
                    first_sequence=state.accumulator.first_sequence,
                    last_sequence=state.accumulator.last_sequence,
                    merkle_root=state.merkle.root(),
                )
            )
        return result


def _line_order(
    key: tuple[int, str, tuple[str | None, ...]],
) -> tuple[int, str, tuple[tuple[int, str], ...]]:
    segment, meter, group = key
    return segment, meter, tuple((0, "") if v is None else (1, v) for v in group)
