"""A seeded synthetic market: many symbols, realistic enough to exercise everything.

Prices follow a geometric random walk per symbol (its own volatility), opening each
session with an overnight gap; intraday volume follows the U-shaped profile of a US
equity session (heavy at the open and the close); symbols halt now and then and emit
nothing while halted. Bars are generated one time step at a time for all symbols with
NumPy, and can be split into trades that aggregate back to exactly the same bar.

The same seed always gives the same market, so tests and benchmarks can compare runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from technic_stream.messages import TIMEFRAME_MS

__all__ = ["BarColumns", "SynthConfig", "SyntheticMarket", "TradeColumns", "split_into_trades"]

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SynthConfig:
    symbols: int = 500
    seed: int = 7
    tf: str = "1m"
    #: first session day (UTC date); sessions run Monday to Friday
    start: str = "2026-01-05"
    #: session open, minutes after UTC midnight (14:30 UTC = 09:30 New York in winter)
    open_minute: int = 870
    session_minutes: int = 390
    prefix: str = "SYN"
    annual_vol: tuple[float, float] = (0.15, 0.8)  # per-symbol volatility range
    gap_sigma: float = 0.015  # overnight gap, log-return standard deviation
    halt_rate: float = 0.0005  # chance per symbol-bar that a halt starts
    halt_bars: tuple[int, int] = (5, 30)

    def __post_init__(self) -> None:
        if self.tf not in TIMEFRAME_MS or self.tf == "1w":
            raise ValueError(f"timeframe {self.tf!r}: use one of 1s 1m 5m 15m 30m 1h 4h 1d")
        if not 1 <= self.symbols <= 1_000_000:
            raise ValueError("symbols must be between 1 and 1,000,000")
        if self.tf != "1d" and (self.session_minutes * 60_000) % TIMEFRAME_MS[self.tf]:
            raise ValueError(f"a {self.session_minutes}-minute session is not whole {self.tf} bars")


@dataclass(frozen=True, slots=True)
class BarColumns:
    """Bars of the symbols that traded (``index`` into the universe).

    ``ts`` is one bar time for the whole step (the generator), or one per row (replay).
    """

    index: np.ndarray  # int64
    ts: int | np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True, slots=True)
class TradeColumns:
    """Trades of one time step, in time order (``index`` into the universe)."""

    index: np.ndarray
    ts: np.ndarray
    price: np.ndarray
    size: np.ndarray


def _volume_profile(steps: int) -> np.ndarray:
    """Relative volume per intraday step: a U, about 3x heavier at the edges; mean 1."""
    x = (np.arange(steps) + 0.5) / steps
    shape = 1.0 + 2.0 * (2 * x - 1) ** 4 + 1.0 * np.exp(-x * 25)
    return shape / shape.mean()


class SyntheticMarket:
    """Steps a seeded market forward one bar time at a time."""

    def __init__(self, config: SynthConfig | None = None) -> None:
        c = self.config = config or SynthConfig()
        self.rng = np.random.default_rng(c.seed)
        n = c.symbols
        width = max(4, len(str(n - 1)))
        self.symbols = [f"{c.prefix}{i:0{width}d}" for i in range(n)]
        self.tf_ms = TIMEFRAME_MS[c.tf]
        self.daily = c.tf == "1d"
        self.steps_per_session = 1 if self.daily else c.session_minutes * 60_000 // self.tf_ms
        per_year = 252 * self.steps_per_session
        vol = self.rng.uniform(*c.annual_vol, n)
        self.sigma = vol / math.sqrt(per_year)
        self.price = np.exp(self.rng.uniform(math.log(5.0), math.log(500.0), n))
        # average shares per bar: larger for cheaper stocks, spread over three decades
        self.base_volume = np.exp(self.rng.normal(math.log(2e6 / per_year * 252), 1.0, n))
        self.base_volume *= (50.0 / self.price) ** 0.3
        self.profile = _volume_profile(self.steps_per_session)
        self.halted_until = np.full(n, -1, dtype=np.int64)
        day = datetime.fromisoformat(c.start).replace(tzinfo=UTC)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        self.day = day
        self.step_in_session = 0
        self.step_count = 0

    def _session_open_ms(self) -> int:
        midnight = int(self.day.timestamp() * 1000)
        return midnight if self.daily else midnight + self.config.open_minute * 60_000

    def _next_day(self) -> None:
        self.day += timedelta(days=1)
        while self.day.weekday() >= 5:
            self.day += timedelta(days=1)

    def step(self) -> BarColumns:
        """The next bar time's bars, for every symbol that is not halted."""
        c = self.config
        rng = self.rng
        n = c.symbols
        k = self.step_in_session
        ts = self._session_open_ms() + k * self.tf_ms
        prev = self.price
        if k == 0 and self.step_count > 0:  # a new session opens with an overnight gap
            open_ = prev * np.exp(rng.normal(0.0, c.gap_sigma, n))
        else:
            open_ = prev
        close = open_ * np.exp(rng.normal(0.0, self.sigma))
        wick = np.abs(rng.normal(0.0, self.sigma * 0.6, (2, n)))
        high = np.maximum(open_, close) * np.exp(wick[0])
        low = np.minimum(open_, close) * np.exp(-wick[1])
        volume = np.floor(self.base_volume * self.profile[k] * rng.lognormal(0.0, 0.5, n))
        # halts: a halted symbol prints nothing; its price resumes where it stopped
        starting = rng.random(n) < c.halt_rate
        lengths = rng.integers(c.halt_bars[0], c.halt_bars[1] + 1, n)
        self.halted_until = np.where(
            starting & (self.halted_until < self.step_count),
            self.step_count + lengths - 1,
            self.halted_until,
        )
        live = self.halted_until < self.step_count
        self.price = np.where(live, close, prev)
        index = np.flatnonzero(live)
        self.step_count += 1
        self.step_in_session += 1
        if self.step_in_session == self.steps_per_session:
            self.step_in_session = 0
            self._next_day()
        return BarColumns(
            index=index,
            ts=ts,
            open=np.round(open_[index], 4),
            high=np.round(high[index], 4),
            low=np.round(low[index], 4),
            close=np.round(close[index], 4),
            volume=volume[index],
        )


