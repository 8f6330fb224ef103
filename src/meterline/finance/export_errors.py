"""The errors of the finance exports: ``ExportError`` (a table or value the export
cannot make) and ``QueryError`` (a query the read-only SQL refuses or DuckDB cannot run)."""

from __future__ import annotations

from meterline.errors import MeterlineError


class ExportError(MeterlineError, ValueError):
    """An export that cannot be made as asked (an unknown table, a value that does not fit)."""

    code = "export_failed"
    http_status = 400


class QueryError(MeterlineError, ValueError):
    """A query ``sql`` refuses (it would write, or it is several statements) or that
    DuckDB could not run (its message)."""

    code = "invalid_query"
    http_status = 400

    def __init__(self, message: str, unknown_name: bool = False) -> None:
        super().__init__(message)
        self.unknown_name = unknown_name
        """DuckDB did not find a table or function the query names (a catalog error)."""
