"""The pricing file's ``semantics:`` block: where billing vendors differ, which meaning
this file bills with (``core.semantics``; docs/billing.md, "Vendor semantics").

``with_semantics`` reads the block at the file level (every key optional, each value one
of its option's values), reports every problem by path like the rest of the schema, and
hands the result to the configuration: rating reads it from there, the credit book from
each contract's credit terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from meterline.config.fields import FieldReader
from meterline.config.source import ConfigurationError
from meterline.core.model import Configuration
from meterline.core.semantics import DEFAULT, OPTIONS, Semantics


def parse_semantics(reader: FieldReader, value: Any, path: str = "semantics") -> Semantics:
    """The block at ``path`` (absent: every default)."""
    if value is None:
        return DEFAULT
    item = reader.mapping(value, path, tuple(OPTIONS))
    if not isinstance(value, Mapping):
        return DEFAULT
    chosen = {
        name: reader.choice(item.get(name), f"{path}.{name}", values, values[0])
        for name, values in OPTIONS.items()
    }
    return Semantics(**chosen)  # type: ignore[arg-type]


def with_semantics(configuration: Configuration, reader: FieldReader, value: Any) -> Configuration:
    """``configuration`` with the file's ``semantics:`` block ``value`` read into it (and
    into each contract's credit terms); raises ``ConfigurationError`` with every problem
    the reader collected, this block's included."""
    semantics = parse_semantics(reader, value)
    if reader.errors:
        raise ConfigurationError(reader.errors)
    if semantics == DEFAULT:
        return configuration
    contracts = tuple(
        replace(contract, credits=replace(contract.credits, semantics=semantics))
        for contract in configuration.contracts
    )
    return replace(configuration, contracts=contracts, semantics=semantics)
