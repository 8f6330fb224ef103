"""The CLI loads what a command needs and nothing else: importing the Typer app (all that
``meterline --help`` runs) loads no web framework, analytics engine, PostgreSQL driver or
NATS client; commands import those inside themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY_PACKAGES = ("duckdb", "fastapi", "nats", "psycopg", "starlette", "uvicorn")

SOURCE = Path(__file__).resolve().parents[2] / "src"


def test_importing_the_cli_app_loads_no_heavy_package() -> None:
    """A fresh interpreter that imports ``meterline.cli.app`` has none of them loaded."""
    script = "import json, sys\nimport meterline.cli.app\nprint(json.dumps(sorted(sys.modules)))"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCE), *sys.path])}
    output = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    ).stdout
    loaded = {name.split(".")[0] for name in json.loads(output)}
    assert "typer" in loaded
    assert loaded.isdisjoint(HEAVY_PACKAGES), sorted(loaded & set(HEAVY_PACKAGES))
