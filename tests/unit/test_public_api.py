"""The package's public surface: ``__all__`` is the contract."""

from __future__ import annotations

import meterline


def test_all_names_exist_and_are_sorted() -> None:
    """Every name in ``meterline.__all__`` is importable, and the list is sorted."""
    for name in meterline.__all__:
        assert hasattr(meterline, name), name
    assert list(meterline.__all__) == sorted(meterline.__all__)


def test_core_imports_nothing_from_the_shell() -> None:
    """meterline.core imports only the stdlib, msgspec and itself (functional core)."""
    import ast
    from pathlib import Path

    core = Path(meterline.__file__).parent / "core"
    for module in core.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top != "meterline" or name.startswith("meterline.core"), (module, name)
                assert top not in {"sqlite3", "socket", "time", "random", "httpx", "os"}, (
                    module,
                    name,
                )
