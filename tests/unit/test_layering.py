"""The house's layering: each package of ``meterline`` imports only packages on lower
layers (docs/DESIGN.md, "Layers"), so there is no circle between packages; no module
imports another package's private names.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import meterline

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"core"}),
    frozenset({"errors", "lazy"}),
    frozenset({"clock", "keys", "proofs", "logs"}),
    frozenset({"config", "sdk"}),
    frozenset({"ledger", "integrations"}),
    frozenset({"billing"}),
    frozenset({"finance", "live"}),
    frozenset({"stream", "dashboard"}),
    frozenset({"api"}),
    frozenset({"server", "bulk"}),
    frozenset({"bench", "demo"}),
    frozenset({"cli"}),
    frozenset({"__main__"}),
)
"""From the ground up. The package root (``meterline/__init__.py``) stands apart: it is
the public facade and names what it exports lazily."""

ROOT = Path(meterline.__file__).parent


def _room(module: str) -> str:
    """The package (or top-level module) a dotted ``meterline`` name belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "meterline"
    return "cli" if parts[1].startswith("cli") else parts[1]


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(relative.parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every absolute ``meterline`` import of ``path``: the module and the names taken."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return [(module, names) for module, names in found if module.split(".")[0] == "meterline"]


def _layer_of(room: str) -> int:
    for index, rooms in enumerate(LAYERS):
        if room in rooms:
            return index
    raise AssertionError(f"package {room!r} is on no layer: add it to LAYERS and docs/DESIGN.md")


def test_every_package_imports_only_lower_layers() -> None:
    wrong = []
    for name, path in _modules().items():
        room = _room(name)
        if room == "meterline":
            continue
        layer = _layer_of(room)
        for module, _ in _imports(path):
            target = _room(module)
            if target in (room, "meterline"):
                continue
            if _layer_of(target) >= layer:
                wrong.append(f"{name} ({room}) imports {module} ({target})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_imports_another_packages_private_names() -> None:
    wrong = []
    for name, path in _modules().items():
        for module, names in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and _room(module) != _room(name):
                wrong.append(f"{name} takes {private} from {module}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_layers_are_the_ones_docs_design_draws() -> None:
    design = (ROOT.parents[1] / "docs" / "DESIGN.md").read_text()
    section = design.split("## Layers", 1)[1].split("\n## ", 1)[0]
    for rooms in LAYERS:
        for room in rooms:
            assert f"`{room}`" in section, f"docs/DESIGN.md's Layers section omits {room}"


def _module_edges() -> dict[str, set[str]]:
    """module -> the modules it imports (a package's ``__init__`` is its face: neither a
    node nor followed)."""
    modules = _modules()
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    edges: dict[str, set[str]] = {name: set() for name in modules if name not in packages}
    for name in edges:
        for module, names in _imports(modules[name]):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules] or [module]
            edges[name].update(t for t in targets if t in edges and t != name)
    return edges


def test_no_modules_import_each_other_in_a_circle() -> None:
    edges = _module_edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not circles, circles
