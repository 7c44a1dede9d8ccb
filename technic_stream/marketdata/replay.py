"""Replaying recorded bars: a CSV/Parquet file (or the bundled sample) to ``md.bars``.

Rows are read and checked by :func:`technic_stream.data.files.read_bar_file` (bad rows
are reported with their line number and never sent), optionally adjusted with the
file's ``Adj Close``, and sent in time order across symbols — the way a feed would
have delivered them — either as fast as possible or at ``speed`` times real time.

Adjustments (``adjust``):

- ``none``: the prices as recorded.
- ``splits``: splits only. A split shows as a jump of the factor ``adj_close / close``
  between two sessions by a simple ratio (2:1, 3:2, 7:1 …); dividends move the factor
  by a few percent and are left alone. Prices before each split are divided by its
  ratio and volumes multiplied, so the series is continuous in shares.
- ``full``: every price times ``adj_close / close`` (splits and dividends), volume
  divided by it — what most charting sites show as "adjusted".
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal, TextIO

import numpy as np

from technic_stream.config import Settings
from technic_stream.data.files import BarFile, ColumnMap, RowProblem, read_bar_file
from technic_stream.data.sample import sample_path
from technic_stream.errors import ConfigError
from technic_stream.kafka import Producer
from technic_stream.marketdata.publish import BarPublisher, Pacer, Progress
from technic_stream.marketdata.synth import BarColumns
from technic_stream.messages import MAX_BATCH_ROWS, TIMEFRAME_MS
from technic_stream.topics import topic_name

__all__ = [
    "Adjust",
    "ReplayConfig",
    "ReplayData",
    "ReplayReport",
    "adjust_bars",
    "infer_timeframe",
    "load_replay",
    "run_replay",
    "split_ratios",
]

Adjust = Literal["none", "splits", "full"]

#: Smallest factor jump read as a split (dividends move it by a few percent).
SPLIT_MIN_JUMP = 1.2
#: How close a jump must be to a simple ratio p/q (q ≤ 10) to be called a split.
SPLIT_TOLERANCE = 0.03


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    path: Path | None = None  # None = the bundled sample data
    columns: ColumnMap = field(default_factory=ColumnMap)
    symbol: str | None = None  # the symbol of a file without a symbol column
    adjust: Adjust = "none"
    tf: str | None = None  # None = inferred from the spacing of the bars
    speed: float = 0.0  # N times real time; 0 = as fast as possible
    fmt: Literal["bars", "batch"] = "bars"

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError("speed must be 0 (as fast as possible) or positive")
        if self.tf is not None and self.tf not in TIMEFRAME_MS:
            raise ValueError(f"timeframe {self.tf!r}: use one of {', '.join(TIMEFRAME_MS)}")
        if self.adjust not in ("none", "splits", "full"):
            raise ValueError(f"adjust {self.adjust!r}: use none, splits or full")


@dataclass(slots=True)
class ReplayData:
    """Bars ready to send: every column in send order (time, then file order)."""

    bars: BarFile
    tf: str
    splits: dict[str, list[tuple[int, Fraction]]]  # symbol → (ts of first bar after, ratio)

    @property
    def problems(self) -> list[RowProblem]:
        return self.bars.problems


@dataclass(frozen=True, slots=True)
class ReplayReport:
    rows_read: int
    bars: int
    skipped: int
    messages: int
    seconds: float
    topic: str
    tf: str
    symbols: int


def split_ratios(ts: np.ndarray, close: np.ndarray, adj_close: np.ndarray) -> np.ndarray:
    """Per bar, the split ratio that took effect at that bar (1 where none), oldest first."""
    factor = adj_close / close
    ratios = np.ones(ts.shape[0])
    if ts.shape[0] < 2:
        return ratios
    jump = factor[1:] / factor[:-1]
    for i in np.flatnonzero((jump >= SPLIT_MIN_JUMP) | (jump <= 1 / SPLIT_MIN_JUMP)):
        simple = _simple_ratio(float(jump[i]))
        if simple is not None:
            ratios[i + 1] = float(simple)
    return ratios


def _simple_ratio(r: float) -> Fraction | None:
    """The split ratio p/q (smallest q ≤ 10) within the tolerance of ``r``, if any."""
    for q in range(1, 11):
        p = round(r * q)
        if p >= 1 and abs(p / q / r - 1) <= SPLIT_TOLERANCE:
            return Fraction(p, q)
    return None


def adjust_bars(bars: BarFile, adjust: Adjust) -> dict[str, list[tuple[int, Fraction]]]:
    """Adjust ``bars`` in place (rows of one symbol must be in time order); return splits."""
    splits: dict[str, list[tuple[int, Fraction]]] = {}
    if adjust == "none":
        return splits
    assert bars.adj_close is not None
    prices = (bars.open, bars.high, bars.low, bars.close)
    for sym in np.unique(bars.symbol).tolist():
        idx = np.flatnonzero(bars.symbol == sym)
        if adjust == "full":
            factor = bars.adj_close[idx] / bars.close[idx]
        else:
            ratios = split_ratios(bars.ts[idx], bars.close[idx], bars.adj_close[idx])
            # a bar is divided by every split that took effect after it
            after = np.cumprod(ratios[::-1])[::-1]
            factor = 1.0 / np.concatenate([after[1:], [1.0]])
            found = np.flatnonzero(ratios != 1.0)
            if found.size:
                splits[sym] = [
                    (int(bars.ts[idx[i]]), Fraction(ratios[i]).limit_denominator(10)) for i in found
                ]
        for col in prices:
            col[idx] = col[idx] * factor
        bars.volume[idx] = bars.volume[idx] / factor
    return splits


def infer_timeframe(bars: BarFile) -> str:
    """The timeframe whose length is nearest the typical spacing of a symbol's bars."""
    gaps = []
    for sym in np.unique(bars.symbol).tolist():
        ts = np.unique(bars.ts[bars.symbol == sym])
        if ts.shape[0] > 1:
            gaps.append(np.diff(ts))
    if not gaps:
        raise ValueError("cannot infer the timeframe from fewer than two bars; give --tf")
    spacing = float(np.median(np.concatenate(gaps)))
    return min(TIMEFRAME_MS, key=lambda tf: abs(np.log(TIMEFRAME_MS[tf] / spacing)))


