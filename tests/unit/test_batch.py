"""The batcher that sends many callers' small operations as one (no servers)."""

from __future__ import annotations

import asyncio

import pytest

from technic_stream.storage.batch import Batcher


class _Backend:
    """Answers each key doubled; records the batches; a batch takes until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, keys: list[int]) -> list[object]:
        self.batches.append(list(keys))
        await self.gate.wait()
        return [ValueError(f"bad {k}") if k < 0 else 2 * k for k in keys]


async def test_calls_made_while_a_batch_is_out_go_together_in_the_next():
    backend = _Backend()
    batcher: Batcher[int, int] = Batcher(backend.run)
    backend.gate.clear()
    first = asyncio.ensure_future(batcher(1))
    await asyncio.sleep(0.01)
    assert backend.batches == [[1]]  # the first call went at once, alone
    rest = [asyncio.ensure_future(batcher(k)) for k in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert backend.batches == [[1]]  # ... and the others wait for it
    backend.gate.set()
    assert await first == 2
    assert await asyncio.gather(*rest) == [4, 6, 8]
    assert backend.batches == [[1], [2, 3, 4]]  # in the order they were made
    assert (batcher.batches, batcher.calls) == (2, 4)
    # calls made in one turn of the loop with nothing out share the first batch
    assert await asyncio.gather(batcher(5), batcher(6)) == [10, 12]
    assert backend.batches[-1] == [5, 6]


async def test_an_exception_answered_for_one_call_fails_that_call_only():
    backend = _Backend()
    batcher: Batcher[int, int] = Batcher(backend.run)
    got = await asyncio.gather(batcher(1), batcher(-1), batcher(3), return_exceptions=True)
    assert got[0] == 2 and got[2] == 6
    assert isinstance(got[1], ValueError) and str(got[1]) == "bad -1"


async def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_runs():
    calls: list[list[str]] = []

    async def run(keys: list[str]) -> list[str]:
        calls.append(keys)
        if "down" in keys:
            raise ConnectionError("server away")
        return [k.upper() for k in keys]

    batcher: Batcher[str, str] = Batcher(run)
    got = await asyncio.gather(batcher("a"), batcher("down"), return_exceptions=True)
    assert [type(g) for g in got] == [ConnectionError, ConnectionError]
    assert await batcher("b") == "B"


async def test_a_caller_that_gives_up_does_not_cancel_the_others():
    backend = _Backend()
    batcher: Batcher[int, int] = Batcher(backend.run)
    backend.gate.clear()
    one = asyncio.ensure_future(batcher(1))
    two = asyncio.ensure_future(batcher(2))
    await asyncio.sleep(0.01)
    one.cancel()
    backend.gate.set()
    assert await two == 4
    with pytest.raises(asyncio.CancelledError):
        await one


async def test_batches_are_bounded_and_a_wrong_count_of_answers_is_an_error():
    backend = _Backend()
    batcher: Batcher[int, int] = Batcher(backend.run, max_batch=3)
    backend.gate.clear()
    first = asyncio.ensure_future(batcher(0))
    await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(batcher(k)) for k in range(1, 8)]
    await asyncio.sleep(0)
    backend.gate.set()
    assert [await first, *await asyncio.gather(*rest)] == [2 * k for k in range(8)]
    assert backend.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]

    async def short(keys: list[int]) -> list[int]:
        return keys[:-1]

    with pytest.raises(RuntimeError, match="answered"):
        await Batcher(short)(1)
    with pytest.raises(ValueError):
        Batcher(short, max_batch=0)
