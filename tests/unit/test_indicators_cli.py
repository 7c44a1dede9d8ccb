"""`technic-stream indicators FILE`: real sample rows in, kernel outputs out."""

import csv
import io

import numpy as np
import talib

from technic_stream.cli import main
from technic_stream.data import load_sample


def sample_csv(path, symbols=("AAPL", "IBM"), rows=80):
    data = load_sample()
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Symbol", "Date", "Open", "High", "Low", "Close", "Volume"])
        for i in range(rows):  # interleaved, the way a multi-symbol export looks
            for s in symbols:
                d = data[s]
                day = np.datetime64(int(d.ts[i]), "ms").astype("datetime64[D]")
                w.writerow([s, str(day), d.open[i], d.high[i], d.low[i], d.close[i], d.volume[i]])
    return data


def test_writes_input_columns_plus_outputs_per_symbol(tmp_path, capsys):
    src = tmp_path / "bars.csv"
    data = sample_csv(src)
    out = tmp_path / "out.csv"
    assert main(["indicators", str(src), "--indicators", "ema(20),rsi(14)", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [
        "Symbol",
        "Date",
        "Open",
        "High",
        "Low",
        "Close",
        "Volume",
        "ema_20",
        "rsi_14",
    ]
    for s in ("AAPL", "IBM"):
        mine = [r for r in rows if r["Symbol"] == s]
        ema = talib.EMA(data[s].close[:80], 20)
        assert [r["ema_20"] == "" for r in mine] == list(np.isnan(ema))
        got = np.array([float(r["ema_20"]) for r in mine[19:]])
        np.testing.assert_allclose(got, ema[19:], rtol=0, atol=1e-9)
    assert "wrote 160 rows" in capsys.readouterr().err


def test_symbol_filter_and_stdout(tmp_path, capsys, monkeypatch):
    src = tmp_path / "bars.csv"
    sample_csv(src, rows=30)
    assert main(["indicators", str(src), "--indicators", "sma(5)", "--symbol", "IBM"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 30 and {r["Symbol"] for r in rows} == {"IBM"}


def test_bad_inputs_get_one_line_and_nonzero_exit(tmp_path, capsys):
    src = tmp_path / "bars.csv"
    sample_csv(src, rows=5)
    assert main(["indicators", str(src), "--indicators", "rsx(14)"]) == 2
    assert "did you mean 'rsi'" in capsys.readouterr().err
    assert main(["indicators", str(tmp_path / "missing.csv")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,x,10\n")
    assert main(["indicators", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.csv:2: close 'x' is not a number" in err and err.count("\n") == 1
    nocols = tmp_path / "nocols.csv"
    nocols.write_text("Date,Price\n2020-01-02,1\n")
    assert main(["indicators", str(nocols)]) == 1
    assert "missing column(s) open, high, low, close, volume" in capsys.readouterr().err
    assert main(["indicators", str(src), "--symbol", "NOPE"]) == 1
    assert "no rows for symbol 'NOPE'" in capsys.readouterr().err
