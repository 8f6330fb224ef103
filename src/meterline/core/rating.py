"""Rating: one customer's events in one billing period -> priced usage lines (pure).

A ``Rater`` is fed the customer's events in ascending ledger sequence (the order the
ledger stores them) and keeps, per line (segment x meter x group), the meter's
accumulator, a streaming Merkle root over the events' ledger hashes, and for
``percentage`` prices the running per-event fees. ``lines()`` prices every line with the
price its terms give it. Feeding the same events always gives the same lines: rating is
a pure function of (events, configuration, period).

Nothing an event carries stops a rating, and nothing is silently zero: an event a line
cannot take is *unbillable usage*, kept in ``problems`` (a ``MeterProblem`` per event and
meter, with a reason code): a value its meter cannot measure (see ``core.meters``), a
percentage base that is not a number, arithmetic that would stop being exact
(``overflow``), a body that cannot be decoded (``undecodable``, told by the shell), or
an event of usage outside every segment (``before_contract``, ``after_contract``; for
an event no rating takes at all, ``no_contract``: ``unrated_problems``). Usage is what a
meter some price of the configuration bills selects (``billable_meters``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from decimal import Decimal, localcontext
from typing import Any

from meterline.core.credit_records import Charge
from meterline.core.events import format_timestamp
from meterline.core.line_pricing import (
    RatingError,
    amount_so_far,
    percentage_amount,
    percentage_fee,
    price_for,
    price_quantity,
)
from meterline.core.meters import (
    Accumulator,
    Meter,
    MeterProblem,
    Unmeasurable,
    measured,
    property_value,
)
from meterline.core.model import Configuration, Price, Segment
from meterline.core.money import MONEY_CONTEXT
from meterline.core.pricing import bounded
from meterline.core.rating_lines import (
    Folds,
    LineState,
    RaterState,
    Route,
    UsageLine,
    add_leaf,
    line_id,
    line_order,
)
from meterline.core.semantics import Semantics, gauge_days
from meterline.core.unbillable import (
    UNBILLABLE_REASONS,
    billable_meters,
    unrated_problems,
    usage_problems,
)

__all__ = [
    "UNBILLABLE_REASONS",
    "Rater",
    "RaterState",
    "RatingError",
    "UsageLine",
    "billable_meters",
    "line_id",
    "unrated_problems",
    "window_charges",
]

ZERO = Decimal(0)


class Rater:
    """Rates one customer's events over the segments of one billing period."""

    def __init__(
        self,
        configuration: Configuration,
        segment_list: list[Segment],
        keep_events: bool = False,
        cuts: tuple[int, ...] | None = None,
        lineage: bool = True,
        also_meters: frozenset[str] = frozenset(),
        semantics: Semantics | None = None,
    ) -> None:
        self.segments = segment_list
        self.keep_events = keep_events
        # The live projection keeps no Merkle trees (``lineage=False``: invoices are made
        # by the batch path) and also measures unpriced meters that carry a cost.
        self.lineage = lineage
        # Window edges for ``charges`` (credit burn-down): the given instants and every
        # segment edge inside the period; None keeps no windows (the invoice needs none).
        self.cuts: tuple[int, ...] | None = None
        if cuts is not None and segment_list:
            low, high = segment_list[0].start_us, segment_list[-1].end_us
            inner = {t for t in cuts if low < t < high}
            inner.update(s.start_us for s in segment_list[1:])
            self.cuts = tuple(sorted(inner))
        self.unbilled_events = 0
        self.problems: list[MeterProblem] = []
        self._idled = False
        """Whether ``_idle_lines`` made its lines."""
        self._billable: dict[str, tuple[Meter, ...]] | None = None
        self._configuration = configuration
        self._semantics = configuration.semantics if semantics is None else semantics
        # ``gauge: day``: the local midnights that cut a ``latest`` line into days.
        self._days = gauge_days(self._semantics, segment_list)
        self.semantics = self._semantics
        """What these segments bill with (the contract's: ``semantics_for``)."""
        self._lines: dict[tuple[int, str, tuple[str | None, ...]], LineState] = {}
        # per segment: event type -> (meter, prices) pairs that may take it
        self._by_type: list[dict[str, list[tuple[Meter, tuple[Price, ...]]]]] = []
        for segment in segment_list:
            prices = segment.terms.prices()
            wanted = {price.meter for price in prices} | also_meters
            table: dict[str, list[tuple[Meter, tuple[Price, ...]]]] = {}
            for meter in configuration.meters:
                if meter.key in wanted:
                    table.setdefault(meter.event_type, []).append((meter, prices))
            self._by_type.append(table)
        self._bounds = [(s.start_us, s.end_us) for s in segment_list]
        # The same tables, prepared for the hot path: per segment, event type -> routes.
        self._route_lines: dict[tuple[int, str], dict[tuple[str | None, ...], LineState]] = {}
        self._routes: list[dict[str, tuple[Route, ...]]] = [
            {
                event_type: tuple(
                    Route(
                        index,
                        meter,
                        prices,
                        self._route_lines.setdefault((index, meter.key), {}),
                    )
                    for meter, prices in candidates
                )
                for event_type, candidates in table.items()
            }
            for index, table in enumerate(self._by_type)
        ]
        # Lines share Merkle trees (``SharedLineage``) unless meter keys repeat, which would
        # let one line take an event twice.
        keys = [meter.key for meter in configuration.meters]
        self._share = len(keys) == len(set(keys))
        # One segment (the common case): its bounds and routes, checked without a loop.
        self._only: tuple[int, int, dict[str, tuple[Route, ...]]] | None = (
            (*self._bounds[0], self._routes[0]) if len(segment_list) == 1 else None
        )

    def _segment_of(self, timestamp_us: int) -> int:
        for index, (start, end) in enumerate(self._bounds):
            if start <= timestamp_us < end:
                return index
        return -1

    def accumulator(self, meter: Meter) -> Accumulator:
        """A fresh accumulator for ``meter``'s lines and windows (a ``latest`` meter's read
        per day under ``semantics.gauge: day``)."""
        if meter.aggregation == "latest" and self._days is not None:
            return Accumulator(meter.aggregation, days=self._days)
        return Accumulator(meter.aggregation)

    def _new_line(
        self, segment: int, meter: Meter, group: tuple[str | None, ...], price: Price | None
    ) -> LineState:
        line = LineState(segment, meter, group, price, self.accumulator(meter))
        self._lines[(segment, meter.key, group)] = line
        self._route_lines.setdefault((segment, meter.key), {})[group] = line
        return line

    def _routes_of(
        self, sequence: int, timestamp_us: int, event_type: str, properties: Mapping[str, Any]
    ) -> tuple[Route, ...] | None:
        """The routes an event takes in its segment; None (kept as outside every segment
        when it is) when it takes none."""
        only = self._only
        if only is not None:
            if only[0] <= timestamp_us < only[1]:
                return only[2].get(event_type)
        else:
            index = self._segment_of(timestamp_us)
            if index >= 0:
                return self._routes[index].get(event_type)
        self._outside(sequence, timestamp_us, event_type, properties)
        return None

    def add(
        self,
        sequence: int,
        timestamp_us: int,
        event_type: str,
        properties: Mapping[str, Any],
        event_hash: bytes,
        folded: Folds | None = None,
    ) -> None:
        """Rate one event; events must come in ascending ``sequence``. With ``folded``
        (``add_batch``), a folding line's int value is kept there, to be settled once."""
        # Hot path (once per event of a close); ``MeterReader`` reads each meter's value
        # and group, as ``Measurement`` does.
        routes = self._routes_of(sequence, timestamp_us, event_type, properties)
        if not routes:
            return
        first: LineState | None = None
        second: LineState | None = None
        more: list[LineState] | None = None
        for route in routes:
            reading = route.read(properties)
            if reading is None:
                continue
            if isinstance(reading, Unmeasurable):
                self.problems.append(
                    MeterProblem(sequence, reading.detail, route.meter.key, reading.code)
                )
                continue
            group, number, raw = reading
            line = route.lines.get(group)
            if line is None:
                line = self._new_line(
                    route.segment, route.meter, group, price_for(route.prices, route.meter, group)
                )
                if self.keep_events:
                    line.members = []
            if folded is not None and line.folds and (number is None or type(number) is int):
                # ints add exactly in any grouping: (line, window) -> [events, sum, first, last]
                cuts = self.cuts
                fold_key = (line, -1 if cuts is None else bisect_right(cuts, timestamp_us))
                fold = folded.get(fold_key)
                if fold is None:
                    folded[fold_key] = [1, number or 0, sequence, sequence]
                else:
                    fold[0] += 1
                    if number:
                        fold[1] += number
                    fold[3] = sequence
            elif not self._take(line, route.meter, sequence, timestamp_us, number, raw, properties):
                continue
            if line.members is not None:
                line.members.append((sequence, event_hash))
            if first is None:
                first = line
            elif second is None:
                second = line
            elif more is None:
                more = [line]
            else:
                more.append(line)
        # The event's leaf, once per lineage: the common cases inline, the rest (a first
        # event, a divergence, three or more lines) in ``_add_leaf``.
        if first is None or not self.lineage:
            return
        lineage = first.lineage
        if second is None:
            if lineage.sharers == 1:
                lineage.add(event_hash)
                return
        elif more is None and second.lineage is lineage and lineage.sharers == 2:
            lineage.add(event_hash)
            return
        reached = [first] if second is None else [first, second, *(more or ())]
        add_leaf(reached, event_hash, self._share)

    def _take(
        self,
        line: LineState,
        meter: Meter,
        sequence: int,
        timestamp_us: int,
        number: Any,
        raw: Any,
        properties: Mapping[str, Any],
    ) -> bool:
        """Add one event's reading to ``line`` (and its window), with its fee under a
        percentage price; False, with the problem kept, when the line cannot take it."""
        total = fee = base_total = before = ZERO
        try:
            if line.per_event:
                price = line.price
                assert price is not None
                base: Any = Decimal(number) if type(number) is int else number
                if price.property and price.property != meter.property:
                    base = measured(
                        property_value(properties, price.property),
                        price.property,
                        meter.negative == "allow",
                    )
                elif base is None:
                    base = Unmeasurable("not_a_number", f"{meter.property} is not a number")
                if type(base) is Unmeasurable:
                    self.problems.append(MeterProblem(sequence, base.detail, meter.key, base.code))
                    return False
                before = line.percentage_base
                fee = percentage_fee(price, base, line.accumulator.events, before, self._semantics)
                total = MONEY_CONTEXT.add(line.percentage_total, fee)
                base_total = MONEY_CONTEXT.add(before, base)
            # raises (changing nothing) when the line's sum would stop being exact
            line.add_to_accumulator(sequence, timestamp_us, number, raw)
        except ArithmeticError:
            self.problems.append(
                MeterProblem(
                    sequence,
                    f"{meter.key}: the line's total would stop being exact",
                    meter.key,
                    "overflow",
                )
            )
            return False
        if line.per_event:
            line.percentage_total, line.percentage_base = total, base_total
        if self.cuts is not None:
            base = MONEY_CONTEXT.subtract(base_total, before)  # the event's own base
            self._add_to_window(line, sequence, timestamp_us, number, raw, fee, base)
        return True

    def add_batch(self, events: Iterable[tuple[int, int, str, Mapping[str, Any], bytes]]) -> None:
        """Rate ``(sequence, timestamp_us, type, properties, hash)`` events (ascending
        sequence, after every event fed before): the same state as ``add`` of each in
        turn. Each event is still read (and its problems kept in order), but the int
        values of sum and count lines are folded per (line, window) and settled once:
        ints add exactly in any grouping. Decimal values, ``max``, ``latest``,
        ``unique_count`` and percentage lines go in per event, as ``add`` does."""
        folded: Folds = {}
        add = self.add
        for sequence, timestamp_us, event_type, properties, event_hash in events:
            add(sequence, timestamp_us, event_type, properties, event_hash, folded)
        for (line, index), (count, whole, first, last) in folded.items():
            line.accumulator.add_folded(count, whole, first, last)
            if index < 0:
                continue
            if line.windows is None:
                line.windows, line.window_fees = {}, {}
            window = line.windows.get(index)
            if window is None:
                window = line.windows[index] = self.accumulator(line.meter)
            window.add_folded(count, whole, first, last)

    def _usage_meters(self) -> dict[str, tuple[Meter, ...]]:
        if self._billable is None:
            self._billable = billable_meters(self._configuration)
        return self._billable

    def _outside(
        self, sequence: int, timestamp_us: int, event_type: str, properties: Mapping[str, Any]
    ) -> None:
        """An event of the period outside every segment: before the contract starts or
        after it ends. Usage (some billable meter selects it) is unbillable."""
        self.unbilled_events += 1
        candidates = self._usage_meters().get(event_type)
        if not candidates or not self.segments:
            return
        if timestamp_us < self.segments[0].start_us:
            code = "before_contract"
            detail = f"before the contract starts ({format_timestamp(self.segments[0].start_us)})"
        else:
            code = "after_contract"
            detail = f"after the contract ends ({format_timestamp(self.segments[-1].end_us)})"
        self.problems.extend(usage_problems(candidates, sequence, properties, code, detail))

    def refuse(self, sequence: int, event_type: str, code: str, detail: str) -> None:
        """An event the shell could not hand over (``undecodable``: its stored body does
        not decode): unbillable usage when some billable meter takes its type."""
        if event_type in self._usage_meters():
            self.problems.append(MeterProblem(sequence, detail, "", code))

    def _add_to_window(
        self,
        line: LineState,
        sequence: int,
        timestamp_us: int,
        number: Any,
        raw: Any,
        fee: Decimal,
        base: Decimal = ZERO,
    ) -> None:
        assert self.cuts is not None
        index = bisect_right(self.cuts, timestamp_us)
        if line.windows is None:
            line.windows, line.window_fees = {}, {}
        window = line.windows.get(index)
        if window is None:
            window = line.windows[index] = self.accumulator(line.meter)
        window.add(sequence, timestamp_us, number, raw)
        if line.per_event:
            assert line.window_fees is not None
            with localcontext(MONEY_CONTEXT):
                line.window_fees[index] = line.window_fees.get(index, ZERO) + fee
                line.window_bases[index] = line.window_bases.get(index, ZERO) + base

    def export_state(self) -> RaterState:
        """What the events fed so far left behind, picklable (for a scan done in another
        process); ``import_state`` on a fresh rater of the same jobs makes it equal."""
        return RaterState(
            self.unbilled_events,
            tuple(self.problems),
            tuple(
                (
                    key,
                    line.accumulator,
                    line.lineage,
                    (line.percentage_total, line.percentage_base),
                    line.members,
                    line.windows,
                    line.window_fees,
                    line.window_bases,
                )
                for key, line in self._lines.items()
            ),
        )

    def import_state(self, state: RaterState) -> None:
        """Take over ``state`` (from ``export_state`` of a rater made with the same
        configuration and segments); this rater must not have been fed yet."""
        if self._lines or self.problems or self.unbilled_events:
            raise ValueError("import_state needs a rater that has not been fed")
        self.unbilled_events = state.unbilled_events
        self.problems.extend(state.problems)
        routes = {
            (route.segment, route.meter.key): route
            for table in self._routes
            for candidates in table.values()
            for route in candidates
        }
        for key, accumulator, lineage, total, members, windows, fees, bases in state.lines:
            segment, meter_key, group = key
            route = routes[(segment, meter_key)]
            line = self._new_line(
                segment, route.meter, group, price_for(route.prices, route.meter, group)
            )
            line.accumulator, line.add_to_accumulator = accumulator, accumulator.add
            line.lineage = lineage  # lines that shared one still do (pickle keeps identity)
            line.percentage_total, line.percentage_base = total
            line.members = members
            line.windows, line.window_fees, line.window_bases = windows, fees, bases

    def members(
        self, segment: int, meter: str, group: tuple[str | None, ...]
    ) -> list[tuple[int, bytes]]:
        """The (sequence, ledger hash) of each event behind a line, in ledger order (only
        when the rater was made with ``keep_events``)."""
        line = self._lines.get((segment, meter, group))
        return [] if line is None or line.members is None else list(line.members)

    def quantities(self) -> list[tuple[int, Meter, tuple[str | None, ...], Decimal, int]]:
        """Every line's (segment, meter, group, quantity, events), priced or not."""
        return [
            (
                line.segment,
                line.meter,
                line.group,
                line.accumulator.quantity(),
                line.accumulator.events,
            )
            for line in self._lines.values()
        ]

    def _idle_lines(self) -> None:
        """Lines for prices that charge at zero usage (a first-tier flat fee, a minimum)
        but met no event: only where the price names every group dimension. Made once:
        lines are never removed, so a second pass would find them all."""
        if self._idled:
            return
        self._idled = True
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
                            self._new_line(index, meter, group, price)

    def lines(self, currency: str, configuration: Configuration) -> list[UsageLine]:
        """Every priced line, in (segment, meter, group) order; zero-usage lines only when
        their price charges something at zero."""
        self._idle_lines()
        result = []
        for key in sorted(self._lines, key=line_order):
            state = self._lines[key]
            price = state.price
            if price is None:
                continue
            quantity = state.accumulator.quantity()
            if price.model == "percentage":
                amount = percentage_amount(
                    state.percentage_total, state.percentage_base, self._semantics
                )
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
                    merkle_root=state.lineage.builder.root(),
                )
            )
        return result


