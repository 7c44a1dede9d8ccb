"""The real sample data: daily OHLCV for AAPL, IBM, MSFT, GOOG and FB (Quandl WIKI).

Shipped by the ``bokeh_sampledata`` package (the ``local`` extra); prices are
unadjusted, ``adj_close`` carries the split/dividend-adjusted close.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

__all__ = ["SAMPLE_SYMBOLS", "SeriesOHLCV", "load_sample", "sample_path"]

SAMPLE_SYMBOLS = ("AAPL", "IBM", "MSFT", "GOOG", "FB")


@dataclass(frozen=True, slots=True)
class SeriesOHLCV:
    symbol: str
    ts: np.ndarray  # int64 epoch ms (UTC midnight of the trading day)
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    adj_close: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def sample_path() -> Path:
    found = importlib.util.find_spec("bokeh_sampledata")
    if found is None or found.origin is None:
        raise FileNotFoundError("bokeh_sampledata is not installed (pip install -e '.[local]')")
    return Path(found.origin).parent / "_data" / "stocks.csv.gz"


def load_sample() -> dict[str, SeriesOHLCV]:
    """Every sample symbol's daily bars, oldest first."""
    rows: dict[str, list[tuple[int, float, float, float, float, float, float]]] = {}
    with gzip.open(sample_path(), "rt", newline="") as fh:
        for rec in csv.DictReader(fh):
            day = datetime.strptime(rec["Date"], "%Y-%m-%d").replace(tzinfo=UTC)
            rows.setdefault(rec["Ticker"], []).append(
                (
                    int(day.timestamp() * 1000),
                    float(rec["Open"]),
                    float(rec["High"]),
                    float(rec["Low"]),
                    float(rec["Close"]),
                    float(rec["Volume"]),
                    float(rec["Adj Close"]),
                )
            )
    out = {}
    for symbol, recs in rows.items():
        recs.sort()
        a = np.array(recs, dtype=np.float64)
        out[symbol] = SeriesOHLCV(
            symbol, a[:, 0].astype(np.int64), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy(),
            a[:, 4].copy(), a[:, 5].copy(), a[:, 6].copy(),
        )  # fmt: skip
    return out
