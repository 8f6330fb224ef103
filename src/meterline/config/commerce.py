"""The pricing file's coupons, tax and trials: the top-level ``coupons`` and ``tax``
sections, and a contract's ``coupons``, ``tax`` and ``trial``.

```yaml
coupons:
  - {code: LAUNCH25, name: Launch, percent_off: 25, duration: repeating,
     duration_periods: 3, max_redemptions: 100, redeem_by: 2027-01-01}
  - {code: FIVE, name: Five off usage, amount_off: "5.00", currency: USD,
     applies_to: usage, meters: [tokens]}
tax:
  rounding: line            # or invoice
  rates:
    - {name: VAT DE, percent: 19, inclusive: true, jurisdiction: DE}
    - {name: CA sales tax, percent: "7.25", jurisdiction: US-CA}
contracts:
  - customer: acme
    ...
    coupons: [LAUNCH25, {code: FIVE, redeemed: 2026-11-15}]
    tax: {jurisdiction: DE}     # or {rates: [VAT DE]}
    trial: {days: 14, applies_to: both, usage_cap: "10.00", on_end: convert, notice_days: 3}
```

The rules behind them live in ``core.coupons``, ``core.tax`` and ``core.trials``; this
module reads and checks the declarations, every problem by path."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from meterline.config.fields import FieldReader, raw_keys, read_currency, unique
from meterline.core.coupons import (
    COUPON_DURATIONS,
    COUPON_SCOPES,
    Coupon,
    Redemption,
    coupon_errors,
    redemption_errors,
)
from meterline.core.exchange import ExchangeRate, ReportingCurrency, exchange_errors, sorted_rates
from meterline.core.model import Contract
from meterline.core.tax import TAX_ROUNDINGS, TaxRate, TaxRounding, tax_rate_errors
from meterline.core.trials import (
    NOTICE_DAYS_DEFAULT,
    TRIAL_ENDS,
    TRIAL_SCOPES,
    Trial,
    trial_errors,
)

COUPON_KEYS = (
    "code",
    "name",
    "percent_off",
    "amount_off",
    "currency",
    "applies_to",
    "meters",
    "duration",
    "duration_periods",
    "duration_months",
    "max_redemptions",
    "redeem_by",
)
CONTRACT_COMMERCE_KEYS = ("coupons", "tax", "trial")
"""The keys of a contract this module reads."""


def read_coupons(reader: FieldReader, value: Any, path: str) -> tuple[Coupon, ...]:
    """The top-level ``coupons``; each code once."""
    coupons = []
    raw = reader.items(value, path)
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        entry = reader.mapping(item, where, COUPON_KEYS, ("code",))
        code = reader.text(entry.get("code"), f"{where}.code")
        meters = tuple(str(meter) for meter in reader.items(entry.get("meters"), f"{where}.meters"))
        amount_off = reader.amount(entry.get("amount_off"), f"{where}.amount_off")
        currency = None
        if entry.get("currency") is not None:
            currency = read_currency(reader, entry.get("currency"), f"{where}.currency")
        coupon = Coupon(
            code or "",
            reader.text(entry.get("name"), f"{where}.name", code) or "",
            reader.amount(entry.get("percent_off"), f"{where}.percent_off"),
            amount_off,
            currency,
            reader.choice(entry.get("applies_to"), f"{where}.applies_to", COUPON_SCOPES, "invoice"),  # type: ignore[arg-type]
            meters,
            reader.choice(entry.get("duration"), f"{where}.duration", COUPON_DURATIONS, "once"),  # type: ignore[arg-type]
            reader.integer(entry.get("duration_periods"), f"{where}.duration_periods"),
            reader.integer(entry.get("max_redemptions"), f"{where}.max_redemptions"),
            reader.instant(entry.get("redeem_by"), f"{where}.redeem_by", "UTC"),
            duration_months=reader.integer(
                entry.get("duration_months"), f"{where}.duration_months"
            ),
        )
        problems = coupon_errors(coupon, where)
        reader.fail_all(problems)
        if code is not None and not problems:
            coupons.append(coupon)
    unique(reader, raw_keys(raw, path, "code"), "coupon code")
    return tuple(coupons)


def read_tax(reader: FieldReader, value: Any, path: str) -> tuple[tuple[TaxRate, ...], TaxRounding]:
    """The top-level ``tax``: its rates (each name once) and rounding rule."""
    section = reader.mapping(value or {}, path, ("rates", "rounding"))
    rounding = reader.choice(section.get("rounding"), f"{path}.rounding", TAX_ROUNDINGS, "line")
    rates = []
    raw = reader.items(section.get("rates"), f"{path}.rates")
    for index, item in enumerate(raw):
        where = f"{path}.rates[{index}]"
        entry = reader.mapping(
            item, where, ("name", "percent", "inclusive", "jurisdiction"), ("name", "percent")
        )
        name = reader.text(entry.get("name"), f"{where}.name")
        percent = reader.amount(entry.get("percent"), f"{where}.percent")
        inclusive = entry.get("inclusive", False)
        if not isinstance(inclusive, bool):
            reader.fail(f"{where}.inclusive", "must be true or false")
            inclusive = False
        jurisdiction = reader.text(entry.get("jurisdiction"), f"{where}.jurisdiction")
        if name is None or percent is None:
            continue
        rate = TaxRate(name, percent, inclusive, jurisdiction)
        problems = tax_rate_errors(rate, where)
        reader.fail_all(problems)
        if not problems:
            rates.append(rate)
    unique(reader, raw_keys(raw, f"{path}.rates", "name"), "tax rate")
    return tuple(rates), rounding  # type: ignore[return-value]


def read_reporting(reader: FieldReader, value: Any, path: str) -> ReportingCurrency | None:
    """The top-level ``reporting``: the reporting currency and its effective-dated rates."""
    if value is None:
        return None
    section = reader.mapping(value, path, ("currency", "rates"), ("currency",))
    currency = read_currency(reader, section.get("currency"), f"{path}.currency")
    rates = []
    for index, item in enumerate(reader.items(section.get("rates"), f"{path}.rates")):
        where = f"{path}.rates[{index}]"
        entry = reader.mapping(
            item, where, ("currency", "rate", "effective_from"), ("currency", "rate")
        )
        of = read_currency(reader, entry.get("currency"), f"{where}.currency")
        rate = reader.amount(entry.get("rate"), f"{where}.rate")
        since = entry.get("effective_from")
        start = 0 if since is None else reader.instant(since, f"{where}.effective_from", "UTC")
        if of is not None and rate is not None and start is not None:
            rates.append(ExchangeRate(of, rate, start))
    if currency is None:
        return None
    reader.fail_all(exchange_errors(ReportingCurrency(currency, tuple(rates)), path))
    return ReportingCurrency(currency, sorted_rates(rates))


def read_contract_commerce(
    reader: FieldReader, item: dict[str, Any], path: str, timezone: str, start: int | None
) -> dict[str, Any]:
    """A contract's ``coupons``, ``tax`` and ``trial``, as ``Contract`` fields."""
    fields: dict[str, Any] = {}
    redemptions = []
    for index, raw in enumerate(reader.items(item.get("coupons"), f"{path}.coupons")):
        where = f"{path}.coupons[{index}]"
        if isinstance(raw, str):
            raw = {"code": raw}
        entry = reader.mapping(raw, where, ("code", "redeemed"), ("code",))
        code = reader.text(entry.get("code"), f"{where}.code")
        redeemed = reader.instant(entry.get("redeemed"), f"{where}.redeemed", timezone)
        at = redeemed if redeemed is not None else start
        if code is not None and at is not None:
            redemptions.append(Redemption(code, at))
    fields["coupons"] = tuple(redemptions)
    tax = reader.mapping(item.get("tax") or {}, f"{path}.tax", ("jurisdiction", "rates"))
    fields["tax_jurisdiction"] = reader.text(tax.get("jurisdiction"), f"{path}.tax.jurisdiction")
    fields["tax_rates"] = tuple(
        str(name) for name in reader.items(tax.get("rates"), f"{path}.tax.rates")
    )
    if item.get("trial") is not None:
        fields["trial"] = _trial(reader, item["trial"], f"{path}.trial")
    return fields


