"""Meters: how events become quantities (pure).

A meter selects events by type and property filters, groups them by dimension values
(e.g. ``model``) and aggregates one property: ``count``, ``sum``, ``max``,
``unique_count`` or ``latest`` (by event time, ties by ledger sequence; per local day,
summed, when the accumulator is given the period's ``days``). Quantities are
exact Decimals: integers, Decimals and numeric strings (``"0.1"``) all read exactly. An
event a meter selects but cannot measure is reported as a ``MeterProblem`` with a reason
code, never silently counted as zero: its value is ``missing``, ``not_a_number``,
``non_finite`` (NaN, Infinity), ``out_of_range`` (not below 10**24 in magnitude, or more
than 18 digits after the point: the bounds that keep every sum exact within the money
context's 60 digits), ``negative`` (unless the meter says ``negative: allow``), or would
make the running total inexact (``overflow``). ``Accumulator`` is incremental, so the
live engine and the batch rating share one definition; the order events arrive in does
not change any result.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from meterline.core.money import MONEY_CONTEXT

Aggregation = Literal["count", "sum", "max", "unique_count", "latest"]
AGGREGATIONS: tuple[Aggregation, ...] = ("count", "sum", "max", "unique_count", "latest")
NegativeRule = Literal["reject", "allow"]
NEGATIVE_RULES: tuple[NegativeRule, ...] = ("reject", "allow")
_MISSING = object()

QUANTITY_INTEGER_DIGITS_MAX = 24
"""A measured value must be below 10**24 in magnitude (digits before the point)."""
QUANTITY_FRACTION_DIGITS_MAX = 18
"""A measured value may carry at most 18 significant digits after the point. With the
integer bound, any sum of up to 10**18 values needs at most 60 digits: exact in
``MONEY_CONTEXT``."""
QUANTITY_LIMIT = 10**QUANTITY_INTEGER_DIGITS_MAX
_FRACTION_QUANTUM = Decimal(1).scaleb(-QUANTITY_FRACTION_DIGITS_MAX)
_exact_add = MONEY_CONTEXT.add
"""Addition that raises (``Inexact``, ``Overflow``) rather than round."""


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    """Keep an event only if ``property`` equals a value, is one of values, or exists."""

    property: str
    equals: Any = None
    one_of: tuple[Any, ...] | None = None
    exists: bool | None = None

    def matches(self, properties: Mapping[str, Any]) -> bool:
        value = property_value(properties, self.property)
        if self.exists is not None and (value is not _MISSING) != self.exists:
            return False
        if self.equals is not None and value != self.equals:
            return False
        return self.one_of is None or value in self.one_of


@dataclass(frozen=True, slots=True)
class Meter:
    """A named measure of usage over one event type."""

    key: str
    event_type: str
    aggregation: Aggregation
    property: str | None = None
    filters: tuple[PropertyFilter, ...] = ()
    group_by: tuple[str, ...] = ()
    product: str = ""
    """The product line the meter's usage belongs to (unit economics); its key when empty."""
    negative: NegativeRule = "reject"
    """Whether a negative value is usage (``allow``: e.g. a correction) or unbillable
    (``reject``, the default: a customer's negative tokens never lower its bill)."""

    def selects(self, event_type: str, properties: Mapping[str, Any]) -> bool:
        return event_type == self.event_type and all(f.matches(properties) for f in self.filters)

    def group_of(self, properties: Mapping[str, Any]) -> tuple[str | None, ...]:
        values = (property_value(properties, name) for name in self.group_by)
        return tuple(None if value is _MISSING else str(value) for value in values)


def meter_errors(meter: Meter, path: str = "meter") -> list[str]:
    """Every problem with a meter's definition, each prefixed with its path."""
    errors = []
    if not meter.key:
        errors.append(f"{path}.key: must not be empty")
    if not meter.event_type:
        errors.append(f"{path}.event_type: must not be empty")
    if meter.aggregation not in AGGREGATIONS:
        errors.append(
            f"{path}.aggregation: {meter.aggregation!r} is not one of {', '.join(AGGREGATIONS)}"
        )
    elif meter.aggregation != "count" and not meter.property:
        errors.append(f"{path}.property: {meter.aggregation} needs a property to aggregate")
    if meter.negative not in NEGATIVE_RULES:
        errors.append(
            f"{path}.negative: {meter.negative!r} is not one of {', '.join(NEGATIVE_RULES)}"
        )
    if len(set(meter.group_by)) != len(meter.group_by):
        errors.append(f"{path}.group_by: dimensions repeat")
    return errors


