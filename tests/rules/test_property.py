"""Random well-typed rules over random bars: the compiled evaluator equals the reference.

Rules are generated as text (so the parser is exercised too), the columns come from the
batch kernels, and the reference walks the syntax tree bar by bar in plain Python. Both
the history path (every bar of one symbol) and the live path (the latest bar of many
symbols, fed the way the engine feeds it) must agree with it exactly, NaN for NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from technic_stream.rules import RuleError, RuleSet, parse_rule
from tests.rules.reference import evaluate

INDICATORS = [
    "rsi(3)",
    "sma(4)",
    "ema(3)",
    "wma(3)",
    "bb(4,2).upper",
    "bb(4,1.5).pctb",
    "macd(3,5,2).signal",
    "macd(3,5,2)",
    "stoch(4,2,2).d",
    "atr(3)",
    "adx(3).plus_di",
    "donchian(3).lower",
    "obv",
    "roc(2)",
    "mfi(3)",
    "cci(3)",
    "willr(3)",
    "avg_volume(3)",
    "relvol(3)",
    "vwap(60, 0)",
]
FIELDS = ["open", "high", "low", "close", "volume"]
NUMBERS = ["0", "1", "2", "0.5", "30", "100", "-1", "1.5e-3"]


def _number(depth: int) -> st.SearchStrategy[str]:
    leaf = st.one_of(
        st.sampled_from(FIELDS),
        st.sampled_from(INDICATORS),
        st.sampled_from(NUMBERS),
        st.tuples(st.sampled_from(FIELDS + INDICATORS), st.integers(1, 3)).map(
            lambda t: f"{t[0]}[{t[1]}]"
        ),
    )
    if depth <= 0:
        return leaf
    sub = st.deferred(lambda: _number(depth - 1))
    window = st.integers(1, 4)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from("+-*/"), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        sub.map(lambda x: f"-({x})"),
        sub.map(lambda x: f"abs({x})"),
        st.tuples(st.sampled_from(["min", "max"]), sub, sub).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.tuples(st.sampled_from(["highest", "lowest"]), sub, window).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.sampled_from(["highest(high, 3)", "lowest(low, 2)", "highest(high, 1)"]),
        st.tuples(sub, window).map(lambda t: f"change_pct({t[0]}, {t[1]})"),
        st.tuples(sub, st.integers(1, 2)).map(lambda t: f"({t[0]})[{t[1]}]"),
    )


def _condition(depth: int) -> st.SearchStrategy[str]:
    num = _number(max(depth - 1, 0))
    compare = st.tuples(num, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), num).map(
        lambda t: f"{t[0]} {t[1]} {t[2]}"
    )
    cross = st.tuples(st.sampled_from(["crosses_above", "crosses_below", "crosses"]), num, num).map(
        lambda t: f"{t[0]}({t[1]}, {t[2]})"
    )
    if depth <= 0:
        return st.one_of(compare, cross)
    sub = st.deferred(lambda: _condition(depth - 1))
    return st.one_of(
        compare,
        cross,
        st.tuples(sub, st.sampled_from(["and", "or"]), sub).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        sub.map(lambda c: f"not ({c})"),
        st.tuples(sub, st.integers(1, 4)).map(lambda t: f"within({t[0]}, {t[1]})"),
        st.tuples(sub, st.integers(1, 2)).map(lambda t: f"({t[0]})[{t[1]}]"),
    )


RULES = st.tuples(_condition(2), st.none() | _number(1)).map(
    lambda t: t[0] if t[1] is None else f"{t[0]} rank by {t[1]}"
)


@st.composite
def bars(draw):
    """Short OHLCV series on a coarse grid, so ties, flat runs and crossings are common."""
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    close = 10 + np.cumsum(rng.integers(-2, 3, n)) * 0.5
    close = np.maximum(close, 0.5)
    open_ = np.maximum(close + rng.integers(-1, 2, n) * 0.5, 0.5)
    high = np.maximum(open_, close) + rng.integers(0, 2, n) * 0.5
    low = np.maximum(np.minimum(open_, close) - rng.integers(0, 2, n) * 0.5, 0.25)
    volume = rng.integers(0, 4, n) * 100.0
    ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 1_800_000
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _same(actual: np.ndarray, expected: list[float], what: str) -> None:
    for t, (a, e) in enumerate(zip(actual.tolist(), expected, strict=True)):
        assert (math.isnan(a) and math.isnan(e)) or a == e, f"{what} at bar {t}: {a} != {e}"


@given(text=RULES, data=st.lists(bars(), min_size=1, max_size=3))
def test_compiled_rules_equal_the_reference(text, data):
    rule = parse_rule(text)
    rules = RuleSet([rule])
    for series in data:
        n = len(series["close"])
        columns = rules.series_columns(series)
        full = {**{f: series[f] for f in FIELDS}, **columns}
        want_cond, want_score = evaluate(rule, {k: list(v) for k, v in full.items()}, n)
        got = rules.evaluate_series(columns, n=n)
        _same(got.condition(0), want_cond, f"{rule} (history)")
        if rule.rank_by is not None:
            _same(got.score(0), want_score, f"rank by {rule.rank_by} (history)")
    # live: the latest bar of every series at once, inputs gathered per (column, lag)
    cols = [rules.series_columns(s) for s in data]
    for back in range(3):
        values = np.array(
            [
                [
                    c[i.column][len(s["close"]) - 1 - back - i.lag]
                    if len(s["close"]) - 1 - back - i.lag >= 0
                    else math.nan
                    for s, c in zip(data, cols, strict=True)
                ]
                for i in rules.inputs
            ]
        ).reshape(len(rules.inputs), len(data))
        live = rules.evaluate_latest(values)
        for k, s in enumerate(data):
            t = len(s["close"]) - 1 - back
            if t < 0:
                continue
            full = {**{f: s[f] for f in FIELDS}, **cols[k]}
            want_cond, want_score = evaluate(rule, {c: list(v) for c, v in full.items()}, t + 1)
            _same(live.condition(0)[k : k + 1], want_cond[t : t + 1], f"{rule} (live)")
            if rule.rank_by is not None:
                _same(live.score(0)[k : k + 1], want_score[t : t + 1], "score (live)")


@given(texts=st.lists(RULES, min_size=2, max_size=5), data=bars())
def test_rules_compiled_together_read_what_each_reads_alone(texts, data):
    """A set renumbers every rule's inputs into one shared table (each rule is compiled
    once and cached): each rule's values in the set are the ones it has on its own."""
    together = RuleSet(texts)
    n = len(data["close"])
    got = together.evaluate_series(together.series_columns(data), n=n)
    for k, text in enumerate(texts):
        alone = RuleSet([text])
        want = alone.evaluate_series(alone.series_columns(data), n=n)
        _same(got.condition(k), want.condition(0).tolist(), f"{text} (in a set of {len(texts)})")
        if alone.rules[0].rank_by is not None:
            _same(got.score(k), want.score(0).tolist(), f"rank of {text}")
    # a parse is cached: the same text gives the same rule, its errors fresh each time
    assert parse_rule(texts[0]) is parse_rule(texts[0])


def test_a_bad_rule_raises_a_new_error_every_time():
    errors = []
    for _ in range(2):
        with pytest.raises(RuleError) as caught:
            parse_rule("rsi(14) < < 30")
        errors.append(caught.value)
    assert errors[0] is not errors[1]
    assert errors[0].col == errors[1].col == 11
    assert errors[0].reason == errors[1].reason


@given(text=RULES)
def test_canonical_form_is_a_fixed_point_and_keeps_the_meaning(text):
    rule = parse_rule(text)
    again = parse_rule(str(rule))
    assert again == rule
    assert str(again) == str(rule) and again.id == rule.id
