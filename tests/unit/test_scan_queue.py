"""The scan admission queue: bounded slots, fewest-running owner first, positions told."""

from __future__ import annotations

import asyncio

import pytest

from technic_stream.scan.queue import FairQueue


class Scans:
    """Scans entering a queue; each runs until released by the test."""

    def __init__(self, queue: FairQueue) -> None:
        self.queue = queue
        self.started: list[str] = []
        self.positions: dict[str, list[int]] = {}
        self.finish: dict[str, asyncio.Event] = {}
        self.admitted: dict[str, bool] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def submit(self, scan_id: str, owner: str) -> None:
        self.finish[scan_id] = asyncio.Event()

        async def told(pos: int) -> None:
            self.positions.setdefault(scan_id, []).append(pos)

        async def run() -> None:
            async with self.queue.slot(scan_id, owner, told) as admitted:
                self.admitted[scan_id] = admitted
                self.started.append(scan_id)
                await self.finish[scan_id].wait()

        self.tasks[scan_id] = asyncio.create_task(run())

    async def end(self, scan_id: str) -> None:
        self.finish[scan_id].set()
        await self.tasks[scan_id]
        await settle()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_at_most_slots_run_and_the_rest_wait_in_arrival_order():
    scans = Scans(FairQueue(2))
    for n in range(4):
        scans.submit(f"a{n}", "alice")
        await settle()
    assert scans.started == ["a0", "a1"]
    assert scans.queue.order() == ["a2", "a3"]
    assert scans.positions == {"a2": [1], "a3": [2]}
    await scans.end("a0")
    assert scans.started == ["a0", "a1", "a2"] and scans.positions["a3"] == [2, 1]
    for s in ("a1", "a2", "a3"):
        await scans.end(s)
    assert scans.queue.in_flight == 0 and scans.queue.order() == []


async def test_an_owner_with_nothing_running_goes_ahead_of_a_burst():
    scans = Scans(FairQueue(2))
    for n in range(4):
        scans.submit(f"a{n}", "alice")
        await settle()
    scans.submit("b0", "bob")
    await settle()
    # bob has nothing running: he is next, although he came last
    assert scans.queue.order() == ["b0", "a2", "a3"]
    assert scans.positions["b0"] == [1] and scans.positions["a2"] == [1, 2]
    await scans.end("a0")
    assert scans.started == ["a0", "a1", "b0"]
    await scans.end("a1")
    assert scans.started[-1] == "a2"


async def test_a_released_scan_leaves_the_queue_without_a_slot():
    scans = Scans(FairQueue(1))
    scans.submit("a0", "alice")
    scans.submit("a1", "alice")
    scans.submit("a2", "alice")
    await settle()
    scans.queue.release("a1")  # cancelled while waiting
    await settle()
    assert scans.admitted["a1"] is False and "a1" in scans.started
    assert scans.queue.order() == ["a2"] and scans.positions["a2"] == [2, 1]
    await scans.end("a1")
    await scans.end("a0")
    assert scans.started[-1] == "a2" and scans.admitted["a2"] is True
    await scans.end("a2")


async def test_a_waiter_that_is_cancelled_gives_its_place_up():
    scans = Scans(FairQueue(1))
    scans.submit("a0", "alice")
    scans.submit("a1", "alice")
    scans.submit("a2", "alice")
    await settle()
    scans.tasks["a1"].cancel()
    await settle()
    assert scans.queue.order() == ["a2"]
    await scans.end("a0")
    assert scans.started == ["a0", "a2"]
    await scans.end("a2")


def test_a_queue_needs_a_slot():
    with pytest.raises(ValueError, match="at least one slot"):
        FairQueue(0)
