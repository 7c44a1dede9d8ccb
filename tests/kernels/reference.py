"""The oracle: TA-Lib 0.8 where it has the indicator, plain formulas over it where not."""

from __future__ import annotations

import numpy as np
import talib

from technic_stream.indicators import IndicatorSpec

#: One spec per indicator, with parameters away from the defaults too.
FULL_SET = (
    "sma(20), sma(3), ema(20), ema(5), wma(20), wma(7), rsi(14), rsi(2), macd(12,26,9), "
    "macd(26,12,9), macd(5,8,3), bb(20,2), bb(10,1.5), stddev(20), stddev(5,2), atr(14), "
    "atr(1), natr(14), stoch(14,3,3), stoch(5,3,4), adx(14), adx(5), obv, roc(10), roc(1), "
    "mfi(14), mfi(3), cci(20), cci(5), willr(14), willr(3), donchian(20), donchian(252), "
    "donchian(1), avg_volume(20), relvol(20), relvol(1), vwap, vwap(390, 570)"
)
FIVE_SET = "ema(20), rsi(14), macd(12,26,9), bb(20,2), atr(14)"


def _vwap(ts, h, lo, c, v, session_ms, offset_ms):
    out = np.full(len(c), np.nan)
    session = (ts - offset_ms) // session_ms
    pv = vol = 0.0
    for i in range(len(c)):
        if i == 0 or session[i] != session[i - 1]:
            pv = vol = 0.0
        pv += (h[i] + lo[i] + c[i]) / 3.0 * v[i]
        vol += v[i]
        if vol > 0:
            out[i] = pv / vol
    return out


def reference(spec: IndicatorSpec, ts, o, h, lo, c, v) -> dict[str, np.ndarray]:
    p = [int(x) if float(x).is_integer() else float(x) for x in spec.params]
    n = spec.name
    if n == "sma":
        arrays = (talib.SMA(c, p[0]),) if p[0] > 1 else (c.copy(),)
    elif n == "avg_volume":
        arrays = (talib.SMA(v, p[0]),)
    elif n == "ema":
        arrays = (talib.EMA(c, p[0]),)
    elif n == "wma":
        arrays = (talib.WMA(c, p[0]),)
    elif n == "rsi":
        arrays = (talib.RSI(c, p[0]),)
    elif n == "macd":
        arrays = talib.MACD(c, p[0], p[1], p[2])
    elif n == "bb":
        up, mid, low = talib.BBANDS(c, p[0], p[1], p[1], 0)
        span = up - low
        with np.errstate(divide="ignore", invalid="ignore"):
            pctb = np.where(span != 0, (c - low) / span, np.nan)
            width = np.where(mid != 0, span / mid, np.nan)
        arrays = (mid, up, low, pctb, width)
    elif n == "stddev":
        arrays = (talib.STDDEV(c, p[0], p[1]),)
    elif n == "atr":
        arrays = (talib.ATR(h, lo, c, p[0]),)
    elif n == "natr":
        arrays = (talib.NATR(h, lo, c, p[0]),)
    elif n == "stoch":
        arrays = talib.STOCH(h, lo, c, p[0], p[1], 0, p[2], 0)
    elif n == "adx":
        arrays = (
            talib.ADX(h, lo, c, p[0]),
            talib.PLUS_DI(h, lo, c, p[0]),
            talib.MINUS_DI(h, lo, c, p[0]),
        )
    elif n == "obv":
        arrays = (talib.OBV(c, v),)
    elif n == "roc":
        arrays = (talib.ROC(c, p[0]),)
    elif n == "mfi":
        arrays = (talib.MFI(h, lo, c, v, p[0]),)
    elif n == "cci":
        arrays = (talib.CCI(h, lo, c, p[0]),)
    elif n == "willr":
        arrays = (talib.WILLR(h, lo, c, p[0]),)
    elif n == "donchian":
        if p[0] == 1:
            up, low = h.copy(), lo.copy()
        else:
            up, low = talib.MAX(h, p[0]), talib.MIN(lo, p[0])
        arrays = (up, low, (up + low) / 2.0)
    elif n == "relvol":
        avg = talib.SMA(v, p[0]) if p[0] > 1 else v.copy()
        prev = np.concatenate([[np.nan], avg[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            arrays = (np.where(prev > 0, v / prev, np.nan),)
    elif n == "vwap":
        arrays = (_vwap(ts, h, lo, c, v, p[0] * 60_000, p[1] * 60_000),)
    else:
        raise KeyError(n)
    return dict(zip(spec.output_names, (np.asarray(a, dtype=float) for a in arrays), strict=True))


def assert_matches(
    name: str,
    ours: np.ndarray,
    ref: np.ndarray,
    *,
    volume_scaled: bool,
    tol: float = 1e-9,
    scale: np.ndarray | None = None,
    level: np.ndarray | None = None,
) -> None:
    """NaN exactly where the reference is NaN; ≤ tol absolute (relative for volume units),
    or 32 ulps of the value or price level where that is larger.

    ``scale`` (per bar) makes the bound ``tol * max(1, scale)`` instead.
    """
    ours_nan, ref_nan = np.isnan(ours), np.isnan(ref)
    bad = np.flatnonzero(ours_nan != ref_nan)
    assert bad.size == 0, f"{name}: NaN mismatch at bars {bad[:10].tolist()}"
    ok = ~ref_nan
    diff = np.abs(ours[ok] - ref[ok])
    if scale is not None:
        limit = tol * np.maximum(1.0, np.abs(scale[ok]))
    elif volume_scaled:
        limit = tol * np.maximum(1.0, np.abs(ref[ok]))
    else:
        limit = np.full(diff.shape, tol)
    # TA-Lib's build fuses some multiply-adds, we keep strict IEEE: each step may differ
    # by an ulp, and a recursive filter (EMA, Wilder) carries that for ~1/k steps. So
    # where 1e-9 is under 32 ulps of the numbers involved (values or price levels above
    # ~$500k) the bound is 32 ulps of the larger of value and level; below, 1e-9 holds.
    magnitude = np.abs(ref[ok]) if level is None else np.maximum(np.abs(ref[ok]), np.abs(level[ok]))
    limit = np.maximum(limit, 32 * np.spacing(magnitude))
    worst = np.flatnonzero(diff > limit)
    assert worst.size == 0, (
        f"{name}: {worst.size} values off; first at bar {np.flatnonzero(ok)[worst[0]]}: "
        f"ours {ours[ok][worst[0]]!r} reference {ref[ok][worst[0]]!r}"
    )
