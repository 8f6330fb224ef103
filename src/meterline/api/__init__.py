"""The HTTP API: ingestion in native and CloudEvents shapes, event queries, health.

Thin over the library: it authenticates, parses the body by content type, calls the
``Ledger`` and renders its answer. Every error body has one shape:
``{"error": {"code", "message", ...}}``.
"""

from meterline.api.app import create_app

__all__ = ["create_app"]
