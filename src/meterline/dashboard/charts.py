"""Charts as inline SVG, rendered on the server (pure: series in, SVG text out).

Why SVG strings and no chart library: the dashboard must work offline, load nothing from
a CDN and run no script, and finance figures are few (a point per day, a bar per month).
A chart is plain markup the browser draws and a test can read.

Geometry: every chart has the same ``Frame`` (a viewBox and the plot area inside it).
The value axis always includes zero, so a negative value (a day's negative margin, a
month's contra-revenue) is drawn below the zero line. Positions are floats rounded to a
tenth of a unit (they are only where to draw); every figure written as text (axis
labels, tooltips) is written from the exact ``Decimal`` by ``core.money``'s display,
never through a float: an amount at its currency's minor unit when the chart is given its
``unit``, a quantity (exact, no exponent) otherwise. Colours are CSS classes
(``series-0`` ...), styled by ``static/dashboard.css``: no inline style, so the page's
Content-Security-Policy can forbid inline styles.

An empty series (no days, no months) renders an empty state: the frame and a sentence,
not a broken chart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import partial
from html import escape

from meterline.core.money import MONEY_CONTEXT, display_amount, display_quantity

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Series:
    """One named sequence of values, one per label of the chart."""

    name: str
    values: tuple[Decimal, ...]


@dataclass(frozen=True, slots=True)
class Frame:
    """The viewBox (``width`` x ``height``) and the margins around the plot area."""

    width: int = 720
    height: int = 280
    left: int = 84
    right: int = 16
    top: int = 16
    bottom: int = 56

    @property
    def plot_top(self) -> float:
        return float(self.top)

    @property
    def plot_bottom(self) -> float:
        return float(self.height - self.bottom)

    @property
    def plot_left(self) -> float:
        return float(self.left)

    @property
    def plot_right(self) -> float:
        return float(self.width - self.right)


FRAME = Frame()


def _number(value: float) -> str:
    """A coordinate as SVG text: one decimal, no negative zero."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def value_text(value: Decimal, unit: str | None) -> str:
    """A value for a label or a tooltip: an amount in ``unit`` (``1,234.50`` for USD), or
    a quantity when the chart has no unit."""
    return display_quantity(value) if unit is None else display_amount(value, unit)


def value_range(values: Sequence[Decimal]) -> tuple[Decimal, Decimal]:
    """The value axis: from the lowest value to the highest, always including zero (so
    negatives sit below the zero line); (0, 1) when every value is zero."""
    low = min([ZERO, *values])
    high = max([ZERO, *values])
    if low == high:
        return ZERO, Decimal(1)
    return low, high


def scale_y(value: Decimal, low: Decimal, high: Decimal, frame: Frame = FRAME) -> float:
    """Where ``value`` sits vertically: ``high`` at the plot's top, ``low`` at its bottom."""
    share = float(value - low) / float(high - low)
    return frame.plot_bottom - share * (frame.plot_bottom - frame.plot_top)


def scale_x(index: int, count: int, frame: Frame = FRAME) -> float:
    """The centre of slot ``index`` of ``count`` equal slots across the plot."""
    slot = (frame.plot_right - frame.plot_left) / max(count, 1)
    return frame.plot_left + slot * (index + 0.5)


def _open(title: str, frame: Frame, css_class: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css_class}"'
        f' viewBox="0 0 {frame.width} {frame.height}" role="img"'
        f' aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]


