"""The pure core of meterline: decisions without I/O, clocks or randomness.

Everything here is a deterministic function of its arguments. Time arrives as integers
(microseconds since the Unix epoch, UTC) passed in by the shell; nothing reads a clock,
a file, a socket or a random source. Imports: the standard library and msgspec (used only
as a pure, deterministic encoder and decoder).
"""

__all__ = [
    "admission",
    "allocation",
    "books",
    "chain",
    "checkpoint_note",
    "cloudevents",
    "control_policies",
    "coupons",
    "credit_note_lines",
    "credit_records",
    "credits",
    "cuts",
    "dict_batches",
    "economics",
    "errors",
    "events",
    "exchange",
    "findings",
    "grants",
    "invoice_lines",
    "invoicing",
    "journal",
    "limits",
    "line_pricing",
    "lineage",
    "merkle",
    "meters",
    "model",
    "money",
    "outcomes",
    "partitions",
    "payments",
    "periods",
    "price_snapshot",
    "pricing",
    "proposals",
    "rating",
    "rating_lines",
    "revrec",
    "semantics",
    "tax",
    "thresholds",
    "trials",
    "unbillable",
]
"""The core's public surface is its modules, each owning one decision (a test keeps this
list equal to the package's files)."""
