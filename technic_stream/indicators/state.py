"""Indicator state for many symbols, updated in place by the streaming kernel."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from technic_stream.errors import TechnicStreamError
from technic_stream.indicators.plan import IndicatorPlan
from technic_stream.kernels.stream import apply_bars_nb

__all__ = ["BatchResult", "IndicatorState", "StateVersionError", "doubled", "grown"]

_MAGIC = b"TSIS"
_FORMAT = 1
_HEADER = struct.Struct("<4sH64sQQ")  # magic, format, plan fingerprint, symbols, json bytes


class StateVersionError(TechnicStreamError):
    """Serialised state written by another plan or format."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one ``apply`` did: outputs per bar and the counts by outcome."""

    out: np.ndarray  # (bars, outputs), NaN where not ready or skipped
    status: np.ndarray  # int8 per bar: 0 applied, 1 corrected, 2 skipped
    applied: int
    corrected: int
    skipped: int


def doubled(capacity: int, needed: int) -> int:
    """``capacity`` doubled until it holds ``needed`` rows."""
    while capacity < needed:
        capacity *= 2
    return capacity


def grown(a: np.ndarray, cap: int, n: int, fill: float = 0.0) -> np.ndarray:
    """``a`` with ``cap`` rows: its first ``n`` rows kept, the rest ``fill``."""
    b = np.full((cap, *a.shape[1:]), fill, dtype=a.dtype)
    b[:n] = a[:n]
    return b


class IndicatorState:
    """Rows of indicator state, one per symbol, laid out by an :class:`IndicatorPlan`.

    Adding a symbol appends a row (the arrays grow by doubling, existing rows are
    copied, never recomputed). :meth:`apply` takes a batch of bars in arrival
    order for any mix of symbols and runs them through one kernel call.
    """

    def __init__(self, plan: IndicatorPlan, capacity: int = 64) -> None:
        self.plan = plan
        self.symbols: dict[str, int] = {}
        self._names: list[str] = []
        capacity = max(1, capacity)
        self.state = np.zeros((capacity, plan.width))
        self.prev = np.zeros((capacity, plan.nscalar))
        self.last_ts = np.zeros(capacity, dtype=np.int64)
        self.count = np.zeros(capacity, dtype=np.int64)
        self.latest = np.full((capacity, plan.n_outputs), np.nan)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def capacity(self) -> int:
        return int(self.state.shape[0])

    def _grow(self, needed: int) -> None:
        cap = doubled(self.capacity, needed)
        if cap == self.capacity:
            return
        n = len(self._names)
        self.state = grown(self.state, cap, n)
        self.prev = grown(self.prev, cap, n)
        self.last_ts = grown(self.last_ts, cap, n)
        self.count = grown(self.count, cap, n)
        self.latest = grown(self.latest, cap, n, np.nan)

    def row(self, symbol: str) -> int:
        """The row of ``symbol``, added if new."""
        r = self.symbols.get(symbol)
        if r is None:
            r = len(self._names)
            self._grow(r + 1)
            self.symbols[symbol] = r
            self._names.append(symbol)
        return r

    def rows(self, symbols: np.ndarray | list[str]) -> np.ndarray:
        return np.fromiter((self.row(s) for s in symbols), dtype=np.int64, count=len(symbols))

    def apply(
        self,
        rows: np.ndarray,
        ts: np.ndarray,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        out: np.ndarray | None = None,
    ) -> BatchResult:
        """Apply bars (arrival order) to the rows given; one kernel call for the batch."""
        n = rows.shape[0]
        if out is None:
            out = np.empty((n, self.plan.n_outputs))
        status = np.empty(n, dtype=np.int8)
        p = self.plan
        applied, corrected, skipped, bad = apply_bars_nb(
            p.codes, p.iparams, p.fparams, p.soff, p.roff, p.ooff, p.nscalar,
            self.state, self.prev, self.last_ts, self.count,
            np.ascontiguousarray(rows, dtype=np.int64),
            np.ascontiguousarray(ts, dtype=np.int64),
            np.ascontiguousarray(open_, dtype=np.float64),
            np.ascontiguousarray(high, dtype=np.float64),
            np.ascontiguousarray(low, dtype=np.float64),
            np.ascontiguousarray(close, dtype=np.float64),
            np.ascontiguousarray(volume, dtype=np.float64),
            out, status, self.latest, len(self._names),
        )  # fmt: skip
        if bad >= 0:
            raise IndexError(
                f"bar {bad}: row {int(rows[bad])} is not a registered symbol "
                f"(0..{len(self._names) - 1}); bars before it were applied"
            )
        return BatchResult(out, status, int(applied), int(corrected), int(skipped))

    def values(self, symbol: str) -> dict[str, float]:
        """Latest value of every output for a symbol (NaN where not ready)."""
        r = self.symbols[symbol]
        return dict(zip(self.plan.output_names, self.latest[r].tolist(), strict=True))

    def bars_seen(self, symbol: str) -> int:
        return int(self.count[self.symbols[symbol]])

    def ready(self, symbol: str) -> dict[str, bool]:
        """Per output: has the symbol seen enough bars for TA-Lib to emit a value?"""
        seen = self.bars_seen(symbol)
        return dict(zip(self.plan.output_names, (seen > self.plan.lookbacks).tolist(), strict=True))

    # Checkpoints -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        n = len(self._names)
        names = orjson.dumps(self._names)
        header = _HEADER.pack(_MAGIC, _FORMAT, self.plan.fingerprint.encode(), n, len(names))
        parts = [header, names]
        for f in (self.state, self.prev, self.latest):
            parts.append(np.ascontiguousarray(f[:n], dtype="<f8").tobytes())
        for i in (self.last_ts, self.count):
            parts.append(np.ascontiguousarray(i[:n], dtype="<i8").tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, plan: IndicatorPlan, data: bytes) -> IndicatorState:
        if len(data) < _HEADER.size:
            raise StateVersionError("state snapshot is truncated")
        magic, fmt, fingerprint, n, names_len = _HEADER.unpack_from(data, 0)
        if magic != _MAGIC:
            raise StateVersionError("not an indicator state snapshot")
        if fmt != _FORMAT:
            raise StateVersionError(f"snapshot format {fmt}, this build reads {_FORMAT}")
        if fingerprint.decode() != plan.fingerprint:
            raise StateVersionError("snapshot was written by a different indicator plan")
        at = _HEADER.size
        names = orjson.loads(data[at : at + names_len])
        at += names_len
        state = cls(plan, capacity=max(1, n))

        def take(shape: tuple[int, ...], dtype: str) -> Any:
            nonlocal at
            size = int(np.prod(shape)) * 8
            if at + size > len(data):
                raise StateVersionError("state snapshot is truncated")
            a = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=at)
            at += size
            return a.reshape(shape).astype(dtype[1:] if dtype[0] == "<" else dtype)

        state.state[:n] = take((n, plan.width), "<f8")
        state.prev[:n] = take((n, plan.nscalar), "<f8")
        state.latest[:n] = take((n, plan.n_outputs), "<f8")
        state.last_ts[:n] = take((n,), "<i8")
        state.count[:n] = take((n,), "<i8")
        if at != len(data):
            raise StateVersionError("state snapshot has trailing bytes")
        for name in names:
            state.row(name)
        return state
