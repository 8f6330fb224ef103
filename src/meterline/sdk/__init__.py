"""The Python SDK a product embeds: a client that batches usage events to a meterline
server, the gate that answers access from the server's push stream in microseconds, and
webhook signature verification.

Importing it loads neither the ledger's stores (PostgreSQL, DuckDB) nor the server (FastAPI,
NATS, the CLI); httpx is imported when a client or gate is created (tested in
tests/unit/test_light_sdk.py).
"""

from meterline.sdk.client import Client, DeliveryReport, QueueFull
from meterline.sdk.gate import Decision, Gate
from meterline.sdk.webhook_signatures import (
    SIGNATURE_HEADER,
    WebhookSignatureError,
    verify_signature,
)

__all__ = [
    "SIGNATURE_HEADER",
    "Client",
    "Decision",
    "DeliveryReport",
    "Gate",
    "QueueFull",
    "WebhookSignatureError",
    "verify_signature",
]
