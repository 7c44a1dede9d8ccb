"""The engine as real processes: kill -9 mid-stream and restart, and two processes in one
group losing one. Results must equal an uninterrupted run: the Redis values, and the set
of alert ids (duplicates allowed on the wire, none missing, none extra); recovery must
replay only the tail after the checkpoint."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys

import aiohttp
import numpy as np
import pytest

from technic_stream.config import Settings
from technic_stream.engine.service import ENGINE_GROUP
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PASSED_ON = (
    "kafka_bootstrap", "redis_url", "mongo_url", "topic_prefix", "redis_prefix", "mongo_db",
    "partitions", "kafka_session_timeout_ms", "kafka_heartbeat_interval_ms",
    "kafka_fetch_timeout_ms", "kafka_linger_ms",
)  # fmt: skip


class EngineProcess:
    """``python -m technic_stream engine`` with the test's settings and its own ops port."""

    def __init__(self, settings: Settings, log_path, **extra: str) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TECHNIC_")}
        for f in _PASSED_ON:
            env[f"TECHNIC_{f.upper()}"] = str(getattr(settings, f))
        env.update({"TECHNIC_OPS_PORT": str(self.port), "TECHNIC_ENGINE_BATCH_MAX": "200",
                    "TECHNIC_ENGINE_CHECKPOINT_BARS": "500",
                    "TECHNIC_ENGINE_CHECKPOINT_INTERVAL_S": "3600", **extra})  # fmt: skip
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("ab")  # closed in wait()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "technic_stream", "engine",
            env=self.env, stdout=self._log, stderr=self._log,
        )  # fmt: skip

    async def metric(self, name: str) -> float:
        """Sum of a metric's samples (0 while the process is not serving yet)."""
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"http://127.0.0.1:{self.port}/metrics", timeout=aiohttp.ClientTimeout(total=2)
                ) as r,
            ):
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0.0
        pattern = rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$"
        return sum(float(m) for m in re.findall(pattern, text, re.M))

    async def ready(self) -> bool:
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"http://127.0.0.1:{self.port}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as r,
            ):
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def consumed(self) -> int:
        return int(await self.metric("technic_kafka_consumed_total"))

    async def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), 60)
        self._log.close()
        return code


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


async def test_kill_9_mid_stream_then_restart_equals_an_uninterrupted_run(settings, tmp_path):
    series = market(16, 300, seed=7)
    await send_rules(settings, RULES)
    first = await send_bars(settings, series, 0, 200)
    a = EngineProcess(settings, tmp_path / "a.log")
    await a.start()
    # kill it once it is well into the stream, whatever the batch in flight
    await _until(lambda: _at_least(a, first * 0.6), "engine progress")
    await a.signal(signal.SIGKILL)
    assert await a.wait() == -signal.SIGKILL
    total = first + await send_bars(settings, series, 200, 300)
    # (not end_offsets: the local broker reports the last batch's base offset + 1 there)
    tail = total - await _checkpointed(settings)
    assert 0 < tail < total  # something was checkpointed, something was not

    b = EngineProcess(settings, tmp_path / "b.log")
    await b.start()
    try:
        await _until(lambda: _at_least(b, tail), "recovery")
        await asyncio.sleep(1.0)  # nothing more may come
        assert await b.consumed() == tail  # only the uncheckpointed tail was replayed
        alerts = await _check_results(settings, series)
        assert len(alerts) >= len({a.alert_id for a in alerts})  # duplicates only on the wire
    finally:
        await b.signal(signal.SIGTERM)
        assert await b.wait() == 0, (tmp_path / "b.log").read_text()[-3000:]


async def _at_least(p: EngineProcess, n: float) -> bool:
    return await p.consumed() >= n


async def test_two_engines_share_the_partitions_and_one_takes_over_from_a_checkpoint(
    settings, tmp_path
):
    series = market(16, 240, seed=8)
    await send_rules(settings, RULES)
    a = EngineProcess(settings, tmp_path / "a.log")
    b = EngineProcess(settings, tmp_path / "b.log")
    await a.start()
    await b.start()
    try:
        await _until(lambda: _both_ready(a, b), "both engines in the group")
        first = await send_bars(settings, series, 0, 120)
        await _until(lambda: _sum_at_least((a, b), first), "first half")
        assert await a.consumed() > 0 and await b.consumed() > 0  # the partitions were split
        await b.signal(signal.SIGTERM)  # drains, checkpoints, commits, leaves
        assert await b.wait() == 0, (tmp_path / "b.log").read_text()[-3000:]
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
        await a.signal(signal.SIGTERM)
        assert await a.wait() == 0


async def _both_ready(a: EngineProcess, b: EngineProcess) -> bool:
    return await a.ready() and await b.ready()


async def _sum_at_least(procs, n: int) -> bool:
    return sum([await p.consumed() for p in procs]) >= n
