"""What the live engine tells beside the controls: a free trial's notices, each
progressive threshold level a period's usage reaches, and the progress to the next level
that the access answers carry.

- **Trials** (``core.trials.trial_notices``): ``trial.started``, ``trial.ending`` (the
  trial's ``notice_days`` before its end), ``trial.converted`` or ``trial.cancelled``,
  looked at about once a second for every contract of the pricing with a trial. The
  webhook event id is ``<kind>:<customer>:<trial start>``: one per trial, however often
  it is decided, by however many engines, across restarts (the webhook store keeps one
  delivery per endpoint and event id).
- **Threshold levels** (``core.thresholds.ThresholdLevels.crossed``): after each cycle,
  for the touched customers on progressive thresholds, a ``threshold.reached`` webhook per
  level reached (fixed or recurring step), id ``threshold.reached:<customer>:<period
  start>:<level number>``: one per level per period.
- **Progress**: ``{so_far, next, of}`` per customer, kept in ``Controls.progress``; a change
  is an access change (pushed like a balance change, once per cycle at most).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from meterline.billing.service import BillingError
from meterline.core.events import format_timestamp
from meterline.core.live_documents import (
    ThresholdProgress,
    ThresholdReached,
    TrialNotice,
    WebhookData,
)
from meterline.core.trials import TrialWindow, trial_notices
from meterline.live.control_engine import Controls, Publisher
from meterline.live.figures import Figures, threshold_figure
from meterline.live.projection import LiveProjection

_log = logging.getLogger(__name__)


class Notices:
    """Trial notices and threshold levels as webhooks; threshold progress for access."""

    def __init__(self, projection: LiveProjection, controls: Controls) -> None:
        self.projection = projection
        self.controls = controls
        self.clock = projection.clock
        self.reached: dict[str, tuple[int, int]] = {}
        """Per customer: (period start, levels reached and told) in this process."""
        self.sent: set[str] = set()
        """Trial notices published by this process (not asked of the store again)."""

    def _publish(self, kind: str, data: WebhookData, key: str) -> bool:
        publish: Publisher | None = self.controls.publish
        if publish is None:
            return False
        try:
            publish(kind, data, f"{kind}:{key}")
        except Exception:  # a webhook that cannot be queued never stops the engine
            _log.exception("webhook %s for %s could not be queued", kind, key)
            return False
        return True

    # -- trials -----------------------------------------------------------------------------

    def trials(self) -> None:
        """Publish every trial notice due now and not sent yet."""
        now_us = self.clock()
        try:
            contracts = self.projection.billing.current().configuration.contracts
        except BillingError:  # no pricing applied yet
            return
        owns = self.projection.owns  # a stream worker tells of its own partitions' trials
        for contract in contracts:
            if contract.trial is None or (owns is not None and not owns(contract.customer)):
                continue
            window = TrialWindow(contract.trial, contract.start_us)
            for notice in trial_notices(contract.customer, window, now_us):
                if f"{notice.kind}:{notice.key}" in self.sent:
                    continue
                data = TrialNotice(
                    contract.customer,
                    format_timestamp(window.start_us),
                    format_timestamp(window.end_us),
                    format_timestamp(notice.at_us),
                    contract.trial.on_end,
                )
                if self._publish(notice.kind, data, notice.key):
                    self.sent.add(f"{notice.kind}:{notice.key}")

    # -- progressive thresholds -------------------------------------------------------------

    def thresholds(self, customers: set[str]) -> None:
        """Tell the levels ``customers`` reached since last told, and their progress."""
        for customer in sorted(customers):
            live = self.projection.customers.get(customer)
            if live is None or live.contract.credits.threshold_levels is None:
                if customer in self.controls.progress:
                    self._progress(customer, None)
                continue
            try:
                figures = self.projection.figures(customer, credits=False)
            except (BillingError, ArithmeticError, ValueError) as error:
                _log.warning("thresholds of %s not followed: %s", customer, error)
                continue
            if figures is None:
                continue
            levels = live.contract.credits.threshold_levels
            so_far = threshold_figure(live, figures.spend, figures.lines)
            if so_far is not None:
                # lifetime levels that earlier periods reached were told then
                passed = levels.reached(live.usage_before) if levels.scope == "lifetime" else 0
                self._levels(customer, levels, figures, so_far, passed)
            self._progress(customer, figures.threshold_progress())

    def _levels(
        self, customer: str, levels: Any, figures: Figures, so_far: Decimal, passed: int
    ) -> None:
        start = figures.period.start_us
        period, told = self.reached.get(customer, (start, 0))
        before = max(told if period == start else 0, passed)
        crossed = levels.crossed(before, so_far)
        for number, level in crossed:
            data = ThresholdReached(
                customer,
                format_timestamp(start),
                number,
                str(level),
                number > len(levels.levels),
                str(so_far),
                levels.meter or figures.currency,
            )
            self._publish("threshold.reached", data, f"{customer}:{start}:{number}")
        self.reached[customer] = (start, crossed[-1][0] if crossed else before)

    def _progress(self, customer: str, document: ThresholdProgress | None) -> None:
        controls = self.controls
        with controls.lock:
            if controls.progress.get(customer) == document:
                return
            if document is None:
                controls.progress.pop(customer, None)
            else:
                controls.progress[customer] = document
            controls._decision_changed(customer)
