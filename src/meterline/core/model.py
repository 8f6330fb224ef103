"""The domain words of pricing, as frozen values: credit types, prices, fees, plan versions,
contracts and the configuration that holds them (pure).

A ``Configuration`` is one immutable revision of everything finance declared. Plan
versions never change once applied (a pricing change is a new version with an effective
instant); contracts change only through effective-dated amendments. Which terms apply at
an instant is decided by ``terms_at`` and ``segments`` here, so rating, dry-run
simulation and audit all read the same rule:

- a contract that names a plan without a version floats: each billing period is rated
  under the plan version in effect at that period's start (a new version reaches its
  customers at their next period, never mid-period);
- an amendment switches the terms at its effective instant, mid-period; usage before it
  is rated under the old terms and after it under the new, and fees are prorated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import Literal

from meterline.core.allocation import Obligation
from meterline.core.control_policies import ControlPolicy
from meterline.core.coupons import Coupon, Redemption
from meterline.core.credit_records import OverageMode, RolloverRule
from meterline.core.errors import MeterlineError
from meterline.core.exchange import ReportingCurrency
from meterline.core.meters import Meter
from meterline.core.otel_spans import DEFAULT_MAPPING, OtelMapping
from meterline.core.pricing import Tier
from meterline.core.semantics import DEFAULT, Semantics
from meterline.core.tax import TableTaxProvider, TaxRate, TaxRounding
from meterline.core.thresholds import ThresholdLevels
from meterline.core.trials import Trial, TrialWindow

PriceModel = Literal["per_unit", "package", "graduated", "volume", "matrix", "percentage"]
PRICE_MODELS: tuple[PriceModel, ...] = (
    "per_unit",
    "package",
    "graduated",
    "volume",
    "matrix",
    "percentage",
)
FeeKind = Literal["recurring", "one_off"]
FEE_KINDS: tuple[FeeKind, ...] = ("recurring", "one_off")
FeeTiming = Literal["advance", "arrears"]
FEE_TIMINGS: tuple[FeeTiming, ...] = ("advance", "arrears")
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class CreditType:
    """The unit an amount is counted in when it is not a currency ("credits", "tokens").

    ``unit_value`` converts one unit into ``currency`` (``0.01``: a credit is worth a cent).
    Prices and grants may be declared in a credit type; invoices convert usage to the plan
    currency at the value in force at the start of the usage's segment.
    """

    key: str
    name: str
    currency: str
    unit_value: Decimal
    conversions: tuple[tuple[int, Decimal], ...] = ()
    """Effective-dated changes of ``unit_value``: (from instant, value), ascending."""

    def value_at(self, instant_us: int) -> Decimal:
        """What one unit is worth in ``currency`` at ``instant_us``."""
        value = self.unit_value
        for effective_us, changed in self.conversions:
            if effective_us <= instant_us:
                value = changed
        return value


CreditRecurrence = Literal["none", "period"]
CREDIT_RECURRENCES: tuple[CreditRecurrence, ...] = ("none", "period")


@dataclass(frozen=True, slots=True)
class CreditSpec:
    """A grant a contract declares: once, or refilled each billing period (``period``).

    ``unit``: a credit type key or a currency (a prepaid commit is a grant in the plan
    currency; ``""`` means the plan currency). ``paid``: what each instance costs the
    customer (its cost basis; zero for free credit), invoiced on the invoice of the period
    it becomes effective in. A recurring grant resets at each period end, where
    ``rollover`` decides what is kept; the kept amount expires after ``rollover_periods``
    more periods (None: never). A one-off grant is effective from ``start_us`` (the
    contract start when None) until ``expires_us``.
    """

    key: str
    unit: str
    amount: Decimal
    paid: Decimal = ZERO
    priority: int = 50
    start_us: int | None = None
    end_us: int | None = None
    expires_us: int | None = None
    recurrence: CreditRecurrence = "none"
    rollover: RolloverRule | None = None
    rollover_periods: int | None = 1
    scope: tuple[str, ...] = ()
    commit: bool = False
    description: str = ""
    breakage: str | None = None
    """How unused paid credit becomes revenue: ``proportional`` (to the pattern of use,
    given ``breakage_rate``), ``expiry`` or ``never``; None: the contract's setting."""
    breakage_rate: Decimal | None = None
    breakage_rate_changes: tuple[tuple[int, Decimal], ...] = ()
    """Later estimates of ``breakage_rate``: (effective instant, rate), in order."""
    unit_cost: Decimal | None = None
    """The price paid per unit: the grant's ``paid`` is ``amount x unit_cost`` (rounded
    once to the grant's currency), as a top-up's is."""


