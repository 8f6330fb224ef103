"""``meterline credits show|grant|void|adjust``: a customer's credit grants and their
ledger, each one call into ``meterline.billing.service``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from meterline.cli.options import DEFAULT_DB, DbOption, console, errors, fail, instant

if TYPE_CHECKING:
    from meterline.billing.service import Billing

credits_app = typer.Typer(
    help="Credit balances and ledger; grant, void and adjust credits.", no_args_is_help=True
)


def _plan_currency(billing: Billing, customer: str) -> str | None:
    """The currency ``customer``'s plan bills in now (what its grants are paid in), for
    display; None when it has no terms in force."""
    from meterline.core.model import TermsError, terms_at

    loaded = billing.load()
    contract = None if loaded is None else loaded.configuration.contract(customer)
    if loaded is None or contract is None:
        return None
    now = billing.clock()
    try:
        return terms_at(loaded.configuration, contract, now, now).plan.currency
    except TermsError:
        return None


@credits_app.command("show")
def credits_show(
    customer: str,
    db: DbOption = DEFAULT_DB,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="The ledger as of this instant (default now).")
    ] = None,
    entries: Annotated[bool, typer.Option(help="Also list every ledger entry.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ledger as JSON.")] = False,
) -> None:
    """A customer's grants with their balances (sums of entries) and per-unit totals."""
    from meterline.billing.render import credit_totals_table, credits_table
    from meterline.billing.service import BillingError, open_billing
    from meterline.core.money import display_amount

    with open_billing(db) as billing:
        try:
            report = billing.credits(customer, instant(as_of, "--as-of"))
        except BillingError as error:
            raise fail(str(error), 1) from None
        currency = _plan_currency(billing, customer)
    if as_json:
        print(json.dumps(report))
        return
    console.print(credits_table(report, currency))
    console.print(credit_totals_table(report))
    if entries:
        for entry in report["entries"]:
            amount = display_amount(entry["amount"], entry["unit"])
            console.print(
                f"{entry['at']}  {entry['kind']:<8} {amount:>14} {entry['unit']:<8}"
                f" {entry['debit']} <- {entry['credit']}  {entry['reason']}"
            )


@credits_app.command("grant")
def credits_grant(
    customer: str,
    credit_type: Annotated[str, typer.Option("--type", help="Credit type or currency.")],
    amount: Annotated[str, typer.Option(help="Units granted (exact decimal).")],
    reason: Annotated[str, typer.Option(help="Why (kept on the ledger).")],
    db: DbOption = DEFAULT_DB,
    paid: Annotated[str, typer.Option(help="Price paid (invoiced now); 0: free.")] = "0",
    priority: Annotated[int, typer.Option(help="Lower burns first.")] = 50,
    effective: Annotated[str | None, typer.Option(help="From (default now).")] = None,
    expires: Annotated[str | None, typer.Option(help="Until (default never).")] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="A meter it may pay for (repeat); default all.")
    ] = None,
) -> None:
    """Grant credit to a customer; a paid grant is invoiced at once."""
    from meterline.billing.service import BillingError, open_billing
    from meterline.core.money import MoneyError, to_bounded_amount

    try:
        units = to_bounded_amount(amount, "--amount")
        price = to_bounded_amount(paid, "--paid")
    except MoneyError as error:
        raise fail(str(error)) from None
    with open_billing(db) as billing:
        try:
            stored, invoice = billing.grant(
                customer,
                credit_type,
                units,
                reason,
                paid=price,
                priority=priority,
                effective_us=instant(effective, "--effective"),
                expires_us=instant(expires, "--expires"),
                scope=tuple(scope or ()),
                source="cli",
            )
        except BillingError as error:
            raise fail(str(error), 1) from None
    print(f"{stored.grant_id}\t{customer}\t{units} {credit_type}")
    if invoice is not None:
        errors.print(f"invoiced on {invoice.invoice_id}")


@credits_app.command("void")
def credits_void(
    customer: str,
    grant: str,
    reason: Annotated[str, typer.Option(help="Why (kept on the ledger).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Void a grant from now on; its balance leaves to voided (nothing is deleted)."""
    from meterline.billing.service import BillingError, open_billing

    with open_billing(db) as billing:
        try:
            billing.void_grant(customer, grant, reason)
        except BillingError as error:
            raise fail(str(error), 1) from None
    print(f"voided {grant}")


@credits_app.command("adjust")
def credits_adjust(
    customer: str,
    grant: str,
    amount: Annotated[str, typer.Option(help="Signed units to add or take.")],
    reason: Annotated[str, typer.Option(help="Why (kept on the ledger).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Adjust a grant's balance by hand, with a reason."""
    from meterline.billing.service import BillingError, open_billing
    from meterline.core.money import MoneyError, to_bounded_amount

    try:
        units = to_bounded_amount(amount, "--amount")
    except MoneyError as error:
        raise fail(str(error)) from None
    with open_billing(db) as billing:
        try:
            billing.adjust_grant(customer, grant, units, reason)
        except BillingError as error:
            raise fail(str(error), 1) from None
    print(f"adjusted {grant} by {units}")
