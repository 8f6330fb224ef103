"""``Billing`` is a thin facade over the modules of ``meterline.billing``, and nothing
outside the package reaches into its private parts (issue 18)."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import meterline
from meterline.billing.service import Billing

SOURCE = Path(meterline.__file__).parent
BILLING = SOURCE / "billing"
MODULE_LINES_MAX = 600
"""The longest a module split out of ``Billing`` may be."""
FUNCTION_LINES_MAX = 80
"""The longest a function of a module split out of ``Billing`` may be."""
SPLIT_MODULES = (
    "audit",
    "balances",
    "close",
    "context",
    "credit_notes",
    "documents",
    "drafts",
    "errors",
    "grants",
    "late",
    "proofs",
    "reads",
    "revisions",
    "service",
    "thresholds",
)
"""The modules ``Billing`` was split into, and the facade itself."""
HOLDERS = {"billing", "service"}
"""The names callers give a ``Billing`` (a variable, or an attribute such as ``self.billing``)."""


def _statements(function: object) -> list[ast.stmt]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    definition = tree.body[0]
    assert isinstance(definition, ast.FunctionDef)
    body = definition.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return body


def test_each_public_method_is_one_delegation() -> None:
    """Every public method of ``Billing`` is a single ``return`` of one call."""
    methods = [
        (name, member)
        for name, member in vars(Billing).items()
        if not name.startswith("_") and inspect.isfunction(member)
    ]
    assert len(methods) > 20
    for name, method in methods:
        body = _statements(method)
        assert len(body) == 1, name
        statement = body[0]
        assert isinstance(statement, ast.Return), name
        assert isinstance(statement.value, ast.Call), name


def _holder(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def test_nothing_outside_billing_reads_its_private_parts() -> None:
    """No module outside ``meterline.billing`` reads a private attribute of a ``Billing``
    (``billing._connection``, ``service._connection``, ``self.billing._credit_inputs``)
    nor imports a private name from the package."""
    found = []
    for module in SOURCE.rglob("*.py"):
        if BILLING in module.parents:
            continue
        tree = ast.parse(module.read_text())
        imported = {  # a module named billing (meterline.ledger.billing_records) is no Billing
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and _holder(node.value) in HOLDERS - imported
            ):
                found.append(f"{module.relative_to(SOURCE)}:{node.lineno} {node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "meterline.billing.service"
            ):
                found.extend(
                    f"{module.relative_to(SOURCE)}:{node.lineno} {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                )
    assert found == []


def test_split_modules_stay_small() -> None:
    """Each module of the split holds at most ``MODULE_LINES_MAX`` lines and each of its
    functions at most ``FUNCTION_LINES_MAX``."""
    for name in SPLIT_MODULES:
        path = BILLING / f"{name}.py"
        text = path.read_text()
        assert len(text.splitlines()) <= MODULE_LINES_MAX, name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                assert length <= FUNCTION_LINES_MAX, (name, node.name, length)