@dataclass(frozen=True, slots=True)
class CreditTerms:
    """How a contract uses credit: its grants, what happens to usage no grant covers
    (``overage``), a per-unit overage price, a postpaid minimum commit per period and a
    threshold that bills unbilled usage at once when reached."""

    grants: tuple[CreditSpec, ...] = ()
    overage: OverageMode = "bill"
    overage_prices: tuple[tuple[str, Decimal], ...] = ()
    minimum_commit: Decimal | None = None
    threshold: Decimal | None = None
    threshold_levels: ThresholdLevels | None = None
    """Progressive billing at levels of the period's cumulative usage (``core.thresholds``)."""
    breakage: str = "expiry"
    """The default breakage of the contract's grants (and of grants made by API)."""
    breakage_rate: Decimal = ZERO
    semantics: Semantics = DEFAULT
    """The pricing file's burn-order options (``core.semantics``), for the credit book."""
    breakage_timing: str = "expiry"
    """When an expired grant's breakage is booked: on its expiry instant's day
    (``expiry``), or on the last day its rights existed (``lapse``: a pool lapsing at a
    month's end books in that month)."""
    breakage_rate_changes: tuple[tuple[int, Decimal], ...] = ()
    """Later estimates of the contract's ``breakage_rate``: (effective instant, rate)."""

    def breakage_changes_of(self, grant_id: str) -> tuple[tuple[int, Decimal], ...]:
        """The changes of a grant's expected breakage rate: its own when it declares its
        own rate, else the contract's."""
        key = grant_id.split("@", 1)[0]
        for spec in self.grants:
            if spec.key == key and spec.breakage_rate is not None:
                return spec.breakage_rate_changes
        return self.breakage_rate_changes

    def breakage_of(self, grant_id: str) -> tuple[str, Decimal]:
        """The breakage mode and expected rate of a grant (``key`` or ``key@period``)."""
        key = grant_id.split("@", 1)[0]
        for spec in self.grants:
            if spec.key == key:
                return (
                    spec.breakage or self.breakage,
                    self.breakage_rate if spec.breakage_rate is None else spec.breakage_rate,
                )
        return self.breakage, self.breakage_rate

    def is_empty(self) -> bool:
        return self == CreditTerms(semantics=self.semantics)


@dataclass(frozen=True, slots=True)
class Price:
    """How one meter's quantity (for the groups ``where`` selects) becomes an amount.

    Only the parameters of ``model`` are read; ``where`` restricts the price to groups
    whose dimension values match (``(("model", "gpt-4o"),)``); a price without ``where``
    applies to every group no more specific price claimed. The line amount is
    ``bounded(model(after_allowance(quantity, free_units)), minimum, maximum)``, in
    ``credit_type`` units when one is set, else in the plan currency.
    """

    meter: str
    model: PriceModel
    where: tuple[tuple[str, str], ...] = ()
    unit_amount: Decimal | None = None
    package_size: Decimal | None = None
    package_amount: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    first_flat_at_zero: bool = True
    matrix: tuple[tuple[tuple[str, ...], Decimal], ...] = ()
    matrix_default: Decimal | None = None
    rate: Decimal | None = None
    property: str | None = None
    fixed_fee: Decimal = ZERO
    free_events: int = 0
    per_event_minimum: Decimal | None = None
    per_event_maximum: Decimal | None = None
    free_units: Decimal = ZERO
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    credit_type: str | None = None
    description: str | None = None

    def applies_to(self, dimensions: tuple[str, ...], group: tuple[str | None, ...]) -> bool:
        values = dict(zip(dimensions, group, strict=True))
        return all(values.get(name) == value for name, value in self.where)


