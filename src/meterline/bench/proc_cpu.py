"""CPU accounting from ``/proc`` for ``meterline bench scale``: snapshots of every
process's CPU ticks, components (sets of processes measured together, found again in each
snapshot) and the CPU seconds a component used between two snapshots, reaped children
included."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcessTimes:
    pid: int
    ppid: int
    comm: str
    started: int
    """Start time in clock ticks after boot: with the pid, identifies the process."""
    own: int
    """utime + stime, in clock ticks."""
    reaped: int
    """cutime + cstime: the CPU of the children it waited for, in clock ticks."""


_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

Snapshot = dict[int, ProcessTimes]


def read_process(pid: int) -> ProcessTimes | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    opened, closed = text.index("("), text.rindex(")")
    fields = text[closed + 2 :].split()  # fields[0] is field 3 of proc(5), ``state``
    return ProcessTimes(
        pid,
        int(fields[1]),
        text[opened + 1 : closed],
        int(fields[19]),
        int(fields[11]) + int(fields[12]),
        int(fields[13]) + int(fields[14]),
    )


def take_snapshot() -> Snapshot:
    """Every process of the machine, read now."""
    processes: Snapshot = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            process = read_process(int(entry.name))
            if process is not None:
                processes[process.pid] = process
    return processes


def with_descendants(snapshot: Snapshot, roots: Iterable[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for process in snapshot.values():
        children.setdefault(process.ppid, []).append(process.pid)
    found: set[int] = set()
    waiting = [pid for pid in roots if pid in snapshot]
    while waiting:
        pid = waiting.pop()
        if pid not in found:
            found.add(pid)
            waiting.extend(children.get(pid, ()))
    return found


def postgres_pids(snapshot: Snapshot) -> set[int]:
    return {pid for pid, process in snapshot.items() if process.comm.startswith("postgres")}


def postmasters(snapshot: Snapshot) -> set[int]:
    """PostgreSQL processes whose parent is not one: the postmasters."""
    ours = postgres_pids(snapshot)
    return {pid for pid in ours if snapshot[pid].ppid not in ours}


@dataclass
class Component:
    """A set of processes measured together; ``pids`` is re-evaluated per snapshot."""

    name: str
    pids: Callable[[Snapshot], set[int]]
    count_reaped: Callable[[int], bool] = lambda _pid: True


def _ticks(snapshot: Snapshot, component: Component) -> tuple[int, dict[tuple[int, int], int]]:
    """Total ticks of the component's processes and each one's, keyed by (pid, start)."""
    each: dict[tuple[int, int], int] = {}
    for pid in component.pids(snapshot):
        process = snapshot[pid]
        reaped = process.reaped if component.count_reaped(pid) else 0
        each[(pid, process.started)] = process.own + reaped
    return sum(each.values()), each


def component_cpu_seconds(before: Snapshot, after: Snapshot, component: Component) -> float:
    """CPU seconds the component used between the snapshots: what its processes at the
    end have used since the start (all of it for a process that appeared meanwhile),
    plus what processes that ended meanwhile were reaped with (in their parent's
    cutime), minus nothing for processes that vanished unreaped."""
    _, start = _ticks(before, component)
    _, end = _ticks(after, component)
    used = 0
    for key, ticks in end.items():
        used += ticks - start.get(key, 0)
    return used / _CLOCK_TICKS_PER_S
