"""What the live path answers and tells, as typed, frozen records (pure): a customer's live
figures (``GET /v1/live/{customer}``), its access state as the push stream sends it, the
access answer (``GET /v1/access/{customer}``), the push stream's messages, and the data
of the webhooks the live engine publishes (``live.control_engine``, ``live.notices``,
``live.control_actions``) and of the webhook endpoints and deliveries the API shows.

Invariants: a record encodes to exactly the JSON its dict did before it was typed: its
fields in their declared order (what the API answers: ``api.answers.ENCODER``), sorted by
the canonical encoder (what a webhook body holds); a field that is ``UNSET`` is absent
from the bytes (a threshold or a trial the customer has none of). Amounts are ``str``:
the exact Decimal's ``str``, as the documents have always spelled them (the API's encoder
would write a Decimal as a number). Records are built by the live engine, pickled
between its process and the server's as they are, and encoded only at the edge; the
records' dict and tuple fields are never changed once built.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "AccessAnswer",
    "AccessChange",
    "AccessSnapshot",
    "AccessState",
    "CustomerBlocked",
    "CustomerUnblocked",
    "DeliveryAttempt",
    "FigureLine",
    "FigurePeriod",
    "FiringNotice",
    "Heartbeat",
    "InvoiceFinalized",
    "LiveFigures",
    "ThresholdProgress",
    "ThresholdReached",
    "TrialNotice",
    "TrialState",
    "WebhookData",
    "WebhookDelivery",
    "WebhookEndpoint",
    "plain",
]


class _Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every live record: immutable, no field it does not know."""


# -- live figures ---------------------------------------------------------------------------


class ThresholdProgress(_Record, frozen=True):
    """Progressive billing's progress: the period's figure so far, the next level, and
    what they count (the currency, or a meter's units)."""

    so_far: str
    next: str
    of: str


class FigurePeriod(_Record, frozen=True):
    """The customer's current billing period (RFC 3339 instants)."""

    start: str
    end: str


class FigureLine(_Record, frozen=True):
    """One meter's line in one group: its quantity and events so far, its rated amount
    and unit (None: not priced), its cost."""

    meter: str
    group: dict[str, str | None]
    quantity: str
    events: int
    amount: str | None
    unit: str | None
    cost: str


class TrialState(_Record, frozen=True):
    """The access answer's free trial: when it ends and whether it is still on."""

    ends_at: str
    active: bool


class AccessAnswer(_Record, frozen=True):
    """May ``customer`` use ``feature`` now (``GET /v1/access/{customer}``): why, the
    remaining balances, the access ``version`` it was read at, the trial and the progress
    to the next progressive threshold when the contract has them."""

    customer: str
    feature: str | None
    allowed: bool
    reason: str
    policy: str | None
    remaining: dict[str, str]
    version: int
    trial: TrialState | UnsetType = UNSET
    threshold: ThresholdProgress | UnsetType = UNSET


class LiveFigures(_Record, frozen=True):
    """A customer's live figures for its current period (``live.figures``): ``through``
    the cut they hold every event of, ``at`` the instant they were derived at; with the
    access answer when the worker answers the route."""

    customer: str
    currency: str
    period: FigurePeriod
    through: list[int]
    at: str
    spend: str
    cost: str
    margin: str
    prepaid: str
    remaining: dict[str, str]
    lines: tuple[FigureLine, ...]
    threshold: ThresholdProgress | UnsetType = UNSET
    access: AccessAnswer | UnsetType = UNSET


# -- the access push stream -----------------------------------------------------------------


class AccessState(_Record, frozen=True):
    """A customer's access state as the push stream sends it: blocked (whole, or the
    ``features`` listed), why and by which policy, the remaining balances, the progress
    to the next progressive threshold and when the free trial ends (when it has them)."""

    blocked: bool
    features: tuple[str, ...]
    reason: str
    policy: str | None
    remaining: dict[str, str]
    threshold: ThresholdProgress | UnsetType = UNSET
    trial_ends: str | UnsetType = UNSET