def split_into_trades(bars: BarColumns, tf_ms: int, rng: np.random.Generator) -> TradeColumns:
    """Trades that aggregate back to exactly these bars.

    Each bar with volume gets 4-12 trades: the first at the open price at the bar's
    open time, one at the high, one at the low, the last at the close, the rest in
    between; sizes are whole shares summing to the bar's volume. Bars without volume
    get no trades (nothing traded). Trades come out in time order.
    """
    keep = np.flatnonzero(bars.volume >= 4)
    counts = rng.integers(4, 13, keep.shape[0])
    total = int(counts.sum())
    index = np.repeat(bars.index[keep], counts)
    bar_of = np.repeat(np.arange(keep.shape[0]), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(total) - np.repeat(starts, counts)  # position within its bar
    last = pos == np.repeat(counts - 1, counts)
    o, h, lo, c = (a[keep][bar_of] for a in (bars.open, bars.high, bars.low, bars.close))
    price = lo + (h - lo) * rng.random(total)
    price = np.where(pos == 0, o, np.where(pos == 1, h, np.where(pos == 2, lo, price)))
    price = np.round(np.where(last, c, price), 4)
    # times: evenly spaced inside the bar, the first at its open
    start = bars.ts if isinstance(bars.ts, int) else bars.ts[keep][bar_of]
    ts = start + _within_bar(pos, counts, tf_ms)
    # sizes: a multinomial split of the bar's volume, every trade at least one share
    vol = bars.volume[keep]
    size = np.ones(total)
    extra = vol - counts
    weights = rng.random(total)
    sums = np.bincount(bar_of, weights, minlength=keep.shape[0])
    share = np.floor(weights / sums[bar_of] * extra[bar_of])
    size += share
    short = extra - np.bincount(bar_of, share, minlength=keep.shape[0])
    size[np.cumsum(counts) - 1] += short  # the last trade of each bar takes the remainder
    return TradeColumns(index=index, ts=ts, price=price, size=size)


def _within_bar(pos: np.ndarray, counts: np.ndarray, tf_ms: int) -> np.ndarray:
    """Evenly spaced trade times inside the bar, the first at its open."""
    per = np.repeat(counts, counts)
    return (pos * (tf_ms - 1) // np.maximum(per, 1)).astype(np.int64)
