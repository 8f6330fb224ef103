"""A LiteLLM callback: refuse a blocked customer before any token is spent, meter each call.

``MeterlineCallback`` implements LiteLLM's ``CustomLogger`` callback interface. Before a
call (``async_pre_call_hook`` on the LiteLLM proxy, ``async_pre_call_deployment_hook``
in the SDK, just before the request leaves) it asks the in-process ``Gate`` whether the
customer may use the model and raises ``CustomerBlocked`` if not, so the provider is never
called. After a successful call (``async_log_success_event``, or ``log_success_event``
for synchronous calls) it tracks one usage event through the batching ``Client``: the
model, input and output tokens, and LiteLLM's ``response_cost`` as ``provider_cost``. The
event id is derived from LiteLLM's call id, so a callback run twice for one call stores
one event.

The customer is ``metadata["meterline_customer"]`` when given, else the OpenAI ``user``
parameter (which the proxy also fills with the end user). A call naming neither is
refused before it is sent (``CustomerMissing``): a call that cannot be metered is not made.

``response_cost`` is a float (LiteLLM computes it so); it is sent as the exact decimal
string of that float's shortest representation, never as a float, and never rounded.

LiteLLM is an optional extra (``pip install 'meterline[litellm]'``), pinned to
``>=1.83.0,<1.111``: versions 1.82.7 and 1.82.8 on PyPI were published by an attacker who
had taken over a maintainer's account (March 2026, credential-stealing code; 1.82.8 ran at
every Python start through a ``.pth`` file), so the range starts above them. Without
LiteLLM installed the class still loads (on ``object``), so its hooks can be called
directly; registering it with LiteLLM needs LiteLLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from meterline.clock import clock_offset_us as clock_offset_us_of
from meterline.clock import system_clock_us
from meterline.errors import MeterlineError

if TYPE_CHECKING:
    from meterline.sdk.client import Client
    from meterline.sdk.gate import Gate

    _CallbackBase = object
else:
    try:
        from litellm.integrations.custom_logger import CustomLogger as _CallbackBase
    except ImportError:  # the optional extra is not installed
        _CallbackBase = object

__all__ = ["CUSTOMER_METADATA_KEY", "CustomerBlocked", "CustomerMissing", "MeterlineCallback"]

CUSTOMER_METADATA_KEY = "meterline_customer"
"""The ``metadata`` entry naming the meterline customer of a call."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EVENT_TYPE = "llm.completion"
"""The usage event type each call is tracked as (a pricing file's meters select it)."""


class CustomerBlocked(MeterlineError, PermissionError):
    """The gate refused the call; nothing was sent to the provider."""

    code = "customer_blocked"
    http_status = 403

    def __init__(self, customer: str, model: str | None, reason: str) -> None:
        self.customer = customer
        self.model = model
        self.reason = reason
        # The LiteLLM proxy answers with an exception's ``status_code``.
        self.status_code = self.http_status
        on = f" for {model}" if model else ""
        super().__init__(f"customer {customer!r} is blocked{on}: {reason}")


class CustomerMissing(MeterlineError, ValueError):
    """The call names no customer, so it could be neither gated nor metered."""

    code = "customer_missing"
    http_status = 400

    def __init__(self) -> None:
        self.status_code = self.http_status
        super().__init__(
            f"metadata.{CUSTOMER_METADATA_KEY}: no meterline customer on this call (set it, or"
            " the OpenAI 'user' parameter)"
        )


def _customer_of(call: Mapping[str, Any]) -> str | None:
    """The customer a call's parameters name (see the module docstring), or None."""
    parameters = call.get("litellm_params")
    sources = [call, parameters if isinstance(parameters, Mapping) else {}]
    for source in sources:
        for holder in ("metadata", "litellm_metadata"):
            metadata = source.get(holder)
            if isinstance(metadata, Mapping) and metadata.get(CUSTOMER_METADATA_KEY):
                return str(metadata[CUSTOMER_METADATA_KEY])
    for source in (call, call.get("optional_params") or {}):
        user = source.get("user") if isinstance(source, Mapping) else None
        if user:
            return str(user)
    return None


