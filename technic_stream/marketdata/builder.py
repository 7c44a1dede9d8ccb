"""Trades → time bars, on event time with a grace period, closed by the clock.

The bar builder keeps, per symbol and timeframe, a small ring of the bars that may
still change. Trades are applied in one numba pass per timeframe over a whole batch
(no Python per trade). Rules:

- A trade belongs to the bar ``[ts - ts % d, … + d)`` of each timeframe; open is the
  earliest trade of the bar by event time, close the latest (so a late trade that is
  earlier than the open becomes the open), high/low/volume aggregate.
- The **stream clock** is the latest event time seen on the partition, advanced by
  wall time while nothing newer arrives — so bars of quiet symbols (and of a quiet
  feed) still close, without dummy messages, and a replay of old trades runs on its
  own event time.
- A bar is **emitted** once the clock passes its end. A late trade arriving while the
  clock is within ``grace`` of the bar's end updates it and the bar is emitted again
  with the same ``ts`` (a correction). Later trades for it are counted and dropped.
- Rollups (5m, 15m, 1h, …) are computed in the same pass from the same trades, which
  is exactly the aggregation of the 1m bars, corrections included. ``1d`` is
  session-aware: only trades in the regular session (09:30-16:00 America/New_York by
  default, Monday to Friday) count, its ``ts`` is UTC midnight of the session date (as
  in the sample data) and it closes at the session close.

State is plain arrays, so it is checkpointed (``snapshot``/``restore``) together with
the source offset it covers, and a restart resumes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numba import njit

from technic_stream.messages import TIMEFRAME_MS

__all__ = ["BarBuilder", "BuiltBars", "Session"]

DAY_MS = 86_400_000
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Session:
    """The regular trading session that daily bars cover."""

    tz: str = "America/New_York"
    open: str = "09:30"
    close: str = "16:00"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


@lru_cache(maxsize=8192)
def _session_bounds(session: Session, utc_day: int) -> tuple[int, int]:
    """(open, close) in epoch ms of the session on the local date of ``utc_day``; (-1, -1)
    on weekends."""
    date = datetime.fromtimestamp(utc_day * 86_400, UTC).date()
    if date.weekday() >= 5:
        return -1, -1
    zone = session.zone
    o = datetime.combine(date, time.fromisoformat(session.open), zone)
    c = datetime.combine(date, time.fromisoformat(session.close), zone)
    if c <= o:
        c += timedelta(days=1)
    return int(o.timestamp() * 1000), int(c.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class BuiltBars:
    """Bars to publish (new or corrected), as columns."""

    tf: list[str]
    symbol: list[str]
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])


# State columns of one timeframe, each shaped (symbols, ring).
_INT_COLS = ("bar_ts", "end", "open_ts", "close_ts")
_FLOAT_COLS = ("o", "h", "l", "c", "v")
_FLAG_COLS = ("dirty",)


@njit(cache=True, nogil=True)
def _apply_nb(
    sym, ts, px, sz, start, end, slot, clock, grace,
    bar_ts, bar_end, open_ts, close_ts, o, h, lo, c, v, dirty,
    out_sym, out_slot_ts, out_vals,
):  # fmt: skip
    """Apply trades; bars pushed out of the ring while unsent go to ``out_*``.

    Returns (dropped, n_out). ``start < 0`` marks a trade this timeframe ignores.
    """
    dropped = 0
    n_out = 0
    for i in range(ts.shape[0]):
        b = start[i]
        if b < 0:
            continue
        if end[i] + grace <= clock[i]:
            dropped += 1  # the bar is final: too late
            continue
        s = sym[i]
        k = slot[i]
        t = ts[i]
        p = px[i]
        if bar_ts[s, k] == b:
            if p > h[s, k]:
                h[s, k] = p
            if p < lo[s, k]:
                lo[s, k] = p
            v[s, k] += sz[i]
            if t < open_ts[s, k]:
                open_ts[s, k] = t
                o[s, k] = p
            if t >= close_ts[s, k]:
                close_ts[s, k] = t
                c[s, k] = p
            dirty[s, k] = 1
        elif bar_ts[s, k] < b:
            if bar_ts[s, k] >= 0 and dirty[s, k]:
                out_sym[n_out] = s
                out_slot_ts[n_out] = bar_ts[s, k]
                out_vals[n_out, 0] = o[s, k]
                out_vals[n_out, 1] = h[s, k]
                out_vals[n_out, 2] = lo[s, k]
                out_vals[n_out, 3] = c[s, k]
                out_vals[n_out, 4] = v[s, k]
                n_out += 1
            bar_ts[s, k] = b
            bar_end[s, k] = end[i]
            open_ts[s, k] = t
            close_ts[s, k] = t
            o[s, k] = p
            h[s, k] = p
            lo[s, k] = p
            c[s, k] = p
            v[s, k] = sz[i]
            dirty[s, k] = 1
        else:
            dropped += 1  # older than anything the ring holds
    return dropped, n_out


class _Frame:
    """Ring state of one timeframe."""

    def __init__(self, tf: str, grace_ms: int, capacity: int) -> None:
        self.tf = tf
        self.d = TIMEFRAME_MS[tf]
        # a bar stays changeable until end + grace; the ring must hold all such bars
        self.ring = math.ceil(grace_ms / self.d) + 2
        self.cols: dict[str, np.ndarray] = {}
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        shape = (capacity, self.ring)
        for name in _INT_COLS:
            self.cols[name] = np.full(shape, -1, dtype=np.int64)
        for name in _FLOAT_COLS:
            self.cols[name] = np.zeros(shape)
        for name in _FLAG_COLS:
            self.cols[name] = np.zeros(shape, dtype=np.uint8)

    def grow(self, capacity: int) -> None:
        old = self.cols
        self._alloc(capacity)
        n = next(iter(old.values())).shape[0]
        for name, arr in old.items():
            self.cols[name][:n] = arr


class BarBuilder:
    """Bar state of one partition's symbols."""

    def __init__(
        self,
        tfs: tuple[str, ...] = ("1s", "1m", "5m", "15m", "1h", "1d"),
        *,
        grace_ms: int = 2_000,
        session: Session | None = None,
        capacity: int = 64,
    ) -> None:
        unknown = [tf for tf in tfs if tf not in TIMEFRAME_MS or tf == "1w"]
        if unknown or not tfs:
            raise ValueError(f"timeframes {unknown or tfs}: use 1s 1m 5m 15m 30m 1h 4h 1d")
        if grace_ms < 0:
            raise ValueError("grace must be >= 0")
        self.tfs = tuple(tfs)
        self.grace_ms = grace_ms
        self.session = session or Session()
        self.frames = [_Frame(tf, grace_ms, capacity) for tf in self.tfs]
        self.capacity = capacity
        self.symbols: list[str] = []
        self.index: dict[str, int] = {}
        self.event_max = -1  # latest event time seen (ms)
        self.wall_mark = 0  # wall time (ms) when event_max last advanced
        self.dropped: dict[str, int] = dict.fromkeys(self.tfs, 0)
        self.trades = 0

    # The clock -----------------------------------------------------------------

    def clock(self, wall_ms: int) -> int:
        """Stream time: latest event time, plus wall time elapsed since it last advanced."""
        if self.event_max < 0:
            return -1
        return self.event_max + max(0, wall_ms - self.wall_mark)

    # Trades ----------------------------------------------------------------------

    def rows(self, symbols: list[str]) -> np.ndarray:
        """State rows of these symbols, adding new ones."""
        out = np.empty(len(symbols), dtype=np.int64)
        for j, s in enumerate(symbols):
            i = self.index.get(s)
            if i is None:
                i = self.index[s] = len(self.symbols)
                self.symbols.append(s)
            out[j] = i
        if len(self.symbols) > self.capacity:
            self.capacity = max(self.capacity * 2, len(self.symbols))
            for f in self.frames:
                f.grow(self.capacity)
        return out

    def apply(
        self, symbols: list[str], ts: np.ndarray, price: np.ndarray, size: np.ndarray, wall_ms: int
    ) -> BuiltBars:
        """Apply trades (in arrival order) and return every bar that is now due."""
        n = len(symbols)
        if n == 0:
            return self.sweep(wall_ms)
        sym = self.rows(symbols)
        ts = np.asarray(ts, dtype=np.int64)
        price = np.asarray(price, dtype=np.float64)
        size = np.asarray(size, dtype=np.float64)
        before = self.clock(wall_ms)
        running = np.maximum.accumulate(ts)
        clock = np.maximum(running, before)
        out: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        for f in self.frames:
            start, end = self._buckets(f, ts)
            slot = np.where(start >= 0, (start // f.d) % f.ring, 0)
            out_sym = np.empty(n, dtype=np.int64)
            out_ts = np.empty(n, dtype=np.int64)
            out_vals = np.empty((n, 5))
            c = f.cols
            dropped, k = _apply_nb(
                sym, ts, price, size, start, end, slot, clock, self.grace_ms,
                c["bar_ts"], c["end"], c["open_ts"], c["close_ts"],
                c["o"], c["h"], c["l"], c["c"], c["v"], c["dirty"],
                out_sym, out_ts, out_vals,
            )  # fmt: skip
            self.dropped[f.tf] += int(dropped)
            if k:
                out.append((f.tf, out_sym[:k], out_ts[:k], out_vals[:k]))
        self.trades += n
        top = int(running[-1])
        if top > self.event_max:
            self.event_max = top
            self.wall_mark = wall_ms
        swept = self.sweep(wall_ms)
        if not out:
            return swept
        return self._concat(out, swept)

    def _buckets(self, f: _Frame, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bar start and end per trade; start -1 where the timeframe ignores the trade."""
        if f.tf != "1d":
            start = ts - ts % f.d
            return start, start + f.d
        days = ts // DAY_MS
        start = np.full(ts.shape[0], -1, dtype=np.int64)
        end = np.zeros(ts.shape[0], dtype=np.int64)
        for day in np.unique(days).tolist():
            o, c = _session_bounds(self.session, int(day))
            on_day = days == day
            inside = on_day & (ts >= o) & (ts < c)
            start[inside] = day * DAY_MS
            end[on_day] = c
        return start, end

    # Closing on the clock ------------------------------------------------------------

    def sweep(self, wall_ms: int) -> BuiltBars:
        """Every changed bar whose end the clock has passed (new bars and corrections)."""
        now = self.clock(wall_ms)
        out = []
        n = len(self.symbols)
        for f in self.frames:
            c = f.cols
            due = (c["dirty"][:n] == 1) & (c["bar_ts"][:n] >= 0) & (c["end"][:n] <= now)
            rows, slots = np.nonzero(due)
            if rows.size == 0:
                continue
            vals = np.stack([c[k][rows, slots] for k in _FLOAT_COLS], axis=1)
            out.append((f.tf, rows, c["bar_ts"][rows, slots], vals))
            c["dirty"][rows, slots] = 0
        return self._concat(out, None)

    def _concat(
        self, parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], more: BuiltBars | None
    ) -> BuiltBars:
        tfs: list[str] = []
        syms: list[str] = []
        ts_parts, val_parts = [], []
        for tf, rows, ts, vals in parts:
            tfs.extend([tf] * rows.shape[0])
            syms.extend(self.symbols[i] for i in rows.tolist())
            ts_parts.append(ts)
            val_parts.append(vals)
        ts = np.concatenate(ts_parts) if ts_parts else np.empty(0, np.int64)
        vals = np.concatenate(val_parts) if val_parts else np.empty((0, 5))
        if more is not None and len(more):
            tfs += more.tf
            syms += more.symbol
            ts = np.concatenate([ts, more.ts])
            extra = np.stack([more.open, more.high, more.low, more.close, more.volume], axis=1)
            vals = np.concatenate([vals, extra])
        # per symbol and timeframe, oldest bar first
        rank = {tf: i for i, tf in enumerate(self.tfs)}
        order = np.lexsort((ts, np.asarray(syms, dtype=object), np.array([rank[t] for t in tfs])))
        vals = vals[order]
        return BuiltBars(
            [tfs[i] for i in order.tolist()], [syms[i] for i in order.tolist()], ts[order],
            vals[:, 0], vals[:, 1], vals[:, 2], vals[:, 3], vals[:, 4],
        )  # fmt: skip

    # Checkpoints -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data (numpy arrays inside; orjson serialises them)."""
        n = len(self.symbols)
        return {
            "version": STATE_VERSION,
            "tfs": list(self.tfs),
            "grace_ms": self.grace_ms,
            "symbols": list(self.symbols),
            "event_max": self.event_max,
            "dropped": dict(self.dropped),
            "trades": self.trades,
            "frames": {
                f.tf: {name: np.ascontiguousarray(arr[:n]) for name, arr in f.cols.items()}
                for f in self.frames
            },
        }

    def restore(self, state: dict[str, Any], wall_ms: int) -> None:
        """Load a snapshot of the same configuration; the idle clock restarts now."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"bar state version {state.get('version')!r} is not {STATE_VERSION}")
        if tuple(state["tfs"]) != self.tfs or state["grace_ms"] != self.grace_ms:
            raise ValueError("bar state was built with other timeframes or grace")
        symbols = list(state["symbols"])
        self.symbols = []
        self.index = {}
        self.capacity = max(64, len(symbols))
        self.frames = [_Frame(tf, self.grace_ms, self.capacity) for tf in self.tfs]
        self.rows(symbols)
        n = len(symbols)
        for f in self.frames:
            saved = state["frames"][f.tf]
            for name, arr in f.cols.items():
                arr[:n] = np.asarray(saved[name], dtype=arr.dtype).reshape(n, f.ring)
        self.event_max = int(state["event_max"])
        self.wall_mark = wall_ms
        self.dropped = {tf: int(state["dropped"].get(tf, 0)) for tf in self.tfs}
        self.trades = int(state["trades"])
