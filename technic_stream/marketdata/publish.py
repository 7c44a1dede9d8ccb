"""Publishing bars and trades to Kafka: one JSON message per bar, BarBatch, or trades.

Messages are built straight from columns with orjson (no model object per bar); the
columns come from generators and readers that already guarantee the contract, and the
tests decode everything published through the strict models. BarBatch rows are grouped
by the partition their symbol's key hashes to (Kafka's default murmur2 partitioner), so
a batch never mixes partitions and per-symbol order is kept.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Literal, TextIO

import numpy as np
import orjson
from aiokafka.partitioner import murmur2

from technic_stream.kafka import Producer
from technic_stream.marketdata.synth import BarColumns, TradeColumns
from technic_stream.messages import MAX_BATCH_ROWS

__all__ = ["BarPublisher", "Pacer", "Progress", "partition_of"]

Format = Literal["bars", "batch", "trades"]


def partition_of(keys: Sequence[str], partitions: int) -> np.ndarray:
    """The partition Kafka's default partitioner picks for each key."""
    return np.array([(murmur2(k.encode()) & 0x7FFFFFFF) % partitions for k in keys], dtype=np.int64)


class BarPublisher:
    """Sends a universe's bars (or trades) to one topic."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        symbols: Sequence[str],
        tf: str,
        *,
        partitions: int,
        batch_rows: int = MAX_BATCH_ROWS,
        max_bytes: int = 1_000_000,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.symbols = list(symbols)
        self.keys = [s.encode() for s in self.symbols]
        self.tf = tf
        self.partition = partition_of(self.symbols, partitions)
        self.batch_rows = max(1, min(batch_rows, MAX_BATCH_ROWS))
        self.max_bytes = max_bytes  # consumers send larger messages to the DLQ unread
        self.messages = 0

    async def bars(self, cols: BarColumns) -> int:
        """One message per bar; returns the bars sent."""
        times = _times(cols, np.arange(len(cols)))
        for j, i in enumerate(cols.index.tolist()):
            payload = {
                "type": "bar",
                "v": 1,
                "symbol": self.symbols[i],
                "tf": self.tf,
                "ts": times[j],
                "open": float(cols.open[j]),
                "high": float(cols.high[j]),
                "low": float(cols.low[j]),
                "close": float(cols.close[j]),
                "volume": float(cols.volume[j]),
            }
            await self.producer.send(self.topic, orjson.dumps(payload), key=self.keys[i])
            self.messages += 1
        return len(cols)

    async def batch(self, cols: BarColumns) -> int:
        """BarBatch messages, one or more per partition; returns the bars sent."""
        if not len(cols):
            return 0
        parts = self.partition[cols.index]
        order = np.argsort(parts, kind="stable")  # stable: per-symbol order is kept
        bounds = np.flatnonzero(np.diff(parts[order])) + 1
        for group in np.split(order, bounds):
            for start in range(0, group.shape[0], self.batch_rows):
                await self._send_batch(cols, group[start : start + self.batch_rows])
        return len(cols)

    async def _send_batch(self, cols: BarColumns, rows: np.ndarray) -> None:
        """One BarBatch of these rows, or two halves when it would exceed the size limit."""
        idx = cols.index[rows]
        payload = {
            "type": "bar_batch",
            "v": 1,
            "tf": self.tf,
            "symbols": [self.symbols[i] for i in idx.tolist()],
            "ts": _times(cols, rows),
            "open": cols.open[rows].tolist(),
            "high": cols.high[rows].tolist(),
            "low": cols.low[rows].tolist(),
            "close": cols.close[rows].tolist(),
            "volume": cols.volume[rows].tolist(),
        }
        data = orjson.dumps(payload)
        if len(data) > self.max_bytes and rows.shape[0] > 1:
            half = rows.shape[0] // 2
            await self._send_batch(cols, rows[:half])
            await self._send_batch(cols, rows[half:])
            return
        first = int(idx[0])
        await self.producer.send(
            self.topic, data, key=self.keys[first], partition=int(self.partition[first])
        )
        self.messages += 1

    async def trades(self, cols: TradeColumns) -> int:
        """One Trade message per trade; returns the trades sent."""
        for j, i in enumerate(cols.index.tolist()):
            payload = {
                "type": "trade",
                "v": 1,
                "symbol": self.symbols[i],
                "ts": int(cols.ts[j]),
                "price": float(cols.price[j]),
                "size": float(cols.size[j]),
            }
            await self.producer.send(self.topic, orjson.dumps(payload), key=self.keys[i])
            self.messages += 1
        return int(cols.index.shape[0])


def _times(cols: BarColumns, rows: np.ndarray) -> list[int]:
    if isinstance(cols.ts, int):
        return [cols.ts] * rows.shape[0]
    return [int(t) for t in cols.ts[rows].tolist()]


class Pacer:
    """Holds a sender to a target rate (items per second); 0 means as fast as possible."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    async def pace(self, items: int) -> None:
        self.sent += items
        if self.rate <= 0:
            await asyncio.sleep(0)  # let the producer's sender run
            return
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            await asyncio.sleep(ahead)


class Progress:
    """A progress line on stderr: percent, count, rate and ETA (a bar on a terminal)."""

    def __init__(
        self, total: int, unit: str, *, out: TextIO = sys.stderr, every_s: float = 0.5
    ) -> None:
        self.total = max(total, 0)
        self.unit = unit
        self.out = out
        self.every_s = every_s if out.isatty() else max(every_s, 5.0)
        self.start = time.monotonic()
        self.last = 0.0
        self.done = 0

    def update(self, n: int, *, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 and self.total else 0.0
        text = f"{pct:5.1f}% {self.done:,}/{self.total:,} {self.unit} {rate:,.0f}/s ETA {eta:,.0f}s"
        if self.out.isatty():
            filled = int(pct / 100 * 30)
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}", end="", file=self.out)
        else:
            print(text, file=self.out)
        self.out.flush()

    def close(self) -> None:
        self.update(0, force=True)
        if self.out.isatty():
            print(file=self.out)
