"""The dashboard's SVG charts (pure functions): geometry, negatives, empty states, escaping;
the views that feed them, and the login session store.

The SVG is parsed with ``xml.etree`` so the assertions read attributes, not substrings.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from decimal import Decimal as D

import pytest

from meterline.core.economics import Margin
from meterline.core.money import MoneyError
from meterline.dashboard.charts import (
    FRAME,
    Series,
    empty_chart,
    line_chart,
    scale_y,
    stacked_bar_chart,
    value_range,
)
from meterline.dashboard.sessions import SessionStore
from meterline.dashboard.views import (
    customer_row,
    daily_chart,
    firing_rows,
    money,
    percent,
    quantity,
    waterfall_tables,
)
from meterline.keys import Principal

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)


def points(svg: str) -> list[list[tuple[float, float]]]:
    """Each polyline's points, in series order."""
    return [
        [
            (float(x), float(y))
            for x, y in (pair.split(",") for pair in line.get("points", "").split())
        ]
        for line in parse(svg).iter(f"{SVG}polyline")
    ]


def zero_line_y(svg: str) -> float:
    [axis] = [line for line in parse(svg).iter(f"{SVG}line") if "zero" in line.get("class", "")]
    return float(axis.get("y1", "nan"))


def bars(svg: str) -> list[ElementTree.Element]:
    return [rect for rect in parse(svg).iter(f"{SVG}rect") if rect.get("class") == "bar"]


def inside_plot(x: float, y: float) -> bool:
    return FRAME.plot_left <= x <= FRAME.plot_right and FRAME.plot_top <= y <= FRAME.plot_bottom


def test_points_scale_into_the_plot_area_of_the_viewbox() -> None:
    labels = ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]
    svg = line_chart(
        "t",
        labels,
        [Series("revenue", (D("10.00"), D("250.50"), D("0"), D("99.99"))),
         Series("cost", (D("1"), D("2"), D("3"), D("4")))],
    )  # fmt: skip
    root = parse(svg)
    assert root.get("viewBox") == f"0 0 {FRAME.width} {FRAME.height}"
    revenue, cost = points(svg)
    assert len(revenue) == len(cost) == len(labels)
    assert all(inside_plot(x, y) for x, y in revenue + cost)
    # x increases with the label; the largest value is at the top of the plot
    assert [x for x, _ in revenue] == sorted(x for x, _ in revenue)
    assert min(y for _, y in revenue) == pytest.approx(FRAME.plot_top)
    # with no negatives the zero line is the plot's bottom
    assert zero_line_y(svg) == pytest.approx(FRAME.plot_bottom)
    assert revenue[2][1] == pytest.approx(FRAME.plot_bottom)


def test_negative_values_are_drawn_below_the_zero_line() -> None:
    svg = line_chart("margin", ["a", "b", "c"], [Series("margin", (D("5"), D("-15"), D("0")))])
    zero = zero_line_y(svg)
    [margin] = points(svg)
    assert FRAME.plot_top < zero < FRAME.plot_bottom
    assert margin[0][1] < zero  # positive: above (smaller y)
    assert margin[1][1] > zero  # negative: below
    assert margin[1][1] == pytest.approx(FRAME.plot_bottom)  # the lowest value
    assert margin[2][1] == pytest.approx(zero)
    # a quarter of the range is above zero: the zero line sits a quarter of the way down
    height = FRAME.plot_bottom - FRAME.plot_top
    assert zero == pytest.approx(FRAME.plot_top + height / 4, abs=0.1)


def test_value_range_always_includes_zero_and_never_collapses() -> None:
    assert value_range([D("3"), D("7")]) == (D(0), D("7"))
    assert value_range([D("-3"), D("-7")]) == (D("-7"), D(0))
    assert value_range([]) == (D(0), D(1))
    assert value_range([D(0), D(0)]) == (D(0), D(1))
    assert scale_y(D(1), D(0), D(1)) == pytest.approx(FRAME.plot_top)


