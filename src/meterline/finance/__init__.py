"""The finance view: the journal derived from invoices, notes, payments and credit books;
unit economics; revenue reports and a month's bridges between its figures; exports; the
proof that they are one truth."""

from typing import TYPE_CHECKING

from meterline.lazy import lazy_exports

__all__ = [
    "Books",
    "TruthReport",
    "build_books",
    "charges_bridges",
    "export_tables",
    "month_bridge",
    "one_truth",
    "revenue_reports",
    "usage_slices",
]

_HOMES = {
    "Books": "meterline.finance.books",
    "TruthReport": "meterline.finance.truth",
    "build_books": "meterline.finance.books",
    "charges_bridges": "meterline.finance.month_bridge",
    "export_tables": "meterline.finance.export",
    "month_bridge": "meterline.finance.month_bridge",
    "one_truth": "meterline.finance.truth",
    "revenue_reports": "meterline.finance.reports",
    "usage_slices": "meterline.finance.economics",
}
"""Where each public name lives; loaded on first use (PEP 562), so importing one light
module of this package does not load the rest."""

__getattr__ = lazy_exports("meterline.finance", _HOMES, globals())


if TYPE_CHECKING:
    from meterline.finance.books import Books, build_books
    from meterline.finance.economics import usage_slices
    from meterline.finance.export import export_tables
    from meterline.finance.month_bridge import charges_bridges, month_bridge
    from meterline.finance.reports import revenue_reports
    from meterline.finance.truth import TruthReport, one_truth