@dataclass(frozen=True, slots=True)
class CostRate:
    """What serving one unit of ``meter`` costs us (COGS), in ``currency``, for the groups
    ``where`` matches (every group when empty), from ``effective_from_us`` on. A cost the
    provider reports on each event is a ``sum`` meter over that property at 1 per unit."""

    meter: str
    per_unit: Decimal
    currency: str = "USD"
    where: tuple[tuple[str, str], ...] = ()
    effective_from_us: int = 0

    def applies_to(self, group_by: tuple[str, ...], group: tuple[str | None, ...]) -> bool:
        values = dict(zip(group_by, group, strict=True))
        return all(values.get(name) == value for name, value in self.where)


@dataclass(frozen=True, slots=True)
class Fee:
    """A flat charge: recurring each period (in advance or in arrears) or charged once."""

    key: str
    name: str
    amount: Decimal
    kind: FeeKind = "recurring"
    timing: FeeTiming = "advance"
    obligations: tuple[Obligation, ...] = ()
    """The promises the fee pays for, its revenue split by standalone price
    (``core.allocation``); none: one obligation, recognized ratably."""


@dataclass(frozen=True, slots=True)
class BillingTerms:
    """Cycle, anchor and proration a plan version bills with (time zone: the contract's);
    ``every``: how many cycles one period spans (every 2 weeks, every 6 months)."""

    cycle: Literal["daily", "weekly", "monthly", "quarterly", "annual"] = "monthly"
    anchor: Literal["calendar", "anniversary"] = "calendar"
    proration: Literal["day", "second"] = "day"
    rounding: Literal["half_up", "half_even"] = "half_up"
    every: int = 1
    recognition: Literal["day", "second", "month", "month_prorated"] = "day"
    """How the journal spreads a recurring fee over its service (``core.revrec``)."""


@dataclass(frozen=True, slots=True)
class PlanVersion:
    """An immutable snapshot of a plan, in force from ``effective_from_us``."""

    plan: str
    version: int
    name: str
    currency: str
    effective_from_us: int
    billing: BillingTerms = field(default_factory=BillingTerms)
    fees: tuple[Fee, ...] = ()
    prices: tuple[Price, ...] = ()
    controls: tuple[ControlPolicy, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.plan}@{self.version}"


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-customer changes to a plan version: prices replace the plan's for the same
    meter and ``where``; fees replace by key or add; ``discount_percent`` takes a share off
    usage and fees."""

    prices: tuple[Price, ...] = ()
    fees: tuple[Fee, ...] = ()
    discount_percent: Decimal | None = None

    def is_empty(self) -> bool:
        return not self.prices and not self.fees and self.discount_percent is None


@dataclass(frozen=True, slots=True)
class Amendment:
    """From ``effective_us`` on, the contract is on ``plan`` (``version`` or floating) with
    ``overrides``. Amendments only add to history; they never edit it."""

    effective_us: int
    plan: str
    version: int | None = None
    overrides: Overrides = field(default_factory=Overrides)


@dataclass(frozen=True, slots=True)
class Contract:
    """A customer on a plan, in its own time zone, from ``start_us`` until ``end_us``."""

    customer: str
    plan: str
    start_us: int
    timezone: str = "UTC"
    version: int | None = None
    end_us: int | None = None
    overrides: Overrides = field(default_factory=Overrides)
    amendments: tuple[Amendment, ...] = ()
    credits: CreditTerms = field(default_factory=CreditTerms)
    controls: tuple[ControlPolicy, ...] = ()
    coupons: tuple[Redemption, ...] = ()
    """The coupon codes the contract redeemed, each from its instant (``core.coupons``)."""
    tax_jurisdiction: str | None = None
    """Where the customer is taxed (``DE``, ``US-CA``): picks the pricing file's rates."""
    tax_rates: tuple[str, ...] = ()
    """Names of rates that apply to this customer instead of its jurisdiction's."""
    trial: Trial | None = None
    """A free trial from ``start_us`` (``core.trials``)."""

    def trial_end_us(self) -> int | None:
        """When the contract's trial ends (None: no trial)."""
        return None if self.trial is None else self.trial.end_us(self.start_us)

    def active_at(self, instant_us: int) -> bool:
        return self.start_us <= instant_us and (self.end_us is None or instant_us < self.end_us)


