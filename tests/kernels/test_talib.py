"""Streaming kernels and batch twins against TA-Lib 0.8, and against each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given

from technic_stream.indicators import INDICATORS, IndicatorPlan, IndicatorState
from technic_stream.indicators.series import batch_outputs
from tests.kernels.conftest import ohlcv
from tests.kernels.reference import FULL_SET, assert_matches, reference

PLAN = IndicatorPlan.parse(FULL_SET)
STD_FAMILY = ("stddev", "bb")


def stream(plan: IndicatorPlan, ts, o, h, lo, c, v) -> dict[str, np.ndarray]:
    state = IndicatorState(plan)
    rows = np.full(len(ts), state.row("X"), dtype=np.int64)
    res = state.apply(rows, ts, o, h, lo, c, v)
    assert res.applied == len(ts) and res.corrected == 0 and res.skipped == 0
    return {name: res.out[:, i] for i, name in enumerate(plan.output_names)}


def test_full_set_covers_every_indicator():
    assert {s.name for s in PLAN.specs} == set(INDICATORS)


@pytest.mark.parametrize("symbol", ["AAPL", "IBM", "MSFT", "GOOG", "FB"])
def test_stream_and_batch_match_talib_on_real_data(sample, symbol):
    d = sample[symbol]
    bars = (d.ts, d.open, d.high, d.low, d.close, d.volume)
    ours = stream(PLAN, *bars)
    for spec in PLAN.specs:
        ref = reference(spec, *bars)
        twin = batch_outputs(spec, *bars)
        for i, name in enumerate(spec.output_names):
            vol = spec.definition.volume_scaled is not None and spec.definition.volume_scaled[i]
            assert_matches(f"{symbol} {name} stream", ours[name], ref[name], volume_scaled=vol)
            assert_matches(f"{symbol} {name} batch", twin[name], ref[name], volume_scaled=vol)
            np.testing.assert_array_equal(ours[name], twin[name], err_msg=f"{name} stream!=batch")


def _two_pass_std(c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly rounded rolling population std, and TA-Lib's conditioning at each bar.

    TA-Lib keeps running sums of x and x² over the whole series, so its variance
    carries rounding from the largest x² it has summed so far: the conditioning is
    (largest x² up to the bar) / var.
    """
    std = np.full(len(c), np.nan)
    cond = np.full(len(c), np.inf)
    peak = np.maximum.accumulate(c * c)
    for i in range(n - 1, len(c)):
        w = c[i - n + 1 : i + 1].tolist()
        mean = math.fsum(w) / n
        var = math.fsum((x - mean) ** 2 for x in w) / n
        std[i] = 0.0 if var < 1e-14 else math.sqrt(var)
        cond[i] = peak[i] / var if var > 0 else np.inf
    return std, cond


@given(bars=ohlcv())
def test_random_series_match_talib_and_batch_exactly(bars):
    ours = stream(PLAN, *bars)
    c = bars[4]
    for spec in PLAN.specs:
        ref = reference(spec, *bars)
        twin = batch_outputs(spec, *bars)
        for i, name in enumerate(spec.output_names):
            np.testing.assert_array_equal(ours[name], twin[name], err_msg=f"{name} stream!=batch")
            vol = spec.definition.volume_scaled is not None and spec.definition.volume_scaled[i]
            if spec.name not in STD_FAMILY:
                assert_matches(name, ours[name], ref[name], volume_scaled=vol, level=c)
                continue
            # TA-Lib's variance is E[x²]-E[x]² over raw values, which loses digits when
            # mean²/var is large; ours sums deviations from a shift re-anchored every n
            # bars. Where TA-Lib is well conditioned it is the oracle (1e-9); everywhere
            # an exactly rounded two-pass std is, to 1e-9 of the price level (a std
            # derived by cancellation cannot resolve finer than that at $1e6 prices).
            exact, cond = _two_pass_std(c, int(spec.params[0]))
            good = cond * np.finfo(float).eps * len(c) < 1e-12
            masked_ours = np.where(good, ours[name], np.nan)
            masked_ref = np.where(good, ref[name], np.nan)
            assert_matches(name, masked_ours, masked_ref, volume_scaled=True, level=c)
        if spec.name == "stddev":
            nbdev = spec.params[1]
            assert_matches(str(spec), ours[spec.key], exact * nbdev, volume_scaled=False, scale=c)
