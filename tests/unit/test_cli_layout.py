"""The CLI is a package without an import cycle: each command module imports only the
shared options (and the library), only ``cli.app`` knows every command module, and
nothing outside the CLI imports it (a benchmark calls the library, not a command)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "src" / "meterline"
CLI = PACKAGE / "cli"
SHARED = "meterline.cli.options"
COMPOSITION = {"__init__.py", "app.py"}


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _cli_imports(path: Path) -> set[str]:
    return {
        name
        for name in _imported(path)
        if name == "meterline.cli" or name.startswith("meterline.cli.")
    }


def test_command_modules_import_only_the_shared_options() -> None:
    modules = sorted(path for path in CLI.glob("*.py") if path.name not in COMPOSITION)
    assert len(modules) >= 10
    for path in modules:
        others = {name for name in _cli_imports(path) if not name.startswith(SHARED)}
        assert not others, f"{path.name} imports {sorted(others)}"


def test_the_shared_options_import_no_command() -> None:
    assert _cli_imports(CLI / "options.py") == set()


def test_only_the_entry_points_import_the_cli() -> None:
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if CLI not in path.parents and _cli_imports(path)
    )
    assert importers == ["__main__.py"]


def test_no_module_of_the_cli_left_at_the_package_root() -> None:
    assert sorted(path.name for path in PACKAGE.glob("cli*.py")) == []
    assert not (PACKAGE / "server.py").exists()
    assert not (PACKAGE / "bulk.py").exists()
