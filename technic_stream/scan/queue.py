"""Admission of scans to a worker: a bounded number run, the rest wait their turn fairly.

At most ``slots`` scans run at once. When a slot frees, the waiting scan of the owner with
the fewest scans running goes next (then the earliest to arrive), so one user's burst of
scans cannot starve everyone else. Every waiting scan knows its position in that order and
is told whenever it changes (the worker reports it as ``ScanProgress`` stage ``queued``).
A waiting scan can be let go without a slot (it was cancelled): :meth:`FairQueue.release`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["FairQueue"]


@dataclass(eq=False)
class _Waiter:
    scan_id: str
    owner: str
    seq: int
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    admitted: bool = False
    released: bool = False


class FairQueue:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a queue needs at least one slot")
        self.slots = slots
        self.running: Counter[str] = Counter()  # scans running, per owner
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def in_flight(self) -> int:
        return sum(self.running.values())

    def order(self) -> list[str]:
        """Waiting scan ids, next to run first."""
        return [w.scan_id for w in self._ordered()]

    def _ordered(self) -> list[_Waiter]:
        return sorted(self._waiting, key=lambda w: (self.running[w.owner], w.seq))

    def position(self, scan_id: str) -> int | None:
        """1 for the next to run; None for a scan not waiting."""
        for n, w in enumerate(self._ordered(), 1):
            if w.scan_id == scan_id:
                return n
        return None

    def release(self, scan_id: str) -> None:
        """Let a waiting scan go without a slot (it runs at once, e.g. to finish cancelled)."""
        for w in self._waiting:
            if w.scan_id == scan_id:
                w.released = True
                self._waiting.remove(w)
                w.moved.set()
                self._moved()
                return

    @asynccontextmanager
    async def slot(
        self,
        scan_id: str,
        owner: str,
        on_wait: Callable[[int], Awaitable[None]] | None = None,
    ) -> AsyncIterator[bool]:
        """Hold a slot while the block runs; yields False if released without one."""
        w = _Waiter(scan_id, owner, next(self._seq))
        if self.in_flight < self.slots and not self._waiting:
            w.admitted = True
            self.running[owner] += 1
        else:
            self._waiting.append(w)
            self._moved()
            reported = None
            try:
                while not (w.admitted or w.released):
                    pos = self.position(scan_id)
                    if on_wait is not None and pos is not None and pos != reported:
                        reported = pos
                        await on_wait(pos)
                        continue  # the order may have moved while we reported
                    await w.moved.wait()
                    w.moved.clear()
            except BaseException:
                if w in self._waiting:
                    self._waiting.remove(w)
                    self._moved()
                elif w.admitted:
                    self._leave(owner)
                raise
        try:
            yield w.admitted
        finally:
            if w.admitted:
                self._leave(owner)

    def _leave(self, owner: str) -> None:
        self.running[owner] -= 1
        if self.running[owner] <= 0:
            del self.running[owner]
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.in_flight < self.slots:
            w = self._ordered()[0]
            self._waiting.remove(w)
            w.admitted = True
            self.running[w.owner] += 1
            w.moved.set()
        self._moved()

    def _moved(self) -> None:
        for w in self._waiting:
            w.moved.set()
