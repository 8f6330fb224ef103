"""A product that imports the SDK loads none of the server: no store driver, no web
framework, no NATS, no CLI, and not even its HTTP library until a client or gate is made."""

from __future__ import annotations

import json
import subprocess
import sys

import meterline
import meterline.sdk

SERVER_PACKAGES = (
    "click",
    "cryptography",
    "duckdb",
    "fastapi",
    "jinja2",
    "nats",
    "psycopg",
    "rich",
    "starlette",
    "typer",
    "uvicorn",
)


def _top_level_modules_after(statement: str) -> set[str]:
    """The top-level packages loaded in a fresh interpreter after ``statement``."""
    script = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return {name.split(".")[0] for name in json.loads(output)}


def test_importing_the_sdk_loads_no_server_package() -> None:
    loaded = _top_level_modules_after("import meterline.sdk")
    assert "meterline" in loaded
    assert loaded.isdisjoint(SERVER_PACKAGES), sorted(loaded & set(SERVER_PACKAGES))
    assert "httpx" not in loaded


def test_the_root_package_loads_the_ledger_only_when_asked() -> None:
    assert "meterline" in _top_level_modules_after("import meterline")
    assert "psycopg" not in _top_level_modules_after("import meterline")
    loaded = _top_level_modules_after("from meterline import Ledger")
    assert "meterline" in loaded
    assert "psycopg" not in loaded  # the driver loads when a PostgreSQL ledger is opened


def test_a_command_on_a_sqlite_ledger_loads_no_server_package(tmp_path) -> None:
    """``meterline keys list`` on a SQLite file (a simple command) starts without the
    PostgreSQL driver, DuckDB, the web framework, NATS or Jinja2: what it does not need."""
    db = tmp_path / "ledger.db"
    statement = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from meterline.cli.app import app\n"
        f"create = ['keys', 'create', '--scope', 'read', '--db', {str(db)!r}]\n"
        "result = CliRunner().invoke(app, create)\n"
        "assert result.exit_code == 0, result.output\n"
        f"result = CliRunner().invoke(app, ['keys', 'list', '--db', {str(db)!r}])\n"
        "assert result.exit_code == 0 and 'read' in result.output, result.output"
    )
    loaded = _top_level_modules_after(statement)
    assert "meterline" in loaded and "typer" in loaded
    unneeded = {"psycopg", "duckdb", "fastapi", "starlette", "nats", "uvicorn", "jinja2"}
    assert loaded.isdisjoint(unneeded), sorted(loaded & unneeded)


def test_the_sdk_exports_its_client_gate_and_webhook_verification() -> None:
    for name in meterline.sdk.__all__:
        assert getattr(meterline.sdk, name) is not None
    assert {"Client", "Gate", "Decision", "verify_signature"} <= set(meterline.sdk.__all__)


def test_an_unknown_root_name_is_an_attribute_error() -> None:
    try:
        meterline.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as error:
        assert "NoSuchThing" in str(error)
    else:
        raise AssertionError("meterline.NoSuchThing should not exist")


def test_the_command_line_loads_no_store_or_server_until_a_command_runs() -> None:
    """``meterline --help`` (and a command's start) imports the CLI, which must not load
    the store drivers, the web server or NATS: they come with the command that needs them."""
    loaded = _top_level_modules_after("import meterline.cli")
    heavy = {"duckdb", "fastapi", "httpx", "nats", "psycopg", "starlette", "uvicorn"}
    assert loaded.isdisjoint(heavy), sorted(loaded & heavy)
