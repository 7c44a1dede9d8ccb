import pytest

from technic_stream.indicators import IndicatorError, IndicatorPlan, parse_indicators, spec


def test_parse_names_params_defaults_and_duplicates():
    specs = parse_indicators("EMA(20), rsi, macd(12,26,9), bb(20, 2.5), obv, ema(20)")
    assert [s.key for s in specs] == ["ema_20", "rsi_14", "macd_12_26_9", "bb_20_2p5", "obv"]
    assert specs[2].output_names == (
        "macd_12_26_9.macd",
        "macd_12_26_9.signal",
        "macd_12_26_9.hist",
    )
    assert str(specs[3]) == "bb(20, 2.5)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("emaa(20)", "unknown indicator 'emaa'; did you mean 'ema'?"),
        ("ema(0)", "ema: period must be between 2 and 10000, got 0"),
        ("ema(2.5)", "ema: period must be a whole number"),
        ("ema(20, 3)", "ema takes at most 1 parameters (period), got 2"),
        ("ema(x)", "ema: parameter 'x' is not a number"),
        ("ema(20", "unbalanced '('"),
        ("ema(20),,rsi", "empty indicator"),
        ("bb(20, nan)", "bb: nbdev must be a finite number"),
    ],
)
def test_mistakes_are_explained(text, message):
    with pytest.raises(IndicatorError) as info:
        parse_indicators(text)
    assert message in str(info.value)


def test_plan_layout_is_contiguous_and_fingerprinted():
    plan = IndicatorPlan([spec("ema", 20), spec("bb", 20, 2), spec("donchian", 252)])
    assert list(plan.soff) == [0, 2, 6]  # ema 2 scalars, bb 4, then donchian
    assert plan.nscalar == 8  # donchian: prefix high, prefix low
    assert plan.roff[0] == plan.nscalar  # rings after all scalars
    assert plan.width == plan.nscalar + 0 + 21 + 4 * 252  # 2 value rings + 2 suffix arrays
    assert plan.fingerprint != IndicatorPlan([spec("ema", 21)]).fingerprint