def property_value(properties: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``usage.input_tokens``), or a missing marker."""
    value: Any = properties
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def exact_number(value: Any) -> Decimal | None:
    """``value`` as an exact Decimal, or None if it is not a number (bools are not)."""
    kind = type(value)
    if kind is int:
        return Decimal(value)
    if kind is Decimal:
        return value if value.is_finite() else None
    if kind is str:
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


@dataclass(frozen=True, slots=True)
class Unmeasurable:
    """Why a value cannot be measured: a reason ``code`` and a sentence naming the value."""

    code: str
    detail: str


def measured(value: Any, path: str, allow_negative: bool = False) -> Decimal | Unmeasurable:
    """``value`` as an exact Decimal a meter may aggregate, or why it may not be: not a
    number (bools are not), not finite, out of the exact range, or negative."""
    kind = type(value)
    if kind is int:
        number = Decimal(value)
    elif kind is Decimal:
        number = value
    elif kind is str:
        try:
            number = Decimal(value)
        except InvalidOperation:
            return Unmeasurable("not_a_number", f"{path}={_shown(value)} is not a number")
    else:
        return Unmeasurable("not_a_number", f"{path}={_shown(value)} is not a number")
    if not number.is_finite():
        return Unmeasurable("non_finite", f"{path}={_shown(value)} is not a finite number")
    if number and number.adjusted() >= QUANTITY_INTEGER_DIGITS_MAX:
        return Unmeasurable(
            "out_of_range",
            f"{path}={_shown(value)} is out of range (at most"
            f" {QUANTITY_INTEGER_DIGITS_MAX} digits before the point)",
        )
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -QUANTITY_FRACTION_DIGITS_MAX:
        try:
            number.quantize(_FRACTION_QUANTUM, context=MONEY_CONTEXT)
        except ArithmeticError:
            return Unmeasurable(
                "out_of_range",
                f"{path}={_shown(value)} is out of range (at most"
                f" {QUANTITY_FRACTION_DIGITS_MAX} digits after the point)",
            )
    if number < 0 and not allow_negative:
        return Unmeasurable("negative", f"{path}={_shown(value)} is negative")
    return number


def _shown(value: Any) -> str:
    """A value as a problem names it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class MeterProblem:
    """An event a meter selected but could not measure (or a rating could not take):
    ``reason`` in words, ``code`` for reports (see the module doc), the ``meter``."""

    sequence: int
    reason: str
    meter: str = ""
    code: str = "not_a_number"


