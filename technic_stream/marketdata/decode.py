"""Decoding ``md.bars`` records straight into columns, with vectorised validation.

The hot-path twin of ``messages.decode(data, Bar)``: no model object per bar. Each
record is parsed with orjson and its fields appended to column lists (a BarBatch adds
all its rows at once); the numeric rules of the contract (finite positive prices,
``low <= open, close <= high``, volume ≥ 0, ts in range) are then checked for all rows
at once with NumPy. A record with any bad row is rejected as a whole with the reason of
its first bad row, exactly as the strict models would reject it (a property test
holds the two to the same verdicts), and goes to the DLQ; the others are returned as
columns in record order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from technic_stream.buffers import joined
from technic_stream.kafka.blocks import RecordChain
from technic_stream.kafka.dlq import KafkaRecord
from technic_stream.kernels.wire import (
    TIMEFRAME_NAMES,
    arrival_codes_nb,
    joined_symbols_nb,
    parse_bar_batches,
    parse_bars,
    same_bytes_nb,
)
from technic_stream.messages import MAX_BATCH_ROWS, MAX_TS_MS, TIMEFRAMES

__all__ = ["BarRows", "TradeRows", "decode_bar_records", "decode_trade_records", "warm_decoder"]

_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._/:^=-]{0,31}$")
_BAR_KEYS = frozenset(("type", "v", "symbol", "tf", "ts", "open", "high", "low", "close", "volume"))
_BATCH_KEYS = frozenset(
    ("type", "v", "tf", "symbols", "ts", "open", "high", "low", "close", "volume")
)
_FIELDS = ("open", "high", "low", "close", "volume")
_TF = frozenset(TIMEFRAMES)
_known_symbols: set[str] = set()


_ROW_FIELDS = ("record", "tf", "symbol", "ts", "open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class BarRows:
    """Good bars as columns, in record order; ``record`` is the index of each row's record.

    ``names`` and ``code``, where the decoder knows them: the distinct symbols in order
    of first arrival, and each row's index among them (``symbol == names[code]``), so a
    book looks a symbol up once a batch instead of once a bar."""

    record: np.ndarray  # int64
    tf: np.ndarray  # object (str)
    symbol: np.ndarray  # object (str)
    ts: np.ndarray  # int64
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    names: np.ndarray | None = None  # object (str)
    code: np.ndarray | None = None  # int64

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, idx: np.ndarray) -> BarRows:
        return BarRows(**{f: getattr(self, f)[idx] for f in _ROW_FIELDS}, names=self.names,
                       code=None if self.code is None else self.code[idx])  # fmt: skip

    def between(self, start: int, stop: int) -> BarRows:
        """Rows ``start:stop`` (views, not copies)."""
        return BarRows(**{f: getattr(self, f)[start:stop] for f in _ROW_FIELDS},
                       names=self.names,
                       code=None if self.code is None else self.code[start:stop])  # fmt: skip


def _symbol_ok(sym: object) -> bool:
    if sym.__class__ is not str:
        return False
    if sym in _known_symbols:
        return True
    if _SYMBOL_RE.match(sym) is None:
        return False
    if len(_known_symbols) < 1_000_000:
        _known_symbols.add(sym)
    return True


def _is_number(x: object) -> bool:
    return x.__class__ is float or x.__class__ is int


def _structure(obj: Any) -> str | None:
    """Why a parsed object is not a Bar/BarBatch by shape and types, or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    kind = obj.get("type")
    if kind == "bar":
        keys = _BAR_KEYS
    elif kind == "bar_batch":
        keys = _BATCH_KEYS
    else:
        return f"expected message type 'bar' or 'bar_batch', got {kind!r}"
    if obj.get("v") != 1 or obj["v"].__class__ is not int:
        return f"unsupported version v={obj.get('v')!r} of {kind!r}"
    if obj.keys() != keys:
        missing = sorted(keys - obj.keys())
        extra = sorted(obj.keys() - keys)
        return f"missing field(s) {missing}" if missing else f"unexpected field(s) {extra}"
    if obj["tf"] not in _TF:
        return f"tf: unknown timeframe {obj['tf']!r}"
    if kind == "bar":
        if not _symbol_ok(obj["symbol"]):
            return f"symbol: {obj['symbol']!r} is not a valid ticker"
        if obj["ts"].__class__ is not int:
            return "ts: must be an integer (epoch ms)"
        for f in _FIELDS:
            if not _is_number(obj[f]):
                return f"{f}: must be a number"
        return None
    symbols = obj["symbols"]
    if not isinstance(symbols, list) or not symbols:
        return "symbols: must be a non-empty list"
    n = len(symbols)
    if n > MAX_BATCH_ROWS:
        return f"symbols: {n} rows exceed the limit of {MAX_BATCH_ROWS}"
    for f in ("ts", *_FIELDS):
        col = obj[f]
        if not isinstance(col, list) or len(col) != n:
            got = len(col) if isinstance(col, list) else type(col).__name__
            return f"{f} has {got} rows, symbols has {n}"
    try:  # (a C loop over the symbols seen before; a Python one over the others)
        known = _known_symbols.issuperset(symbols)
    except TypeError:  # an unhashable value among them
        known = False
    if not known:
        for i, sym in enumerate(symbols):
            if not _symbol_ok(sym):
                return f"symbols.{i}: {sym!r} is not a valid ticker"
    return None


