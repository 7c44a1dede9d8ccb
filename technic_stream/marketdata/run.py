"""``technic-stream synth``: a synthetic universe to Kafka, as bars, BarBatch or trades."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from technic_stream.config import Settings
from technic_stream.errors import ConfigError
from technic_stream.kafka import Producer
from technic_stream.marketdata.publish import BarPublisher, Format, Pacer, Progress
from technic_stream.marketdata.synth import SynthConfig, SyntheticMarket, split_into_trades
from technic_stream.topics import topic_name

__all__ = ["SynthReport", "run_synth"]


@dataclass(frozen=True, slots=True)
class SynthReport:
    steps: int
    bars: int
    trades: int
    messages: int
    seconds: float
    topic: str


async def run_synth(
    settings: Settings,
    config: SynthConfig,
    *,
    steps: int,
    fmt: Format = "bars",
    rate: float = 0.0,
    progress: TextIO | None = sys.stderr,
) -> SynthReport:
    """Publish ``steps`` bar times of the market; ``rate`` is bars/s (trades/s for trades)."""
    if not settings.kafka_bootstrap:
        raise ConfigError("TECHNIC_KAFKA_BOOTSTRAP: required to publish (or use 'up')")
    market = SyntheticMarket(config)
    topic = topic_name(settings.topic_prefix, "md.trades" if fmt == "trades" else "md.bars")
    pacer = Pacer(rate)
    bars = trades = 0
    async with Producer(settings) as producer:
        partitions = len(await producer.partitions_for(topic))
        pub = BarPublisher(
            producer, topic, market.symbols, config.tf, partitions=partitions,
            max_bytes=settings.max_message_bytes,
        )  # fmt: skip
        bar = Progress(steps, "steps", out=progress) if progress is not None else None
        for _ in range(steps):
            cols = market.step()
            bars += len(cols)
            if fmt == "trades":
                n = await pub.trades(split_into_trades(cols, market.tf_ms, market.rng))
                trades += n
            elif fmt == "batch":
                n = await pub.batch(cols)
            else:
                n = await pub.bars(cols)
            await pacer.pace(n)
            if bar is not None:
                bar.update(1)
        await producer.flush()
        if bar is not None:
            bar.close()
    return SynthReport(
        steps=steps,
        bars=bars,
        trades=trades,
        messages=pub.messages,
        seconds=time.monotonic() - pacer.start,
        topic=topic,
    )