@dataclass(frozen=True, slots=True)
class Configuration:
    """One revision of everything declared: meters, credit types, plan versions, contracts."""

    meters: tuple[Meter, ...] = ()
    credit_types: tuple[CreditType, ...] = ()
    plans: tuple[PlanVersion, ...] = ()
    contracts: tuple[Contract, ...] = ()
    costs: tuple[CostRate, ...] = ()
    semantics: Semantics = DEFAULT
    """Where vendors differ, the meaning this file chose (``core.semantics``)."""
    reporting: ReportingCurrency | None = None
    """The currency reports are read in and the rates into it (``core.exchange``)."""
    coupons: tuple[Coupon, ...] = ()
    tax_rates: tuple[TaxRate, ...] = ()
    tax_rounding: TaxRounding = "line"
    contract_semantics: tuple[tuple[str, Semantics], ...] = ()
    """The customers whose plan or contract overrides ``semantics``, and what they bill
    with (``semantics_for``)."""
    otel: OtelMapping = DEFAULT_MAPPING
    """How OTLP spans become usage events (``core.otel_spans``, the ``otel:`` block)."""

    def semantics_for(self, customer: str) -> Semantics:
        """What ``customer``'s contract bills with: the file's options, then its plan's and
        its own overrides."""
        return next(
            (found for who, found in self.contract_semantics if who == customer), self.semantics
        )

    def coupon(self, code: str) -> Coupon | None:
        return next((coupon for coupon in self.coupons if coupon.code == code), None)

    def tax_provider(self) -> TableTaxProvider:
        """The shipped provider over the declared rates: a contract's named rates, else
        its jurisdiction's."""
        by_jurisdiction: dict[str, tuple[TaxRate, ...]] = {}
        for rate in self.tax_rates:
            if rate.jurisdiction is not None:
                by_jurisdiction[rate.jurisdiction] = (
                    *by_jurisdiction.get(rate.jurisdiction, ()),
                    rate,
                )
        named = {rate.name: rate for rate in self.tax_rates}
        by_customer = {
            contract.customer: tuple(named[name] for name in contract.tax_rates if name in named)
            for contract in self.contracts
            if contract.tax_rates
        }
        return TableTaxProvider(by_jurisdiction, by_customer)

    def controls_for(self, contract: Contract, at_us: int) -> tuple[ControlPolicy, ...]:
        """The controls in force for ``contract`` at ``at_us``: its plan version's, with
        the contract's own replacing any of the same key."""
        plan = self.plan_version(contract.plan, contract.version, at_us)
        for amendment in contract.amendments:
            if amendment.effective_us <= at_us:
                plan = self.plan_version(amendment.plan, amendment.version, at_us) or plan
        own = {policy.key for policy in contract.controls}
        inherited = tuple(p for p in (plan.controls if plan else ()) if p.key not in own)
        return inherited + contract.controls

    def cost_rates(self, meter: str, at_us: int) -> tuple[CostRate, ...]:
        """The cost rates of ``meter`` in force at ``at_us``, most specific first."""
        rates = [r for r in self.costs if r.meter == meter and r.effective_from_us <= at_us]
        latest: dict[tuple[tuple[str, str], ...], CostRate] = {}
        for rate in sorted(rates, key=lambda r: r.effective_from_us):
            latest[rate.where] = rate
        return tuple(sorted(latest.values(), key=lambda r: -len(r.where)))

    def meter(self, key: str) -> Meter | None:
        return next((meter for meter in self.meters if meter.key == key), None)

    def credit_type(self, key: str) -> CreditType | None:
        return next((kind for kind in self.credit_types if kind.key == key), None)

    def contract(self, customer: str) -> Contract | None:
        return next((c for c in self.contracts if c.customer == customer), None)

    def plan_version(self, plan: str, version: int | None, at_us: int) -> PlanVersion | None:
        """The pinned ``version``, or the latest version of ``plan`` in force at ``at_us``."""
        versions = [p for p in self.plans if p.plan == plan]
        if version is not None:
            return next((p for p in versions if p.version == version), None)
        in_force = [p for p in versions if p.effective_from_us <= at_us]
        if not in_force:
            return None
        return max(in_force, key=lambda p: (p.effective_from_us, p.version))