def _parse(
    data: bytes | None, max_bytes: int, what: str, check: Callable[[Any], str | None]
) -> tuple[Any, str | None]:
    """The parsed object, or why the record is unusable (size, JSON, shape)."""
    if data is None:
        return None, f"null value (tombstone) where a {what} was expected"
    if len(data) > max_bytes:
        return None, f"message of {len(data)} bytes exceeds the limit of {max_bytes}"
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc}"
    return obj, check(obj)


def _column(
    values: list[Any], name: str, *, integer: bool, bools: bool = True
) -> tuple[np.ndarray | None, str]:
    """A batch column as an array, or None and why (strings, booleans, nulls, big ints).
    ``bools`` False: the record is known to hold no boolean (its text has no literal)."""
    try:
        arr = np.asarray(values)
    except (OverflowError, ValueError):
        return None, f"{name}: not a list of numbers"
    if arr.ndim != 1:  # lists in the list (NumPy makes a table of them)
        return None, f"{name}: not a list of numbers"
    kind = arr.dtype.kind
    # NumPy turns a boolean among numbers into 1/0; the models refuse it. count() is a
    # C loop (it also matches 1 and 0, so the exact check runs only when it hits).
    if (
        bools
        and (values.count(True) or values.count(False))
        and any(x.__class__ is bool for x in values)
    ):
        return None, f"{name}: must be numbers, not booleans"
    if integer:
        if kind != "i":
            return None, f"{name}: must be integers (epoch ms)"
        return arr.astype(np.int64, copy=False), ""
    if kind not in "if":
        return None, f"{name}: must be numbers"
    return arr.astype(np.float64, copy=False), ""


