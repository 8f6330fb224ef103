"""The demo's last step: keys for the reader, then the API on localhost."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from meterline.api.server import serve
from meterline.clock import system_clock_us
from meterline.keys import create_key
from meterline.ledger.event_ledger import open_store


def serve_demo(db: str | Path, port: int, console: Console) -> None:
    store = open_store(db)
    now = system_clock_us()
    _, read_token = create_key(store, "read", now, name="demo reader")
    _, ingest_token = create_key(store, "ingest", now, name="demo producer")
    store.close()
    base = f"http://127.0.0.1:{port}"
    console.rule("The API")
    console.print(f"Serving on {base} (docs at {base}/docs). Ctrl-C to stop.")
    console.print(f"  dashboard:  {base}/dashboard (sign in with the read key)")
    console.print(f"  read key:   {read_token}\n  ingest key: {ingest_token}")
    console.print(
        f"  curl -H 'Authorization: Bearer {read_token}' "
        f"'{base}/v1/events?customer=stark-agents&limit=3'"
    )
    serve(db, "127.0.0.1", port)
