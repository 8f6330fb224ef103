"""The pricing file's ``semantics:`` blocks: where billing vendors differ, which meaning
this file bills with (``core.semantics``; docs/billing.md, "Vendor semantics").

``with_semantics`` reads the file-level block (every key optional, each value one of its
option's values), then a plan's and a contract's ``semantics:`` (the options they
override, read the same way); it reports every problem by path like the rest of the
schema (a grant whose start, rounded as its ``grant_start`` says, is no longer before its
expiry included), and hands the result to the configuration: rating reads each contract's
(``Configuration.semantics_for``), the credit book its contract's credit terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from meterline.config.fields import FieldReader
from meterline.config.source import ConfigurationError
from meterline.core.model import Configuration, Contract
from meterline.core.semantics import (
    DEFAULT,
    OPTIONS,
    Overrides,
    Semantics,
    declared_start,
    overridden,
)


def parse_overrides(reader: FieldReader, value: Any, path: str) -> Overrides:
    """The options a block at ``path`` sets (absent: none), each checked."""
    if value is None:
        return ()
    item = reader.mapping(value, path, tuple(OPTIONS))
    if not isinstance(value, Mapping):
        return ()
    return tuple(
        (name, reader.choice(item[name], f"{path}.{name}", values, values[0]))
        for name, values in OPTIONS.items()
        if name in item
    )


def parse_semantics(reader: FieldReader, value: Any, path: str = "semantics") -> Semantics:
    """The file-level block at ``path`` (absent: every default)."""
    return overridden(DEFAULT, parse_overrides(reader, value, path))


def _keyed(reader: FieldReader, raw: Any, section: str, key: str) -> dict[str, Overrides]:
    """Each plan's or contract's ``semantics:`` overrides, by its ``key`` field."""
    found: dict[str, Overrides] = {}
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(item, Mapping) and item.get("semantics") is not None:
            path = f"{section}[{index}].semantics"
            found[str(item.get(key))] = parse_overrides(reader, item["semantics"], path)
    return found


def with_semantics(
    configuration: Configuration,
    reader: FieldReader,
    value: Any,
    plans: Any = None,
    contracts: Any = None,
) -> Configuration:
    """``configuration`` with the file's ``semantics:`` block ``value`` read into it, and
    each contract's semantics (the file's, then its plan's overrides from the raw
    ``plans``, then its own from the raw ``contracts``) into its credit terms and
    ``contract_semantics``; raises ``ConfigurationError`` with every problem the reader
    collected, these blocks' included."""
    semantics = parse_semantics(reader, value)
    by_plan = _keyed(reader, plans, "plans", "key")
    by_customer = _keyed(reader, contracts, "contracts", "customer")
    if reader.errors:
        raise ConfigurationError(reader.errors)
    if semantics == DEFAULT and not by_plan and not by_customer:
        return configuration
    chosen = {
        contract.customer: overridden(
            overridden(semantics, by_plan.get(contract.plan, ())),
            by_customer.get(contract.customer, ()),
        )
        for contract in configuration.contracts
    }
    for contract in configuration.contracts:
        _check_starts(reader, contract, chosen[contract.customer], contracts)
    if reader.errors:
        raise ConfigurationError(reader.errors)
    contracts_read = tuple(
        replace(contract, credits=replace(contract.credits, semantics=chosen[contract.customer]))
        for contract in configuration.contracts
    )
    own = tuple((who, found) for who, found in chosen.items() if found != semantics)
    return replace(
        configuration, contracts=contracts_read, semantics=semantics, contract_semantics=own
    )


def _check_starts(reader: FieldReader, contract: Contract, semantics: Semantics, raw: Any) -> None:
    """Report each grant of ``contract`` whose start, rounded as ``grant_start`` says,
    is no longer before its ``expires`` or ``end`` (a grant that would pay for nothing)."""
    if semantics.grant_start == "exact":
        return
    for spec in contract.credits.grants:
        if spec.start_us is None:
            continue
        start = declared_start(spec.start_us, semantics)
        for field, limit in (("expires", spec.expires_us), ("end", spec.end_us)):
            if limit is not None and limit <= start:
                path = f"{_spec_path(raw, contract.customer, spec.key, spec.commit)}.{field}"
                reader.fail(
                    path,
                    f"must be after the grant's start on the whole minute "
                    f"(semantics.grant_start: {semantics.grant_start})",
                )


def _spec_path(raw: Any, customer: str, key: str, commit: bool) -> str:
    """Where grant (or prepaid commit) ``key`` of ``customer``'s contract is declared."""
    section = "commits" if commit else "grants"
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(item, Mapping) or str(item.get("customer")) != customer:
            continue
        credits = item.get("credits")
        specs = credits.get(section) if isinstance(credits, Mapping) else None
        for position, spec in enumerate(specs if isinstance(specs, list) else []):
            if isinstance(spec, Mapping) and str(spec.get("key")) == key:
                return f"contracts[{index}].credits.{section}[{position}]"
        return f"contracts[{index}].credits"
    return "contracts"