@dataclass
class Accumulator:
    """One meter's running aggregate for one group; ``add`` is order-independent."""

    aggregation: Aggregation
    events: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None
    _total: Decimal = Decimal(0)
    _whole: int = 0
    """A sum's integer values, added as ints (exact and fast); ``_total`` the rest."""
    _maximum: Decimal | None = None
    _seen: set[str] = field(default_factory=set)
    _latest: tuple[int, int, Decimal] | None = None
    days: tuple[int, ...] | None = None
    """For a ``latest`` meter read per day (``semantics.gauge: day``): the local midnights
    inside the period; the quantity is then the sum of each day's latest value."""
    _daily: dict[int, tuple[int, int, Decimal]] = field(default_factory=dict)

    def add(self, sequence: int, timestamp_us: int, number: Any, raw: Any) -> None:
        """Take one event. ``number``: a Decimal, None, or (for a sum only) an int: see
        ``Reading``. Raises ``ArithmeticError`` (changing nothing) when a Decimal sum
        would stop being exact."""
        aggregation = self.aggregation
        if aggregation == "sum":
            if type(number) is int:
                self._whole += number
            elif number is not None:
                self._total = _exact_add(self._total, number)  # raises before any change
        elif aggregation == "max" and number is not None:
            self._maximum = number if self._maximum is None else max(self._maximum, number)
        elif aggregation == "unique_count":
            self._seen.add(repr(raw))
        elif aggregation == "latest" and number is not None:
            candidate = (timestamp_us, sequence, number)
            if self._latest is None or candidate[:2] > self._latest[:2]:
                self._latest = candidate
            if self.days is not None:
                day = bisect_right(self.days, timestamp_us)
                known = self._daily.get(day)
                if known is None or candidate[:2] > known[:2]:
                    self._daily[day] = candidate
        self.events += 1
        if self.first_sequence is None or sequence < self.first_sequence:
            self.first_sequence = sequence
        if self.last_sequence is None or sequence > self.last_sequence:
            self.last_sequence = sequence

    def add_folded(self, events: int, whole: int, first_sequence: int, last_sequence: int) -> None:
        """Take ``events`` events at once (a ``sum`` or ``count`` only) whose values are
        ints adding up to ``whole`` (a count's are not read): exactly the state ``add`` of
        each would leave, since ints add exactly in any order or grouping."""
        if self.aggregation == "sum":
            self._whole += whole
        elif self.aggregation != "count":
            raise ValueError(f"a {self.aggregation} accumulator cannot take folded values")
        self.events += events
        if self.first_sequence is None or first_sequence < self.first_sequence:
            self.first_sequence = first_sequence
        if self.last_sequence is None or last_sequence > self.last_sequence:
            self.last_sequence = last_sequence

    def merged(self, other: Accumulator) -> Accumulator:
        """The accumulator of both sets of events (for cumulative usage over windows)."""
        result = Accumulator(
            self.aggregation,
            self.events,
            self.first_sequence,
            self.last_sequence,
            self._total,
            self._whole,
            self._maximum,
            set(self._seen),
            self._latest,
            self.days,
            dict(self._daily),
        )
        result.take(other)
        return result

    def take(self, other: Accumulator) -> None:
        """Take ``other``'s events in place (``merged`` without a new accumulator: what
        merging many, as a day's roll-up of its hours does, needs). Raises
        ``ArithmeticError`` (changing nothing) when the sum would stop being exact."""
        self._total = _exact_add(self._total, other._total)
        self.events += other.events
        first, last = other.first_sequence, other.last_sequence
        if first is not None and (self.first_sequence is None or first < self.first_sequence):
            self.first_sequence = first
        if last is not None and (self.last_sequence is None or last > self.last_sequence):
            self.last_sequence = last
        self._whole += other._whole
        maximum = other._maximum
        if maximum is not None and (self._maximum is None or maximum > self._maximum):
            self._maximum = maximum
        if other._seen:
            self._seen |= other._seen
        latest = other._latest
        if latest is not None and (self._latest is None or latest[:2] > self._latest[:2]):
            self._latest = latest
        if self.days is None:
            self.days = other.days
        daily = self._daily
        for day, candidate in other._daily.items():
            known = daily.get(day)
            if known is None or candidate[:2] > known[:2]:
                daily[day] = candidate

    def quantity(self) -> Decimal:
        if self.aggregation == "count":
            return Decimal(self.events)
        if self.aggregation == "sum":
            return _exact_add(self._total, self._whole) if self._whole else self._total
        if self.aggregation == "max":
            return self._maximum if self._maximum is not None else Decimal(0)
        if self.aggregation == "unique_count":
            return Decimal(len(self._seen))
        if self.days is not None:
            total = Decimal(0)
            for reading in self._daily.values():
                total = _exact_add(total, reading[2])
            return total
        return self._latest[2] if self._latest is not None else Decimal(0)


Reading = tuple[tuple[str | None, ...], Any, Any]
"""What a meter reads from one event: (group, number, raw value). ``number`` is a Decimal,
None (``count``; a non-numeric ``unique_count`` value), or for a ``sum`` an int taken as
it is (the accumulator adds ints as ints: exact)."""


