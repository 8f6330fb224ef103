"""Which partitions a stream worker should hold: the writer-lease side of the stores it
needs, how long a lease lasts, and the pure reckoning of a rebalancing round (the live
workers, each one's fair share, the partitions free to take). ``stream.worker`` acts on
these answers; the leases themselves live in the ledger (``ledger.heads``)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from meterline.ledger.heads import LEASE_SECONDS_DEFAULT, HeadRow, Lease

LEASE_SECONDS = LEASE_SECONDS_DEFAULT
"""How long a worker's partition lease lasts unless renewed (10 s): how long a partition
of a crashed worker waits before another worker may take it over."""

LEASE_RENEW_S = 1.0
"""How often a worker renews its leases and (in auto mode) rebalances."""


class LeasedStore(Protocol):
    """The writer-lease side of the SQL stores (``ledger.sql_reads``)."""

    def head_rows(self) -> list[HeadRow]: ...

    def acquire_lease(
        self, partition: int, owner: str, now_us: int, seconds: float = ...
    ) -> Lease | None: ...

    def renew_lease(self, lease: Lease, now_us: int, seconds: float = ...) -> Lease | None: ...

    def release_lease(self, lease: Lease) -> None: ...


def fair_share(partitions: int, owners: set[str], owner: str) -> int:
    """How many of ``partitions`` ``owner`` should hold among the live ``owners`` (itself
    included): an even split, the first owners by name taking one more when it does not
    divide; never more than ceil(partitions / len(owners))."""
    live = sorted(owners | {owner})
    base, extra = divmod(partitions, len(live))
    return base + (1 if live.index(owner) < extra else 0)


def lease_owners(rows: list[HeadRow], now_us: int) -> set[str]:
    """The owners of the unexpired leases among ``rows``: the workers alive now."""
    return {
        row.lease_owner
        for row in rows
        if row.lease_owner is not None and row.lease_expires_us > now_us
    }


def free_partitions(
    rows: list[HeadRow],
    wanted: Collection[int],
    taken: Collection[int],
    owner: str,
    now_us: int,
) -> list[int]:
    """The partitions of ``wanted`` that ``owner`` may acquire now, in head-row order:
    not ``taken`` (held or still running here), and unleased, expired or already its own."""
    return [
        row.partition
        for row in rows
        if row.partition in wanted
        and row.partition not in taken
        and (row.lease_owner is None or row.lease_expires_us <= now_us or row.lease_owner == owner)
    ]
