"""The root of meterline's error tree (pure: the core raises it too).

``meterline.errors`` re-exports it and draws the whole tree; it lives here so the
functional core derives its errors from it without importing the shell.
"""

from __future__ import annotations

__all__ = ["MeterlineError"]


class MeterlineError(Exception):
    """Base of every error meterline raises on purpose."""

    code = "error"
    """The machine-readable code of an HTTP error answer."""
    http_status = 500
    """The HTTP status an API answer gives this error."""
