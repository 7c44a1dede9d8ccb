"""``technic-stream indicators FILE``: run bars from a file through the streaming kernels."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from technic_stream.data.files import BarFileError, read_bar_file
from technic_stream.indicators.plan import IndicatorPlan
from technic_stream.indicators.state import IndicatorState

__all__ = ["BarFileError", "read_bars", "run_indicators"]


def read_bars(path: Path) -> tuple[list[str], list[dict[str, str]], dict[str, np.ndarray]]:
    """Columns, raw rows and parsed arrays (symbol, ts, OHLCV) of a CSV or Parquet file.

    Strict: the first bad row stops the command with its line number.
    """
    bars = read_bar_file(path, strict=True, anonymous=True)
    return bars.header, bars.rows, bars.columns()


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
