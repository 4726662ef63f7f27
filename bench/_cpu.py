"""CPU seconds (user + system) of a process and all its descendants, from ``/proc``.

Peers may fork workers (LiteLLM's proxy runs uvicorn under its own launcher), so a server's
cost is the whole process tree's. Resolution is one clock tick (usually 10 ms); the benchmarks
read it over hundreds of requests.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["tree_cpu_seconds"]

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants, in seconds."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += stats[current][1]
        todo.extend(children.get(current, []))
    return total / _TICKS


def _all_stats() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, utime + stime in ticks) for every process we can read."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # The command name (field 2) may contain spaces and parentheses: split after its end.
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return stats