def _trial(reader: FieldReader, value: Any, path: str) -> Trial | None:
    keys = ("days", "applies_to", "usage_cap", "on_end", "notice_days")
    entry = reader.mapping(value, path, keys, ("days",))
    days = reader.integer(entry.get("days"), f"{path}.days")
    if days is None:
        return None
    trial = Trial(
        days,
        reader.choice(entry.get("applies_to"), f"{path}.applies_to", TRIAL_SCOPES, "both"),  # type: ignore[arg-type]
        reader.amount(entry.get("usage_cap"), f"{path}.usage_cap"),
        reader.choice(entry.get("on_end"), f"{path}.on_end", TRIAL_ENDS, "convert"),  # type: ignore[arg-type]
        reader.integer(entry.get("notice_days"), f"{path}.notice_days", NOTICE_DAYS_DEFAULT),  # type: ignore[arg-type]
    )
    problems = trial_errors(trial, path)
    reader.fail_all(problems)
    return None if problems else trial


def with_trial_end(contract: Contract) -> Contract:
    """A contract whose trial cancels at its end ends then (unless it ends before)."""
    trial_end = contract.trial_end_us()
    if contract.trial is None or contract.trial.on_end != "cancel" or trial_end is None:
        return contract
    if contract.end_us is not None and contract.end_us <= trial_end:
        return contract
    return replace(contract, end_us=trial_end)


def check_references(
    reader: FieldReader,
    contracts: list[tuple[str, Contract]],
    coupons: tuple[Coupon, ...],
    rates: tuple[TaxRate, ...],
) -> None:
    """Every contract's coupon codes and tax rate names are declared, and no code is
    redeemed past its limit or its last day (contracts counted in file order)."""
    redemptions = [
        (f"{path}.coupons[{index}]", redemption)
        for path, contract in contracts
        for index, redemption in enumerate(contract.coupons)
    ]
    reader.fail_all(redemption_errors({c.code: c for c in coupons}, redemptions))
    names = {rate.name for rate in rates}
    jurisdictions = {rate.jurisdiction for rate in rates}
    for path, contract in contracts:
        for index, name in enumerate(contract.tax_rates):
            if name not in names:
                reader.fail(f"{path}.tax.rates[{index}]", f"no tax rate is named {name!r}")
        if contract.tax_jurisdiction is not None and contract.tax_jurisdiction not in jurisdictions:
            reader.fail(
                f"{path}.tax.jurisdiction",
                f"no tax rate is declared for {contract.tax_jurisdiction!r}",
            )
