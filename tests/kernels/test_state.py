"""Multi-symbol state: corrections, skips, interleaving, growth, checkpoints, readiness."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from technic_stream.indicators import IndicatorPlan, IndicatorState, StateVersionError
from technic_stream.kernels import APPLIED, CORRECTED, SKIPPED
from tests.kernels.conftest import ohlcv
from tests.kernels.reference import FIVE_SET, FULL_SET

PLAN = IndicatorPlan.parse(FULL_SET)


def run(state, rows, bars):
    ts, o, h, lo, c, v = bars
    return state.apply(np.asarray(rows, dtype=np.int64), ts, o, h, lo, c, v)


def series_out(bars, plan=PLAN):
    state = IndicatorState(plan)
    state.row("X")
    return run(state, np.zeros(len(bars[0])), bars).out


def take(bars, idx):
    return tuple(np.asarray(a)[idx] for a in bars)


def assert_same(a, b):
    np.testing.assert_array_equal(a, b)


@given(bars=ohlcv(min_size=2, max_size=120), data=st.data())
def test_corrected_bar_equals_a_series_that_only_ever_had_the_correction(bars, data):
    n = len(bars[0])
    at = data.draw(st.integers(0, n - 1))
    factor = data.draw(st.floats(0.5, 1.5))
    wrong = tuple(np.array(a, copy=True) for a in bars)
    for arr in wrong[1:5]:
        arr[at] *= factor  # a first print that the feed later corrects
    wrong[2][at] = max(wrong[1][at], wrong[2][at], wrong[3][at], wrong[4][at])
    wrong[3][at] = min(wrong[1][at], wrong[2][at], wrong[3][at], wrong[4][at])
    # Arrival: bars up to `at` as first printed, then the corrected bar, then the rest.
    state = IndicatorState(PLAN)
    state.row("X")
    res1 = run(
        state,
        np.zeros(at + 1),
        tuple(np.concatenate([b[:at], w[at : at + 1]]) for b, w in zip(bars, wrong, strict=True)),
    )
    res2 = run(state, np.zeros(n - at), take(bars, slice(at, n)))
    assert res2.corrected == 1 and res2.status[0] == CORRECTED
    assert (res2.status[1:] == APPLIED).all()
    expected = series_out(bars)
    assert_same(res1.out[:at], expected[:at])
    assert_same(res2.out, expected[at:])


@given(bars=ohlcv(min_size=2, max_size=150), data=st.data())
def test_checkpoint_restore_continue_equals_never_stopping(bars, data):
    n = len(bars[0])
    cut = data.draw(st.integers(1, n - 1))
    state = IndicatorState(PLAN)
    state.row("X")
    first = run(state, np.zeros(cut), take(bars, slice(0, cut)))
    blob = state.to_bytes()
    restored = IndicatorState.from_bytes(PLAN, blob)
    assert restored.to_bytes() == blob
    second = run(restored, np.zeros(n - cut), take(bars, slice(cut, n)))
    assert_same(np.vstack([first.out, second.out]), series_out(bars))
    assert restored.bars_seen("X") == n


@given(
    a=ohlcv(min_size=1, max_size=80),
    b=ohlcv(min_size=1, max_size=80),
    c=ohlcv(min_size=1, max_size=80),
    seed=st.integers(0, 2**32 - 1),
)
def test_interleaved_symbols_equal_each_symbol_alone(a, b, c, seed):
    series = [a, b, c]
    rng = np.random.default_rng(seed)
    owner = np.concatenate([np.full(len(s[0]), i) for i, s in enumerate(series)])
    rng.shuffle(owner)  # any interleaving that keeps each symbol's own order
    cursor = [0, 0, 0]
    picked = []
    for i in owner:
        picked.append((i, cursor[i]))
        cursor[i] += 1
    state = IndicatorState(PLAN, capacity=1)  # forces growth on the way
    rows = np.array([state.row("ABC"[i]) for i, _ in picked])
    cols = [np.array([series[i][f][j] for i, j in picked]) for f in range(6)]
    res = run(state, rows, tuple(cols))
    assert state.capacity >= 3
    for i, s in enumerate(series):
        mask = np.array([p[0] == i for p in picked])
        assert_same(res.out[mask], series_out(s))


def test_older_bars_are_skipped_counted_and_change_nothing(sample):
    d = sample["IBM"]
    bars = (d.ts[:60], d.open[:60], d.high[:60], d.low[:60], d.close[:60], d.volume[:60])
    state = IndicatorState(PLAN)
    state.row("IBM")
    run(state, np.zeros(50), take(bars, slice(0, 50)))
    before = state.to_bytes()
    stale = take(bars, [10, 49 - 5])
    res = run(state, np.zeros(2), stale)
    assert res.skipped == 2 and res.applied == 0 and (res.status == SKIPPED).all()
    assert np.isnan(res.out).all()
    assert state.to_bytes() == before
    rest = run(state, np.zeros(10), take(bars, slice(50, 60)))
    assert_same(rest.out, series_out(bars)[50:])


def test_growing_keeps_existing_rows(sample):
    state = IndicatorState(IndicatorPlan.parse(FIVE_SET), capacity=2)
    d = sample["MSFT"]
    run(
        state,
        np.full(40, state.row("MSFT")),
        (d.ts[:40], d.open[:40], d.high[:40], d.low[:40], d.close[:40], d.volume[:40]),
    )
    snapshot = state.values("MSFT")
    for i in range(100):
        state.row(f"S{i}")
    assert state.capacity >= 101 and len(state) == 101
    assert state.values("MSFT") == pytest.approx(snapshot, nan_ok=True)
    assert state.bars_seen("MSFT") == 40 and state.bars_seen("S5") == 0


def test_readiness_follows_talib_lookbacks(sample):
    plan = IndicatorPlan.parse("ema(20), rsi(14), macd(12,26,9), adx(14), obv")
    state = IndicatorState(plan)
    d = sample["AAPL"]
    r = state.row("AAPL")
    for i in range(40):
        run(
            state,
            [r],
            (
                d.ts[i : i + 1],
                d.open[i : i + 1],
                d.high[i : i + 1],
                d.low[i : i + 1],
                d.close[i : i + 1],
                d.volume[i : i + 1],
            ),
        )
        ready = state.ready("AAPL")
        values = state.values("AAPL")
        seen = i + 1
        assert ready["ema_20"] == (seen >= 20)
        assert ready["rsi_14"] == (seen >= 15)
        assert ready["macd_12_26_9.signal"] == (seen >= 34)
        assert ready["adx_14.plus_di"] == (seen >= 15)
        assert ready["adx_14.adx"] == (seen >= 28)
        assert ready["obv"]
        for name, ok in ready.items():
            assert np.isnan(values[name]) != ok, (name, seen)


def test_unregistered_rows_are_refused():
    state = IndicatorState(IndicatorPlan.parse("ema(5)"))
    state.row("A")
    one = np.ones(1)
    with pytest.raises(IndexError, match="not a registered symbol"):
        state.apply(np.array([1]), np.array([1]), one, one, one, one, one)


def test_snapshot_refuses_another_plan_and_damaged_bytes(sample):
    state = IndicatorState(IndicatorPlan.parse(FIVE_SET))
    state.row("AAPL")
    blob = state.to_bytes()
    with pytest.raises(StateVersionError, match="different indicator plan"):
        IndicatorState.from_bytes(IndicatorPlan.parse("ema(21)"), blob)
    with pytest.raises(StateVersionError, match="truncated"):
        IndicatorState.from_bytes(IndicatorPlan.parse(FIVE_SET), blob[:-8])
    with pytest.raises(StateVersionError, match="not an indicator state"):
        IndicatorState.from_bytes(IndicatorPlan.parse(FIVE_SET), b"XXXX" + blob[4:])
