"""What ``verify`` and ``audit`` report: findings, each naming the first bad item (pure).

A proof tool never ends in a traceback: every problem it meets (an altered byte, a row
that does not decode, a missing trigger, a damaged file) becomes a ``Finding``. A finding
says which check failed and locates the item with as many of its fields as apply:

| check | names |
|---|---|
| ``store`` | the ``store`` (a file path or a database URL): damaged, empty, unreadable |
| ``trigger`` | the ``table`` whose append-only trigger is missing, disabled or altered |
| ``chain`` | the ``partition`` and ``sequence`` of the first event whose chain breaks |
| ``checkpoint`` | the ``sequence`` a commit checkpoint names that the chain contradicts |
| ``chain head`` | the ``partition`` (and the ``sequence`` the head records) |
| ``revision`` | the configuration ``revision`` |
| ``invoice`` | the ``invoice`` id and, when the difference is in a line, its ``line`` |
| ``credit note`` | the ``credit_note`` id |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHECKS = (
    "store",
    "trigger",
    "chain",
    "checkpoint",
    "partition head",
    "revision",
    "invoice",
    "credit note",
)
"""Every kind of finding, in the order a full audit meets them."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem a proof tool found, and where."""

    check: str
    problem: str
    partition: int | None = None
    sequence: int | None = None
    revision: int | None = None
    invoice: str | None = None
    line: int | None = None
    credit_note: str | None = None
    table: str | None = None
    store: str | None = None

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"unknown check {self.check!r}")

    @property
    def where(self) -> str:
        """The bad item in words: ``partition 2, sequence 17``, ``invoice INV-000003,
        line 2``, ``configuration revision 1``, ``table events``..."""
        parts: list[str] = []
        if self.store is not None:
            parts.append(self.store)
        if self.table is not None:
            parts.append(f"table {self.table}")
        if self.check == "partition head" and self.partition is not None:
            parts.append(f"head of partition {self.partition}")
        elif self.partition is not None:
            parts.append(f"partition {self.partition}")
        if self.sequence is not None:
            parts.append(f"sequence {self.sequence}")
        if self.revision is not None:
            parts.append(f"configuration revision {self.revision}")
        if self.invoice is not None:
            parts.append(f"invoice {self.invoice}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.credit_note is not None:
            parts.append(f"credit note {self.credit_note}")
        return ", ".join(parts) or self.check

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"

    def as_dict(self) -> dict[str, Any]:
        """The finding as JSON: ``check``, ``where``, ``problem`` and each locating field
        that applies."""
        located = {
            name: value
            for name, value in (
                ("partition", self.partition),
                ("sequence", self.sequence),
                ("revision", self.revision),
                ("invoice", self.invoice),
                ("line", self.line),
                ("credit_note", self.credit_note),
                ("table", self.table),
                ("store", self.store),
            )
            if value is not None
        }
        return {"check": self.check, "where": self.where, "problem": self.problem, **located}


def describe_error(error: BaseException) -> str:
    """An exception met while checking, as one line for a finding: the first line of its
    message (bad data: a ``ValueError``, e.g. bytes that are not JSON), or its type and
    message (anything else, e.g. a ``KeyError`` from a document missing a field)."""
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, ValueError) and message:
        return message
    name = type(error).__name__
    return f"{name}: {message}" if message else name
