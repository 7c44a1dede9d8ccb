"""CPU time of process trees over a window, from Linux's ``/proc``.

On one machine that runs the load, the system and its servers, a load test's latency
says little without what each process took of the cores: a run at 180 % of two cores
queues everywhere whatever the code. :class:`CpuWindow` reads each named process and
its descendants at the start and the end of a window and reports the share of one core
each took (a process gone by the end is not counted; one born meanwhile counts whole).
Where there is no ``/proc`` it reports nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["CpuWindow", "cpu_seconds", "descendants", "label"]

_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (its threads included), or None if gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # (the name may hold spaces and parentheses)
    return (int(fields[11]) + int(fields[12])) / _TICK


def descendants(pid: int) -> list[int]:
    """``pid``'s children, theirs and so on (not ``pid``)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list((_PROC / str(parent) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def label(pid: int) -> str:
    """A short name for a server process by its command line (``tansu``, ``redis``,
    ``nx-27017``), else its program's name."""
    try:
        argv = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    line = b" ".join(argv)
    for needle, name in (
        (b"tansu", "tansu"),
        (b"redis-server", "redis"),
        (b"nx_27017", "nx-27017"),
    ):
        if needle in line:
            return name
    return os.path.basename(argv[0].decode(errors="replace")) or "?"


class CpuWindow:
    """``start()``, then ``stop()`` → {group: % of one core} over the window.

    ``groups`` name root pids; a root's descendants count in its group unless
    ``split`` names it, in which case each descendant counts under its :func:`label`
    (the servers ``up`` starts) and the root alone under the group's name.
    """

    def __init__(self, groups: dict[str, int], *, split: tuple[str, ...] = ()) -> None:
        self._groups = groups
        self._split = split
        self._start: dict[int, float] = {}
        self._began = 0.0

    def _owners(self) -> dict[int, str]:
        owner: dict[int, str] = {}
        for name, root in self._groups.items():
            owner[root] = name
            for pid in descendants(root):
                owner[pid] = label(pid) if name in self._split else name
        return owner

    def _read(self) -> dict[int, float]:
        return {pid: s for pid in self._owners() if (s := cpu_seconds(pid)) is not None}

    def start(self) -> None:
        self._began = time.monotonic()
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        owners = self._owners()
        took = time.monotonic() - self._began
        out: dict[str, float] = {}
        if took <= 0:
            return out
        for pid, name in owners.items():
            now = cpu_seconds(pid)
            if now is None:
                continue
            used = now - self._start.get(pid, 0.0)  # (a process born meanwhile: all of it)
            out[name] = out.get(name, 0.0) + 100.0 * used / took
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))
