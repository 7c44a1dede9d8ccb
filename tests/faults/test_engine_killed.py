"""The engine as real processes: kill -9 mid-stream and restart, and two processes in one
group losing one. Results must equal an uninterrupted run: the Redis values, and the set
of alert ids (duplicates allowed on the wire, none missing, none extra); recovery must
replay only the tail after the checkpoint."""

from __future__ import annotations

import asyncio
import signal

import numpy as np
import pytest

from technic_stream.config import Settings
from technic_stream.engine.service import ENGINE_GROUP
from technic_stream.local.service import ServiceChild
from technic_stream.messages import Alert, alert_id, decode
from technic_stream.redis import redis_client
from technic_stream.redis.checkpoint import CheckpointStore
from technic_stream.topics import group_name, topic_name
from tests.integration.engine_helpers import (
    TF,
    decoded_hash,
    expected_values,
    market,
    matches,
    rule,
    send_bars,
    send_rules,
)
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.timeout(300)

RULES = [
    rule("cross", "crosses_above(ema(9), sma(20))"),
    rule("dip", "rsi(5) < 30", mode="every_time"),
]


def engine_process(settings: Settings, log_path) -> ServiceChild:
    """The engine as a child, with small batches and frequent bar-count checkpoints."""
    return ServiceChild(
        settings, "engine", log_path, TECHNIC_ENGINE_BATCH_MAX="200",
        TECHNIC_ENGINE_CHECKPOINT_BARS="500", TECHNIC_ENGINE_CHECKPOINT_INTERVAL_S="3600",
    )  # fmt: skip


#: on a fresh checkout the first engine's start compiles the engine's kernels (its
#: warm-up; numba then keeps them on disk for every later start): ~60-90 s on this 2-core
#: VM, so the first progress of the first engine gets that long on top of the usual wait
FIRST_BATCH_S = 240.0


async def _until(cond, what: str, within: float = 90.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _reference(series) -> set[str]:
    ids = set()
    for sym, bars in series.items():
        for r in RULES:
            ids |= {alert_id(r.rule_id, sym, TF, int(bars[0][j])) for j in matches(r.expr, bars)}
    return ids


async def _check_results(settings: Settings, series) -> list[Alert]:
    redis = redis_client(settings)
    try:
        for sym, bars in series.items():
            got = decoded_hash(await redis.hgetall(f"{settings.redis_prefix}ind:{TF}:{sym}"))
            assert got["ts"] == bars[0][-1], sym
            for name, value in expected_values(bars).items():
                np.testing.assert_array_equal(got[name], value, err_msg=f"{sym} {name}")
    finally:
        await redis.aclose()
    want = _reference(series)
    records = await read_topic(settings, topic_name(settings.topic_prefix, "alerts.fired"),
                               expect=len(want), wait_s=10)  # fmt: skip
    alerts = [decode(r.value, Alert) for r in records]
    got = {a.alert_id for a in alerts}
    assert got == want, f"missing {len(want - got)}, extra {len(got - want)}"
    return alerts


async def _checkpointed(settings: Settings) -> int:
    """Records covered by the partitions' checkpoints (offsets are dense from 0, so a
    restart must replay exactly the records after them)."""
    topic = topic_name(settings.topic_prefix, "md.bars")
    redis = redis_client(settings)
    try:
        group = group_name(settings.topic_prefix, ENGINE_GROUP)
        store = CheckpointStore(redis, settings.redis_prefix, group)
        return sum([await store.offset(topic, p) or 0 for p in range(settings.partitions)])
    finally:
        await redis.aclose()


@pytest.mark.timeout(FIRST_BATCH_S + 180)
async def test_kill_9_mid_stream_then_restart_equals_an_uninterrupted_run(settings, tmp_path):
    series = market(16, 300, seed=7)
    await send_rules(settings, RULES)
    first = await send_bars(settings, series, 0, 200)
    a = engine_process(settings, tmp_path / "a.log")
    await a.start()
    try:
        # kill it once it is well into the stream, whatever the batch in flight
        await _until(lambda: _at_least(a, first * 0.6), "engine progress", FIRST_BATCH_S)
        a.signal(signal.SIGKILL)
        assert await asyncio.wait_for(a.wait(), 60) == -signal.SIGKILL
    finally:
        await a.close()
    total = first + await send_bars(settings, series, 200, 300)
    # (not end_offsets: the local broker reports the last batch's base offset + 1 there)
    tail = total - await _checkpointed(settings)
    assert 0 < tail < total  # something was checkpointed, something was not

    b = engine_process(settings, tmp_path / "b.log")
    await b.start()
    try:
        await _until(lambda: _at_least(b, tail), "recovery")
        await asyncio.sleep(1.0)  # nothing more may come
        assert await b.consumed() == tail  # only the uncheckpointed tail was replayed
        alerts = await _check_results(settings, series)
        assert len(alerts) >= len({a.alert_id for a in alerts})  # duplicates only on the wire
    finally:
        b.signal(signal.SIGTERM)
        assert await asyncio.wait_for(b.wait(), 60) == 0, b.log_tail()


async def _at_least(p: ServiceChild, n: float) -> bool:
    return await p.consumed() >= n


@pytest.mark.timeout(FIRST_BATCH_S + 180)
async def test_two_engines_share_the_partitions_and_one_takes_over_from_a_checkpoint(
    settings, tmp_path
):
    series = market(16, 240, seed=8)
    await send_rules(settings, RULES)
    a = engine_process(settings, tmp_path / "a.log")
    b = engine_process(settings, tmp_path / "b.log")
    await a.start()
    await b.start()
    try:
        await _until(lambda: _both_ready(a, b), "both engines in the group")
        first = await send_bars(settings, series, 0, 120)
        await _until(lambda: _sum_at_least((a, b), first), "first half", FIRST_BATCH_S)
        assert await a.consumed() > 0 and await b.consumed() > 0  # the partitions were split
        b.signal(signal.SIGTERM)  # drains, checkpoints, commits, leaves
        assert await asyncio.wait_for(b.wait(), 60) == 0, b.log_tail()
        taken = await a.consumed()
        second = await send_bars(settings, series, 120, 240)
        await _until(lambda: _at_least(a, taken + second), "second half on the survivor")
        await asyncio.sleep(1.0)
        # the survivor replayed nothing of b's partitions: b checkpointed on its way out
        assert await a.consumed() == taken + second
        await _check_results(settings, series)
        log = (tmp_path / "a.log").read_text()
        assert "restored" in log
    finally:
        await b.close()  # (if a check failed before it left)
        a.signal(signal.SIGTERM)
        assert await asyncio.wait_for(a.wait(), 60) == 0


async def _both_ready(a: ServiceChild, b: ServiceChild) -> bool:
    return await a.ready() and await b.ready()


async def _sum_at_least(procs, n: int) -> bool:
    return sum([await p.consumed() for p in procs]) >= n
