"""Connections to what AI products already run: each module adapts one outside tool's
extension interface to the SDK (``meterline.sdk``) and nothing else. The outside tool is
an optional extra, imported only by its own module, and only on first use of its names.

``meterline.integrations.litellm``: a LiteLLM callback that asks the in-process gate
before a call and meters each call's tokens and provider cost (docs/litellm.md).
"""

from meterline.lazy import lazy_exports

_HOMES = {
    "CustomerBlocked": "meterline.integrations.litellm",
    "MeterlineCallback": "meterline.integrations.litellm",
}

__all__ = ["CustomerBlocked", "MeterlineCallback"]

__getattr__ = lazy_exports("meterline.integrations", _HOMES, globals())