def load_replay(config: ReplayConfig) -> ReplayData:
    """Read, check, order and adjust the bars of the configured file."""
    path = config.path or sample_path()
    bars = read_bar_file(
        path, config.columns, symbol=config.symbol, need_adj_close=config.adjust != "none"
    )
    order = np.argsort(bars.ts, kind="stable")  # time order; same-ts rows keep file order
    for name in ("lines", "symbol", "ts", "open", "high", "low", "close", "volume", "adj_close"):
        col = getattr(bars, name)
        if col is not None:
            setattr(bars, name, col[order])
    bars.rows = [bars.rows[i] for i in order.tolist()]
    splits = adjust_bars(bars, config.adjust)
    tf = config.tf or infer_timeframe(bars)
    return ReplayData(bars=bars, tf=tf, splits=splits)


def report_problems(problems: list[RowProblem], path: Path, out: TextIO, limit: int = 20) -> None:
    """Print the skipped rows (the first ``limit``) and how many there were."""
    for p in problems[:limit]:
        print(f"skipped {path}:{p.line}: {p.reason}", file=out)
    if len(problems) > limit:
        print(f"... and {len(problems) - limit} more skipped rows", file=out)


def _groups(ts: np.ndarray, fmt: str, speed: float) -> list[tuple[int, int]]:
    """[start, end) row ranges to send at once: one bar time each, or (batch, as fast as
    possible) up to MAX_BATCH_ROWS rows spanning many bar times."""
    n = ts.shape[0]
    if fmt == "batch" and speed == 0:
        return [(s, min(s + MAX_BATCH_ROWS, n)) for s in range(0, n, MAX_BATCH_ROWS)]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(ts)) + 1, [n]]).tolist()
    return list(itertools.pairwise(bounds))


async def run_replay(
    settings: Settings,
    config: ReplayConfig,
    *,
    data: ReplayData | None = None,
    progress: TextIO | None = sys.stderr,
) -> ReplayReport:
    """Send the file's good bars to ``md.bars``; problems are reported on ``progress``."""
    data = data or load_replay(config)  # a bad file is reported before anything else
    if not settings.kafka_bootstrap:
        raise ConfigError("TECHNIC_KAFKA_BOOTSTRAP: required to publish (or use 'up')")
    bars = data.bars
    if progress is not None:
        report_problems(data.problems, bars.path, progress)
    topic = topic_name(settings.topic_prefix, "md.bars")
    symbols, index = np.unique(bars.symbol, return_inverse=True)
    started = time.monotonic()
    async with Producer(settings) as producer:
        partitions = len(await producer.partitions_for(topic))
        pub = BarPublisher(
            producer, topic, symbols.tolist(), data.tf, partitions=partitions,
            max_bytes=settings.max_message_bytes,
        )  # fmt: skip
        bar = Progress(len(bars), "bars", out=progress) if progress is not None else None
        pacer = Pacer(0.0)
        first_ts = int(bars.ts[0]) if len(bars) else 0
        for lo, hi in _groups(bars.ts, config.fmt, config.speed):
            if config.speed > 0:
                due = (int(bars.ts[lo]) - first_ts) / 1000.0 / config.speed
                wait = due - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
            cols = BarColumns(
                index=index[lo:hi].astype(np.int64),
                ts=bars.ts[lo:hi],
                open=bars.open[lo:hi],
                high=bars.high[lo:hi],
                low=bars.low[lo:hi],
                close=bars.close[lo:hi],
                volume=bars.volume[lo:hi],
            )
            n = await (pub.batch(cols) if config.fmt == "batch" else pub.bars(cols))
            await pacer.pace(n)
            if bar is not None:
                bar.update(n)
        await producer.flush()
        if bar is not None:
            bar.close()
    return ReplayReport(
        rows_read=bars.rows_read,
        bars=len(bars),
        skipped=len(data.problems),
        messages=pub.messages,
        seconds=time.monotonic() - started,
        topic=topic,
        tf=data.tf,
        symbols=int(symbols.shape[0]),
    )
