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


def test_every_package_others_import_declares_its_surface() -> None:
    """Each package has ``__all__``; every name in it resolves; the core's lists its
    modules exactly."""
    import importlib
    from pathlib import Path

    root = Path(meterline.__file__).parent
    packages = sorted(p.parent.name for p in root.glob("*/__init__.py"))
    assert {"billing", "config", "core", "finance", "ledger", "live", "sdk", "stream"} <= set(
        packages
    )
    for name in packages:
        package = importlib.import_module(f"meterline.{name}")
        assert hasattr(package, "__all__"), name
        for public in package.__all__:
            if name == "core":
                importlib.import_module(f"meterline.core.{public}")
            else:
                assert getattr(package, public) is not None, (name, public)
    core_modules = {p.stem for p in (root / "core").glob("*.py") if p.stem != "__init__"}
    assert set(importlib.import_module("meterline.core").__all__) == core_modules


def test_the_library_a_user_calls_is_at_the_root() -> None:
    for name in ("Billing", "open_billing", "CreditBook", "Figures", "Gate", "verify_signature"):
        assert name in meterline.__all__ and getattr(meterline, name) is not None
    from meterline.sdk import Gate

    assert meterline.Gate is Gate
