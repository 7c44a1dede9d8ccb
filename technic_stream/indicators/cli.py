"""``technic-stream indicators FILE``: run bars from a file through the streaming kernels."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from technic_stream.errors import TechnicStreamError
from technic_stream.indicators.plan import IndicatorPlan
from technic_stream.indicators.state import IndicatorState

__all__ = ["BarFileError", "read_bars", "run_indicators"]

_TIME_COLUMNS = ("ts", "timestamp", "time", "date", "datetime")
_REQUIRED = ("open", "high", "low", "close", "volume")


class BarFileError(TechnicStreamError):
    """A bar file that cannot be read; the message names the file, line and column."""


def _parse_time(text: str, where: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        value = int(text)
        return value * 1000 if abs(value) < 100_000_000_000 else value  # seconds or ms
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BarFileError(f"{where}: cannot read time {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def read_bars(path: Path) -> tuple[list[str], list[dict[str, str]], dict[str, np.ndarray]]:
    """Columns, raw rows and parsed arrays (symbol, ts, OHLCV) of a CSV or Parquet file."""
    if not path.exists():
        raise BarFileError(f"{path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise BarFileError(
                f"{path}: reading Parquet needs pyarrow (pip install pyarrow)"
            ) from None
        table = pq.read_table(path)
        header = list(table.column_names)
        rows = [{k: "" if v is None else str(v) for k, v in r.items()} for r in table.to_pylist()]
    else:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                raise BarFileError(f"{path}: empty file")
            header = list(reader.fieldnames)
            rows = list(reader)
    lower = {name.strip().lower(): name for name in header}
    missing = [c for c in _REQUIRED if c not in lower]
    time_col = next((lower[c] for c in _TIME_COLUMNS if c in lower), None)
    if missing or time_col is None:
        need = missing + ([] if time_col else ["date or ts"])
        raise BarFileError(
            f"{path}: missing column(s) {', '.join(need)}; found {', '.join(header)}"
        )
    symbol_col = lower.get("symbol") or lower.get("ticker")
    n = len(rows)
    arrays = {c: np.empty(n) for c in _REQUIRED}
    ts = np.empty(n, dtype=np.int64)
    symbols = []
    for i, row in enumerate(rows):
        where = f"{path}:{i + 2}"
        ts[i] = _parse_time(row[time_col], where)
        for c in _REQUIRED:
            raw = row[lower[c]]
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise BarFileError(f"{where}: {c} {raw!r} is not a number") from None
            if not math.isfinite(value):
                raise BarFileError(f"{where}: {c} is not finite")
            arrays[c][i] = value
        symbols.append(row[symbol_col].strip() if symbol_col else "")
    return header, rows, {"symbol": np.array(symbols, dtype=object), "ts": ts, **arrays}


def run_indicators(path: Path, indicators: str, *, symbol: str | None, out: TextIO) -> int:
    """Write the file's columns plus one column per indicator output; return rows written."""
    plan = IndicatorPlan.parse(indicators)
    header, rows, bars = read_bars(path)
    keep = np.ones(len(rows), dtype=bool)
    if symbol is not None:
        keep = bars["symbol"] == symbol
        if not keep.any():
            found = sorted(set(bars["symbol"].tolist()))
            raise BarFileError(f"{path}: no rows for symbol {symbol!r}; found {', '.join(found)}")
    idx = np.flatnonzero(keep)
    state = IndicatorState(plan)
    row_ids = state.rows([s for s in bars["symbol"][idx]])
    result = state.apply(
        row_ids, bars["ts"][idx], bars["open"][idx], bars["high"][idx], bars["low"][idx],
        bars["close"][idx], bars["volume"][idx],
    )  # fmt: skip
    writer = csv.writer(out)
    writer.writerow([*header, *plan.output_names])
    for j, i in enumerate(idx):
        values = ["" if math.isnan(x) else repr(float(x)) for x in result.out[j]]
        writer.writerow([rows[i][h] for h in header] + values)
    if result.skipped:
        print(
            f"technic-stream: {result.skipped} bar(s) older than their symbol's last bar "
            "were skipped (outputs left empty)",
            file=sys.stderr,
        )
    return len(idx)


def main(args: Sequence[str] | None = None) -> None:  # pragma: no cover - via technic_stream.cli
    raise SystemExit("use: technic-stream indicators FILE --indicators ...")
