"""The rule parser and checker: every construct, precedence, every error with its column."""

import time

import pytest

from technic_stream.rules import RuleError, RuleLimits, RuleSet, parse_rule
from technic_stream.rules.ast import Binary, Call, Field, Indicator, Lag, Num, Unary

# -- constructs and canonical form -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("RSI(14) < 30 and close > SMA(200)", "rsi(14) < 30 and close > sma(200)"),
        ("EMA(12) crosses above EMA(26)", "crosses_above(ema(12), ema(26))"),
        ("ema(12) CROSSES BELOW ema(26)", "crosses_below(ema(12), ema(26))"),
        ("ema(12) crosses ema(26)", "crosses(ema(12), ema(26))"),
        ("volume > 2 * avg_volume(20)", "volume > 2 * avg_volume(20)"),
        ("close > highest(high, 252)[1]", "close > highest(high, 252)[1]"),
        ("macd(12, 26, 9).signal > 0", "macd(12,26,9).signal > 0"),
        ("macd() > 0", "macd(12,26,9).macd > 0"),  # defaults filled; the line by default
        ("adx > 25", "adx(14).adx > 25"),
        ("bb(20,2).upper < close", "bb(20,2).upper < close"),
        ("rsi < 30", "rsi(14) < 30"),
        ("obv > obv[5]", "obv > obv[5]"),
        ("vwap(390, -30) < close", "vwap(390,-30) < close"),
        ("close[0] > open", "close > open"),
        ("close[1][2] > open", "close[3] > open"),
        ("(close - open)[2] > 0", "(close - open)[2] > 0"),
        ("within(crosses_above(close, sma(50)), 5)", "within(crosses_above(close, sma(50)), 5)"),
        ("lowest(low, 20) > 0", "lowest(low, 20) > 0"),
        ("change_pct(close, 5) >= 10", "change_pct(close, 5) >= 10"),
        ("abs(close - open) / open * 100 > 2", "abs(close - open) / open * 100 > 2"),
        ("min(open, close) > max(low, 0.5)", "min(open, close) > max(low, 0.5)"),
        ("not close > open", "not close > open"),
        ("not (close > open or volume < 1)", "not (close > open or volume < 1)"),
        ("close == open or close != high", "close == open or close != high"),
        ("close <= 1.50 and close >= .5", "close <= 1.5 and close >= 0.5"),
        ("close > 1e3", "close > 1000"),
        ("-close < -5", "-close < -5"),
        ("close - -5 > 0", "close - -5 > 0"),
        ("close > 0 rank by relvol(20)", "close > 0 rank by relvol(20) desc"),
        ("close > 0 rank by rsi(14) ASC", "close > 0 rank by rsi(14) asc"),
    ],
)
def test_every_construct_parses_to_its_canonical_form(text, canonical):
    rule = parse_rule(text)
    assert str(rule) == canonical
    again = parse_rule(str(rule))  # the canonical form is a fixed point
    assert again == rule
    assert str(again) == canonical


def test_precedence_and_associativity():
    w = parse_rule("close > open + 2 * high - low / 4 and volume > 1 or not close < 1").where
    # or( and( >(close, -(+(open, *(2, high)), /(low, 4))), >(volume, 1)), not(<(close, 1)))
    assert isinstance(w, Binary) and w.op == "or"
    left, right = w.a, w.b
    assert isinstance(left, Binary) and left.op == "and"
    assert isinstance(right, Unary) and right.op == "not"
    gt = left.a
    assert isinstance(gt, Binary) and gt.op == ">"
    minus = gt.b
    assert isinstance(minus, Binary) and minus.op == "-"
    assert isinstance(minus.a, Binary) and minus.a.op == "+"
    assert isinstance(minus.a.b, Binary) and minus.a.b.op == "*"
    assert isinstance(minus.b, Binary) and minus.b.op == "/"
    # left associativity keeps the needed parentheses, drops the others
    assert str(parse_rule("close - (open - low) > 0")) == "close - (open - low) > 0"
    assert str(parse_rule("(close - open) - low > 0")) == "close - open - low > 0"
    assert str(parse_rule("close / (open * low) > 0")) == "close / (open * low) > 0"
    assert str(parse_rule("(close > 1 or open > 1) and low > 1")) == (
        "(close > 1 or open > 1) and low > 1"
    )


