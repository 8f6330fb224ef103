"""Reading a pricing file: YAML text -> plain data, with the line of every path.

Numbers with a fraction are read as exact ``Decimal`` (PyYAML would make them floats, and
no float may come near money); integers stay ``int``. ``positions`` maps each path
(``plans[0].versions[1].prices[2].tiers[1].up_to``) to its 1-based line, so an error can
say where in the file it is. A key given twice in one mapping is an error naming both
lines (PyYAML would silently keep the last one, so a price could vanish unseen).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from meterline.errors import MeterlineError


class ConfigurationError(MeterlineError, ValueError):
    """A pricing file that cannot be applied; ``errors`` are ``file:line: path: reason``."""

    code = "invalid_configuration"
    http_status = 422

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class RetireAllRefused(ConfigurationError):
    """A pricing file that defines no meters, plans or contracts, or that keeps none of
    those in force, so applying it would retire everything: applied only when asked
    explicitly (``Billing.apply(..., allow_retire_all=True)``)."""


class _ExactLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that reads floats as Decimal (keeping every digit as written)."""


def _exact_float(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    text = str(loader.construct_scalar(node))
    try:
        return Decimal(text.replace("_", ""))
    except InvalidOperation:
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not an exact number", node.start_mark
        ) from None


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _exact_float)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _walk(
    node: yaml.Node, path: str, positions: dict[str, int], duplicates: dict[int, str]
) -> None:
    """Record the line of ``path`` and of everything under it; a key repeated in one
    mapping adds ``line: path: reason`` to ``duplicates``, by the repeated key's node (so
    a mapping an alias makes the walk visit twice is named once, at its first path)."""
    positions.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                first = seen.get((key_node.tag, key))
                if first is None:
                    seen[(key_node.tag, key)] = line
                else:
                    problem = f"{line}: {child}: duplicate key {key!r} (first at line {first})"
                    duplicates.setdefault(id(key_node), problem)
            positions[child] = line
            _walk(value_node, child, positions, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, f"{path}[{index}]", positions, duplicates)


YAML_NESTING_LEVELS_MAX = 64
"""The deepest nesting of mappings and sequences a pricing file may have, in levels: the
top mapping is one, ``plans: [{versions: [{prices: [...]}]}]`` is six. Building a deeper
document would recurse past Python's stack."""

_YAML_EVENTS_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_too_deep(text: str, limit: int = YAML_NESTING_LEVELS_MAX) -> str | None:
    """Why ``text`` nests too deep (None when it does not), read from the parser's events
    (the parser keeps its own stack; only building the document recurses). Malformed YAML
    passes: ``read_yaml`` says where it is wrong."""
    levels = 0
    try:
        for event in yaml.parse(text, Loader=_YAML_EVENTS_LOADER):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                levels += 1
                if levels > limit:
                    return (
                        f"YAML nests mappings and sequences more than {limit} levels deep;"
                        f" the limit is {limit} (YAML_NESTING_LEVELS_MAX)"
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                levels -= 1
    except yaml.YAMLError:
        return None
    return None


def read_yaml(text: str, name: str = "pricing.yaml") -> tuple[Any, dict[str, int]]:
    """``text`` as plain data and the line of each path; invalid YAML raises with its line."""
    too_deep = yaml_too_deep(text)
    if too_deep is not None:
        raise ConfigurationError([f"{name}: {too_deep}"])
    try:
        node = yaml.compose(text, Loader=_ExactLoader)
        data = yaml.load(text, Loader=_ExactLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = f"{mark.line + 1}" if mark is not None else "?"
        raise ConfigurationError([f"{name}:{line}: invalid YAML: {error.problem}"]) from None
    except yaml.YAMLError as error:
        raise ConfigurationError([f"{name}: invalid YAML: {error}"]) from None
    positions: dict[str, int] = {}
    duplicates: dict[int, str] = {}
    if node is not None:
        _walk(node, "", positions, duplicates)
    if duplicates:
        raise ConfigurationError([f"{name}:{problem}" for problem in duplicates.values()])
    return data, positions
