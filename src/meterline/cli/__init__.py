"""The ``meterline`` command line: ``app`` (the Typer app) and ``main`` (the entry point
``meterline`` and ``python -m meterline`` run).

Layout: ``options`` holds what every command shares; one module per command group
(``ledger``, ``keys``, ``invoices``, ``credits``, ``live``, ``webhooks``, ``finance``,
``export``, ``checkpoints``, ``stream``, ``bench``, ``demo``) imports only ``options`` and
the library; ``app`` registers them all. Importing this package loads no store, driver or
server (heavy imports are inside the commands).
"""

from __future__ import annotations

import sys

try:
    from meterline.cli.app import app, main
except ImportError as missing:  # the SDK alone installed: no server extra
    _MISSING = missing.name or str(missing)

    def main() -> None:
        """Say what to install instead of a traceback."""
        print(
            f"meterline: the command line needs the server extra (missing {_MISSING}):"
            " python3 -m pip install 'meterline[server]'",
            file=sys.stderr,
        )
        raise SystemExit(1)

    app = None  # type: ignore[assignment]

__all__ = ["app", "main"]