def test_nodes_carry_types_and_columns():
    w = parse_rule("close[1] > rsi(14) and within(low < 5, 3)").where
    assert isinstance(w, Binary) and w.col == 20
    gt = w.a
    assert isinstance(gt, Binary) and isinstance(gt.a, Lag) and gt.a.n == 1
    assert isinstance(gt.a.x, Field) and gt.a.x.col == 1
    assert isinstance(gt.b, Indicator) and gt.b.col == 12 and gt.b.column == "rsi_14"
    assert gt.b.lookback == 14
    assert isinstance(w.b, Call) and w.b.name == "within" and w.b.n == 3
    assert isinstance(parse_rule("-5 < close").where.a, Num)


def test_equal_rules_hash_equally_and_different_ones_do_not():
    a = parse_rule("RSI(14)<30   AND close>SMA(200)")
    b = parse_rule("(rsi(14) < 30) and (close > sma(200))")
    c = parse_rule("rsi < 30 and close > sma(200)")  # rsi's default period is 14
    assert a.id == b.id == c.id
    assert a == b == c and hash(a) == hash(b)
    assert parse_rule("rsi(14) < 31 and close > sma(200)").id != a.id
    assert parse_rule("rsi(14) < 30 and close > sma(200) rank by rsi(14)").id != a.id


# -- errors: every class, with its column ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "col", "reason"),
    [
        ("", 1, "the rule is empty"),
        ("close > 5 $", 11, "unexpected character '$'"),
        ("rsj(14) < 30", 1, "unknown name 'rsj'; did you mean 'rsi'?"),
        ("close > clsoe", 9, "unknown name 'clsoe'; did you mean 'close'?"),
        ("close > zzz", 9, "unknown name 'zzz'"),
        ("close > 5 and", 14, "the rule ends where a value was expected"),
        ("close > (5", 11, "expected ')' to close the '(' at column 9"),
        ("close > 5)", 10, "unexpected ')' after a complete rule"),
        ("close", 1, "a rule needs a condition (true/false), but this is a number"),
        ("rsi(14) and close > 1", 1, "'and' needs a condition"),
        ("close > 1 + (open > 2)", 13, "'+' needs a number, but this is a condition"),
        ("not close", 5, "'not' needs a condition"),
        ("close > 5 > 3", 11, "comparisons cannot be chained"),
        ("close = 5", 7, "'=' is not an operator; use '=='"),
        ("+close > 1", 1, "unary '+' is not needed"),
        ("rsi(1) < 30", 1, "rsi: period must be between 2 and"),
        ("rsi(14.5) < 30", 1, "rsi: period must be a whole number"),
        ("rsi(14, 3) < 30", 1, "rsi takes at most 1 parameters"),
        ("rsi(x) < 30", 5, "rsi: parameters are numbers, found 'x'"),
        ("macd(12,26,9) .sig > 0", 16, "macd has no output 'sig'; did you mean 'signal'?"),
        ("bb(20,2) > 0", 1, "bb has several outputs; pick one: bb(20,2).mid"),
        ("rsi(14).value > 0", 9, "rsi has a single output"),
        ("crosses_above(close) ", 20, "crosses_above takes 2 arguments"),
        ("crosses_above(close, open, low)", 26, "crosses_above takes 2 arguments"),
        ("within(close, 3)", 8, "argument 1 of within needs a condition"),
        ("within(close > 1, 0)", 19, "the window of within must be between 1 and 500"),
        ("highest(close, 2.5) > 1", 16, "the window of highest must be a whole number"),
        ("highest(close, n) > 1", 16, "the window of highest must be a whole number, found 'n'"),
        ("highest > 1", 9, "highest is a function; call it as highest(x, n)"),
        ("close[1.5] > 1", 7, "a lookback must be a whole number"),
        ("close[501] > 1", 7, "a lookback must be between 0 and 500"),
        ("close[300][300] > 1", 11, "lookback 600 is over the limit of 500"),
        ("close > 1 rank close", 16, "expected 'by' after 'rank'"),
        ("close > 1 rank by close > 2", 19, "'rank by' needs a number"),
        ("close > and", 9, "expected a value, found the keyword 'and'"),
        ("close > 1e999", 9, "number 1e999 is out of range"),
    ],
)
def test_every_mistake_is_explained_at_its_column(text, col, reason):
    with pytest.raises(RuleError) as info:
        parse_rule(text)
    err = info.value
    assert err.col == col, (err.col, err.reason)
    assert reason in err.reason
    assert str(err).startswith(f"column {col}: ")
    assert err.to_dict() == {"column": col, "reason": err.reason}


