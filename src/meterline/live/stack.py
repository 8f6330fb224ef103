"""The live stack over one billing service: its webhooks and the live engines that
publish to them, assembled in one place.

Every process that runs a live engine (the server's live worker process, a command's
in-process engine, a stream worker, the demo) opens the stack here, so an engine is
always built the same way: over the billing service, on its clock, publishing to the
webhook store beside the ledger. The server's side of the same wiring (the link to the
worker process, the dispatcher) is ``meterline.api.services.open_services``.

Invariants: ``close`` closes the webhook store the stack opened, and nothing else (the
billing service and the engines belong to their opener); ``engine`` may be called again
after an engine stopped (a stream worker rebuilds its engine when its partitions change),
and every engine of a stack publishes to the same webhooks.
"""

from __future__ import annotations

from dataclasses import dataclass

from meterline.billing.service import Billing
from meterline.ledger.webhook_records import WebhookStore
from meterline.live.service import CYCLE_PAUSE_SHARE, LiveEngine
from meterline.live.webhook_service import Webhooks


@dataclass
class LiveStack:
    """A billing service's webhooks, and the factory of its live engines."""

    billing: Billing
    webhooks: Webhooks

    def engine(
        self, pause_share: float = CYCLE_PAUSE_SHARE, partitions: list[int] | None = None
    ) -> LiveEngine:
        """A new (not started) live engine over the billing service, publishing to the
        stack's webhooks; ``pause_share`` 0 in a process of its own, ``partitions`` the
        ledger partitions it keeps (None: every one)."""
        return LiveEngine(
            self.billing,
            publish=self.webhooks.publish,
            pause_share=pause_share,
            partitions=partitions,
        )

    def close(self) -> None:
        """Close the webhook store this stack opened."""
        self.webhooks.store.close()


def live_stack(billing: Billing, allow_private: bool | None = None) -> LiveStack:
    """The live stack over ``billing``: webhooks stored beside its ledger, on its clock;
    ``allow_private`` lets webhooks reach loopback and private addresses (the demo's
    receiver; ``None``: the ``METERLINE_WEBHOOKS_ALLOW_PRIVATE`` default)."""
    webhooks = Webhooks(
        WebhookStore(billing.store.path), clock=billing.clock, allow_private=allow_private
    )
    return LiveStack(billing, webhooks)
