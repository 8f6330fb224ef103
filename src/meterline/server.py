"""Running the HTTP API in a process: open the ledger, build the app, serve with uvicorn."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from meterline.api import create_app
from meterline.ledger import open_ledger


def serve(db: str | Path, host: str = "127.0.0.1", port: int = 8787) -> None:
    """Serve the API over the ledger at ``db`` until interrupted."""
    ledger = open_ledger(db)
    try:
        uvicorn.run(create_app(ledger), host=host, port=port, log_level="warning", access_log=False)
    finally:
        ledger.close()
