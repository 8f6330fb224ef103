"""The reporting currency (core.exchange) and its declaration in the pricing file."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from meterline.config.source import ConfigurationError
from meterline.core.events import timestamp_to_us
from meterline.core.exchange import ExchangeError
from tests.unit.test_invoicing import configuration

REPORTING = """\
reporting:
  currency: USD
  rates:
    - {currency: EUR, rate: "1.08", effective_from: 2026-01-01}
    - {currency: EUR, rate: "1.10", effective_from: 2026-10-15}
    - {currency: GBP, rate: "1.27"}
"""


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


def test_rates_are_effective_dated_and_conversion_is_exact_then_rounded_once() -> None:
    reporting = configuration(REPORTING).reporting
    assert reporting is not None and reporting.currencies() == ("EUR", "GBP", "USD")
    assert reporting.rate_at("EUR", at(2026, 10, 14, 23)) == D("1.08")
    assert reporting.rate_at("EUR", at(2026, 10, 15)) == D("1.10")
    assert reporting.exact(D("10.005"), "EUR", at(2026, 11, 1)) == D("11.0055")
    assert reporting.reported(D("10.005"), "EUR", at(2026, 11, 1)) == D("11.01")
    assert reporting.reported(D("3.50"), "USD", 0) == D("3.50")
    assert reporting.reported(D("100"), "GBP", 0) == D("127.00")
    with pytest.raises(ExchangeError, match="no rate of EUR into USD is in force at 2025"):
        reporting.rate_at("EUR", at(2025, 6, 1))
    with pytest.raises(ExchangeError, match="no rate of JPY"):
        reporting.rate_at("JPY", at(2026, 6, 1))


def test_bad_rates_are_named_by_path() -> None:
    bad = """\
reporting:
  currency: USD
  rates:
    - {currency: USD, rate: "1"}
    - {currency: EUR, rate: "-1", effective_from: 2026-01-01}
    - {currency: EUR, rate: "1.1", effective_from: 2026-01-01}
    - {currency: EUR, rate: true}
"""
    with pytest.raises(ConfigurationError) as raised:
        configuration(bad)
    text = str(raised.value)
    assert "reporting.rates[0].currency: the reporting currency needs no rate" in text
    assert "reporting.rates[1].rate: must be more than 0" in text
    assert "reporting.rates[2].effective_from: EUR has two rates from this instant" in text
    assert "reporting.rates[3].rate: must be an exact number, not a boolean" in text
