"""The exported tables: each one's name, description, documented columns (with their
DuckDB types; money is ``DECIMAL(38,10)``), the reader of its rows and its order, in
export order (``TABLES``), and the check of a list of table names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from meterline.billing.bucket_checks import bucket_table_rows
from meterline.billing.service import Billing
from meterline.finance.export_errors import ExportError
from meterline.finance.table_rows import (
    credit_note_rows,
    event_rows,
    invoice_rows,
    journal_rows,
    line_rows,
    proposal_rows,
    revision_rows,
    usage_rows,
)

MONEY = "DECIMAL(38,10)"
"""Money and quantities: 28 digits before the point, 10 after (exact, never a float)."""
MONEY_PLACES = 10
MONEY_INTEGER_DIGITS = 28


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    """A DuckDB type: BIGINT, INTEGER, VARCHAR, BOOLEAN, DATE, TIMESTAMPTZ, JSON or MONEY."""
    description: str


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    rows: Callable[[Billing, int], Iterable[Sequence[Any]]]
    """The table's rows as of an instant, each a tuple in column order: instants as
    integer microseconds, money as ``Decimal`` or its exact text."""
    order_by: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


def _columns(*specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, kind, description) for name, kind, description in specs)


TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        Table(
            "events",
            "One row per ledger event, in (partition, sequence) order, exactly as stored and"
            " hashed.",
            _columns(
                (
                    "sequence",
                    "BIGINT",
                    "Position in its partition (1, 2, ...); (partition, sequence) is unique.",
                ),
                ("event_id", "VARCHAR", "The producer's id; (customer, event_id) is unique."),
                ("customer", "VARCHAR", "The customer the event is metered for."),
                ("type", "VARCHAR", "The event type (llm.completion, ...)."),
                ("timestamp", "TIMESTAMPTZ", "When it happened (UTC, microseconds)."),
                ("received_at", "TIMESTAMPTZ", "When the ledger stored it (UTC)."),
                ("properties", "JSON", "The properties, the exact JSON text that was hashed."),
                (
                    "hash",
                    "VARCHAR",
                    "SHA-256(0x00 || canonical bytes), hex: its leaf in its batch's Merkle tree.",
                ),
                (
                    "partition",
                    "INTEGER",
                    "The customer's partition (0 on a SQLite ledger), which numbers its events.",
                ),
            ),
            event_rows,
            "partition, sequence",
        ),
        Table(
            "invoices",
            "One row per finalized invoice (period, threshold and purchase invoices).",
            _columns(
                ("invoice_id", "VARCHAR", "INV-000001, ..."),
                ("kind", "VARCHAR", "period, threshold or purchase."),
                ("customer", "VARCHAR", "The invoiced customer."),
                ("currency", "VARCHAR", "ISO 4217 currency of every amount on it."),
                ("period_label", "VARCHAR", "The billing period (its first day); NULL if none."),
                ("period_start", "TIMESTAMPTZ", "Start of the billing period (inclusive)."),
                ("period_end", "TIMESTAMPTZ", "End of the billing period (exclusive)."),
                ("finalized_at", "TIMESTAMPTZ", "When it was finalized (immutable since)."),
                ("total", MONEY, "The invoice total: the sum of its lines' amounts."),
                ("document_sha256", "VARCHAR", "SHA-256 of the stored document bytes, hex."),
                ("timezone", "VARCHAR", "The contract's time zone its days are read in."),
                (
                    "ledger_through",
                    "VARCHAR",
                    "The ledger cut it was rated through: each partition's last sequence,"
                    " as a JSON list (NULL if none).",
                ),
            ),
            invoice_rows,
            "invoice_id",
        ),
        Table(
            "invoice_lines",
            "One row per line of a finalized invoice; usage lines carry their lineage.",
            _columns(
                ("invoice_id", "VARCHAR", "The invoice (invoices.invoice_id)."),
                ("customer", "VARCHAR", "The invoiced customer."),
                ("currency", "VARCHAR", "Currency of amount."),
                ("line", "INTEGER", "Line number on the invoice (1, 2, ...)."),
                (
                    "kind",
                    "VARCHAR",
                    "usage, fee, discount, commitment, credit, purchase, overage, threshold,"
                    " adjustment.",
                ),
                ("description", "VARCHAR", "The line's text as printed."),
                ("meter", "VARCHAR", "The meter of a usage line; NULL otherwise."),
                ("model", "VARCHAR", "The usage line's group values joined by '/'."),
                ("quantity", MONEY, "The metered quantity of a usage line."),
                ("amount", MONEY, "The line's amount in currency (rounded once)."),
                ("unit", "VARCHAR", "The credit type of a credit, purchase or overage line."),
                ("units", MONEY, "How many of unit the line applies, buys or charges."),
                ("grant_id", "VARCHAR", "The grant a credit or purchase line is about."),
                ("service_start", "TIMESTAMPTZ", "Start of the service the line bills."),
                ("service_end", "TIMESTAMPTZ", "End of the service the line bills (exclusive)."),
                ("events", "BIGINT", "Events behind the line (lineage)."),
                ("first_sequence", "BIGINT", "First ledger sequence behind the line."),
                ("last_sequence", "BIGINT", "Last ledger sequence behind the line."),
                ("merkle_root", "VARCHAR", "RFC 6962 Merkle root of the line's events, hex."),
            ),
            line_rows,
            "invoice_id, line",
        ),
        Table(
            "credit_notes",
            "One row per credit note against a finalized invoice.",
            _columns(
                ("note_id", "VARCHAR", "CN-000001, ..."),
                ("invoice_id", "VARCHAR", "The invoice it credits."),
                ("customer", "VARCHAR", "The invoice's customer."),
                ("currency", "VARCHAR", "Currency of total."),
                ("created_at", "TIMESTAMPTZ", "When it was issued."),
                ("total", MONEY, "The note's total (negative credits the customer)."),
                ("void", "BOOLEAN", "True when it voids the whole invoice."),
                ("reason", "VARCHAR", "Why it was issued."),
            ),
            credit_note_rows,
            "note_id",
        ),
        Table(
            "rated_usage",
            "Unit economics: each invoice line's usage per day, with revenue and cost"
            " (finalized periods as billed, open periods as their draft).",
            _columns(
                ("customer", "VARCHAR", "The customer."),
                ("period", "VARCHAR", "The billing period's label (its first day)."),
                ("day", "DATE", "The day, in the contract's time zone."),
                ("meter", "VARCHAR", "The meter; (fee), (commitment), (discount) otherwise."),
                ("model", "VARCHAR", "The line's group values joined by '/'."),
                ("product", "VARCHAR", "The meter's product (the meter itself by default)."),
                ("plan", "VARCHAR", "The plan version (team@1)."),
                ("currency", "VARCHAR", "Currency of revenue, cost and margin."),
                ("events", "BIGINT", "Events of the line on that day."),
                ("quantity", MONEY, "The line's quantity, on its first day only."),
                ("revenue", MONEY, "The line's amount, spread over its days by events."),
                ("cost", MONEY, "Quantity times the cost rate, spread likewise."),
                ("margin", MONEY, "revenue - cost."),
                ("invoice", "VARCHAR", "The invoice (draft for an open period)."),
                ("line", "INTEGER", "The invoice line number (0 for a cost-only meter)."),
            ),
            usage_rows,
            "customer, period, day, meter, model",
        ),
        Table(
            "usage_buckets",
            "Rated usage folded from the events after they commit, caught up before the"
            " export: one row per line (customer, contract segment, meter, group) and UTC"
            " hour of the current pricing revision.",
            _columns(
                ("customer", "VARCHAR", "The customer."),
                ("revision", "INTEGER", "The pricing revision the usage is rated under."),
                ("segment_start", "TIMESTAMPTZ", "Start of the line's contract segment."),
                ("meter", "VARCHAR", "The meter."),
                ("model", "VARCHAR", "The line's group values joined by '/'."),
                ("hour", "TIMESTAMPTZ", "The UTC hour (its start)."),
                ("events", "BIGINT", "Events the line took in that hour."),
                ("quantity", MONEY, "The meter's quantity over the hour's events alone."),
                ("fees", MONEY, "Percentage prices: the fees of the hour's events."),
                ("cost", MONEY, "A sum or count meter's quantity times its cost rate."),
                ("digest", "VARCHAR", "Lineage digest: sum mod 2^256 of SHA-256(event hash)."),
            ),
            lambda billing, _: bucket_table_rows(billing.context),
            "customer, revision, segment_start, meter, model, hour",
        ),
        Table(
            "journal",
            "The general journal derived from invoices, credit notes and credit books: one"
            " row per posting.",
            _columns(
                ("entry_id", "VARCHAR", "The journal entry (its postings balance)."),
                ("date", "DATE", "The entry's day."),
                ("account", "VARCHAR", "Account (assets:accounts_receivable, ...)."),
                ("account_kind", "VARCHAR", "asset, liability, revenue or contra_revenue."),
                ("debit", MONEY, "Debit amount (0 when a credit)."),
                ("credit", MONEY, "Credit amount (0 when a debit)."),
                ("currency", "VARCHAR", "Currency of the posting."),
                ("customer", "VARCHAR", "The customer."),
                ("cause", "VARCHAR", "What caused it: invoice:INV-.../line:N, credit:..."),
                ("description", "VARCHAR", "The entry's text."),
            ),
            journal_rows,
            "date, entry_id, account",
        ),
        Table(
            "workspace_proposals",
            "The contract workspace's append-only history: each proposal (a contract change"
            " or a price experiment) with its decision.",
            _columns(
                ("proposal_id", "VARCHAR", "P-000001, ..."),
                ("kind", "VARCHAR", "contract (one customer's change) or plan_version."),
                ("customer", "VARCHAR", "The customer changed (NULL for an experiment)."),
                ("proposer", "VARCHAR", "Who proposed it (user:NAME or a key id)."),
                ("proposed_at", "TIMESTAMPTZ", "When it was proposed."),
                ("reason", "VARCHAR", "Why it was proposed."),
                ("base_revision", "INTEGER", "The configuration revision it was made on."),
                ("change", "JSON", "The change as proposed (the form's fields)."),
                ("state", "VARCHAR", "pending, approved or rejected (as of the export)."),
                ("decider", "VARCHAR", "Who approved or rejected it (never the proposer)."),
                ("decided_at", "TIMESTAMPTZ", "When it was decided."),
                ("decision_reason", "VARCHAR", "Why it was approved or rejected."),
                ("revision", "INTEGER", "The revision an approval was applied as."),
            ),
            proposal_rows,
            "proposal_id",
        ),
        Table(
            "configuration_revisions",
            "Every pricing configuration revision, applied from YAML or by the workspace,"
            " with who proposed and approved it.",
            _columns(
                ("revision", "INTEGER", "1, 2, ..."),
                ("applied_at", "TIMESTAMPTZ", "When it was applied."),
                ("via", "VARCHAR", "yaml (meterline apply) or workspace."),
                ("source", "VARCHAR", "The file name, or workspace P-000001."),
                ("proposal_id", "VARCHAR", "The workspace proposal it applied."),
                ("proposer", "VARCHAR", "Who proposed it."),
                ("approver", "VARCHAR", "Who approved it."),
                ("reason", "VARCHAR", "Why it was proposed."),
                ("approval_reason", "VARCHAR", "Why it was approved."),
                ("content_sha256", "VARCHAR", "SHA-256 of the canonical configuration, hex."),
                ("revision_sha256", "VARCHAR", "The revision's own digest (covers the source)."),
            ),
            revision_rows,
            "revision",
        ),
    )
}
"""Every table the export writes, in order: its documented columns and its rows."""


def table_names(tables: Iterable[str] | None = None) -> list[str]:
    """``tables`` checked against ``TABLES`` (all of them when None), in export order."""
    if tables is None:
        return list(TABLES)
    wanted = list(dict.fromkeys(tables))
    unknown = [name for name in wanted if name not in TABLES]
    if unknown:
        raise ExportError(
            f"no table {', '.join(map(repr, unknown))}; the tables are {', '.join(TABLES)}"
        )
    return [name for name in TABLES if name in wanted]
