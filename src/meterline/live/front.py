"""The live front: what the HTTP API and the dashboard ask of the live engine.

A server never holds the engine itself: it holds a front to it. Embedded, that is
``live.link.LiveLink`` (the engine in a worker process, its answers mirrored here); in
stream mode, ``stream.mirror.AccessMirror`` (the workers' decisions, mirrored from the
access bucket; ``api.stream_front.StreamFront`` connects it and answers its figures).
Both satisfy ``LiveFront`` structurally, and the routes and pages are typed against it,
so neither knows which one it was given.

What a front promises: access answers and the snapshot are reads of a mirror in this
process (``lock`` guards it while it changes; ``listeners`` hear every changed decision);
``figures``, ``status`` and ``override`` may ask another process and raise
``WorkerUnavailable`` when it does not answer; ``store`` is the control records every
process shares (firings, their results, overrides).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from meterline.core.control_policies import Block
from meterline.core.live_documents import AccessAnswer, AccessSnapshot, LiveFigures
from meterline.ledger.control_records import ControlStore, StoredOverride
from meterline.live.control_engine import AccessListener
from meterline.live.control_overrides import Override


@runtime_checkable
class LiveFront(Protocol):
    """The live engine as a server sees it (``LiveLink``, ``AccessMirror``)."""

    @property
    def lock(self) -> AbstractContextManager[Any]:
        """Held while the mirror changes; hold it to read ``states`` or to take a
        snapshot and start listening without missing a change in between."""

    @property
    def listeners(self) -> list[AccessListener]:
        """Told ``(version, customer, decision)`` on every changed decision."""

    @property
    def customers(self) -> frozenset[str]:
        """The customers with a contract, as the engine last said."""

    @property
    def states(self) -> dict[str, tuple[tuple[Block, ...], dict[str, str]]]:
        """Each customer's active blocks and remaining balances."""

    @property
    def store(self) -> ControlStore:
        """The control records: firings, their action results, overrides."""

    def access(self, customer: str, feature: str | None = None) -> AccessAnswer:
        """May ``customer`` use ``feature`` now? (A read of the mirror.)"""

    def snapshot(self, customer: str | None = None) -> AccessSnapshot:
        """Every decision (or one customer's) and the version they are at."""

    def figures(self, customer: str) -> LiveFigures | dict[str, Any] | None:
        """The customer's live figures, or None without a contract in force: the live
        worker's record, or in stream mode the owning worker's reply as plain data (its
        keys in the sorted order it was sent in, which the route answers as they are)."""

    def status(self) -> dict[str, Any]:
        """The engine's progress and whether it runs."""

    def override(self, request: Override) -> StoredOverride:
        """Finance's manual action (unblock, extend, grant), recorded with its actor."""
