"""One truth: raw events -> rated usage -> invoices -> journal -> reports, proven to agree.

Each step is re-derived from the one before it, not read from a cache, and its totals
are printed side by side with the step it must equal:

1. **events**: the ledger's events, the hash chain re-walked; the events behind finalized
   usage lines (their lineage counts) are all in it.
2. **rated usage**: the finalized periods re-rated from those events (the same rating an
   audit does): per invoice, the slices' usage revenue = the invoice's usage lines, and
   the slices' events = the lines' lineage events.
3. **invoices**: per invoice, the sum of its lines = its total.
4. **journal**: every entry balances; accounts receivable = invoice totals - credit notes
   - refunds of voided grants; usage revenue recognized from invoice lines = those lines;
   unbilled receivable at every period end = that period's invoices (``finance.unbilled``).
5. **reports**: the revenue waterfall's total = the revenue accounts' balances; deferred
   revenue's roll-forward from the first day closes at the trial balance's deferred
   balance; billed = recognized + deferred - unbilled.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, localcontext
from typing import Any

from meterline.billing.service import Billing
from meterline.core.books import USAGE_KINDS
from meterline.core.documents import Invoice, MeterUsageLine, PrepaidLine
from meterline.core.economics import UsageSlice
from meterline.core.journal import (
    CHART,
    DEFERRED,
    RECEIVABLE,
    REVENUE_USAGE,
    TAX_PAYABLE,
    UNBILLED,
    rollforward,
)
from meterline.core.money import MONEY_CONTEXT
from meterline.core.partitions import partition_of
from meterline.core.periods import local_date
from meterline.finance.books import Books, build_books, collected
from meterline.finance.economics import usage_slices
from meterline.finance.unbilled import IssuedNote, period_ends

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Check:
    """One figure of one step, against what the step before it says it must be."""

    step: str
    figure: str
    value: str
    expected: str
    source: str
    agrees: bool


@dataclass(slots=True)
class TruthReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return all(check.agrees for check in self.checks)

    def add(self, step: str, figure: str, value: Any, expected: Any, source: str) -> None:
        """Amounts agree when they are equal as numbers (0 and 0.00 are one amount)."""
        if isinstance(value, int | Decimal) and isinstance(expected, int | Decimal):
            agrees = Decimal(value) == Decimal(expected)
        else:
            agrees = str(value) == str(expected)
        self.checks.append(Check(step, figure, str(value), str(expected), source, agrees))

    def as_dict(self) -> dict[str, Any]:
        return {
            "agrees": self.agrees,
            "checks": [
                {
                    "step": c.step,
                    "figure": c.figure,
                    "value": c.value,
                    "expected": c.expected,
                    "source": c.source,
                    "agrees": c.agrees,
                }
                for c in self.checks
            ],
        }


def one_truth(billing: Billing, at_us: int | None = None) -> TruthReport:
    """Re-derive every step from the raw events and compare the totals."""
    at = billing.clock() if at_us is None else at_us
    report = TruthReport()
    chain = billing.ledger.verify()
    head = billing.ledger_cut()
    report.add(
        "events",
        f"hash chain ({chain.records} events)",
        "intact" if chain.intact else f"broken at {chain.bad_sequence}: {chain.problem}",
        "intact",
        "re-walked",
    )
    invoices = [s for s in billing.store.invoices() if s.finalized_at_us <= at]
    documents = {s.invoice_id: s.record for s in invoices}
    usage_lines: dict[str, list[MeterUsageLine]] = {
        number: [line for line in document.lines if isinstance(line, MeterUsageLine)]
        for number, document in documents.items()
    }
    lineage_events = sum(line.lineage.events for lines in usage_lines.values() for line in lines)
    partitions = head.partitions
    outside = [
        f"{document.customer} sequence {line.lineage.last_sequence}"
        for number, document in documents.items()
        for line in usage_lines.get(number, [])
        if line.lineage.last_sequence is not None
        and not head.covers(
            partition_of(document.customer, partitions), line.lineage.last_sequence
        )
    ]
    report.add(
        "events",
        "last event behind each usage line (in its customer's partition)",
        "in ledger" if not outside else f"outside the ledger: {outside[0]}",
        "in ledger",
        f"ledger cut {head}",
    )
    slices = [s for s in usage_slices(billing, at, recognized=False) if s.invoice in documents]
    _rated(report, slices, usage_lines, lineage_events)
    _invoices(report, documents)
    books = build_books(billing, at)
    _journal(report, billing, books, documents, at)
    _reports(report, books)
    return report


def _rated(
    report: TruthReport,
    slices: list[UsageSlice],
    usage_lines: dict[str, list[MeterUsageLine]],
    lineage_events: int,
) -> None:
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    events = 0
    with localcontext(MONEY_CONTEXT):
        for item in slices:
            if item.meter.startswith("("):
                continue  # fees, commitments, discounts: not usage
            revenue[item.invoice] += item.list_price_charges
            if item.line:
                events += item.events
        billed = {
            number: sum((Decimal(line.amount) for line in lines), ZERO)
            for number, lines in usage_lines.items()
        }
    differing = [n for n in billed if revenue.get(n, ZERO) != billed[n]]
    report.add(
        "rated usage",
        "usage revenue, all invoices",
        sum(revenue.values(), ZERO),
        sum(billed.values(), ZERO),
        "invoices' usage lines",
    )
    report.add(
        "rated usage",
        "invoices whose usage lines differ from a re-rating",
        ", ".join(differing) or "none",
        "none",
        "per invoice",
    )
    report.add("rated usage", "events behind usage lines", events, lineage_events, "lines' lineage")


def _invoices(report: TruthReport, documents: dict[str, Invoice]) -> None:
    with localcontext(MONEY_CONTEXT):
        lines = sum(
            (Decimal(line.amount) for d in documents.values() for line in d.lines),
            ZERO,
        )
        totals = sum((Decimal(d.total) for d in documents.values()), ZERO)
    report.add("invoices", f"sum of lines ({len(documents)} invoices)", lines, totals, "totals")


def _journal(
    report: TruthReport,
    billing: Billing,
    books: Books,
    documents: dict[str, Invoice],
    at: int,
) -> None:
    balances = books.trial_balance()
    with localcontext(MONEY_CONTEXT):
        notes = sum(
            (
                Decimal(n.record.total)
                for n in billing.store.credit_notes()
                if n.created_at_us <= at and n.invoice_id in documents
            ),
            ZERO,
        )
        totals = sum((Decimal(d.total) for d in documents.values()), ZERO)
        refunds = sum((account.reversed for account in books.grants.values()), ZERO)
        receivable = sum((v for (a, _), v in balances.items() if a == RECEIVABLE), ZERO)
        receivable += collected(books.entries)  # before payments, refunds and write-offs
        usage_causes = {
            # a netted threshold surplus moves to deferred revenue (``carried``) and is
            # released from there (``from_period``), not from usage revenue
            f"invoice:{number}/line:{line.number}": Decimal(line.amount)
            - Decimal(line.carried or 0)
            for number, d in documents.items()
            for line in d.lines
            if line.kind in USAGE_KINDS
            and line.kind != "threshold"
            and not (isinstance(line, PrepaidLine) and line.from_period)
        }
        recognized = sum(
            (
                -posting.amount
                for item in books.entries
                if item.cause in usage_causes
                for posting in item.postings
                if posting.account == REVENUE_USAGE
            ),
            ZERO,
        )
        unbalanced = sum(
            1
            for item in books.entries
            if any(
                sum((p.amount for p in item.postings if p.currency == c), ZERO) != 0
                for c in {p.currency for p in item.postings}
            )
        )
    report.add("journal", f"unbalanced entries (of {len(books.entries)})", unbalanced, 0, "")
    report.add(
        "journal",
        "accounts receivable",
        receivable,
        totals + notes - refunds,
        "invoices + credit notes - voided grants' refunds",
    )
    report.add(
        "journal",
        "usage revenue from invoice lines",
        recognized,
        sum(usage_causes.values(), ZERO),
        "invoices' usage lines",
    )
    ends = period_ends(books.entries, documents.values(), _issued_notes(billing, documents, at))
    differing = [end for end in ends if not end.agrees]
    report.add(
        "journal",
        f"unbilled receivable at period ends ({len(ends)} customer period ends)",
        ", ".join(
            f"{end.customer} {end.day} {end.unbilled} {end.currency}" for end in differing[:3]
        )
        or "equal",
        ", ".join(
            f"{end.customer} {end.day} {end.invoiced} {end.currency}" for end in differing[:3]
        )
        or "equal",
        "that period's invoices",
    )


def _issued_notes(
    billing: Billing, documents: dict[str, Invoice], at: int
) -> list[IssuedNote]:
    """The credit notes issued by ``at``, each with its invoice and its day (in the
    invoice's time zone, as the journal dates it)."""
    return [
        IssuedNote(
            n.record,
            documents[n.invoice_id],
            local_date(documents[n.invoice_id].timezone or "UTC", n.created_at_us),
        )
        for n in billing.store.credit_notes()
        if n.created_at_us <= at and n.invoice_id in documents
    ]


def _reports(report: TruthReport, books: Books) -> None:
    balances = books.trial_balance()
    with localcontext(MONEY_CONTEXT):
        revenue = -sum(
            (v for (a, _), v in balances.items() if CHART[a] in ("revenue", "contra_revenue")),
            ZERO,
        )
        waterfall = sum(books.waterfall().values(), ZERO)
        report.add("reports", "revenue waterfall total", waterfall, revenue, "trial balance")
        if books.entries:
            first: date = books.entries[0].day
            last: date = books.entries[-1].day
            for currency in books.currencies():
                for account in DEFERRED:
                    rolled = rollforward(books.entries, account, currency, first, last)
                    owed = -balances.get((account, currency), ZERO)
                    report.add(
                        "reports",
                        f"{account} roll-forward closing ({currency})",
                        rolled.closing,
                        owed,
                        "trial balance",
                    )
        deferred = -sum((v for (a, _), v in balances.items() if a in DEFERRED), ZERO)
        unbilled = sum((v for (a, _), v in balances.items() if a == UNBILLED), ZERO)
        billed = sum((v for (a, _), v in balances.items() if a == RECEIVABLE), ZERO)
        billed += collected(books.entries)  # what was billed, collected or not
        tax = -sum((v for (a, _), v in balances.items() if a == TAX_PAYABLE), ZERO)
        report.add(
            "reports",
            "billed = recognized + deferred - unbilled" + (" + tax payable" if tax else ""),
            revenue + deferred - unbilled + tax,
            billed,
            "accounts receivable",
        )
