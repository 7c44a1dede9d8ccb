"""The bar builder process: ``md.trades`` → :class:`BarBuilder` per partition → ``md.bars``.

Per fetched batch: decode the trades into columns (bad ones to the DLQ), apply them to
the partition's builder, publish every bar that is due (new or corrected) as Bar
messages keyed by symbol, wait for the broker's acks, then checkpoint the partition's
state with the next offset (at most every ``checkpoint_interval_s``, and always on
revoke and shutdown) and commit. A clock task closes bars of quiet symbols every
``tick_s`` the same way. On assignment, the checkpoint is restored and the partition
is read from its offset, so a restart emits exactly what an uninterrupted run would
(re-emitted bars are identical corrections, which consumers absorb).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from technic_stream.app.ops import OpsServer
from technic_stream.app.service import consumer_ready, run_consumer
from technic_stream.config import Settings
from technic_stream.errors import MessageDecodeError
from technic_stream.kafka import Batch, BatchConsumer, DeadLetterQueue, Producer, TopicPartition
from technic_stream.marketdata.builder import BarBuilder, BuiltBars, Session
from technic_stream.marketdata.decode import decode_trade_records
from technic_stream.redis import redis_client
from technic_stream.redis.checkpoint import CheckpointStore
from technic_stream.topics import group_name, topic_name

__all__ = ["BAR_GROUP", "BarService", "bar_service"]

log = logging.getLogger(__name__)

BAR_GROUP = "bars"  # under the topic prefix: technic.bars
TRADES = Counter("technic_bars_trades", "Trades applied to bars")
BARS_OUT = Counter("technic_bars_emitted", "Bars published (new or corrected)", ["tf"])
LATE_DROPPED = Counter("technic_bars_late_dropped", "Trades too late for their bar", ["tf"])
CHECKPOINTS = Counter("technic_bars_checkpoints", "Partition checkpoints saved")
SYMBOLS = Gauge("technic_bars_symbols", "Symbols with bar state in this process")


def _wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Part:
    builder: BarBuilder
    next_offset: int | None = None  # next record to apply; None until the first batch
    saved_offset: int | None = None
    saved_at: float = 0.0
    changed: bool = False


@dataclass
class BarService:
    """Batch handler of the bar builder group."""

    settings: Settings
    producer: Producer
    redis: aioredis.Redis
    tick_s: float = 0.2
    parts: dict[TopicPartition, _Part] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.trades_topic = topic_name(s.topic_prefix, "md.trades")
        self.bars_topic = topic_name(s.topic_prefix, "md.bars")
        self.dlq = DeadLetterQueue(self.producer, topic_name(s.topic_prefix, "dlq"))
        self.group = group_name(s.topic_prefix, BAR_GROUP)
        self.store = CheckpointStore(self.redis, s.redis_prefix, self.group)
        self.tfs = tuple(t.strip() for t in s.bar_timeframes.split(",") if t.strip())
        self.session = Session(s.session_tz, s.session_open, s.session_close)
        BarBuilder(self.tfs, grace_ms=s.bar_grace_ms, session=self.session)  # validates
        self.consumer: BatchConsumer | None = None
        self.lock = asyncio.Lock()
        self.emitted = 0
        self.late_dropped = 0  # trades too late for a bar (per timeframe they missed)

    def _builder(self) -> BarBuilder:
        s = self.settings
        return BarBuilder(self.tfs, grace_ms=s.bar_grace_ms, session=self.session)

    # Batches ----------------------------------------------------------------------

    async def on_batch(self, batch: Batch) -> None:
        async with self.lock:
            latest = _wall_ms() + self.settings.max_future_ms
            for tp, records in batch.items():
                part = self.parts.get(tp)
                if part is None:  # assigned without on_assigned (should not happen)
                    part = self.parts[tp] = _Part(self._builder())
                rows, bad = decode_trade_records(
                    records, max_bytes=self.settings.max_message_bytes, latest_ts=latest
                )
                for record, reason in bad:
                    await self.dlq.route(record, MessageDecodeError(reason))
                before = dict(part.builder.dropped)
                built = part.builder.apply(rows.symbol, rows.ts, rows.price, rows.size, _wall_ms())
                for tf, n in part.builder.dropped.items():
                    if n > before[tf]:
                        LATE_DROPPED.labels(tf).inc(n - before[tf])
                        self.late_dropped += n - before[tf]
                TRADES.inc(len(rows))
                await self._publish(built)
                part.next_offset = records[-1].offset + 1
                part.changed = True
            await self.producer.flush()
            await self._checkpoint_due()
            SYMBOLS.set(sum(len(p.builder.symbols) for p in self.parts.values()))

    async def _publish(self, built: BuiltBars) -> None:
        for j in range(len(built)):
            sym = built.symbol[j]
            payload = {
                "type": "bar",
                "v": 1,
                "symbol": sym,
                "tf": built.tf[j],
                "ts": int(built.ts[j]),
                "open": float(built.open[j]),
                "high": float(built.high[j]),
                "low": float(built.low[j]),
                "close": float(built.close[j]),
                "volume": float(built.volume[j]),
            }
            await self.producer.send(self.bars_topic, orjson.dumps(payload), key=sym.encode())
            BARS_OUT.labels(built.tf[j]).inc()
        self.emitted += len(built)

    # The clock --------------------------------------------------------------------

    async def tick(self) -> int:
        """Close what the clock has passed, on every partition; return bars published."""
        async with self.lock:
            now = _wall_ms()
            sent = 0
            for part in self.parts.values():
                built = part.builder.sweep(now)
                if len(built):
                    await self._publish(built)
                    part.changed = True
                    sent += len(built)
            if sent:
                await self.producer.flush()
            await self._checkpoint_due()
            return sent

    async def run_clock(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick_s)
            if not stop.is_set():
                await self.tick()

    # Checkpoints ------------------------------------------------------------------

    async def _checkpoint_due(self) -> None:
        interval = self.settings.checkpoint_interval_s
        now = time.monotonic()
        for tp, part in self.parts.items():
            if part.changed and now - part.saved_at >= interval:
                await self._save(tp, part)

    async def _save(self, tp: TopicPartition, part: _Part) -> None:
        if part.next_offset is None:
            return  # nothing applied since the partition was assigned
        await self.store.save(tp.topic, tp.partition, part.next_offset, part.builder.snapshot())
        part.saved_offset = part.next_offset
        part.saved_at = time.monotonic()
        part.changed = False
        CHECKPOINTS.inc()

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        async with self.lock:
            for tp in partitions:
                part = _Part(self._builder())
                ckpt = await self.store.load(tp.topic, tp.partition)
                if ckpt is not None:
                    try:
                        part.builder.restore(ckpt.state, _wall_ms())
                    except (ValueError, KeyError) as exc:
                        log.warning(
                            "bar checkpoint unusable; starting empty from the committed offset",
                            extra={"partition": tp.partition, "error": str(exc)},
                        )
                    else:
                        part.next_offset = part.saved_offset = ckpt.offset
                        if self.consumer is not None:
                            await self.consumer.seek(tp, ckpt.offset)
                        log.info(
                            "bar state restored",
                            extra={"partition": tp.partition, "offset": ckpt.offset,
                                   "symbols": len(part.builder.symbols)},
                        )  # fmt: skip
                self.parts[tp] = part

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        async with self.lock:
            await self.producer.flush()
            for tp in partitions:
                part = self.parts.pop(tp, None)
                if part is not None and part.changed:
                    await self._save(tp, part)


async def bar_service(settings: Settings, stop: asyncio.Event, ops: OpsServer) -> None:
    """The bar builder process: runs until ``stop``."""
    redis = redis_client(settings)
    try:
        async with Producer(settings) as producer:
            handler = BarService(settings, producer, redis)
            consumer = BatchConsumer(settings, [handler.trades_topic], handler.group, handler)
            handler.consumer = consumer
            ops.checks["bars"] = consumer_ready(consumer)
            clock_stop = asyncio.Event()
            clock = asyncio.create_task(handler.run_clock(clock_stop), name="bars-clock")
            try:
                await run_consumer(consumer, stop)
            finally:
                clock_stop.set()
                await clock
    finally:
        await redis.aclose()