def _row_reasons(
    ts: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """A code per row: 0 good, else the first failed rule (see _REASONS)."""
    code = np.zeros(ts.shape[0], dtype=np.int8)
    checks = (
        (ts < 0) | (ts > MAX_TS_MS),
        ~np.isfinite(o) | (o <= 0),
        ~np.isfinite(h) | (h <= 0),
        ~np.isfinite(lo) | (lo <= 0),
        ~np.isfinite(c) | (c <= 0),
        ~np.isfinite(v) | (v < 0),
        h < np.maximum(np.maximum(o, c), lo),
        lo > np.minimum(o, c),
    )
    for k in range(len(checks) - 1, -1, -1):  # the first failing rule wins
        code[checks[k]] = k + 1
    return code


_REASONS = (
    "",
    "ts: outside 1970-2200 (epoch milliseconds expected)",
    "open: must be a finite number > 0",
    "high: must be a finite number > 0",
    "low: must be a finite number > 0",
    "close: must be a finite number > 0",
    "volume: must be a finite number >= 0",
    "high is below max(open, close, low)",
    "low is above min(open, close)",
)


_NUMBER_TYPES = frozenset((float, int))
_INT = frozenset((int,))
_BAR_FIELDS = ("type", "v", "tf", "symbol", "ts", *_FIELDS)
_bar_fields = itemgetter(*_BAR_FIELDS)


def _all_single_bars(
    records: Sequence[KafkaRecord], max_bytes: int
) -> tuple[BarRows | None, list[Any] | None]:
    """The columns when every record is a well-formed single Bar, checked a column at a
    time (the common case); else None — with the parsed records when they all parsed, so
    the record-by-record path (which finds what is wrong and why) need not parse again."""
    values: list[Any] = [r.value for r in records]
    try:
        if max(map(len, values)) > max_bytes:  # (a None value: TypeError)
            return None, None
        objs = list(map(orjson.loads, values))
    except (TypeError, orjson.JSONDecodeError):
        return None, None
    return _single_bar_columns(objs), objs


def _single_bar_columns(objs: list[Any]) -> BarRows | None:
    """Every loop here runs in C (``map``, ``zip``, ``set``): a Python step per bar per
    field was a fifth of the engine's time on JSON bars."""
    # objects of exactly the Bar's ten keys: ten entries, and all ten of them found
    if set(map(type, objs)) != {dict} or set(map(len, objs)) != {len(_BAR_KEYS)}:
        return None
    try:
        kind, v, tfs, syms, ts, *cols = zip(*map(_bar_fields, objs), strict=True)
        if set(kind) != {"bar"} or set(v) != {1} or set(map(type, v)) != _INT:
            return None
        if not set(tfs) <= _TF or not all(map(_symbol_ok, set(syms))):
            return None
    except (KeyError, TypeError):  # a key missing, or an unhashable value
        return None
    if set(map(type, ts)) != _INT or not all(set(map(type, c)) <= _NUMBER_TYPES for c in cols):
        return None
    return BarRows(
        np.arange(len(objs), dtype=np.int64), np.array(tfs, dtype=object),
        np.array(syms, dtype=object), _ints(ts),
        *(np.array(c, dtype=np.float64) for c in cols),
    )  # fmt: skip


def decode_bar_records(
    records: Sequence[KafkaRecord], *, max_bytes: int = 1_000_000
) -> tuple[BarRows, list[tuple[KafkaRecord, str]]]:
    """Columns of every good bar, and (record, reason) for each rejected record.

    Single bars are read by the numba parser (:mod:`technic_stream.kernels.wire`); the
    records it leaves — BarBatch messages, anything unusual or invalid — by orjson and
    the checks below, which give the strict models' verdict. Rows come back in record
    order either way, and the numeric rules are checked for all of them at once."""
    bad: list[tuple[KafkaRecord, str]] = []
    if not records:
        return _no_rows(), bad
    try:
        wire, rest, wire_batches = _wire_bars(records, max_bytes)
    except _Collision:  # (two symbols with one 64-bit hash)
        wire, rest, wire_batches = _no_rows(), list(range(len(records))), set()
    if not rest:
        return _numeric_checks(wire, records, bad, wire_batches)
    others, batches = _general_rows([records[i] for i in rest], max_bytes, bad)
    batches = {rest[i] for i in batches} | wire_batches
    others = replace(others, record=np.asarray(rest, dtype=np.int64)[others.record])
    if not len(wire):
        return _numeric_checks(others, records, bad, batches)
    both = _concat((wire, others))
    return _numeric_checks(both.take(np.argsort(both.record, kind="stable")), records, bad,
                           batches)  # fmt: skip


_TF_NAMES = np.array(TIMEFRAME_NAMES, dtype=object)


@dataclass(frozen=True, slots=True)
class _Sample:
    value: bytes
    topic: str = ""
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


def warm_decoder() -> None:
    """Decode two sample records once, so numba has compiled (or loaded from its cache)
    the wire parser before the first real batch — which would otherwise wait for it."""
    bar = b'{"type":"bar","v":1,"symbol":"A","tf":"1m","ts":0,"open":1,"high":1,"low":1,'
    decode_bar_records([_Sample(bar + b'"close":1,"volume":1}'), _Sample(b"{}")])


def _joined_values(records: Sequence[KafkaRecord]) -> tuple[np.ndarray, np.ndarray]:
    """The records' values end to end (a null one empty) and their ``len + 1`` starts."""
    if isinstance(records, RecordChain):  # framed from the fetch: no object per record
        return records.values()
    return joined([b"" if r.value is None else r.value for r in records])


def _wire_bars(
    records: Sequence[KafkaRecord], max_bytes: int
) -> tuple[BarRows, list[int], set[int]]:
    """The records the numba parsers read with certainty — single bars, then BarBatch
    messages among the rest — as rows in record order (their indices in ``record``); the
    indices of the others; and those of the batches."""
    buf, starts = _joined_values(records)
    # (columns taken with .take(_, 1): cols[:, idx] comes out column-major, each field
    # strided, and the book then copied every field of every bar once more)
    ok, ts, cols, tf, sym_at, sym_hash = parse_bars(buf, starts)
    small = np.diff(starts) <= max_bytes
    ok &= small
    idx = np.flatnonzero(ok)  # single bars
    rec, ts, cols, tf, sym_at, sym_hash = idx, ts[idx], cols.take(idx, 1), tf[idx], sym_at[idx], \
        sym_hash[idx]  # fmt: skip
    batches: set[int] = set()
    todo = np.flatnonzero(~ok & small)
    if len(todo):
        done, b_rec, b_ts, b_cols, b_tf, b_at, b_hash = parse_bar_batches(
            buf, starts, todo, MAX_BATCH_ROWS
        )
        if done.any():
            taken = todo[done]
            ok[taken] = True
            batches = set(taken.tolist())
            rec = np.concatenate((rec, b_rec))
            order = np.argsort(rec, kind="stable")  # record order; a batch's rows in order
            rec = rec[order]
            ts = np.concatenate((ts, b_ts))[order]
            cols = np.concatenate((cols, b_cols), axis=1).take(order, 1)
            tf = np.concatenate((tf, b_tf))[order]
            sym_at = np.concatenate((sym_at, b_at))[order]
            sym_hash = np.concatenate((sym_hash, b_hash))[order]
    rest = np.flatnonzero(~ok).tolist()
    if not len(rec):
        return _no_rows(), rest, batches
    return _coded_rows(buf, rec, ts, cols, tf, sym_at, sym_hash), rest, batches


def _coded_rows(
    buf: np.ndarray,
    record: np.ndarray,
    ts: np.ndarray,
    cols: np.ndarray,
    tf: np.ndarray,
    sym_at: np.ndarray,
    sym_hash: np.ndarray,
) -> BarRows:
    """Rows from the parsers' columns, with one str per distinct symbol (its bytes
    compared, so a hash collision cannot merge two)."""
    code, first = arrival_codes_nb(sym_hash)  # (codes in order of first arrival)
    if not same_bytes_nb(buf, sym_at, first[code]):
        raise _Collision
    names = np.array(
        joined_symbols_nb(buf, sym_at, first).tobytes().decode("ascii").split("\n"),
        dtype=object,
    )
    o, h, lo, c, v = cols
    return BarRows(record.astype(np.int64), _TF_NAMES[tf], names[code], ts, o, h, lo, c, v,
                   names, code)  # fmt: skip


class _Collision(Exception):
    """Two symbols with one hash: the records go the general way."""


def _no_rows() -> BarRows:
    return _rows([], [], [], [], {f: [] for f in _FIELDS})


def _rows(
    rec_ix: list[int], tfs: list[str], syms: list[str], ts: list[int], cols: dict[str, list[Any]]
) -> BarRows:
    return BarRows(
        record=np.asarray(rec_ix, dtype=np.int64),
        tf=np.asarray(tfs, dtype=object),
        symbol=np.asarray(syms, dtype=object),
        ts=_ints(ts),
        **{f: np.asarray(cols[f], dtype=np.float64) for f in _FIELDS},
    )


def _general_rows(
    records: Sequence[KafkaRecord], max_bytes: int, bad: list[tuple[KafkaRecord, str]]
) -> tuple[BarRows, set[int]]:
    """Rows of ``records`` by orjson (numbers not yet checked), and the indices of the
    records that were BarBatch messages; the rejected to ``bad``.

    A BarBatch's columns stay arrays from its parse to the result (one concatenation
    for the whole call): converting them row by row cost more than parsing them."""
    fast, parsed = _all_single_bars(records, max_bytes)
    if fast is not None:
        return fast, set()
    pieces: list[BarRows] = []
    batches: set[int] = set()
    rec_ix: list[int] = []
    tfs: list[str] = []
    syms: list[str] = []
    cols: dict[str, list[Any]] = {f: [] for f in ("ts", *_FIELDS)}
    ts_l, o_l, h_l, l_l, c_l, v_l = (cols[f] for f in ("ts", *_FIELDS))

    def singles() -> None:  # the single bars gathered so far, as one piece
        if rec_ix:
            pieces.append(_rows(rec_ix, tfs, syms, ts_l, cols))
            rec_ix.clear()
            tfs.clear()
            syms.clear()
            for col in cols.values():
                col.clear()

    for i, record in enumerate(records):
        if parsed is not None:
            obj, reason = parsed[i], _structure(parsed[i])
        else:
            obj, reason = _parse(record.value, max_bytes, "bar", _structure)
        if reason is not None:
            bad.append((record, reason))
            continue
        if obj["type"] == "bar":
            rec_ix.append(i)
            tfs.append(obj["tf"])
            syms.append(obj["symbol"])
            ts_l.append(obj["ts"])
            o_l.append(obj["open"])
            h_l.append(obj["high"])
            l_l.append(obj["low"])
            c_l.append(obj["close"])
            v_l.append(obj["volume"])
            continue
        arrays = []
        # no 'true' or 'false' in its text: no boolean to look for among its numbers
        value = record.value or b""
        bools = b"true" in value or b"false" in value
        for f in ("ts", *_FIELDS):
            arr, why = _column(obj[f], f, integer=f == "ts", bools=bools)
            if arr is None:
                reason = why
                break
            arrays.append(arr)
        if reason is not None:
            bad.append((record, reason))
            continue
        singles()
        n = len(obj["symbols"])
        tf = np.empty(n, dtype=object)
        tf.fill(obj["tf"])
        pieces.append(BarRows(np.full(n, i, dtype=np.int64), tf,
                              np.array(obj["symbols"], dtype=object), *arrays))  # fmt: skip
        batches.add(i)
    singles()
    if not pieces:
        return _no_rows(), batches
    if len(pieces) == 1:
        return pieces[0], batches
    return _concat(pieces), batches


def _concat(pieces: Sequence[BarRows]) -> BarRows:
    names = code = None
    coded = [(p.names, p.code) for p in pieces if p.names is not None and p.code is not None]
    if len(coded) == len(pieces):
        names = np.concatenate([n for n, _ in coded])
        at = np.cumsum([0] + [len(n) for n, _ in coded[:-1]]).tolist()
        code = np.concatenate([c + a for (_, c), a in zip(coded, at, strict=True)])
    return BarRows(**{f: np.concatenate([getattr(p, f) for p in pieces]) for f in _ROW_FIELDS},
                   names=names, code=code)  # fmt: skip


def _numeric_checks(
    rows: BarRows,
    records: Sequence[KafkaRecord],
    bad: list[tuple[KafkaRecord, str]],
    batches: set[int] = frozenset(),  # type: ignore[assignment]
) -> tuple[BarRows, list[tuple[KafkaRecord, str]]]:
    """Reject every record with a row that breaks a numeric rule, with the reason of its
    first such row (a BarBatch's reason names the row). ``rows`` are in record order."""
    code = _row_reasons(rows.ts, rows.open, rows.high, rows.low, rows.close, rows.volume)
    if not code.any():
        return rows, bad
    failed = np.flatnonzero(code)
    failed_records, first = np.unique(rows.record[failed], return_index=True)
    for r, j in zip(failed_records.tolist(), failed[first].tolist(), strict=True):
        reason = _REASONS[code[j]]
        if r in batches:  # its row: the position within the record's rows
            reason = f"row {j - int(np.searchsorted(rows.record, r))}: {reason}"
        bad.append((records[r], reason))
    drop = np.isin(rows.record, failed_records)
    return rows.take(np.flatnonzero(~drop)), bad


def _ints(values: Sequence[int]) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:  # a ts beyond int64: mark it out of range
        return np.asarray([v if -(2**62) < v < 2**62 else -1 for v in values], dtype=np.int64)


_TRADE_KEYS = frozenset(("type", "v", "symbol", "ts", "price", "size"))
_TRADE_ID_MAX = 64


@dataclass(frozen=True, slots=True)
class TradeRows:
    """Good trades as columns, in record order."""

    record: np.ndarray  # int64
    symbol: list[str]
    ts: np.ndarray  # int64
    price: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def _trade_structure(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if obj.get("type") != "trade":
        return f"expected message type 'trade', got {obj.get('type')!r}"
    if obj.get("v") != 1 or obj["v"].__class__ is not int:
        return f"unsupported version v={obj.get('v')!r} of 'trade'"
    keys = obj.keys()
    if keys != _TRADE_KEYS:
        missing = sorted(_TRADE_KEYS - keys)
        extra = sorted(keys - _TRADE_KEYS - {"trade_id"})
        if missing:
            return f"missing field(s) {missing}"
        if extra:
            return f"unexpected field(s) {extra}"
        tid = obj["trade_id"]
        if tid is not None and (tid.__class__ is not str or len(tid) > _TRADE_ID_MAX):
            return "trade_id: must be a string of at most 64 characters, or null"
    if not _symbol_ok(obj["symbol"]):
        return f"symbol: {obj['symbol']!r} is not a valid ticker"
    if obj["ts"].__class__ is not int:
        return "ts: must be an integer (epoch ms)"
    if not _is_number(obj["price"]):
        return "price: must be a number"
    if not _is_number(obj["size"]):
        return "size: must be a number"
    return None


def decode_trade_records(
    records: Sequence[KafkaRecord],
    *,
    max_bytes: int = 1_000_000,
    latest_ts: int | None = None,
) -> tuple[TradeRows, list[tuple[KafkaRecord, str]]]:
    """Columns of every good trade, and (record, reason) for each rejected record.

    ``latest_ts`` rejects trades stamped after it (a clock far ahead would close every
    open bar of the partition at once).
    """
    bad: list[tuple[KafkaRecord, str]] = []
    rec_ix: list[int] = []
    syms: list[str] = []
    ts_l: list[int] = []
    px_l: list[Any] = []
    sz_l: list[Any] = []
    for i, record in enumerate(records):
        obj, reason = _parse(record.value, max_bytes, "trade", _trade_structure)
        if reason is not None:
            bad.append((record, reason))
            continue
        rec_ix.append(i)
        syms.append(obj["symbol"])
        ts_l.append(obj["ts"])
        px_l.append(obj["price"])
        sz_l.append(obj["size"])
    ts = _ints(ts_l)
    price = np.asarray(px_l, dtype=np.float64)
    size = np.asarray(sz_l, dtype=np.float64)
    code = np.zeros(ts.shape[0], dtype=np.int8)
    code[~np.isfinite(size) | (size <= 0)] = 3
    code[~np.isfinite(price) | (price <= 0)] = 2
    code[(ts < 0) | (ts > MAX_TS_MS)] = 1
    if latest_ts is not None:
        code[(code == 0) & (ts > latest_ts)] = 4
    rows = TradeRows(np.asarray(rec_ix, dtype=np.int64), syms, ts, price, size)
    if not code.any():
        return rows, bad
    reasons = (
        "",
        "ts: outside 1970-2200 (epoch milliseconds expected)",
        "price: must be a finite number > 0",
        "size: must be a finite number > 0",
        "ts: ahead of the wall clock by more than the allowed skew",
    )
    for j in np.flatnonzero(code).tolist():
        bad.append((records[int(rows.record[j])], reasons[code[j]]))
    keep = np.flatnonzero(code == 0)
    return (
        TradeRows(
            rows.record[keep], [syms[j] for j in keep.tolist()], ts[keep], price[keep], size[keep]
        ),
        bad,
    )
