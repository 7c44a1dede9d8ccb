"""The bar builder through the real broker and Redis: trades → bars equal the offline
aggregation, with late trades, a quiet feed closing bars on the clock, and a crash and
restart from the checkpoint in the middle."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from technic_stream.kafka import BatchConsumer, Producer
from technic_stream.marketdata.bar_service import BarService
from technic_stream.marketdata.publish import partition_of
from technic_stream.marketdata.synth import SynthConfig, SyntheticMarket, split_into_trades
from technic_stream.messages import TIMEFRAME_MS, Bar, decode
from technic_stream.redis import redis_client
from technic_stream.redis.checkpoint import CheckpointStore
from technic_stream.topics import topic_name
from tests.unit.test_bar_builder import offline

pytestmark = pytest.mark.timeout(180)

TFS = ("1s", "1m", "5m")
PARTITIONS = 4  # the test settings' partition count
SENTINELS = sorted(
    {int(partition_of([f"ZZ{i}"], PARTITIONS)[0]): f"ZZ{i}" for i in range(64)}.values()
)
GRACE = 10_000


def _trades() -> list[tuple[str, int, float, float]]:
    market = SyntheticMarket(SynthConfig(symbols=12, seed=11))
    rows = []
    for _ in range(4):  # 14:30 … 14:33
        cols = market.step()
        t = split_into_trades(cols, market.tf_ms, market.rng)
        rows += [
            (market.symbols[i], int(ts), float(p), float(s))
            for i, ts, p, s in zip(t.index, t.ts, t.price, t.size, strict=True)
        ]
    rng = np.random.default_rng(4)
    delay = np.zeros(len(rows))
    late = rng.choice(len(rows), len(rows) // 10, replace=False)
    delay[late] = rng.uniform(300, 3_000, late.shape[0])  # late, within the grace
    order = np.argsort([r[1] + d for r, d in zip(rows, delay, strict=True)], kind="stable")
    arrival = [rows[i] for i in order]
    end = rows[0][1] - rows[0][1] % 60_000 + 4 * 60_000  # 14:34:00
    # one trade at 14:34 on every partition moves each partition's clock past 14:34
    arrival += [(s, end, 1.0, 1.0) for s in SENTINELS]
    arrival += [(rows[k][0], rows[k][1], 0.5, 7.0) for k in (3, 50, 90)]  # far too late
    return arrival


async def _send(settings, trades) -> None:
    topic = topic_name(settings.topic_prefix, "md.trades")
    async with Producer(settings) as producer:
        for sym, ts, px, sz in trades:
            body = {"type": "trade", "v": 1, "symbol": sym, "ts": ts, "price": px, "size": sz}
            await producer.send(topic, orjson.dumps(body), key=sym.encode())
        await producer.send(topic, b'{"type": "trade"}', key=b"BAD")  # to the DLQ
        await producer.flush()


async def _run_until(settings, redis, processed: int, *, crash: bool) -> BarService:
    async with Producer(settings) as producer:
        handler = BarService(settings, producer, redis, tick_s=0.1)
        consumer = BatchConsumer(settings, [handler.trades_topic], handler.group, handler)
        handler.consumer = consumer
        if crash:  # dies without the checkpoint a clean shutdown would write
            handler.on_revoked = _noop  # type: ignore[method-assign]
        await consumer.start()
        stop = asyncio.Event()
        clock = asyncio.create_task(handler.run_clock(stop))
        run = asyncio.create_task(consumer.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while consumer.records_processed < processed:
            assert loop.time() < deadline and not run.done(), "bar builder stalled"
            await asyncio.sleep(0.05)
        if not crash:  # let the quiet feed's last second close on the clock
            await asyncio.sleep(1.6)
        consumer.stop()
        await run
        stop.set()
        await clock
        await consumer.aclose()
        return handler


async def _noop(_partitions) -> None:
    return None


async def _bars(settings) -> dict:
    """The last version of every bar on md.bars (versions of a key share its partition)."""
    topic = topic_name(settings.topic_prefix, "md.bars")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    out: dict = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    b = decode(r.value, Bar)
                    out[(b.tf, b.symbol, b.ts)] = (b.open, b.high, b.low, b.close, b.volume)
    finally:
        await consumer.stop()
    return out


async def test_trades_to_bars_survive_a_crash_and_close_on_the_clock(settings):
    settings = settings.model_copy(
        update={
            "bar_timeframes": ",".join(TFS),
            "bar_grace_ms": GRACE,
            "checkpoint_interval_s": 0.2,
            "kafka_fetch_max_records": 60,
            "max_future_ms": 10**13,
        }
    )
    trades = _trades()
    half = len(trades) // 2
    redis = redis_client(settings)
    try:
        await _send(settings, trades[:half])
        await _run_until(settings, redis, half, crash=True)
        store = CheckpointStore(redis, settings.redis_prefix, f"{settings.topic_prefix}bars")
        saved = [await store.load(topic_name(settings.topic_prefix, "md.trades"), p)
                 for p in range(settings.partitions)]  # fmt: skip
        assert any(c is not None for c in saved)
        await _send(settings, trades[half:])
        second = await _run_until(settings, redis, len(trades) - half + 1, crash=False)
    finally:
        await redis.aclose()

    got = await _bars(settings)
    want = offline(trades, TFS, GRACE)
    assert settings.partitions == PARTITIONS and len(SENTINELS) == PARTITIONS
    sentinel_ts = next(t[1] for t in trades if t[0] == SENTINELS[0])
    closed = {
        k: v for k, v in want.items() if k[2] + TIMEFRAME_MS[k[0]] <= sentinel_ts
    }  # every bar the clock has passed
    assert {k: v for k, v in got.items() if k in closed} == closed
    assert closed.keys() <= got.keys()
    # nothing still open was published …
    assert not [k for k in got if k[2] + TIMEFRAME_MS[k[0]] > sentinel_ts + 1_000 + GRACE]
    # … except the quiet feed's last second, closed by the clock alone
    assert all(("1s", s, sentinel_ts) in got for s in SENTINELS)
    # the far-too-late trades were counted and dropped (1s and 1m; the 5m bar is open)
    assert second.late_dropped == 6
