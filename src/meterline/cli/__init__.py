"""The ``meterline`` command line: ``app`` (the Typer app) and ``main`` (the entry point
``meterline`` and ``python -m meterline`` run).

Layout: ``options`` holds what every command shares; one module per command group
(``ledger``, ``keys``, ``invoices``, ``credits``, ``live``, ``webhooks``, ``finance``,
``export``, ``checkpoints``, ``stream``, ``bench``, ``demo``) imports only ``options`` and
the library; ``app`` registers them all. Importing this package loads no store, driver or
server (heavy imports are inside the commands).
"""

from meterline.cli.app import app, main

__all__ = ["app", "main"]