def _usage_of(response: Any) -> tuple[int, int]:
    """(input tokens, output tokens) of an OpenAI-shaped response, object or dict."""
    if isinstance(response, Mapping):
        usage = response.get("usage")
    else:
        usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0

    def count(name: str) -> int:
        value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        return int(value or 0)

    return count("prompt_tokens"), count("completion_tokens")


def exact_cost(cost: object) -> str | None:
    """LiteLLM's ``response_cost`` as an exact decimal string (None if there is none)."""
    if cost is None or isinstance(cost, bool):
        return None
    if isinstance(cost, float):
        # repr is the shortest string that reads back as this float: LiteLLM's figure.
        cost = repr(cost)
    amount = Decimal(str(cost))
    return format(amount, "f") if amount.is_finite() else None


class MeterlineCallback(_CallbackBase):
    """LiteLLM callback: gate each call before it is sent, meter it after it succeeded."""

    def __init__(
        self,
        client: Client,
        gate: Gate | None = None,
        *,
        event_type: str = EVENT_TYPE,
        clock_offset_us: int | None = None,
    ) -> None:
        if _CallbackBase is not object:
            super().__init__()
        self.client = client
        self.gate = gate
        self.event_type = event_type
        # How far meterline's clock runs from the wall clock LiteLLM's times are read on
        # (0 unless METERLINE_NOW moved this process's clock).
        self.clock_offset_us = (
            clock_offset_us if clock_offset_us is not None else clock_offset_us_of()
        )

    # -- before the call -------------------------------------------------------------------

    def refuse_if_blocked(self, call: Mapping[str, Any]) -> str:
        """The call's customer; raises ``CustomerMissing`` or ``CustomerBlocked`` instead
        when the call must not be sent. The model is the feature the gate is asked about."""
        customer = _customer_of(call)
        if customer is None:
            raise CustomerMissing()
        if self.gate is None:
            return customer
        model = str(call.get("model") or "") or None
        # "openai/gpt-4o" is asked about as itself and as "gpt-4o", so a control may name
        # either the routed or the bare model among its features.
        features = [model, model.partition("/")[2]] if model and "/" in model else [model]
        for feature in features:
            if not self.gate.allowed(customer, feature):
                raise CustomerBlocked(customer, model, self.gate.check(customer, feature).reason)
        return customer

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        """The LiteLLM proxy's hook, run before it calls the provider."""
        if not _customer_of(data):
            end_user = getattr(user_api_key_dict, "end_user_id", None)
            if end_user:
                data.setdefault("user", end_user)
        self.refuse_if_blocked(data)
        return data

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """The SDK's hook, run after a deployment is chosen and before the request."""
        self.refuse_if_blocked(kwargs)
        return None

    # -- after the call --------------------------------------------------------------------

    def meter(
        self, kwargs: Mapping[str, Any], response: Any, end_time: object = None
    ) -> str | None:
        """Track one usage event for a successful call, timestamped when it ended; its
        event id (None: no customer, which the pre-call hook already refused)."""
        customer = _customer_of(kwargs)
        if customer is None:
            return None
        input_tokens, output_tokens = _usage_of(response)
        properties: dict[str, Any] = {
            "model": str(kwargs.get("model") or getattr(response, "model", "") or "unknown"),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }
        provider = (kwargs.get("litellm_params") or {}).get("custom_llm_provider")
        if provider:
            properties["provider"] = str(provider)
        cost = exact_cost(kwargs.get("response_cost"))
        if cost is not None:
            properties["provider_cost"] = cost
        call_id = kwargs.get("litellm_call_id") or getattr(response, "id", None)
        if isinstance(end_time, datetime):
            # LiteLLM reads its times with datetime.now(): naive means local time.
            moment = end_time.astimezone(UTC) + timedelta(microseconds=self.clock_offset_us)
        else:
            moment = _EPOCH + timedelta(microseconds=system_clock_us())
        return self.client.track(
            customer,
            self.event_type,
            properties,
            id=f"litellm-{call_id}" if call_id else None,
            timestamp=moment,
        )

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """LiteLLM's hook after a successful asynchronous call."""
        self.meter(kwargs, response_obj, end_time)

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """LiteLLM's hook after a successful synchronous call."""
        self.meter(kwargs, response_obj, end_time)