def test_stacked_bars_stack_positives_up_and_negatives_down() -> None:
    svg = stacked_bar_chart(
        "waterfall",
        ["2026-10", "2026-11"],
        [
            Series("revenue:usage", (D("60"), D("30"))),
            Series("revenue:subscription", (D("40"), D("0"))),
            Series("contra_revenue:discounts", (D("-25"), D("0"))),
        ],
    )
    zero = zero_line_y(svg)
    rectangles = bars(svg)
    assert len(rectangles) == 4  # zero values draw nothing
    usage_october, usage_november, subscription, discount = rectangles
    top = lambda rect: float(rect.get("y", "nan"))  # noqa: E731
    bottom = lambda rect: top(rect) + float(rect.get("height", "nan"))  # noqa: E731
    # usage starts on the zero line; subscription sits on top of it
    assert bottom(usage_october) == pytest.approx(zero, abs=0.1)
    assert bottom(subscription) == pytest.approx(top(usage_october), abs=0.1)
    assert top(subscription) == pytest.approx(FRAME.plot_top, abs=0.1)  # 100 is the max
    # the contra-revenue hangs below the axis, down to the lowest value
    assert top(discount) == pytest.approx(zero, abs=0.1)
    assert bottom(discount) == pytest.approx(FRAME.plot_bottom, abs=0.1)
    # heights are proportional to the values
    assert float(usage_october.get("height", "0")) == pytest.approx(
        2 * float(usage_november.get("height", "0")), abs=0.2
    )
    assert all(inside_plot(float(r.get("x", "0")), top(r)) for r in rectangles)


def test_tooltips_and_labels_show_amounts_at_the_currency_minor_unit() -> None:
    """A chart in USD labels its points and axis in cents; without a unit, exact quantities."""
    values = (D("1234567.005001"), D("-0.10"), D("0E-7"))
    svg = line_chart("t", ["d1", "d2", "d3"], [Series("cost", values)], unit="USD")
    titles = [element.text for element in parse(svg).iter(f"{SVG}title")]
    assert "d1 cost: 1,234,567.01" in titles
    assert "d2 cost: -0.10" in titles
    assert "d3 cost: 0.00" in titles
    ticks = [t.text for t in parse(svg).iter(f"{SVG}text") if t.get("class") == "tick"]
    assert ticks == ["-0.10", "0.00", "1,234,567.01"]  # lowest, zero, highest
    assert "E" not in "".join(ticks + [t or "" for t in titles if t and ":" in t])
    quantities = line_chart("q", ["d1", "d2"], [Series("tokens", (D("1E+3"), D("0E-7")))])
    titles = [element.text for element in parse(quantities).iter(f"{SVG}title")]
    assert "d1 tokens: 1,000" in titles and "d2 tokens: 0" in titles


def test_stacked_bars_label_amounts_in_their_currency() -> None:
    """Waterfall bars' tooltips and ticks are at the currency's minor unit, JPY without."""
    svg = stacked_bar_chart(
        "w", ["2026-10"], [Series("revenue:usage", (D("15011.3476752"),))], unit="USD"
    )
    titles = [element.text for element in parse(svg).iter(f"{SVG}title")]
    assert "2026-10 revenue:usage: 15,011.35" in titles
    yen = stacked_bar_chart("w", ["2026-10"], [Series("r", (D("1234.5"),))], unit="JPY")
    ticks = [t.text for t in parse(yen).iter(f"{SVG}text") if t.get("class") == "tick"]
    assert ticks == ["0", "1,235"]


def test_empty_series_render_an_empty_state() -> None:
    for svg in (
        line_chart("nothing", [], []),
        stacked_bar_chart("nothing", [], []),
        line_chart("no series", ["a"], []),
        empty_chart("nothing"),
    ):
        root = parse(svg)
        assert "chart-empty" in root.get("class", "")
        assert [t.text for t in root.iter(f"{SVG}text")] == ["No data yet."]
        assert not list(root.iter(f"{SVG}polyline"))


def test_a_series_must_have_one_value_per_label() -> None:
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        line_chart("t", ["a", "b", "c"], [Series("x", (D(1), D(2)))])


def test_text_is_escaped() -> None:
    svg = line_chart('<script>"', ["<b>"], [Series("a&b", (D(1),))])
    assert "<script>" not in svg and "<b>" not in svg
    root = parse(svg)  # still well-formed
    assert root.get("aria-label") == '<script>"'


