"""What rules mean, on hand-built series: crossovers with ties and warm-up, three-valued
logic, windows, lookbacks, not_ready; and the live path equal to the history path."""

import math

import numpy as np
import pytest

from technic_stream.data import load_sample
from technic_stream.rules import MATCH, NO_MATCH, NOT_READY, RuleSet, parse_rule

NAN = math.nan


def run(rule: str, **columns):
    """Evaluate one rule over hand-built columns; return its condition values."""
    rules = RuleSet([rule])
    n = len(next(iter(columns.values())))
    cols = {c: np.asarray(columns[c], dtype=float) for c in rules.columns}
    return rules.evaluate_series(cols, n=n).condition(0)


def same(actual, expected):
    np.testing.assert_array_equal(actual, np.asarray(expected, dtype=float))


# -- crossovers ---------------------------------------------------------------------------------


def test_crosses_above_needs_the_previous_bar_at_or_below_and_this_one_above():
    a = [1, 2, 3, 3, 2, 4, 4, 5]
    b = [2, 2, 2, 3, 3, 3, 4, 4]
    # bar:   0    1: 2<=2,2>2 no  2: 2<=2,3>2 yes  3: 3<=2 no  4: 3<=3,2>3 no
    #        5: 2<=3,4>3 yes  6: 4<=3 no  7: 4<=4,5>4 yes (a tie on the previous bar counts)
    # bar 0 has no previous bar, but a > b is already false there, so the 'and' is false
    same(run("crosses_above(close, open)", close=a, open=b), [0, 0, 1, 0, 0, 1, 0, 1])
    same(run("close crosses above open", close=a, open=b), [0, 0, 1, 0, 0, 1, 0, 1])


def test_crosses_below_is_the_mirror_and_crosses_is_either():
    a = [3, 2, 1, 1, 2, 0, 0]
    b = [2, 2, 2, 1, 1, 1, 0]
    # below: a[1] >= b[1] and a < b
    # 1: 3>=2, 2<2 no  2: 2>=2, 1<2 yes  3: 1>=2 no  4: 1>=1, 2<1 no  5: 2>=1, 0<1 yes  6: 0>=1 no
    same(run("crosses_below(close, open)", close=a, open=b), [0, 0, 1, 0, 0, 1, 0])
    # bar 0: a > b holds but the previous bar is unknown, so the cross is unknown
    above = run("crosses_above(close, open)", close=a, open=b)
    same(above, [NAN, 0, 0, 0, 1, 0, 0])  # 4: 1<=1, 2>1
    same(run("crosses(close, open)", close=a, open=b), [NAN, 0, 1, 0, 1, 1, 0])


def test_touching_without_crossing_is_not_a_cross():
    a = [1, 2, 1, 2, 2]
    b = [2, 2, 2, 2, 2]  # a rises to b and falls back; then sits on it
    same(run("crosses_above(close, open)", close=a, open=b), [0, 0, 0, 0, 0])
    same(run("crosses_below(close, open)", close=a, open=b), [NAN, 0, 1, 0, 0])


def test_crossing_an_indicator_in_warm_up_is_not_ready_then_decided():
    ema = [NAN, NAN, NAN, 5, 5, 5]
    close = [9, 9, 9, 4, 6, 6]
    # bar 3: previous ema unknown, close < ema now → the 'and' is already false
    # bar 4: 4 <= 5 and 6 > 5 → true; bar 5: 6 <= 5 false → false
    same(run("crosses_above(close, ema(3))", close=close, ema_3=ema), [NAN, NAN, NAN, 0, 1, 0])


# -- three-valued logic ----------------------------------------------------------------------


def test_and_or_not_with_unknowns():
    u = [NAN, NAN, NAN, 1, 1, 1, 0, 0, 0]
    v = [NAN, 1, 0, NAN, 1, 0, NAN, 1, 0]
    # high > 0.5 is unknown / true / false following u; same for low with v
    same(run("high > 0.5 and low > 0.5", high=u, low=v), [NAN, NAN, 0, NAN, 1, 0, 0, 0, 0])
    same(run("high > 0.5 or low > 0.5", high=u, low=v), [NAN, 1, NAN, 1, 1, 1, NAN, 1, 0])
    same(run("not high > 0.5", high=u), [NAN, NAN, NAN, 0, 0, 0, 1, 1, 1])


def test_division_by_zero_is_unknown_not_infinite():
    same(run("close / open > 1", close=[1, 2, 0], open=[0, 1, 0]), [NAN, 1, NAN])


def test_not_ready_is_reported_as_such():
    rules = RuleSet(["close > sma(3)"])
    cols = {"close": np.array([1.0, 2, 3, 4]), "sma_3": np.array([NAN, NAN, 2, 3])}
    result = rules.evaluate_series(cols)
    assert result.status(0).tolist() == [NOT_READY, NOT_READY, MATCH, MATCH]
    assert result.ready(0).tolist() == [False, False, True, True]
    assert result.match(0).tolist() == [False, False, True, True]
    assert result.score(0) is None
    assert result.status(0).dtype == np.int8 and NO_MATCH == 0


# -- windows and lookbacks -------------------------------------------------------------------


def test_lookback_reads_earlier_bars_and_is_unknown_before_the_first():
    same(run("close > close[2]", close=[1, 2, 3, 1, 5]), [NAN, NAN, 1, 0, 1])
    same(run("(close - open)[1] > 0", close=[2, 1, 3], open=[1, 1, 1]), [NAN, 1, 0])