class MeterReader:
    """A meter prepared to read events: the one definition of selecting, measuring and
    grouping, shared by ``Measurement`` and the rater's hot path. A top-level property or a
    single top-level dimension is read with one ``get``; dotted paths walk the mapping."""

    __slots__ = (
        "allow_negative",
        "counts",
        "filters",
        "group_key",
        "low",
        "meter",
        "path",
        "property",
        "sums",
        "unique",
    )

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.allow_negative = meter.negative == "allow"
        # the lowest int taken without a closer look (``measured`` explains the rest)
        self.low = 1 - QUANTITY_LIMIT if self.allow_negative else 0
        self.filters = meter.filters
        self.counts = meter.aggregation == "count"
        self.sums = meter.aggregation == "sum"
        self.unique = meter.aggregation == "unique_count"
        self.path = meter.property or ""
        self.property: str | None = None if "." in self.path else self.path
        group_by = meter.group_by
        self.group_key: str | None = (
            group_by[0] if len(group_by) == 1 and "." not in group_by[0] else None
        )

    def read(self, properties: Mapping[str, Any]) -> Reading | Unmeasurable | None:
        """The event's reading; None when the filters drop it; ``Unmeasurable`` when the
        meter selects it but cannot measure it. The event type is the caller's check."""
        if self.filters and not all(f.matches(properties) for f in self.filters):
            return None
        raw: Any = None
        number: Any = None
        if not self.counts:
            name = self.property
            raw = (
                properties.get(name, _MISSING)
                if name is not None
                else property_value(properties, self.path)
            )
            if type(raw) is int and self.low <= raw < QUANTITY_LIMIT:
                number = raw if self.sums else Decimal(raw)
            elif raw is _MISSING:
                return Unmeasurable("missing", f"{self.path} is missing")
            elif self.unique:
                number = exact_number(raw)  # any value is an identity to count
            else:
                number = measured(raw, self.path, self.allow_negative)
                if type(number) is Unmeasurable:
                    return number
        key = self.group_key
        if key is not None:
            value = properties.get(key, _MISSING)
            group: tuple[str | None, ...] = (
                (value,) if type(value) is str else (None,) if value is _MISSING else (str(value),)
            )
        elif self.meter.group_by:
            group = self.meter.group_of(properties)
        else:
            group = ()
        return group, number, raw


@dataclass
class Measurement:
    """A meter's groups and the problems met while measuring."""

    meter: Meter
    groups: dict[tuple[str | None, ...], Accumulator] = field(default_factory=dict)
    problems: list[MeterProblem] = field(default_factory=list)
    _reader: MeterReader = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._reader = MeterReader(self.meter)

    def add(
        self, sequence: int, timestamp_us: int, event_type: str, properties: Mapping[str, Any]
    ) -> None:
        """Measure one event (ignored unless the meter selects it)."""
        if event_type != self.meter.event_type:
            return
        reading = self._reader.read(properties)
        if reading is None:
            return
        if isinstance(reading, Unmeasurable):
            self.problems.append(
                MeterProblem(sequence, reading.detail, self.meter.key, reading.code)
            )
            return
        group, number, raw = reading
        accumulator = self.groups.get(group)
        if accumulator is None:
            accumulator = self.groups[group] = Accumulator(self.meter.aggregation)
        accumulator.add(sequence, timestamp_us, number, raw)

    def quantities(self) -> dict[tuple[str | None, ...], Decimal]:
        return {group: acc.quantity() for group, acc in sorted(self.groups.items(), key=_order)}


def _order(item: tuple[tuple[str | None, ...], Accumulator]) -> tuple[tuple[int, str], ...]:
    """Groups in a stable order: missing dimension values first, then by text."""
    return tuple((0, "") if value is None else (1, value) for value in item[0])


def measure(meter: Meter, events: Iterable[tuple[int, int, str, Mapping[str, Any]]]) -> Measurement:
    """Measure ``(sequence, timestamp_us, type, properties)`` events with ``meter``."""
    measurement = Measurement(meter)
    for sequence, timestamp_us, event_type, properties in events:
        measurement.add(sequence, timestamp_us, event_type, properties)
    return measurement
