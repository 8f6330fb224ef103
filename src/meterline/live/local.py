"""A live engine in this process, for one command over a ledger.

Invariants: the engine is rebuilt from the ledger when opened and runs no thread; without
``act`` it evaluates and records nothing (a read-only look); on leaving, the controls'
pending actions are drained before the engine, the billing service and the webhook store
close, whatever happened inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from meterline.billing.service import open_billing
from meterline.live.service import LiveEngine
from meterline.live.stack import live_stack


@contextmanager
def local_engine(db: str, act: bool = True) -> Iterator[LiveEngine]:
    """A live engine over the ledger at ``db`` (which must exist), publishing to its
    webhooks; ``act``: whether controls fire and overrides are recorded."""
    with open_billing(db) as billing:
        stack = live_stack(billing)
        engine = stack.engine()
        engine.start(thread=False, act=act)
        try:
            yield engine
        finally:
            engine.controls.drain()
            engine.stop()
            stack.close()