def test_within_is_true_if_any_of_the_last_n_bars_is():
    c = [0, 5, 0, 0, 0, 0]
    same(run("within(close > 1, 3)", close=c), [NAN, 1, 1, 1, 0, 0])


def test_highest_lowest_and_change_pct():
    c = [3.0, 1, 4, 1, 5, 9, 2]
    same(run("close == highest(close, 3)", close=c), [NAN, NAN, 1, 0, 1, 1, 0])
    same(run("close == lowest(close, 2)", close=c), [NAN, 1, 0, 1, 0, 0, 1])
    rules = RuleSet(["close > 0 rank by change_pct(close, 2)"])
    score = rules.evaluate_series({"close": np.array(c)}).score(0)
    np.testing.assert_array_equal(
        score, [NAN, NAN, (4 - 3) / 3 * 100, (1 - 1) / 1 * 100, (5 - 4) / 4 * 100, 800, -60]
    )


def test_highest_high_reads_the_donchian_channel():
    rules = RuleSet(["close > highest(high, 20)[1] and low < lowest(low, 5)"])
    assert [str(s) for s in rules.specs] == ["donchian(20)", "donchian(5)"]
    assert rules.columns == ["close", "donchian_20.upper", "low", "donchian_5.lower"]
    assert rules.history == 21  # donchian(20) needs 20 bars, read one bar back


# -- planning -----------------------------------------------------------------------------------


def test_a_rule_set_shares_indicators_and_inputs():
    rules = RuleSet(
        [
            "rsi(14) < 30 and close > sma(200)",
            "RSI < 25 rank by sma(200) - close",
            "ema(12) crosses above ema(26)",
        ]
    )
    assert [str(s) for s in rules.specs] == ["rsi(14)", "sma(200)", "ema(12)", "ema(26)"]
    keys = [(i.column, i.lag) for i in rules.inputs]
    assert len(keys) == len(set(keys)) == 7  # rsi, close, sma, ema12[1], ema26[1], ema12, ema26
    assert rules.history == 200 and rules.max_lag == 1


# -- live (latest bar, many symbols) equals history (every bar, one symbol) ------------------

RULES = [
    "rsi(14) < 50 and close > sma(50)",
    "ema(12) crosses above ema(26) or ema(12) crosses below ema(26)",
    "volume > 1.5 * avg_volume(20)",
    "close > highest(high, 20)[1]",
    "within(crosses_below(close, bb(20,2).lower), 5) rank by -rsi(14)",
    "macd(12,26,9).hist > 0 and macd(12,26,9).hist[1] <= 0",
    "change_pct(close, 10) > 5 rank by change_pct(close, 10)",
    "adx > 25 and adx.plus_di > adx.minus_di",
]


@pytest.fixture(scope="module")
def sample_columns():
    rules = RuleSet(RULES)
    out = {}
    for sym, d in load_sample().items():
        bars = {"ts": d.ts, "open": d.open, "high": d.high, "low": d.low, "close": d.close,
                "volume": d.volume}  # fmt: skip
        out[sym] = rules.series_columns(bars)
    return rules, out


def test_latest_bar_over_symbols_equals_the_series_at_that_bar(sample_columns):
    rules, columns = sample_columns
    history = {s: rules.evaluate_series(columns[s]) for s in columns}
    for t in (0, 1, 19, 20, 60, 195, 250, 1_000, 3_000):
        symbols = sorted(s for s in columns if len(columns[s]["close"]) > t)
        # the engine's view at bar t: every input (column, lag) for every symbol
        values = np.array(
            [
                [columns[s][i.column][t - i.lag] if t - i.lag >= 0 else NAN for s in symbols]
                for i in rules.inputs
            ]
        )
        live = rules.evaluate_latest(values)
        for r in range(len(rules)):
            want = np.array([history[s].condition(r)[t] for s in symbols])
            np.testing.assert_array_equal(live.condition(r), want)
            if rules.rules[r].rank_by is not None:
                want = np.array([history[s].score(r)[t] for s in symbols])
                np.testing.assert_array_equal(live.score(r), want)


def test_rules_fire_on_real_data(sample_columns):
    rules, columns = sample_columns
    result = rules.evaluate_series(columns["AAPL"])
    for r in range(len(rules)):  # every rule both matches and misses somewhere on AAPL
        status = result.status(r)
        assert (status == MATCH).any() and (status == NO_MATCH).any(), rules.rules[r]
    # readiness follows the inputs: rsi(14) has no value before bar 14
    assert result.status(0)[:14].tolist() == [NOT_READY] * 14
    assert result.status(0)[14] != NOT_READY or np.isnan(columns["AAPL"]["sma_50"][14])


def test_evaluate_latest_checks_its_input_shape():
    rules = RuleSet(["close > open"])
    with pytest.raises(ValueError, match=r"values must be \(2 inputs, symbols\)"):
        rules.evaluate_latest(np.zeros((3, 5)))
    with pytest.raises(KeyError, match="missing column"):
        rules.evaluate_series({"close": np.zeros(3)})


def test_rules_can_be_given_parsed():
    rule = parse_rule("close > open")
    assert RuleSet([rule]).rules[0] is rule
