"""Reading OHLCV bar files (CSV, gzip CSV, Parquet) with column mapping and row checks.

One reader for every command that takes a file of bars (``indicators``, ``rules eval``,
``replay``, ``backfill``). Columns are found by name in any case (``date``/``ts``/…,
``open`` … ``volume``, ``symbol``/``ticker``, ``adj close``) or named explicitly with a
:class:`ColumnMap`. Every row is checked like a :class:`~technic_stream.messages.Bar`
(finite positive prices, ``low <= open, close <= high``, volume ≥ 0, a valid symbol and
time); a bad row becomes a :class:`RowProblem` with its line number, so a tolerant caller
reports and skips it, and a strict one stops at the first.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from technic_stream.errors import TechnicStreamError

__all__ = [
    "BarFile",
    "BarFileError",
    "ColumnMap",
    "RowProblem",
    "parse_time",
    "read_bar_file",
]

_TIME_NAMES = ("ts", "timestamp", "time", "date", "datetime")
_SYMBOL_NAMES = ("symbol", "ticker")
_ADJ_NAMES = ("adj close", "adj_close", "adjclose", "adjusted close", "adjusted_close")
PRICE_FIELDS = ("open", "high", "low", "close")
FIELDS = (*PRICE_FIELDS, "volume")
_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._/:^=-]{0,31}$")
_MAX_TS_MS = 7_258_118_400_000  # 2200-01-01, as in the wire contract


class BarFileError(TechnicStreamError):
    """A bar file that cannot be read; the message names the file, line and column."""


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that was not used: where (1-based line of the file, header = 1) and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which file column holds which field; ``None`` = find it by its usual names."""

    symbol: str | None = None
    time: str | None = None
    open: str | None = None
    high: str | None = None
    low: str | None = None
    close: str | None = None
    volume: str | None = None
    adj_close: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> ColumnMap:
        """``"time=Date,close=Last,symbol=Ticker"`` → a map (``ValueError`` on a bad item)."""
        if not text:
            return cls()
        values: dict[str, str] = {}
        for item in text.split(","):
            name, sep, column = item.partition("=")
            name = name.strip().lower().replace("-", "_")
            if not sep or not column.strip():
                raise ValueError(f"column mapping {item.strip()!r}: expected field=COLUMN")
            if name not in cls.__dataclass_fields__:
                known = ", ".join(cls.__dataclass_fields__)
                raise ValueError(f"column mapping: unknown field {name!r}; fields are {known}")
            values[name] = column.strip()
        return cls(**values)


@dataclass(slots=True)
class BarFile:
    """The good rows of a bar file as columns, in file order, plus the rows left out."""

    path: Path
    header: list[str]
    rows: list[dict[str, str]]  # raw text of the good rows, for tools that echo the input
    lines: np.ndarray  # int64, the file line of each good row
    symbol: np.ndarray  # object (str)
    ts: np.ndarray  # int64 epoch ms
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    adj_close: np.ndarray | None
    problems: list[RowProblem] = field(default_factory=list)
    rows_read: int = 0

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def columns(self) -> dict[str, np.ndarray]:
        return {
            "symbol": self.symbol,
            "ts": self.ts,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
        }