def empty_chart(title: str, message: str = "No data yet.", frame: Frame = FRAME) -> str:
    """The empty state: the frame with a sentence in the middle."""
    parts = _open(title, frame, "chart-empty")
    parts.append(
        f'<rect class="plot" x="{frame.left}" y="{frame.top}"'
        f' width="{frame.width - frame.left - frame.right}"'
        f' height="{frame.height - frame.top - frame.bottom}"/>'
    )
    parts.append(
        f'<text class="empty" x="{frame.width // 2}" y="{frame.height // 2}"'
        f' text-anchor="middle">{escape(message)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _axes(
    labels: Sequence[str],
    low: Decimal,
    high: Decimal,
    frame: Frame,
    parts: list[str],
    unit: str | None,
) -> None:
    """The zero line, the value axis labels (lowest, zero, highest) and the category
    labels (all of them when few, else the first, middle and last)."""
    zero_y = _number(scale_y(ZERO, low, high, frame))
    for value in sorted({low, ZERO, high}):
        y = _number(scale_y(value, low, high, frame))
        parts.append(
            f'<line class="grid" x1="{frame.left}" y1="{y}"'
            f' x2="{frame.width - frame.right}" y2="{y}"/>'
            f'<text class="tick" x="{frame.left - 6}" y="{y}" text-anchor="end"'
            f' dominant-baseline="middle">{escape(value_text(value, unit))}</text>'
        )
    parts.append(
        f'<line class="axis zero" x1="{frame.left}" y1="{zero_y}"'
        f' x2="{frame.width - frame.right}" y2="{zero_y}"/>'
    )
    count = len(labels)
    shown = range(count) if count <= 8 else sorted({0, count // 2, count - 1})
    label_y = _number(frame.plot_bottom + 18)
    for index in shown:
        x = _number(scale_x(index, count, frame))
        parts.append(
            f'<text class="label" x="{x}" y="{label_y}" text-anchor="middle">'
            f"{escape(labels[index])}</text>"
        )


def _legend(series: Sequence[Series], frame: Frame, parts: list[str], kind: str) -> None:
    y = frame.height - 12
    x = frame.left
    for index, item in enumerate(series):
        parts.append(
            f'<g class="legend series-{index}">'
            f'<rect class="swatch {kind}" x="{x}" y="{y - 9}" width="12" height="12"/>'
            f'<text x="{x + 18}" y="{y + 1}">{escape(item.name)}</text></g>'
        )
        x += 30 + 8 * len(item.name)


def _check(labels: Sequence[str], series: Sequence[Series]) -> None:
    for item in series:
        if len(item.values) != len(labels):
            raise ValueError(
                f"series {item.name!r} has {len(item.values)} values for {len(labels)} labels"
            )


@dataclass(frozen=True, slots=True)
class _Plot:
    """What a chart draws: its title, labels, series and unit in its frame, and (once
    ``chart`` knows them) the bounds of the value axis."""

    title: str
    labels: Sequence[str]
    series: Sequence[Series]
    frame: Frame
    unit: str | None
    low: Decimal = ZERO
    high: Decimal = ZERO


def _every_value(plot: _Plot) -> list[Decimal]:
    return [value for item in plot.series for value in item.values]


def _lines(plot: _Plot, parts: list[str]) -> None:
    """One polyline per series, with a dot and a tooltip per point."""
    labels, frame, count = plot.labels, plot.frame, len(plot.labels)
    for index, item in enumerate(plot.series):
        points = [
            (
                _number(scale_x(position, count, frame)),
                _number(scale_y(value, plot.low, plot.high, frame)),
            )
            for position, value in enumerate(item.values)
        ]
        parts.append(f'<g class="series series-{index}" data-series="{escape(item.name)}">')
        parts.append(
            '<polyline class="line" points="' + " ".join(f"{x},{y}" for x, y in points) + '"/>'
        )
        for (x, y), label, value in zip(points, labels, item.values, strict=True):
            parts.append(
                f'<circle class="point" cx="{x}" cy="{y}" r="2.5">'
                f"<title>{escape(label)} {escape(item.name)}: "
                f"{escape(value_text(value, plot.unit))}</title></circle>"
            )
        parts.append("</g>")


def _stack_extent(plot: _Plot) -> list[Decimal]:
    """Each bar's positive values summed up from zero and its negative ones down."""
    series, count = plot.series, len(plot.labels)
    with localcontext(MONEY_CONTEXT):  # exact sums (a lost digit would raise)
        ups = [sum((s.values[i] for s in series if s.values[i] > 0), ZERO) for i in range(count)]
        downs = [sum((s.values[i] for s in series if s.values[i] < 0), ZERO) for i in range(count)]
    return [*ups, *downs]


def _bars(plot: _Plot, parts: list[str]) -> None:
    """Each series' segment of every bar, stacked on the same-signed segments before it."""
    labels, series, frame, low, high = plot.labels, plot.series, plot.frame, plot.low, plot.high
    count = len(labels)
    slot = (frame.plot_right - frame.plot_left) / count
    width = _number(min(slot * 0.6, 64.0))
    for index, item in enumerate(series):
        parts.append(f'<g class="series series-{index}" data-series="{escape(item.name)}">')
        for position, value in enumerate(item.values):
            if value == 0:
                continue
            # this bar segment starts where the same-signed series before it ended
            with localcontext(MONEY_CONTEXT):
                before = sum(
                    (
                        s.values[position]
                        for s in series[:index]
                        if (s.values[position] > 0) == (value > 0) and s.values[position] != 0
                    ),
                    ZERO,
                )
                after = before + value
            start_y = scale_y(before, low, high, frame)
            end_y = scale_y(after, low, high, frame)
            x = scale_x(position, count, frame) - float(width) / 2
            parts.append(
                f'<rect class="bar" x="{_number(x)}" y="{_number(min(start_y, end_y))}"'
                f' width="{width}" height="{_number(abs(end_y - start_y))}">'
                f"<title>{escape(labels[position])} {escape(item.name)}: "
                f"{escape(value_text(value, plot.unit))}</title></rect>"
            )
        parts.append("</g>")


@dataclass(frozen=True, slots=True)
class ChartKind:
    """How a kind of chart draws its series inside the frame every chart shares: its CSS
    class, its legend's swatch, the values its value axis spans and its marks."""

    css_class: str
    swatch: str
    extent: Callable[[_Plot], Sequence[Decimal]]
    marks: Callable[[_Plot, list[str]], None]


LINES = ChartKind("chart-line", "line", _every_value, _lines)
"""One polyline per series over the labels (e.g. days), with a dot and a tooltip per point."""
STACKED_BARS = ChartKind("chart-bars", "bar", _stack_extent, _bars)
"""One bar per label: the series' positive values stacked up from zero, negative ones
stacked down below it (contra-revenue)."""


def chart(
    kind: ChartKind,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    frame: Frame = FRAME,
    *,
    unit: str | None = None,
) -> str:
    """A chart of ``kind`` in the frame every chart shares: the empty state when there
    are no labels or no series; otherwise the axes over the values the kind spans, its
    marks, the legend. ``unit``: the currency (or credit type) the values are amounts in;
    None for quantities."""
    _check(labels, series)
    if not labels or not series:
        return empty_chart(title, frame=frame)
    low, high = value_range(kind.extent(_Plot(title, labels, series, frame, unit)))
    parts = _open(title, frame, kind.css_class)
    _axes(labels, low, high, frame, parts, unit)
    kind.marks(_Plot(title, labels, series, frame, unit, low, high), parts)
    _legend(series, frame, parts, kind.swatch)
    parts.append("</svg>")
    return "".join(parts)


line_chart = partial(chart, LINES)
"""``chart`` of ``LINES``."""
stacked_bar_chart = partial(chart, STACKED_BARS)
"""``chart`` of ``STACKED_BARS``."""
