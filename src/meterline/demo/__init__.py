"""``meterline demo``: a realistic synthetic month of AI usage and the story it tells."""

from typing import TYPE_CHECKING

from meterline.lazy import lazy_exports

__all__ = ["run_demo"]

_HOMES = {"run_demo": "meterline.demo.story"}
"""Loaded on first use (PEP 562)."""

__getattr__ = lazy_exports("meterline.demo", _HOMES, globals())


if TYPE_CHECKING:
    from meterline.demo.story import run_demo