def parse_time(text: str) -> int:
    """Epoch ms from ISO 8601 (naive = UTC), or epoch seconds/ms as an integer."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        value = int(text)
        return value * 1000 if abs(value) < 100_000_000_000 else value  # seconds or ms
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read time {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header and an iterator of (line, row as text) for CSV, gzip CSV or Parquet."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise BarFileError(
                f"{path}: reading Parquet needs pyarrow (pip install pyarrow)"
            ) from None
        table = pq.read_table(path)
        header = list(table.column_names)

        def parquet_rows() -> Iterator[tuple[int, dict[str, str]]]:
            for i, rec in enumerate(table.to_pylist()):
                yield i + 2, {k: "" if v is None else str(v) for k, v in rec.items()}

        return header, parquet_rows()
    if name.endswith(".gz"):
        with gzip.open(path, "rt", newline="") as fh:
            text = fh.read()
    else:
        with path.open(newline="") as fh:
            text = fh.read()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:
        raise BarFileError(f"{path}: empty file")
    header = list(reader.fieldnames)

    def csv_rows() -> Iterator[tuple[int, dict[str, str]]]:
        for rec in reader:
            yield reader.line_num, rec

    return header, csv_rows()


def _resolve(
    path: Path, header: list[str], columns: ColumnMap, want_adj: bool, default_symbol: str | None
) -> dict[str, str | None]:
    lower = {h.strip().lower(): h for h in header}

    def pick(explicit: str | None, names: Sequence[str], what: str) -> str | None:
        if explicit is not None:
            if explicit in header:
                return explicit
            if explicit.lower() in lower:
                return lower[explicit.lower()]
            raise BarFileError(
                f"{path}: no column {explicit!r} for {what}; found {', '.join(header)}"
            )
        return next((lower[n] for n in names if n in lower), None)

    found: dict[str, str | None] = {
        "time": pick(columns.time, _TIME_NAMES, "time"),
        "symbol": pick(columns.symbol, _SYMBOL_NAMES, "symbol"),
        "adj_close": pick(columns.adj_close, _ADJ_NAMES, "adj_close"),
    }
    for f in FIELDS:
        found[f] = pick(getattr(columns, f), (f,), f)
    missing = [f for f in (*FIELDS, "time") if found[f] is None]
    if found["symbol"] is None and default_symbol is None:
        missing.append("symbol (or give the symbol)")
    if want_adj and found["adj_close"] is None:
        missing.append("adj close (needed for the adjustment)")
    if missing:
        raise BarFileError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}"
        )
    return found


def read_bar_file(
    path: Path,
    columns: ColumnMap | None = None,
    *,
    symbol: str | None = None,
    only_symbol: str | None = None,
    need_adj_close: bool = False,
    strict: bool = False,
    anonymous: bool = False,
) -> BarFile:
    """Read and check every row of a bar file.

    ``symbol`` names the symbol when the file has no symbol column; ``only_symbol`` keeps
    one symbol's rows; with ``anonymous``, a file without a symbol column is one series
    under the symbol ``""``. With ``strict`` the first bad row raises
    :class:`BarFileError`; otherwise bad rows land in :attr:`BarFile.problems`.
    """
    if not path.exists():
        raise BarFileError(f"{path}: no such file")
    header, rows = _rows(path)
    cols = _resolve(
        path, header, columns or ColumnMap(), need_adj_close, "" if anonymous else symbol
    )
    if symbol is not None and not _SYMBOL_RE.match(symbol):
        raise BarFileError(f"symbol {symbol!r} is not a valid ticker (A-Z 0-9 . _ / : ^ = -)")
    sym_col, time_col, adj_col = cols["symbol"], cols["time"], cols["adj_close"]
    assert time_col is not None
    value_cols = [(f, cols[f]) for f in FIELDS]
    if need_adj_close:
        value_cols.append(("adj_close", adj_col))
    good: list[tuple[int, dict[str, str], str, int, list[float]]] = []
    problems: list[RowProblem] = []
    read = 0
    for line, row in rows:
        read += 1
        sym = (row.get(sym_col) or "").strip() if sym_col else symbol or ""
        if only_symbol is not None and sym != only_symbol:
            continue
        reason = None
        values: list[float] = []
        if not _SYMBOL_RE.match(sym) and not (anonymous and not sym_col):
            reason = f"symbol {sym!r} is not a valid ticker"
        ts = 0
        if reason is None:
            try:
                ts = parse_time(row.get(time_col) or "")
                if not 0 <= ts <= _MAX_TS_MS:
                    reason = f"time {row.get(time_col)!r} is outside 1970-2200"
            except ValueError as exc:
                reason = str(exc)
        for name, col in value_cols:
            if reason is not None:
                break
            assert col is not None
            raw_value = row.get(col)
            try:
                value = float(raw_value or "")
            except ValueError:
                reason = f"{name} {raw_value!r} is not a number"
                break
            if not math.isfinite(value):
                reason = f"{name} {raw_value!r} is not finite"
            elif name == "volume" and value < 0:
                reason = f"volume {value} is negative"
            elif name != "volume" and value <= 0:
                reason = f"{name} {value} is not positive"
            values.append(value)
        if reason is None:
            o, h, lo, c = values[:4]
            if h < max(o, c, lo):
                reason = f"high {h} is below max(open, close, low) {max(o, c, lo)}"
            elif lo > min(o, c):
                reason = f"low {lo} is above min(open, close) {min(o, c)}"
        if reason is not None:
            if strict:
                raise BarFileError(f"{path}:{line}: {reason}")
            problems.append(RowProblem(line, reason))
            continue
        good.append((line, row, sym, ts, values))
    if only_symbol is not None and not good and not problems:
        raise BarFileError(f"{path}: no rows for symbol {only_symbol!r}")
    n = len(good)
    data = np.array([g[4] for g in good], dtype=np.float64).reshape(n, len(value_cols))
    return BarFile(
        path=path,
        header=header,
        rows=[g[1] for g in good],
        lines=np.array([g[0] for g in good], dtype=np.int64),
        symbol=np.array([g[2] for g in good], dtype=object),
        ts=np.array([g[3] for g in good], dtype=np.int64),
        open=data[:, 0].copy(),
        high=data[:, 1].copy(),
        low=data[:, 2].copy(),
        close=data[:, 3].copy(),
        volume=data[:, 4].copy(),
        adj_close=data[:, 5].copy() if need_adj_close else None,
        problems=problems,
        rows_read=read,
    )