class AccessSnapshot(_Record, frozen=True):
    """The push stream's first message: every decision (or one customer's) at ``version``
    (a stream replica's decisions are the access bucket's plain data)."""

    version: int
    decisions: dict[str, AccessState | dict[str, Any]]


class AccessChange(_Record, frozen=True):
    """The push stream's message for one customer's changed decision."""

    version: int
    customer: str
    decision: AccessState | dict[str, Any]


class Heartbeat(_Record, frozen=True):
    """The push stream's message in a silence: the version the stream is at."""

    version: int


# -- webhook data ---------------------------------------------------------------------------


class WebhookData(_Record, frozen=True):
    """The ``data`` of a webhook the live engine publishes (canonical in its body)."""


class FiringNotice(WebhookData, frozen=True):
    """A control firing (``control.fired``, ``balance.low``, ...), as webhooks, the API
    and the CLI show it; the API and the CLI add each action's ``results``."""

    firing: str
    customer: str
    policy: str
    kind: str
    level: str
    crossing: int
    at: str
    sequence: int
    observed: dict[str, str]
    actions: tuple[str, ...]
    results: dict[str, Any] | UnsetType = UNSET
    """Each action's recorded outcome (stored JSON; None while it has none)."""


class CustomerBlocked(WebhookData, frozen=True):
    """``customer.blocked``: a firing's block, whole or of some ``features``."""

    customer: str
    policy: str
    features: tuple[str, ...]
    reason: str
    firing: str


class CustomerUnblocked(WebhookData, frozen=True):
    """``customer.unblocked``: the policies whose blocks were lifted, and why."""

    customer: str
    policies: tuple[str, ...]
    reason: str


class InvoiceFinalized(WebhookData, frozen=True):
    """``invoice.finalized`` for a control's true-up invoice."""

    invoice: str
    customer: str
    kind: str
    control: str


class TrialNotice(WebhookData, frozen=True):
    """``trial.started``, ``trial.ending``, ``trial.converted`` or ``trial.cancelled``."""

    customer: str
    trial_start: str
    trial_end: str
    at: str
    on_end: str


class ThresholdReached(WebhookData, frozen=True):
    """``threshold.reached``: a progressive threshold level the period's usage reached
    (``recurring``: a step past the fixed levels)."""

    customer: str
    period_start: str
    level_number: int
    level: str
    recurring: bool
    so_far: str
    of: str


# -- webhook endpoints and deliveries -------------------------------------------------------


class WebhookEndpoint(_Record, frozen=True):
    """An endpoint as the API and the CLI show it (never with its secret)."""

    id: str
    url: str
    kinds: tuple[str, ...]
    description: str
    enabled: bool
    created_at: str
    disabled_at: str | None


class DeliveryAttempt(_Record, frozen=True):
    """One attempt of a delivery: when, the answer's status or the error, how long."""

    attempt: int
    at: str
    status_code: int | None
    error: str | None
    duration_us: int


class WebhookDelivery(_Record, frozen=True):
    """A delivery with its attempt log and the event it sends (its stored body, decoded)."""

    id: str
    endpoint: str
    kind: str
    event_id: str
    status: str
    created_at: str
    next_attempt_at: str | None
    delivered_at: str | None
    last_status_code: int | None
    last_error: str | None
    attempts: tuple[DeliveryAttempt, ...]
    event: Any


_ENCODER = msgspec.json.Encoder(decimal_format="number")
_DECODER = msgspec.json.Decoder(float_hook=Decimal)


def plain(record: msgspec.Struct | dict[str, Any]) -> Any:
    """A record as plain data, exactly as its JSON decodes (objects in its fields' order,
    arrays as lists, UNSET fields left out, numbers with a fraction as Decimals): what
    the CLI prints and templates and reports that read by key are given."""
    return _DECODER.decode(_ENCODER.encode(record))
