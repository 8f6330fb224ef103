"""The live path: in-memory projections updated per appended batch, the controls that
act on them, access decisions pushed to products, and outgoing webhooks."""

from typing import TYPE_CHECKING

from meterline.lazy import lazy_exports

__all__ = [
    "Controls",
    "Figures",
    "LiveEngine",
    "LiveFront",
    "LiveProjection",
    "LiveStack",
    "Webhooks",
    "live_stack",
    "local_engine",
]

_HOMES = {
    "Controls": "meterline.live.control_engine",
    "Figures": "meterline.live.figures",
    "LiveEngine": "meterline.live.service",
    "LiveFront": "meterline.live.front",
    "LiveProjection": "meterline.live.projection",
    "LiveStack": "meterline.live.stack",
    "Webhooks": "meterline.live.webhook_service",
    "live_stack": "meterline.live.stack",
    "local_engine": "meterline.live.local",
}
"""Where each public name lives; loaded on first use (PEP 562), so importing one light
module of this package does not load the rest."""

__getattr__ = lazy_exports("meterline.live", _HOMES, globals())


if TYPE_CHECKING:
    from meterline.live.control_engine import Controls
    from meterline.live.figures import Figures
    from meterline.live.front import LiveFront
    from meterline.live.local import local_engine
    from meterline.live.projection import LiveProjection
    from meterline.live.service import LiveEngine
    from meterline.live.stack import LiveStack, live_stack
    from meterline.live.webhook_service import Webhooks