def window_charges(rater: Rater, currency: str, configuration: Configuration) -> list[Charge]:
    """Each line's charge per window (see ``core.credits``): ``amount(usage through the
    window's end) - amount(usage before it)``, the line minimum/maximum settled in the
    segment's last window, less the segment's discount; in the line's unit. Needs a rater
    made with ``cuts``. The charges of a line add up to its ``lines()`` amount (before
    the discount). The configuration's ``semantics`` may cap every window's cumulative
    amount at the maximum (``line_maximum``) and hold a volume line's charge to the last
    window (``volume_billing``): see ``line_pricing.amount_so_far``."""
    if rater.cuts is None:
        raise ValueError("window_charges needs a rater made with cuts")
    if not rater.segments:
        return []
    rater._idle_lines()
    semantics = rater.semantics
    edges = [rater.segments[0].start_us, *rater.cuts, rater.segments[-1].end_us]
    result = []
    for key in sorted(rater._lines, key=line_order):
        state = rater._lines[key]
        price = state.price
        if price is None:
            continue
        segment = rater.segments[state.segment]
        windows = [
            index
            for index in range(len(edges) - 1)
            if segment.start_us <= edges[index] and edges[index + 1] <= segment.end_us
        ]
        unit = currency if price.credit_type is None else price.credit_type
        discount = segment.terms.discount_percent or ZERO
        name = line_id(*key)
        cumulative = rater.accumulator(state.meter)
        previous = ZERO
        fees = bases = ZERO
        priced = False
        last = len(windows) - 1
        line_windows = state.windows or {}
        for position, index in enumerate(windows):
            window = line_windows.get(index)
            if window is not None:
                cumulative = cumulative.merged(window)
            elif priced and position != last:
                # no usage in the window: the cumulative amount is the one priced before,
                # so its charge is zero (the last window still settles minimum/maximum)
                continue
            priced = True
            with localcontext(MONEY_CONTEXT):
                if price.model == "percentage":
                    fees += (state.window_fees or {}).get(index, ZERO)
                    bases += state.window_bases.get(index, ZERO)
                    amount = percentage_amount(fees, bases, semantics)
                else:
                    amount = price_quantity(price, cumulative.quantity(), state.group)
                amount = amount_so_far(amount, price, position == last, semantics)
                delta = amount - previous
                previous = amount
                if discount:
                    delta -= delta * discount / 100
            if delta == 0:
                continue
            result.append(
                Charge(
                    edges[index],
                    edges[index + 1],
                    name,
                    state.meter.key,
                    unit,
                    delta,
                    None if window is None else window.first_sequence,
                    None if window is None else window.last_sequence,
                )
            )
    return result
