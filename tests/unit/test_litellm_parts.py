"""The LiteLLM callback's pure parts: the cost as an exact decimal, whose call it is."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.errors import MeterlineError
from meterline.integrations.litellm import CustomerMissing, MeterlineCallback, exact_cost
from meterline.sdk import Client


def test_response_cost_becomes_the_exact_decimal_of_the_float_litellm_gave() -> None:
    """A float cost is sent as its shortest decimal form, never rounded; no cost, none."""
    assert exact_cost(1.23e-05) == "0.0000123"
    assert exact_cost(0.1) == "0.1"
    assert exact_cost(2.0000000000000004e-07) == "0.00000020000000000000004"
    assert exact_cost("0.5") == "0.5"
    assert exact_cost(Decimal("3")) == "3"
    assert exact_cost(None) is None
    assert exact_cost(True) is None
    assert exact_cost(float("nan")) is None


def test_the_customer_is_the_metadata_entry_else_the_user() -> None:
    """metadata.meterline_customer wins over ``user``; LiteLLM's nested forms count too."""
    client = Client("http://127.0.0.1:9", "key")
    try:
        callback = MeterlineCallback(client, None)
        assert (
            callback.refuse_if_blocked({"metadata": {"meterline_customer": "a"}, "user": "b"})
            == "a"
        )
        assert callback.refuse_if_blocked({"user": "b"}) == "b"
        assert callback.refuse_if_blocked({"optional_params": {"user": "c"}}) == "c"
        nested = {"litellm_params": {"metadata": {"meterline_customer": "d"}}}
        assert callback.refuse_if_blocked(nested) == "d"
        with pytest.raises(CustomerMissing, match=r"metadata\.meterline_customer") as missing:
            callback.refuse_if_blocked({"model": "gpt-4o", "metadata": {}})
        assert isinstance(missing.value, MeterlineError) and missing.value.http_status == 400
    finally:
        client.close(timeout_s=1)
