"""`technic-stream rules check` and `rules eval` on real sample rows."""

import csv

import numpy as np

from technic_stream.cli import main
from technic_stream.rules import RuleSet
from tests.unit.test_indicators_cli import sample_csv


def test_check_prints_canonical_form_needs_and_history(capsys):
    assert main(["rules", "check", "RSI(14) < 30 AND close > SMA(200) rank by relvol(20)"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "rule:       rsi(14) < 30 and close > sma(200) rank by relvol(20) desc"
    assert out[1].startswith("id:         ") and len(out[1].split()[-1]) == 16
    assert out[2] == "indicators: rsi(14), sma(200), relvol(20)"
    assert out[3] == "columns:    rsi_14, close, sma_200, relvol_20"
    assert out[4].startswith("history:    200 bar(s) before every input has a value")


def test_check_shows_the_error_with_a_caret_and_exits_2(capsys):
    assert main(["rules", "check", "rsi(14) < 30 and clsoe > sma(200)"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "rule error at column 18: unknown name 'clsoe'; did you mean 'close'?",
        "  rsi(14) < 30 and clsoe > sma(200)",
        "                   ^",
    ]


def test_eval_writes_match_reason_and_score_per_bar(tmp_path, capsys):
    src = tmp_path / "bars.csv"
    data = sample_csv(src, rows=120)
    out = tmp_path / "out.csv"
    rule = "close crosses above ema(10) rank by rsi(14)"
    assert main(["rules", "eval", str(src), rule, "--out", str(out)]) == 0
    assert "wrote 240 rows" in capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[-3:] == ["match", "reason", "score"]
    rules = RuleSet([rule])
    for sym in ("AAPL", "IBM"):
        mine = [r for r in rows if r["Symbol"] == sym]
        d = data[sym]
        bars = {"ts": d.ts[:120], "open": d.open[:120], "high": d.high[:120],
                "low": d.low[:120], "close": d.close[:120], "volume": d.volume[:120]}  # fmt: skip
        want = rules.evaluate_series(rules.series_columns(bars))
        cond = want.condition(0)
        got = [np.nan if r["match"] == "" else float(r["match"]) for r in mine]
        np.testing.assert_array_equal(got, cond)
        assert [r["reason"] for r in mine] == ["not_ready" if np.isnan(c) else "" for c in cond]
        scores = [np.nan if r["score"] == "" else float(r["score"]) for r in mine]
        np.testing.assert_array_equal(scores, want.score(0))
        assert 0 < sum(r["match"] == "1" for r in mine) < 20  # it fires, and not everywhere


def test_eval_one_symbol_to_stdout(tmp_path, capsys):
    src = tmp_path / "bars.csv"
    sample_csv(src, rows=30)
    assert main(["rules", "eval", str(src), "close > open", "--symbol", "IBM"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 31 and all(x.startswith("IBM,") for x in lines[1:])
    assert lines[0].endswith(",match,reason")


def test_eval_reports_bad_rules_and_bad_files(tmp_path, capsys):
    src = tmp_path / "bars.csv"
    sample_csv(src, rows=5)
    assert main(["rules", "eval", str(src), "close >> open"]) == 2
    assert "rule error at column 8: expected a value, found '>'" in capsys.readouterr().err
    assert main(["rules", "eval", str(tmp_path / "nope.csv"), "close > open"]) == 1
    assert "nope.csv: no such file" in capsys.readouterr().err
    assert main(["rules", "eval", str(src), "close > open", "--symbol", "ZZZ"]) == 1
    assert "no rows for symbol 'ZZZ'" in capsys.readouterr().err
