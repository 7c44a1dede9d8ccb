"""One timeframe of one partition: every symbol's indicator state, recent bars and lags.

A :class:`Book` holds, per symbol (one row each):

* the kernels' state, in *segments*: the base segment is the default dashboard set;
  each time live rules need indicators the book lacks, a new segment with just those is
  added and warmed from the symbol's recent bars. Segments never disturb one another
  (each keeps its own bar count, so its readiness is its own), and existing values are
  never recomputed when rules come and go;
* the last ``history`` bars (a ring), the warm-up source for new segments;
* the last ``depth`` values of every column (bar fields and indicator outputs), so that
  rules reading ``x[1]`` (crossings) or ``x[n]`` are evaluated on every bar.

:meth:`Book.apply` takes a batch of bars for any mix of symbols in arrival order, runs
each segment's kernel once over the whole batch, and, in one numba pass, records the
bars, writes the lag ring and gathers every rule input *as of each bar*, so the rules
are then evaluated for every bar of the batch in one vectorised call.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from technic_stream.config import Settings
from technic_stream.indicators.plan import IndicatorPlan
from technic_stream.indicators.registry import IndicatorSpec, parse_indicators
from technic_stream.indicators.state import IndicatorState, StateVersionError, doubled, grown
from technic_stream.kernels.book import history_bars_nb, record_nb, relag_nb
from technic_stream.rules.ast import FIELDS

__all__ = [
    "DEFAULT_INDICATORS",
    "Applied",
    "Book",
    "pack_sections",
    "unpack_sections",
]

#: What every symbol gets on every timeframe: the dashboard's overlays and lower panes
#: (``TECHNIC_ENGINE_INDICATORS`` changes it).
DEFAULT_INDICATORS: str = Settings.model_fields["engine_indicators"].default

NAN = np.nan
_NF = len(FIELDS)  # open, high, low, close, volume: the first columns of the lag ring
#: bars per pass of the kernels in :meth:`Book.apply`. A batch of 43,000 bars (the
#: benchmark's) in one pass cost 365 ns a bar against 334 in chunks (same process, same
#: bars): writing each bar's inputs into a row of the whole batch's (inputs, bars) table,
#: rows a batch's length apart, had doubled the cost of recording the bars (60 -> 136 ns)
APPLY_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Applied:
    """What one :meth:`Book.apply` did, per bar of the batch."""

    rows: np.ndarray  # int64 row per bar
    status: np.ndarray  # int8: APPLIED, CORRECTED or SKIPPED
    seq: np.ndarray  # int64: 0 for a bar's first print, n for its n-th correction; -1 skipped
    values: np.ndarray  # (inputs, bars): each requested input as of each bar
    applied: int
    corrected: int
    skipped: int


class Book:
    """State of one timeframe for the symbols of one partition."""

    def __init__(
        self,
        tf: str,
        base: Sequence[IndicatorSpec] | str = DEFAULT_INDICATORS,
        *,
        history: int = 250,
        depth: int = 2,
        capacity: int = 64,
    ) -> None:
        if history < 1 or depth < 1:
            raise ValueError("history and depth must be at least 1")
        self.tf = tf
        specs = parse_indicators(base) if isinstance(base, str) else list(base)
        self.history = history
        self.symbols: dict[str, int] = {}
        self.names: list[str] = []
        cap = max(1, capacity)
        self.segments: list[IndicatorState] = [IndicatorState(IndicatorPlan(specs), cap)]
        self.hist = np.zeros((cap, history, 6))
        self.hcount = np.zeros(cap, dtype=np.int64)
        self.bseq = np.zeros(cap, dtype=np.int64)
        self._columns()
        self.lagv = np.full((cap, depth, len(self.columns)), NAN)

    # Layout -------------------------------------------------------------------------

    def _columns(self) -> None:
        self.columns: list[str] = list(FIELDS)
        for seg in self.segments:
            self.columns.extend(seg.plan.output_names)
        self.column_index = {c: i for i, c in enumerate(self.columns)}

    @property
    def depth(self) -> int:
        return int(self.lagv.shape[1])

    @property
    def specs(self) -> list[IndicatorSpec]:
        return [s for seg in self.segments for s in seg.plan.specs]

    @property
    def output_names(self) -> list[str]:
        return self.columns[_NF:]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def capacity(self) -> int:
        return int(self.hcount.shape[0])

    def _grow(self, needed: int) -> None:
        cap = doubled(self.capacity, needed)
        if cap == self.capacity:
            return
        n = len(self.names)
        self.hist = grown(self.hist, cap, n)
        self.hcount = grown(self.hcount, cap, n)
        self.bseq = grown(self.bseq, cap, n)
        self.lagv = grown(self.lagv, cap, n, NAN)

    def row(self, symbol: str) -> int:
        r = self.symbols.get(symbol)
        if r is None:
            r = len(self.names)
            self._grow(r + 1)
            self.symbols[symbol] = r
            self.names.append(symbol)
            for seg in self.segments:
                seg.row(symbol)
        return r

    def rows(self, symbols: Iterable[str], n: int) -> np.ndarray:
        get = self.symbols.get
        out = np.fromiter((get(s, -1) for s in symbols), dtype=np.int64, count=n)
        if (out < 0).any():  # new symbols: register them in arrival order
            for i in np.flatnonzero(out < 0):
                out[i] = self.row(symbols[i])  # type: ignore[index]
        return out

    def rows_coded(self, names: np.ndarray, code: np.ndarray) -> np.ndarray:
        """:meth:`rows` of ``names[code]`` — the same rows, new symbols registered in the
        same order — with each distinct name looked up once."""
        mask = np.zeros(len(names), dtype=np.bool_)
        mask[code] = True
        used = np.flatnonzero(mask)
        get = self.symbols.get
        found = np.fromiter((get(s, -1) for s in names[used]), dtype=np.int64, count=len(used))
        if (found < 0).any():  # new symbols: registered in order of first use, as by rows()
            used, first = np.unique(code, return_index=True)
            used = used[np.argsort(first)]
            found = self.rows(names[used], len(used))
        lookup = np.full(len(names), -1, dtype=np.int64)
        lookup[used] = found
        return lookup[code]

    # Bars ---------------------------------------------------------------------------

    def apply(
        self,
        rows: np.ndarray,
        ts: np.ndarray,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        inputs: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Applied:
        """Apply bars (arrival order); gather ``inputs`` = (column indices, lags) per bar."""
        n = int(rows.shape[0])
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        cols = [
            np.ascontiguousarray(a, dtype=np.float64) for a in (open_, high, low, close, volume)
        ]
        tsf = ts.astype(np.float64)
        in_col, in_lag = inputs if inputs is not None else (_NO_INPUT, _NO_INPUT)
        values = np.empty((in_col.shape[0], n))
        seq = np.empty(n, dtype=np.int64)
        status = np.empty(n, dtype=np.int8)
        applied = corrected = skipped = 0
        # a chunk at a time: the kernels' outputs and the gathered inputs of a chunk in
        # buffers of its size, the inputs then copied into their rows of ``values``
        out = np.empty((min(n, APPLY_CHUNK), len(self.columns) - _NF))
        vals = values if n <= APPLY_CHUNK else np.empty((in_col.shape[0], APPLY_CHUNK))
        for a in range(0, n, APPLY_CHUNK):
            b = min(a + APPLY_CHUNK, n)
            r, t, f = rows[a:b], ts[a:b], [col[a:b] for col in cols]
            chunk = out[: b - a]
            at = 0
            for i, seg in enumerate(self.segments):  # (each writes its columns in place)
                res = seg.apply(r, t, f[0], f[1], f[2], f[3], f[4],
                                out=chunk[:, at : at + seg.plan.n_outputs])  # fmt: skip
                at += seg.plan.n_outputs
                if i == 0:
                    status[a:b] = res.status
                    applied += res.applied
                    corrected += res.corrected
                    skipped += res.skipped
            record_nb(
                r, status[a:b], tsf[a:b], f[0], f[1], f[2], f[3], f[4], chunk, self.hist,
                self.hcount, self.bseq, self.lagv, in_col, in_lag, vals[:, : b - a], seq[a:b],
            )  # fmt: skip
            if vals is not values:
                values[:, a:b] = vals[:, : b - a]
        return Applied(rows, status, seq, values, applied, corrected, skipped)

    def latest(self, rows: np.ndarray) -> np.ndarray:
        """(rows, outputs): every output's latest value (NaN where not ready)."""
        parts = [seg.latest[rows] for seg in self.segments]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def last_bar(self, rows: np.ndarray) -> np.ndarray:
        """(rows, 6): ts, open, high, low, close, volume of each row's latest bar."""
        slot = (self.hcount[rows] - 1) % self.history
        return self.hist[rows, slot]

    def bars_seen(self, symbol: str) -> int:
        return int(self.hcount[self.symbols[symbol]])

    def ready(self, symbol: str) -> dict[str, bool]:
        """Per output: has it seen enough bars (in its own segment) to have a value?"""
        out: dict[str, bool] = {}
        for seg in self.segments:
            out.update(seg.ready(symbol))
        return out

    # Plan changes -------------------------------------------------------------------

    def inputs_for(
        self, columns: Sequence[str], lags: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and lags of rule inputs, for :meth:`apply`."""
        return (
            np.array([self.column_index[c] for c in columns], dtype=np.int64),
            np.array(lags, dtype=np.int64),
        )

    def extend(self, specs: Iterable[IndicatorSpec]) -> int:
        """Add what is missing of ``specs`` as a new segment, warmed from each symbol's
        remembered bars; return the number of bars replayed (0 if nothing was missing)."""
        have = set(self.specs)
        new = [s for s in dict.fromkeys(specs) if s not in have]
        if not new:
            return 0
        seg = IndicatorState(IndicatorPlan(new), capacity=self.capacity)
        for name in self.names:
            seg.row(name)
        rows, idx, c = history_bars_nb(self.hist, self.hcount, len(self.names))
        res = seg.apply(rows, c[0].astype(np.int64), c[1], c[2], c[3], c[4], c[5])
        old_cols = list(self.columns)
        self.segments.append(seg)
        self._relayout(old_cols)
        # the new columns' recent values come from the warm-up itself
        keep = idx >= self.hcount[rows] - self.depth
        if keep.any():
            at = self.column_index[seg.plan.output_names[0]]
            k = np.flatnonzero(keep)
            cols = np.arange(at, at + seg.plan.n_outputs)
            self.lagv[rows[k][:, None], (idx[k] % self.depth)[:, None], cols[None, :]] = res.out[k]
        return int(rows.shape[0])

    def retain(self, needed: Iterable[IndicatorSpec]) -> int:
        """Drop added segments none of whose indicators are ``needed``; return how many."""
        want = set(needed)
        keep = [self.segments[0]] + [
            s for s in self.segments[1:] if any(sp in want for sp in s.plan.specs)
        ]
        dropped = len(self.segments) - len(keep)
        if dropped:
            old_cols = list(self.columns)
            self.segments = keep
            self._relayout(old_cols)
        return dropped

    def set_depth(self, depth: int) -> None:
        """Keep ``depth`` values of every column (rules read lags up to depth - 1)."""
        if depth != self.depth:
            self._relayout(list(self.columns), depth)

    def _relayout(self, old_cols: list[str], depth: int | None = None) -> None:
        old = self.lagv
        self._columns()
        depth = depth or self.depth
        new = np.full((self.capacity, depth, len(self.columns)), NAN)
        pairs = [
            (i, self.column_index[c]) for i, c in enumerate(old_cols) if c in self.column_index
        ]
        oc = np.array([p[0] for p in pairs], dtype=np.int64)
        nc = np.array([p[1] for p in pairs], dtype=np.int64)
        relag_nb(old, oc, new, nc, self.hist, self.hcount, len(self.names))
        self.lagv = new

    # Checkpoints --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        n = len(self.names)
        meta = {
            "tf": self.tf,
            "history": self.history,
            "depth": self.depth,
            "names": self.names,
            "segments": [[str(s) for s in seg.plan.specs] for seg in self.segments],
            "columns": self.columns,
        }
        blobs = [seg.to_bytes() for seg in self.segments]
        blobs.append(np.ascontiguousarray(self.hist[:n], dtype="<f8").tobytes())
        blobs.append(np.ascontiguousarray(self.hcount[:n], dtype="<i8").tobytes())
        blobs.append(np.ascontiguousarray(self.bseq[:n], dtype="<i8").tobytes())
        blobs.append(np.ascontiguousarray(self.lagv[:n], dtype="<f8").tobytes())
        return pack_sections(meta, blobs)

    @classmethod
    def from_bytes(cls, data: bytes) -> Book:
        meta, blobs = unpack_sections(data)
        segs_specs = [parse_indicators(", ".join(texts)) for texts in meta["segments"]]
        n = len(meta["names"])
        book = cls(meta["tf"], segs_specs[0], history=int(meta["history"]),
                   depth=int(meta["depth"]), capacity=max(1, n))  # fmt: skip
        if len(blobs) != len(segs_specs) + 4:
            raise StateVersionError("engine snapshot has the wrong number of sections")
        book.segments = [
            IndicatorState.from_bytes(IndicatorPlan(specs), blob)
            for specs, blob in zip(segs_specs, blobs, strict=False)
        ]
        for seg in book.segments:
            if seg.capacity < book.capacity:
                seg._grow(book.capacity)
        book._columns()
        if book.columns != meta["columns"]:
            raise StateVersionError("engine snapshot columns do not match its segments")
        book.names = list(meta["names"])
        book.symbols = {s: i for i, s in enumerate(book.names)}
        h, d, c = book.history, book.depth, len(book.columns)
        rest = blobs[len(segs_specs) :]
        book.hist[:n] = _array(rest[0], (n, h, 6), "<f8")
        book.hcount[:n] = _array(rest[1], (n,), "<i8")
        book.bseq[:n] = _array(rest[2], (n,), "<i8")
        book.lagv = np.full((book.capacity, d, c), NAN)
        book.lagv[:n] = _array(rest[3], (n, d, c), "<f8")
        return book


_NO_INPUT = np.zeros(0, dtype=np.int64)


def _array(blob: bytes, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    count = int(np.prod(shape))
    if len(blob) != count * 8:
        raise StateVersionError("engine snapshot section has the wrong size")
    return np.frombuffer(blob, dtype=dtype, count=count).reshape(shape).astype(dtype[1:])


# Section framing: magic, version, then (length, bytes) for the JSON meta and each blob.
_MAGIC = b"TSEK"
_VERSION = 1
_HEAD = struct.Struct("<4sHI")  # magic, version, sections
_LEN = struct.Struct("<Q")


def pack_sections(meta: Mapping[str, object], blobs: Sequence[bytes]) -> bytes:
    parts = [_HEAD.pack(_MAGIC, _VERSION, len(blobs) + 1)]
    for blob in (orjson.dumps(meta), *blobs):
        parts.append(_LEN.pack(len(blob)))
        parts.append(blob)
    return b"".join(parts)


def unpack_sections(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    if len(data) < _HEAD.size:
        raise StateVersionError("engine snapshot is truncated")
    magic, version, count = _HEAD.unpack_from(data, 0)
    if magic != _MAGIC:
        raise StateVersionError("not an engine snapshot")
    if version != _VERSION:
        raise StateVersionError(f"engine snapshot version {version}, this build reads {_VERSION}")
    at = _HEAD.size
    out: list[bytes] = []
    view = memoryview(data)
    for _ in range(count):
        if at + _LEN.size > len(data):
            raise StateVersionError("engine snapshot is truncated")
        (size,) = _LEN.unpack_from(data, at)
        at += _LEN.size
        if at + size > len(data):
            raise StateVersionError("engine snapshot is truncated")
        out.append(bytes(view[at : at + size]))
        at += size
    if at != len(data):
        raise StateVersionError("engine snapshot has trailing bytes")
    return orjson.loads(out[0]), out[1:]
