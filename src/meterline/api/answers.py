"""What the handlers answer with: JSON with exact decimals, stored canonical bytes spliced
in unchanged, and ``HttpError``, an error answer a handler raises (rendered in the one
error shape by ``meterline.api.failures``)."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi.responses import Response

from meterline.errors import MeterlineError

JSON = "application/json"
ENCODER = msgspec.json.Encoder(decimal_format="number")
"""Decimals as JSON numbers, with exactly their digits."""


class HttpError(MeterlineError):
    """An error answer: status, code, message and extra fields of the error object."""

    def __init__(self, status_code: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.http_status = status_code
        self.code = code
        self.message = message
        self.extra = extra


def json_answer(
    payload: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(ENCODER.encode(payload), status_code, headers, media_type=JSON)


def raw_json(parts: list[bytes], status_code: int = 200) -> Response:
    """A JSON answer assembled from bytes (stored documents spliced in as stored)."""
    return Response(b"".join(parts), status_code, media_type=JSON)


def stored_bytes(value: bytes | str) -> bytes:
    """A stored document as bytes (a row rewritten behind the triggers may hold TEXT)."""
    return value.encode() if isinstance(value, str) else bytes(value)