@dataclass(frozen=True, slots=True)
class Terms:
    """What a contract bills with over one stretch of time: a plan version and overrides."""

    plan: PlanVersion
    overrides: Overrides

    def fees(self) -> tuple[Fee, ...]:
        replaced = {fee.key: fee for fee in self.overrides.fees}
        merged = [replaced.pop(fee.key, fee) for fee in self.plan.fees]
        return (*merged, *replaced.values())

    def prices(self) -> tuple[Price, ...]:
        """Override prices first, then the plan's not overridden; specific before general."""
        overridden = {(price.meter, price.where) for price in self.overrides.prices}
        kept = [p for p in self.plan.prices if (p.meter, p.where) not in overridden]
        ordered = [*self.overrides.prices, *kept]
        return tuple(sorted(ordered, key=lambda p: -len(p.where)))

    @property
    def discount_percent(self) -> Decimal | None:
        return self.overrides.discount_percent


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch ``[start_us, end_us)`` of one billing period under one set of terms."""

    start_us: int
    end_us: int
    terms: Terms
    begins_terms: bool
    """True when the terms start here (contract start, amendment or a trial's end), not at
    a period edge."""
    trial: TrialWindow | None = None
    """The contract's trial when this stretch lies within it."""
    timezone: str = "UTC"
    """The contract's time zone (its local days, e.g. for ``semantics.gauge: day``)."""


class TermsError(MeterlineError, ValueError):
    """A contract refers to a plan or version that is not in force when it is needed."""

    code = "invalid_terms"
    http_status = 422


def terms_at(
    configuration: Configuration, contract: Contract, at_us: int, period_start_us: int
) -> Terms:
    """The terms in force at ``at_us``; floating plans resolve at ``period_start_us``."""
    plan, version, overrides = contract.plan, contract.version, contract.overrides
    for amendment in sorted(contract.amendments, key=lambda a: a.effective_us):
        if amendment.effective_us <= at_us:
            plan, version, overrides = amendment.plan, amendment.version, amendment.overrides
    resolve_at = max(period_start_us, _terms_start(contract, at_us))
    found = configuration.plan_version(plan, version, resolve_at)
    if found is None:
        wanted = plan if version is None else f"{plan}@{version}"
        raise TermsError(f"contract {contract.customer}: no version of plan {wanted} is in force")
    return Terms(found, overrides)


def _terms_start(contract: Contract, at_us: int) -> int:
    starts = [a.effective_us for a in contract.amendments if a.effective_us <= at_us]
    return max([contract.start_us, *starts])


def segments(
    configuration: Configuration, contract: Contract, period_start_us: int, period_end_us: int
) -> list[Segment]:
    """The contract's terms across ``[period_start_us, period_end_us)``, split at amendments,
    clipped to the contract's active range (empty when it is not active in the period)."""
    start = max(period_start_us, contract.start_us)
    end = period_end_us if contract.end_us is None else min(period_end_us, contract.end_us)
    if start >= end:
        return []
    trial_end = contract.trial_end_us()
    changes = {a.effective_us for a in contract.amendments}
    starts_of_terms = {contract.start_us, *changes}
    if contract.trial is not None and trial_end is not None:
        changes.add(trial_end)  # rating restarts at a conversion (core.trials)
        if contract.trial.frees_fees:
            starts_of_terms.add(trial_end)
    edges = [start, *sorted(c for c in changes if start < c < end), end]
    result = []
    for low, high in pairwise(edges):
        terms = terms_at(configuration, contract, low, period_start_us)
        trial = None
        if contract.trial is not None and trial_end is not None and low < trial_end:
            trial = TrialWindow(contract.trial, contract.start_us)
        begins = low in starts_of_terms
        result.append(Segment(low, high, terms, begins, trial, contract.timezone))
    return result
