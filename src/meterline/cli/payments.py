"""``meterline payments record|refund|write-off|list|aging|overdue``: payments and
receivables, each one call into ``meterline.billing.service`` (``billing.payments``)."""

from __future__ import annotations

import json
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterline.cli.options import DEFAULT_DB, DbOption, console, errors, fail

if TYPE_CHECKING:
    from meterline.billing.payments import PaymentRequest, Recorded

payments_app = typer.Typer(
    help="Payments, refunds and write-offs against invoices; receivables and their aging.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
NetDaysOption = Annotated[
    int, typer.Option("--net-days", min=0, help="Days after issue an invoice is due.")
]
OnOption = Annotated[
    str | None, typer.Option("--on", help="The date (YYYY-MM-DD, UTC; default today).")
]


def _day(value: str | None, today_us: int) -> date:
    from meterline.core.periods import local_date

    if value is None:
        return local_date("UTC", today_us)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise fail(f"--on: {value!r} is not a date like 2026-11-30") from None


def _record(db: str, request: PaymentRequest, as_json: bool) -> None:
    from meterline.billing.payments import recorded_document
    from meterline.billing.service import BillingError, open_billing
    from meterline.ledger.billing_records import BillingConflict

    with open_billing(db) as billing:
        try:
            done: Recorded = billing.record_payment(request)
        except (BillingError, BillingConflict) as error:
            raise fail(str(error), 1) from None
    stored = done.record
    if as_json:
        print(json.dumps(recorded_document(done)))
        return
    print(
        f"{stored.payment_id}\t{stored.invoice_id}\t{stored.kind}\t{stored.amount}"
        f" {stored.currency}\t{done.standing.state}\topen {done.standing.open}"
    )
    if not done.created:
        errors.print("already recorded (the same request): nothing changed")


def _amount(text: str) -> Any:
    from meterline.core.money import MoneyError, to_bounded_amount

    try:
        return to_bounded_amount(text, "--amount")
    except MoneyError as error:
        raise fail(str(error)) from None


@payments_app.command("record")
def payments_record(
    invoice: str,
    payment_id: Annotated[str, typer.Option("--id", help="Your payment id (idempotency).")],
    amount: Annotated[str, typer.Option(help="Amount received (exact decimal).")],
    db: DbOption = DEFAULT_DB,
    currency: Annotated[str | None, typer.Option(help="Must be the invoice's.")] = None,
    overpayment: Annotated[
        bool, typer.Option(help="Hold what exceeds the open amount as credit balance.")
    ] = False,
    method: Annotated[str, typer.Option(help="How it was paid (wire, card...).")] = "",
    reference: Annotated[str, typer.Option(help="The bank's or processor's reference.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Record a full or partial payment of an invoice."""
    from meterline.billing.payments import PaymentRequest

    request = PaymentRequest(
        invoice, payment_id, "payment", _amount(amount), currency, overpayment, method, reference
    )
    _record(db, request, as_json)


@payments_app.command("refund")
def payments_refund(
    invoice: str,
    payment_id: Annotated[str, typer.Option("--id", help="Your refund id (idempotency).")],
    amount: Annotated[str, typer.Option(help="Amount returned (exact decimal).")],
    db: DbOption = DEFAULT_DB,
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    reference: Annotated[str, typer.Option(help="The bank's or processor's reference.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Refund money paid on an invoice (never more than was paid)."""
    from meterline.billing.payments import PaymentRequest

    request = PaymentRequest(
        invoice, payment_id, "refund", _amount(amount), reference=reference, reason=reason
    )
    _record(db, request, as_json)


@payments_app.command("write-off")
def payments_write_off(
    invoice: str,
    reason: Annotated[str, typer.Option(help="Why it cannot be collected.")],
    db: DbOption = DEFAULT_DB,
    payment_id: Annotated[
        str, typer.Option("--id", help="An id (default write-off:<invoice>).")
    ] = "",
    as_json: JsonOption = False,
) -> None:
    """Write off what is open on an invoice: it becomes uncollectible (bad debt)."""
    from meterline.billing.payments import PaymentRequest

    _record(db, PaymentRequest(invoice, payment_id, "write_off", reason=reason), as_json)


@payments_app.command("list")
def payments_list(
    db: DbOption = DEFAULT_DB,
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
    records: Annotated[
        bool, typer.Option(help="List the payment records instead of the invoices.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Every invoice's state (open, partially paid, paid, void, uncollectible) and
    figures; with --records, every payment, refund and write-off."""
    from meterline.billing.payment_tables import payments_table, standings_table
    from meterline.billing.payments import record_document, standing_document
    from meterline.billing.service import open_billing

    with open_billing(db) as billing:
        if records:
            found = billing.payment_records.payments(customer)
            if as_json:
                print(json.dumps([record_document(item) for item in found]))
            else:
                console.print(payments_table(found))
            return
        standings = [standing for standing, _ in billing.receivables(customer)]
    if as_json:
        print(json.dumps([standing_document(item) for item in standings]))
        return
    console.print(standings_table(standings))


@payments_app.command("aging")
def payments_aging(
    db: DbOption = DEFAULT_DB,
    on: OnOption = None,
    net_days: NetDaysOption = 30,
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
    as_json: JsonOption = False,
) -> None:
    """What is open at the end of a day, by customer and days past due: current, 1-30,
    31-60, 61-90, 90+ (due --net-days after issue)."""
    from meterline.billing.payment_tables import aging_table
    from meterline.billing.payments import aging_document
    from meterline.billing.service import open_billing

    with open_billing(db) as billing:
        day = _day(on, billing.clock())
        rows = billing.aging(day, net_days, customer)
    if as_json:
        body = {
            "on": day.isoformat(),
            "net_days": net_days,
            "rows": [aging_document(r) for r in rows],
        }
        print(json.dumps(body))
        return
    console.print(aging_table(rows, day))


@payments_app.command("overdue")
def payments_overdue(
    days: Annotated[int, typer.Option(min=0, help="Overdue past this many days past due.")],
    db: DbOption = DEFAULT_DB,
    on: OnOption = None,
    net_days: NetDaysOption = 30,
    as_json: JsonOption = False,
) -> None:
    """The invoices open more than --days past due, and their customers (the overdue
    policy's input: alert or block them)."""
    from meterline.billing.payments import overdue_document
    from meterline.billing.service import open_billing

    with open_billing(db) as billing:
        day = _day(on, billing.clock())
        found = billing.overdue(day, days, net_days)
    rows = [overdue_document(item) for item in found]
    if as_json:
        print(json.dumps({"on": day.isoformat(), "days": days, "overdue": rows}))
        return
    for row in rows:
        print(
            f"{row['customer']}\t{row['invoice']}\t{row['open']} {row['currency']}"
            f"\tdue {row['due']}\t{row['days_past_due']} days past due"
        )


@payments_app.command("access")
def payments_access(
    customer: str,
    days: Annotated[int, typer.Option(min=0, help="Block or alert past this many days.")],
    db: DbOption = DEFAULT_DB,
    action: Annotated[str, typer.Option(help="block or alert.")] = "block",
    feature: Annotated[str | None, typer.Option(help="Ask for one feature.")] = None,
    on: OnOption = None,
    net_days: NetDaysOption = 30,
) -> None:
    """The overdue policy's access answer for a customer (JSON; exit 3 when denied, as
    ``controls access``)."""
    from meterline.billing.service import open_billing
    from meterline.core.payments import OverduePolicy, PaymentError

    try:
        policy = OverduePolicy(f"overdue-{days}-days", action, days, net_days)  # type: ignore[arg-type]
    except PaymentError as error:
        raise fail(str(error)) from None
    with open_billing(db) as billing:
        answer = billing.overdue_access(customer, policy, _day(on, billing.clock()), feature)
    print(json.dumps(answer))
    if not answer["allowed"]:
        raise typer.Exit(3)
