"""Reading bar files for replay/backfill: checks, line numbers, mapping, adjustments."""

from __future__ import annotations

import gzip
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from technic_stream.data import load_sample
from technic_stream.data.files import BarFileError, ColumnMap, read_bar_file
from technic_stream.marketdata.replay import (
    ReplayConfig,
    infer_timeframe,
    load_replay,
    split_ratios,
)

CSV = """\
Date,Ticker,Open,High,Low,Close,Volume,Adj Close
2020-01-02,AAA,10,11,9,10.5,1000,5.25
2020-01-03,AAA,10.5,x,10,11,1000,5.5
2020-01-06,AAA,11,12,10.5,11.5,-5,5.75
2020-01-07,AAA,11,10,10.5,10.8,100,5.4
2020-01-08,aaa,11,12,10.5,11.5,100,5.75
2020-13-01,AAA,11,12,10.5,11.5,100,5.75
2020-01-09,AAA,6,6.5,5.5,6,2000,6
"""


def _write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bad_rows_are_reported_with_line_numbers_and_left_out(tmp_path):
    bars = read_bar_file(_write(tmp_path, CSV))
    assert [str(p) for p in bars.problems] == [
        "line 3: high 'x' is not a number",
        "line 4: volume -5.0 is negative",
        "line 5: high 10.0 is below max(open, close, low) 11.0",
        "line 6: symbol 'aaa' is not a valid ticker",
        "line 7: cannot read time '2020-13-01'",
    ]
    assert bars.rows_read == 7 and len(bars) == 2
    assert bars.lines.tolist() == [2, 8] and bars.close.tolist() == [10.5, 6.0]


def test_strict_reading_stops_at_the_first_bad_row(tmp_path):
    with pytest.raises(BarFileError, match=r"bars.csv:3: high 'x' is not a number"):
        read_bar_file(_write(tmp_path, CSV), strict=True)


def test_column_mapping_and_a_symbol_for_files_without_one(tmp_path):
    text = "When,O,H,L,Last,Shares\n1577923200,1,2,0.5,1.5,10\n1578009600,1.5,2,1,1.2,20\n"
    path = _write(tmp_path, text)
    cols = ColumnMap.parse("time=When,open=O,high=H,low=L,close=Last,volume=Shares")
    bars = read_bar_file(path, cols, symbol="XYZ")
    assert bars.symbol.tolist() == ["XYZ", "XYZ"]
    assert bars.ts.tolist() == [1577923200000, 1578009600000]
    with pytest.raises(BarFileError, match="missing column"):
        read_bar_file(path, cols)  # no symbol column and no symbol given
    with pytest.raises(BarFileError, match="no column 'Nope' for close"):
        read_bar_file(path, ColumnMap(close="Nope"), symbol="XYZ")
    with pytest.raises(ValueError, match="unknown field 'price'"):
        ColumnMap.parse("price=Last")


def test_gzip_csv_reads_like_csv(tmp_path):
    path = tmp_path / "bars.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(CSV)
    assert read_bar_file(path).close.tolist() == [10.5, 6.0]


def test_splits_are_found_from_adj_close_and_dividends_are_not():
    ts = np.arange(6, dtype=np.int64)
    close = np.array([100.0, 101, 50, 51, 51.5, 7.0])
    # factor: 0.25 → (dividend: 0.99x) → 2:1 split → … → 7:1 split
    factor = np.array([0.0357, 0.0357 * 1.01, 0.0714 * 1.01, 0.0714 * 1.01, 0.0714 * 1.01, 0.5])
    ratios = split_ratios(ts, close, close * factor)
    assert ratios.tolist() == [1, 1, 2, 1, 1, 7]


def test_split_adjusted_sample_is_continuous_and_keeps_the_last_prices():
    raw = load_sample()["AAPL"]
    data = load_replay(ReplayConfig(adjust="splits"))
    assert data.splits["AAPL"] == [
        (961_545_600_000, Fraction(2)),  # 2000-06-21
        (1_109_548_800_000, Fraction(2)),  # 2005-02-28
    ]
    aapl = data.bars.symbol == "AAPL"
    close = data.bars.close[aapl]
    assert close[-1] == raw.close[-1]  # after the last split nothing changes
    assert close[0] == pytest.approx(raw.close[0] / 4)
    assert data.bars.volume[aapl][0] == pytest.approx(raw.volume[0] * 4)
    for day, _ in data.splits["AAPL"]:  # no split gaps left
        i = int(np.flatnonzero(data.bars.ts[aapl] == day)[0])
        assert 0.85 < close[i] / close[i - 1] < 1.15


def test_full_adjustment_follows_adj_close():
    raw = load_sample()["MSFT"]
    data = load_replay(ReplayConfig(adjust="full"))
    msft = data.bars.symbol == "MSFT"
    np.testing.assert_allclose(data.bars.close[msft], raw.adj_close, rtol=1e-12)


def test_replay_orders_rows_by_time_across_symbols_and_infers_the_timeframe():
    data = load_replay(ReplayConfig())
    assert data.tf == "1d" and len(data.bars) == 12_154
    assert (np.diff(data.bars.ts) >= 0).all()
    assert infer_timeframe(data.bars) == "1d"


def test_cli_says_what_is_wrong(tmp_path, capsys):
    from technic_stream.cli import main

    assert main(["replay", str(tmp_path / "nope.csv")]) == 1
    assert "nope.csv: no such file" in capsys.readouterr().err
    assert main(["replay"]) == 2  # the sample is fine, but no broker is configured
    assert "TECHNIC_KAFKA_BOOTSTRAP" in capsys.readouterr().err
    assert main(["backfill", "--columns", "price=Last"]) == 2
    assert "unknown field 'price'" in capsys.readouterr().err
