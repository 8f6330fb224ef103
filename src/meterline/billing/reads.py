"""What other layers read through billing: rating scans, event reads and the records the
live engine and the API look at, each a named function over the ledger's reader
connection (``BillingContext.connection``), so no caller outside ``meterline.billing``
holds that connection.

Invariants: read only (nothing here writes or takes a lock); each read runs on the
connection as the caller's thread finds it, exactly as the caller's own query did.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from meterline.billing.context import BillingContext
from meterline.billing.scan import RatingJob, run_jobs
from meterline.billing.unbillable import UnbillableUsage, usage_records
from meterline.core.cuts import Cut
from meterline.core.meters import MeterProblem
from meterline.ledger import event_reads


def run_rating_jobs(context: BillingContext, jobs: Iterable[RatingJob]) -> None:
    """Feed every job its events in one ledger scan (``scan.run_jobs``)."""
    run_jobs(context.connection, jobs)


def event_rows_since(
    context: BillingContext, through: Cut, start_us: int
) -> Iterator[tuple[int, int, str, str, int, bytes]]:
    """``(partition, sequence, customer, type, timestamp_us, body)`` of every event inside
    ``through`` timed at or after ``start_us``, in ledger order."""
    return event_reads.rows_since(context.connection, through, start_us)


def events_stamped_from(context: BillingContext, at_us: int) -> list[tuple[str, int]]:
    """``(customer, timestamp_us)`` of every event timed at or after ``at_us``."""
    return event_reads.stamped_from(context.connection, at_us)


def unbillable_records(
    context: BillingContext, partitions: int, found: Iterable[tuple[str, MeterProblem]]
) -> list[UnbillableUsage]:
    """``found`` as unbillable usage records (``unbillable.usage_records``)."""
    return usage_records(context.connection, partitions, found)


def credit_changes_since(
    context: BillingContext, grants: int, actions: int
) -> tuple[set[str], int, int]:
    """The customers granted credit (grant number above ``grants``) or whose grants were
    voided or adjusted (action number above ``actions``), and the new marks."""
    connection = context.connection
    changed: set[str] = set()
    for number, customer in connection.execute(
        "SELECT grant_number, customer FROM credit_grants WHERE grant_number > ?",
        (grants,),
    ):
        grants = max(grants, number)
        changed.add(customer)
    for number, customer in connection.execute(
        "SELECT action_number, customer FROM credit_actions WHERE action_number > ?",
        (actions,),
    ):
        actions = max(actions, number)
        changed.add(customer)
    return changed, grants, actions


def control_firing_counts(context: BillingContext) -> list[tuple[str, str, int]]:
    """Control firings per kind and level, from the records every process shares (raises
    the store's error when no live engine ever created the control tables)."""
    rows = context.connection.execute(
        "SELECT kind, level, COUNT(*) FROM control_firings GROUP BY kind, level"
    ).fetchall()
    return [(str(kind), str(level), int(count)) for kind, level, count in rows]