def test_the_daily_chart_fills_days_without_usage_with_zero() -> None:
    by_day = [
        Margin(("2026-10-01",), "USD", D("10"), D("4"), 3),
        Margin(("2026-10-04",), "USD", D("5"), D("8"), 2),
        Margin(("2026-10-02",), "EUR", D("99"), D("0"), 1),
    ]
    svg = daily_chart(by_day, "USD")
    revenue, cost, margin = points(svg)
    assert len(revenue) == len(cost) == len(margin) == 4  # 1st to 4th October
    zero = zero_line_y(svg)
    assert revenue[1][1] == pytest.approx(zero) and revenue[2][1] == pytest.approx(zero)
    assert margin[3][1] > zero  # 5 - 8 < 0
    assert daily_chart(by_day, "GBP").count("No data yet.") == 1
    labels = [t.text for t in parse(svg).iter(f"{SVG}text") if t.get("class") == "label"]
    assert labels == ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]


def test_waterfall_tables_total_exactly_and_chart_each_currency() -> None:
    waterfall = {
        ("2026-10", "revenue:usage", "USD"): D("0.10"),
        ("2026-10", "contra_revenue:discounts", "USD"): D("-0.03"),
        ("2026-11", "revenue:usage", "USD"): D("0.20"),
        ("2026-11", "revenue:usage", "EUR"): D("7"),
    }
    usd, eur = sorted(waterfall_tables(waterfall), key=lambda t: t.currency, reverse=True)
    assert usd.currency == "USD" and eur.currency == "EUR"
    assert usd.months == ["2026-10", "2026-11"]
    assert usd.accounts == ["revenue:usage", "contra_revenue:discounts"]
    assert usd.month_totals == {"2026-10": D("0.07"), "2026-11": D("0.20")}
    assert usd.total == D("0.27")
    assert "<svg" in usd.chart and "No data yet." not in usd.chart


def test_money_reads_at_the_currency_minor_unit_and_never_goes_through_a_float() -> None:
    """The money filter: cents for USD, credits exact, quantities and percents plain."""
    assert money(D("1234567.10"), "USD") == "1,234,567.10"
    assert money("0.1", "USD") == "0.10"
    assert money(D("1E+3"), "USD") == "1,000.00"
    assert money("-274.1935483870967741935483871", "USD") == "-274.19"
    assert money(D("0E-7"), "USD") == "0.00"
    assert money(D("30.4800000"), "USD") == "30.48"
    assert money("19999.500", "credits") == "19,999.5"
    assert money(None, "USD") == "\u2013"
    with pytest.raises(MoneyError):
        money(0.1, "USD")  # type: ignore[arg-type]
    assert quantity(D("0E-7")) == "0" and quantity("1234567.000") == "1,234,567"
    assert percent(D("27.2")) == "27.2%" and percent(D("-0.0")) == "0.0%"
    assert percent(None) == "\u2013"