def test_caret_sits_under_the_offending_column():
    with pytest.raises(RuleError) as info:
        parse_rule("rsi(14) < 30 and clsoe > sma(200)")
    text, caret = info.value.caret().splitlines()
    assert text == "rsi(14) < 30 and clsoe > sma(200)"
    assert caret.index("^") == 17 == text.index("clsoe")


def test_caret_of_a_long_rule_shows_a_window_around_the_column():
    rule = "close > 1 and " * 60 + "clsoe > 1"
    limits = RuleLimits(max_length=5_000, max_nodes=10_000, max_height=1_000)
    with pytest.raises(RuleError) as info:
        parse_rule(rule, limits)
    text, caret = info.value.caret(width=40).splitlines()
    assert len(text) <= 41 and text.startswith("…")
    assert text[caret.index("^") :].startswith("clsoe")


def test_compile_time_limits_name_the_column():
    with pytest.raises(RuleError) as info:  # 400 + 149 bars back
        RuleSet(["within(close[400] > 1, 150)"], RuleLimits(max_history=500))
    assert info.value.col == 8 and "reads 501 bars back; the limit is 500" in info.value.reason
    with pytest.raises(RuleError) as info:
        RuleSet(["close > 1 and within(highest(close, 300) > 1, 300)"])
    assert info.value.col == 15 and "expands to more than 20,000 steps" in info.value.reason


# -- limits: hostile input fails fast ----------------------------------------------------------


def _fails_fast(text, limits=None, *, reason):
    t0 = time.perf_counter()
    with pytest.raises(RuleError) as info:
        parse_rule(text, limits)
    elapsed = time.perf_counter() - t0
    assert reason in info.value.reason
    return info.value, elapsed


def test_a_megabyte_rule_is_refused_before_it_is_read():
    err, elapsed = _fails_fast("close > 1 and " * 75_000, reason="rule too long: 1,050,000")
    assert err.col == 2_001
    assert elapsed < 0.5  # generous; the check is a len()


@pytest.mark.parametrize("opener", ["(", "-", "not ", "abs(", "within("])
def test_five_thousand_deep_nesting_is_refused_without_recursion_error(opener):
    text = opener * 5_000 + "close"
    # with default limits the length check answers first …
    _fails_fast(text, reason="rule too long")
    # … and with room for the text, the nesting check answers at the 33rd level
    err, elapsed = _fails_fast(
        text, RuleLimits(max_length=10**6), reason="nested too deeply: more than 32 levels"
    )
    assert err.col == 32 * len(opener) + 1
    assert elapsed < 0.5


def test_long_chains_are_bounded_by_tree_height_and_node_count():
    chain = " and ".join(["close > 1"] * 70)
    err, _ = _fails_fast(chain, reason="nested too deeply: the rule's tree is over 64 levels")
    # comparisons are 2 levels, each 'and' adds one: the 63rd 'and' makes 65
    assert err.col == chain.index("and") + 1 + (63 - 1) * len("close > 1 and ")
    many = "+".join(["close"] * 300) + " > 1"
    _fails_fast(many, RuleLimits(max_height=10_000), reason="rule too large: more than 400 nodes")


def test_limits_are_configurable():
    parse_rule("close[800] > 1", RuleLimits(max_lookback=1_000))
    with pytest.raises(RuleError, match="between 1 and 10"):
        parse_rule("within(close > 1, 11)", RuleLimits(max_window=10))


def test_non_text_is_refused():
    with pytest.raises(RuleError, match="a rule is text, not int"):
        parse_rule(5)  # type: ignore[arg-type]
