"""The house's sizes (issue 18): no module of ``src/meterline`` over 600 lines and no
function or method over 80 lines, so each room holds one responsibility a reader can
take in at once. Tests are outside ``src`` and not measured."""

from __future__ import annotations

import ast
from pathlib import Path

import meterline

ROOT = Path(meterline.__file__).parent
MODULE_LINES_LIMIT = 600
FUNCTION_LINES_LIMIT = 80


def _sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)


def _long_functions(path: Path) -> list[str]:
    """Every function or method of ``path`` (nested ones too) longer than the limit,
    counted from its first decorator to its last line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = (node.end_lineno or node.lineno) - first + 1
            if lines > FUNCTION_LINES_LIMIT:
                found.append(f"{_name(path)}:{node.lineno} {node.name} has {lines} lines")
    return found


def test_no_module_is_over_600_lines() -> None:
    wrong = []
    for path in _sources():
        lines = len(path.read_text().splitlines())
        if lines > MODULE_LINES_LIMIT:
            wrong.append(f"{_name(path)} has {lines} lines")
    assert not wrong, "\n".join(wrong)


def test_no_function_is_over_80_lines() -> None:
    wrong = [found for path in _sources() for found in _long_functions(path)]
    assert not wrong, "\n".join(wrong)