def test_a_customer_row_shows_balances_in_their_own_unit() -> None:
    """Remaining credit reads in its unit: cents for a currency, credits exactly."""
    figures = {
        "customer": "acme",
        "currency": "USD",
        "spend": "15011.3476752",
        "cost": "0E-7",
        "period": {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
        "remaining": {"credits": "0E-7", "USD": "12.5"},
        "lines": [],
    }
    row = customer_row("acme", "pro", [], figures)
    assert row.remaining == {"USD": "12.50", "credits": "0"}
    assert row.live is not None and money(row.live.revenue, "USD") == "15,011.35"


def test_a_firings_observed_values_are_exact_without_trailing_zeros_or_exponents() -> None:
    """The controls page shows the figures a control compared exactly: 30.48, not rounded."""
    document = {
        "firing": "F-000002",
        "at": "2026-11-02T10:00:00Z",
        "customer": "hooli",
        "policy": "margin-floor",
        "kind": "margin_floor",
        "level": "crossed",
        "crossing": 1,
        "observed": {"spend": "30.4800000", "cost": "18.2880000", "margin_percent": "none",
                     "floor_percent": "0E-7"},
        "actions": ["alert"],
    }  # fmt: skip
    [row] = firing_rows([document], {})
    assert row.observed == "cost=18.288, floor_percent=0, margin_percent=none, spend=30.48"


def _page(template: str, **context: object) -> str:
    """A dashboard template rendered with the routes' environment (filters and tests)."""
    from meterline.dashboard.site import NAVIGATION, PREFIX, templates

    return (
        templates()
        .get_template(template)
        .render(**context, session=None, principal=None, navigation=NAVIGATION, page="",
                prefix=PREFIX)
    )  # fmt: skip


def _shown_text(html: str) -> str:
    """The page's text without markup, attributes or the inline SVG's coordinates."""
    import re

    html = re.sub(r"<(style|svg)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_invoice_page_shows_usd_amounts_with_two_decimals_and_no_exponent() -> None:
    """An invoice whose document holds 0E-7-style figures reads in cents, credits plain."""
    document = {
        "status": "finalized",
        "period": {"start": "2026-10-01", "end": "2026-11-01"},
        "currency": "USD",
        "total": "30.4800000",
        "terms": [],
        "lines": [
            {"number": 1, "kind": "usage", "description": "tokens", "quantity": "1.2E+6",
             "amount": "15011.3476752", "lineage": {"events": 0}},
            {"number": 2, "kind": "credit", "description": "credits applied",
             "amount": "-0E-7", "unit": "credits", "units": "2000.000"},
            {"number": 3, "kind": "fee", "description": "platform", "amount": "0E-7"},
        ],
    }  # fmt: skip
    stored = {"id": "INV-1", "customer": "acme", "kind": "period", "finalized_at": "x"}
    html = _page(
        "invoice.html", stored=stored, document=document, notes=[], sha256="00",
        revision=1, through="9",
    )  # fmt: skip
    text = _shown_text(html)
    assert "E+" not in text and "E-" not in text
    assert "15,011.35 USD" in text and "30.48 USD" in text
    assert text.count("0.00 USD") >= 2  # the zero credit and fee lines
    assert "1,200,000" in text and "(2,000 credits)" in text
    assert "-0.00" not in text


def test_the_revenue_page_shows_usd_amounts_with_two_decimals_and_no_exponent() -> None:
    """Waterfall, roll-forward, trial balance and journal read in cents, exact behind."""
    from meterline.core.journal import Rollforward
    from meterline.dashboard.views import JournalRow, RollforwardRow, trial_balance

    waterfall = {
        ("2026-10", "revenue:usage", "USD"): D("15011.3476752"),
        ("2026-10", "contra_revenue:discounts", "USD"): D("-0E-7"),
    }
    [table] = waterfall_tables(waterfall)
    html = _page(
        "revenue.html",
        waterfalls=[{"table": table, "chart": table.chart}],
        rollforwards=[
            RollforwardRow("2026-10", Rollforward("liabilities:deferred_revenue:credits", "USD",
                           D("0E-7"), D("30.4800000"), D("0.0000001"), D("30.4799999"))),
        ],
        trial=trial_balance({("assets:accounts_receivable", "USD"): D("30.4800000"),
                             ("revenue:usage", "USD"): D("-30.4800000")}),
        journal=[JournalRow("e1", "2026-10-31", "usage", "invoice", "acme",
                            [("revenue:usage", D("-1.005"), "USD")])],
        journal_count=1,
        as_of="2026-10-31",
    )  # fmt: skip
    text = _shown_text(html)
    assert "E+" not in text and "E-" not in text
    assert "15,011.35" in text and "30.48" in text and "1.01 USD" in text
    assert "30.4799999" not in text and "0.0000001" not in text
    assert "-0.00" not in text
    assert "15,011.35" in table.chart and "3476752" not in html  # the chart's labels too


# -- login sessions (the only other pure-ish piece of the dashboard: a clock is injected) --


def test_sessions_expire_end_on_logout_and_on_revocation() -> None:
    now = [1_000_000]
    store = SessionStore(clock=lambda: now[0], lifetime_s=60, limit=2)
    token, session = store.open(Principal("k1", "read"))
    assert store.get(token) == session
    assert store.get(token + "x") is None and store.get(None) is None
    assert session.csrf_matches(session.csrf) and not session.csrf_matches("forged")
    assert not session.csrf_matches(None)
    now[0] += 60 * 1_000_000  # the lifetime has passed
    assert store.get(token) is None

    first, _ = store.open(Principal("k1", "read"))
    second, _ = store.open(Principal("k2", "admin"))
    third, _ = store.open(Principal("k3", "read", "acme"))  # over the limit: the oldest goes
    assert store.get(first) is None and store.get(second) and store.get(third)
    store.close(second)
    assert store.get(second) is None
    store.close_key("k3")
    assert store.get(third) is None and len(store) == 0
