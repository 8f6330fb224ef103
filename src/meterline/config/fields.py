"""The field readers every section of the pricing file shares, and what the file has
declared so far.

``FieldReader`` reads one value at a path (text, exact amounts, whole numbers, choices,
instants, mappings with their allowed and required keys) and collects every error as
``file:line: path: reason``, so the whole file is reported at once. ``unique`` and
``raw_keys`` name a key declared twice; ``read_currency`` reads an ISO 4217 code.
``Declared`` holds the meters, credit types, plans and plan versions the later sections
refer to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from meterline.core.events import timestamp_to_us
from meterline.core.meters import Meter
from meterline.core.model import PlanVersion
from meterline.core.money import MINOR_UNITS
from meterline.core.periods import local_midnight_us


class FieldReader:
    """Collects errors while reading; each value is read at a path."""

    def __init__(self, positions: Mapping[str, int], name: str) -> None:
        self.errors: list[str] = []
        self.positions = positions
        self.name = name

    def error(self, path: str, reason: str) -> None:
        """Record ``reason`` at the line of ``path`` (or of its nearest parent in the file)."""
        line = self.positions.get(path)
        parent = path
        while line is None and parent:
            cut = max(parent.rfind("."), parent.rfind("["))
            parent = parent[:cut] if cut > 0 else ""
            line = self.positions.get(parent)
        where = f"{self.name}:{line}" if line is not None else self.name
        self.errors.append(f"{where}: {reason}")

    def fail(self, path: str, reason: str) -> None:
        self.error(path, f"{path}: {reason}")

    def fail_all(self, problems: list[str]) -> list[str]:
        """Report each ``path: reason`` a core check returned (``meter_errors``,
        ``coupon_errors``...) at its path; ``problems`` back, for ``if not ...`` tests."""
        for problem in problems:
            field, _, reason = problem.partition(": ")
            self.fail(field, reason)
        return problems

    def mapping(
        self, value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping, not {kind_of(value)}")
            return {}
        for key in value:
            if key not in allowed:
                self.fail(
                    f"{path}.{key}" if path else str(key),
                    f"unknown key (expected one of {', '.join(allowed)})",
                )
        for key in required:
            if key not in value or value[key] is None:
                self.fail(f"{path}.{key}" if path else key, "is required")
        return dict(value)

    def items(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {kind_of(value)}")
            return []
        return value

    def text(self, value: Any, path: str, default: str | None = None) -> str | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(path, f"must be text, not {kind_of(value)}")
            return default
        text = str(value)
        if not text:
            self.fail(path, "must not be empty")
        return text

    def amount(self, value: Any, path: str, default: Decimal | None = None) -> Decimal | None:
        if value is None:
            return default
        if isinstance(value, bool | float):
            self.fail(path, f"must be an exact number, not {kind_of(value)}")
            return default
        if isinstance(value, int | Decimal):
            return Decimal(value)
        if isinstance(value, str):
            try:
                number = Decimal(value)
            except InvalidOperation:
                self.fail(path, f"{value!r} is not a number")
                return default
            if number.is_finite():
                return number
        self.fail(path, f"{value!r} is not a number")
        return default

    def non_negative(self, value: Any, path: str, default: Decimal | None = None) -> Decimal | None:
        number = self.amount(value, path, default)
        if number is not None and number < 0:
            self.fail(path, "must not be negative")
        return number

    def integer(self, value: Any, path: str, default: int | None = None) -> int | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be a whole number, not {kind_of(value)}")
            return default
        return value

    def choice(self, value: Any, path: str, options: tuple[str, ...], default: str) -> str:
        if value is None:
            return default
        if value not in options:
            self.fail(path, f"{value!r} is not one of {', '.join(options)}")
            return default
        return str(value)

    def instant(self, value: Any, path: str, timezone: str) -> int | None:
        """A date (local midnight in ``timezone``) or an RFC 3339 timestamp, as microseconds."""
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None:
                self.fail(path, "a timestamp needs a zone offset (e.g. 2026-10-15T00:00:00Z)")
                return None
            return timestamp_to_us(value)
        if isinstance(value, date):
            try:
                return local_midnight_us(timezone, value)
            except (ValueError, KeyError):
                return None
        if isinstance(value, str):
            try:
                if len(value) == 10:
                    return self.instant(date.fromisoformat(value), path, timezone)
                return self.instant(
                    datetime.fromisoformat(value.replace("Z", "+00:00")), path, timezone
                )
            except ValueError:
                pass
        self.fail(path, f"{value!r} is not a date (2026-10-01) or an RFC 3339 timestamp")
        return None


def kind_of(value: Any) -> str:
    return {bool: "a boolean", float: "a float", dict: "a mapping", list: "a list"}.get(
        type(value), type(value).__name__
    )


def unique(reader: FieldReader, keys: list[tuple[str, str]], what: str) -> None:
    """Each key given at most once; a repeat is named at its path with the first's line."""
    seen: dict[str, str] = {}
    for key, path in keys:
        if key in seen:
            first = reader.positions.get(seen[key])
            where = f" (first at line {first})" if first is not None else ""
            reader.fail(path, f"{what} {key!r} is declared twice{where}")
        else:
            seen[key] = path


def raw_keys(items: Any, path: str, field: str) -> list[tuple[str, str]]:
    """``(key, path of the key)`` of each mapping in the raw list ``items`` that gives
    ``field`` as text or a number (a missing or bad one, or a list that is not one, is
    reported by the item's reader), at the item's own index, so a repeat is named on its
    own line."""
    if not isinstance(items, list):
        return []
    return [
        (str(item[field]), f"{path}[{index}].{field}")
        for index, item in enumerate(items)
        if isinstance(item, Mapping)
        and isinstance(item.get(field), str | int)
        and not isinstance(item.get(field), bool)
    ]


def read_currency(reader: FieldReader, value: Any, path: str) -> str | None:
    """An ISO 4217 code the money module knows (required)."""
    if value is None:
        reader.fail(path, "is required (an ISO 4217 code such as USD)")
        return None
    if value not in MINOR_UNITS:
        reader.fail(path, f"{value!r} is not a known currency ({', '.join(sorted(MINOR_UNITS))})")
        return None
    return str(value)


@dataclass(slots=True)
class Declared:
    """What the file has declared so far, for the sections that refer to it: the meters
    and credit types (read first), then the plans and their versions (``plan@version``)."""

    reader: FieldReader
    meters: dict[str, Meter]
    credit_types: set[str]
    plans: set[str] = field(default_factory=set)
    versions: dict[str, PlanVersion] = field(default_factory=dict)
