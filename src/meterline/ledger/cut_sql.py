"""SQL conditions selecting the events between two cuts (``core.cuts``).

Every read of events by cut builds its condition here, so the stores and the readers in
``meterline.ledger`` agree on it. On a single-partition ledger the condition is a plain
sequence range (the SQLite store has no partition column to test).
"""

from __future__ import annotations

from meterline.core.cuts import Cut


def cut_condition(
    through: Cut | None, after: Cut | None = None, partitions: list[int] | None = None
) -> tuple[str, list[object]]:
    """A parenthesized SQL condition (``?`` placeholders) and its parameters: events past
    ``after`` (every event when None) and inside ``through`` (no upper bound when None),
    of ``partitions`` only when given. At least one of ``through`` and ``after`` names the
    partition count."""
    shape = through if through is not None else after
    if shape is None:
        raise ValueError("cut_condition needs a cut: through, after or both")
    count = shape.partitions
    chosen = range(count) if partitions is None else partitions
    parts: list[str] = []
    parameters: list[object] = []
    for partition in chosen:
        low = 0 if after is None else after.heads[partition]
        clauses = ["sequence > ?"]
        values: list[object] = [low]
        if through is not None:
            high = through.heads[partition]
            if high <= low:
                continue
            clauses.append("sequence <= ?")
            values.append(high)
        if count > 1:
            clauses.insert(0, "partition_number = ?")
            values.insert(0, partition)
        parts.append("(" + " AND ".join(clauses) + ")")
        parameters.extend(values)
    if not parts:
        return "(1 = 0)", []
    return "(" + " OR ".join(parts) + ")", parameters
