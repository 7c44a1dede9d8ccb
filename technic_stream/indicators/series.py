"""Whole-series computation through the batch twins (warm-up and checking)."""

from __future__ import annotations

import numpy as np

from technic_stream.indicators.registry import IndicatorSpec
from technic_stream.kernels import batch as kb

__all__ = ["batch_outputs", "warm_batch_twins"]


def batch_outputs(
    spec: IndicatorSpec,
    ts: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every output of ``spec`` over one symbol's series, by output name."""
    p = [int(x) if float(x).is_integer() else float(x) for x in spec.params]
    h, lo, c, v = (np.ascontiguousarray(a, dtype=np.float64) for a in (high, low, close, volume))
    name = spec.name
    if name == "sma":
        arrays: tuple[np.ndarray, ...] = (kb.sma_1d_nb(c, p[0]),)
    elif name == "avg_volume":
        arrays = (kb.sma_1d_nb(v, p[0]),)
    elif name == "ema":
        arrays = (kb.ema_1d_nb(c, p[0]),)
    elif name == "wma":
        arrays = (kb.wma_1d_nb(c, p[0]),)
    elif name == "rsi":
        arrays = (kb.rsi_1d_nb(c, p[0]),)
    elif name == "macd":
        arrays = kb.macd_1d_nb(c, p[0], p[1], p[2])
    elif name == "bb":
        arrays = kb.bbands_1d_nb(c, p[0], float(p[1]))
    elif name == "stddev":
        arrays = (kb.stddev_1d_nb(c, p[0], float(p[1])),)
    elif name == "atr":
        arrays = (kb.atr_1d_nb(h, lo, c, p[0]),)
    elif name == "natr":
        arrays = (kb.natr_1d_nb(h, lo, c, p[0]),)
    elif name == "stoch":
        arrays = kb.stoch_1d_nb(h, lo, c, p[0], p[1], p[2])
    elif name == "adx":
        arrays = kb.adx_1d_nb(h, lo, c, p[0])
    elif name == "obv":
        arrays = (kb.obv_1d_nb(c, v),)
    elif name == "roc":
        arrays = (kb.roc_1d_nb(c, p[0]),)
    elif name == "mfi":
        arrays = (kb.mfi_1d_nb(h, lo, c, v, p[0]),)
    elif name == "cci":
        arrays = (kb.cci_1d_nb(h, lo, c, p[0]),)
    elif name == "willr":
        arrays = (kb.willr_1d_nb(h, lo, c, p[0]),)
    elif name == "vwap":
        t = np.ascontiguousarray(ts, dtype=np.int64)
        arrays = (kb.vwap_1d_nb(t, h, lo, c, v, p[0] * 60_000, p[1] * 60_000),)
    elif name == "donchian":
        arrays = kb.donchian_1d_nb(h, lo, p[0])
    elif name == "relvol":
        arrays = (kb.relvol_1d_nb(v, p[0]),)
    else:  # pragma: no cover - the registry and this table are kept in step by a test
        raise KeyError(f"no batch twin for {name}")
    return dict(zip(spec.output_names, arrays, strict=True))


def warm_batch_twins(bars: int = 64) -> int:
    """Run every indicator's batch twin (default parameters) once on a small series, so
    numba has compiled or loaded them before the first real request — the first scan of
    a fresh process otherwise pays for it. Returns how many indicators were warmed."""
    from technic_stream.indicators.registry import INDICATORS, spec

    rng = np.random.default_rng(0)
    close = 100 + np.cumsum(rng.normal(0, 1, bars))
    high, low = close + 1.0, close - 1.0
    ts = np.arange(bars, dtype=np.int64) * 86_400_000
    volume = np.full(bars, 1e6)
    for name in INDICATORS:
        batch_outputs(spec(name), ts, close, high, low, close, volume)
    return len(INDICATORS)
