"""Synthetic benchmark events: realistic shape, cheap to make, unique ids per prefix."""

from __future__ import annotations

from typing import Any

_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku-4", "llama-3.1-70b")


def synthetic_events(
    count: int, prefix: str = "bench", customers: int = 100
) -> list[dict[str, Any]]:
    """``count`` LLM-completion events spread over ``customers`` and one day of October 2026."""
    events = []
    for number in range(count):
        second = number % 86_400
        events.append(
            {
                "id": f"{prefix}-{number:09d}",
                "customer": f"customer-{number % customers:04d}",
                "type": "llm.completion",
                "timestamp": (
                    f"2026-10-15T{second // 3600:02d}:{second // 60 % 60:02d}:"
                    f"{second % 60:02d}.{number % 1_000_000:06d}Z"
                ),
                "properties": {
                    "model": _MODELS[number % len(_MODELS)],
                    "input_tokens": 500 + number % 3_000,
                    "output_tokens": 100 + number % 900,
                    "feature": "chat",
                },
            }
        )
    return events
