"""Batch twins: each streaming indicator over a whole series, written as a plain loop.

They do the same arithmetic in the same order as the streaming kernels (so the
two agree exactly on the same input) but share no state machinery with them:
they are the oracle in tests and the warm-up path for history.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from technic_stream.kernels.common import (
    FASTMATH,
    is_zero_nb,
    is_zero_or_neg_nb,
    is_zero_scaled_nb,
    true_range_nb,
)

__all__ = [
    "adx_1d_nb",
    "atr_1d_nb",
    "bbands_1d_nb",
    "cci_1d_nb",
    "donchian_1d_nb",
    "ema_1d_nb",
    "macd_1d_nb",
    "mfi_1d_nb",
    "natr_1d_nb",
    "obv_1d_nb",
    "relvol_1d_nb",
    "roc_1d_nb",
    "rsi_1d_nb",
    "sma_1d_nb",
    "stddev_1d_nb",
    "stoch_1d_nb",
    "vwap_1d_nb",
    "willr_1d_nb",
    "wma_1d_nb",
]


@njit(cache=True, fastmath=FASTMATH)
def _nan_nb(n):
    return np.full(n, np.nan)


@njit(cache=True, fastmath=FASTMATH)
def sma_1d_nb(x, n):
    out = _nan_nb(x.shape[0])
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i]
        if i >= n - 1:
            value = total
            total -= x[i - n + 1]
            out[i] = value / n
    return out


@njit(cache=True, fastmath=FASTMATH)
def ema_1d_nb(x, n):
    out = _nan_nb(x.shape[0])
    if x.shape[0] < n:
        return out
    seed = 0.0
    for i in range(n):
        seed += x[i]
    ema = seed / n
    out[n - 1] = ema
    k = 2.0 / (n + 1.0)
    for i in range(n, x.shape[0]):
        ema = ((x[i] - ema) * k) + ema
        out[i] = ema
    return out


@njit(cache=True, fastmath=FASTMATH)
def wma_1d_nb(x, n):
    size = x.shape[0]
    out = _nan_nb(size)
    if n == 1:
        return x.copy()
    if size < n:
        return out
    divider = float(n) * (n + 1) / 2.0
    sub = 0.0
    wsum = 0.0
    for i in range(n - 1):
        sub += x[i]
        wsum += x[i] * (i + 1)
    trailing = 0.0
    for i in range(n - 1, size):
        sub += x[i]
        sub -= trailing
        wsum += x[i] * n
        if (i - n + 2) % (8 * n) == 0:  # TA-Lib 0.6's periodic re-anchoring
            sub = 0.0
            wsum = 0.0
            for w in range(1, n + 1):
                sub += x[i - n + w]
                wsum += x[i - n + w] * w
        trailing = x[i - n + 1]
        out[i] = wsum / divider
        wsum -= sub
    return out


@njit(cache=True, fastmath=FASTMATH)
def rsi_1d_nb(x, n):
    size = x.shape[0]
    out = _nan_nb(size)
    if size <= n:
        return out
    gain = 0.0
    loss = 0.0
    for i in range(1, n + 1):
        d = x[i] - x[i - 1]
        if d < 0.0:
            loss -= d
        else:
            gain += d
    loss /= n
    gain /= n
    t = gain + loss
    out[n] = 100.0 * (gain / t) if not is_zero_nb(t) else 0.0
    for i in range(n + 1, size):
        d = x[i] - x[i - 1]
        loss *= n - 1
        gain *= n - 1
        if d < 0.0:
            loss -= d
        else:
            gain += d
        loss /= n
        gain /= n
        t = gain + loss
        out[i] = 100.0 * (gain / t) if not is_zero_nb(t) else 0.0
    return out


@njit(cache=True, fastmath=FASTMATH)
def macd_1d_nb(x, fast, slow, sig):
    size = x.shape[0]
    line_out = _nan_nb(size)
    sig_out = _nan_nb(size)
    hist_out = _nan_nb(size)
    if slow < fast:
        fast, slow = slow, fast
    if size < slow:
        return line_out, sig_out, hist_out
    slow_sum = 0.0
    for i in range(slow):
        slow_sum += x[i]
    fast_sum = 0.0
    for i in range(slow - fast, slow):
        fast_sum += x[i]
    e_slow = slow_sum / slow
    e_fast = fast_sum / fast
    kf = 2.0 / (fast + 1.0)
    ks = 2.0 / (slow + 1.0)
    kg = 2.0 / (sig + 1.0)
    line = np.empty(size - slow + 1)
    line[0] = e_fast - e_slow
    for i in range(slow, size):
        e_fast = ((x[i] - e_fast) * kf) + e_fast
        e_slow = ((x[i] - e_slow) * ks) + e_slow
        line[i - slow + 1] = e_fast - e_slow
    if line.shape[0] < sig:
        return line_out, sig_out, hist_out
    seed = 0.0
    for m in range(sig):
        seed += line[m]
    signal = seed / sig
    for m in range(sig - 1, line.shape[0]):
        if m >= sig:
            signal = ((line[m] - signal) * kg) + signal
        i = m + slow - 1
        line_out[i] = line[m]
        sig_out[i] = signal
        hist_out[i] = line[m] - signal
    return line_out, sig_out, hist_out


@njit(cache=True, fastmath=FASTMATH)
def stddev_1d_nb(x, n, nbdev):
    """Population standard deviation by sums shifted by the first value (x nbdev)."""
    size = x.shape[0]
    out = _nan_nb(size)
    if size == 0:
        return out
    shift = x[0]
    inv_n = 1.0 / n
    s1 = 0.0
    s2 = 0.0
    for i in range(size):
        d = x[i] - shift
        s1 += d
        s2 += d * d
        if i >= n - 1:
            mean = s1 * inv_n
            second = s2 * inv_n
            var = second - mean * mean
            if (i - n + 1) % n == 0 or var * 1e6 < second:  # re-anchor (see the stream kernel)
                shift = x[i - n + 1]
                s1 = 0.0
                s2 = 0.0
                for j in range(i - n + 1, i + 1):
                    e = x[j] - shift
                    s1 += e
                    s2 += e * e
                mean = s1 * inv_n
                var = s2 * inv_n - mean * mean
            old = x[i - n + 1] - shift
            s1 -= old
            s2 -= old * old
            out[i] = (0.0 if is_zero_or_neg_nb(var) else math.sqrt(var)) * nbdev
    return out


@njit(cache=True, fastmath=FASTMATH)
def bbands_1d_nb(x, n, nbdev):
    """Middle, upper, lower, %b, bandwidth."""
    size = x.shape[0]
    mid = sma_1d_nb(x, n)
    std = stddev_1d_nb(x, n, 1.0)
    upper = _nan_nb(size)
    lower = _nan_nb(size)
    pct_b = _nan_nb(size)
    width = _nan_nb(size)
    for i in range(n - 1, size):
        w = std[i] * nbdev
        upper[i] = mid[i] + w
        lower[i] = mid[i] - w
        span = upper[i] - lower[i]
        pct_b[i] = (x[i] - lower[i]) / span if span != 0.0 else np.nan
        width[i] = span / mid[i] if mid[i] != 0.0 else np.nan
    return mid, upper, lower, pct_b, width


@njit(cache=True, fastmath=FASTMATH)
def atr_1d_nb(high, low, close, n):
    size = close.shape[0]
    out = _nan_nb(size)
    if size <= n:
        return out
    total = 0.0
    for i in range(1, n + 1):
        total += true_range_nb(high[i], low[i], close[i - 1])
    atr = total / n
    out[n] = atr
    for i in range(n + 1, size):
        atr *= n - 1
        atr += true_range_nb(high[i], low[i], close[i - 1])
        atr /= n
        out[i] = atr
    return out


@njit(cache=True, fastmath=FASTMATH)
def natr_1d_nb(high, low, close, n):
    atr = atr_1d_nb(high, low, close, n)
    out = _nan_nb(close.shape[0])
    for i in range(n, close.shape[0]):
        out[i] = (atr[i] / close[i]) * 100.0 if not is_zero_nb(close[i]) else 0.0
    return out


@njit(cache=True, fastmath=FASTMATH)
def _window_max_nb(x, end, n):
    best = x[end]
    for j in range(end - n + 1, end):
        if x[j] > best:
            best = x[j]
    return best


@njit(cache=True, fastmath=FASTMATH)
def _window_min_nb(x, end, n):
    best = x[end]
    for j in range(end - n + 1, end):
        if x[j] < best:
            best = x[j]
    return best


@njit(cache=True, fastmath=FASTMATH)
def stoch_1d_nb(high, low, close, fk, sk, sd):
    size = close.shape[0]
    slow_k = _nan_nb(size)
    slow_d = _nan_nb(size)
    fast = _nan_nb(size)
    for i in range(fk - 1, size):
        hi = _window_max_nb(high, i, fk)
        lo = _window_min_nb(low, i, fk)
        diff = (hi - lo) / 100.0
        fast[i] = (close[i] - lo) / diff if diff != 0.0 else 0.0
    k_line = _nan_nb(size)
    if size >= fk:
        k_line[fk - 1 :] = sma_1d_nb(fast[fk - 1 :], sk)
    start = fk - 1 + sk - 1
    if size > start:
        d_line = sma_1d_nb(k_line[start:], sd)
        for i in range(start + sd - 1, size):
            slow_k[i] = k_line[i]
            slow_d[i] = d_line[i - start]
    return slow_k, slow_d


@njit(cache=True, fastmath=FASTMATH)
def adx_1d_nb(high, low, close, n):
    """ADX, +DI, -DI with Wilder smoothing as TA-Lib computes them."""
    size = close.shape[0]
    adx = _nan_nb(size)
    pdi = _nan_nb(size)
    mdi = _nan_nb(size)
    pdm = 0.0
    mdm = 0.0
    tr = 0.0
    sum_dx = 0.0
    value = 0.0
    for i in range(1, size):
        diff_p = high[i] - high[i - 1]
        diff_m = low[i - 1] - low[i]
        if i >= n:
            mdm -= mdm / n
            pdm -= pdm / n
        if diff_m > 0 and diff_p < diff_m:
            mdm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            pdm += diff_p
        t = true_range_nb(high[i], low[i], close[i - 1])
        if i < n:
            tr += t
            continue
        tr = tr - tr / n + t
        p = 0.0
        m = 0.0
        dx = np.nan
        if not is_zero_nb(tr):
            m = 100.0 * (mdm / tr)
            p = 100.0 * (pdm / tr)
            total = m + p
            if not is_zero_nb(total):
                dx = 100.0 * (math.fabs(m - p) / total)
        pdi[i] = p
        mdi[i] = m
        if i < 2 * n:
            if not math.isnan(dx):
                sum_dx += dx
            if i == 2 * n - 1:
                value = sum_dx / n
                adx[i] = value
        else:
            if not math.isnan(dx):
                value = (value * (n - 1) + dx) / n
            adx[i] = value
    return adx, pdi, mdi


@njit(cache=True, fastmath=FASTMATH)
def obv_1d_nb(close, volume):
    size = close.shape[0]
    out = np.empty(size)
    if size == 0:
        return out
    obv = volume[0]
    out[0] = obv
    for i in range(1, size):
        if close[i] > close[i - 1]:
            obv += volume[i]
        elif close[i] < close[i - 1]:
            obv -= volume[i]
        out[i] = obv
    return out


@njit(cache=True, fastmath=FASTMATH)
def roc_1d_nb(x, n):
    out = _nan_nb(x.shape[0])
    for i in range(n, x.shape[0]):
        prev = x[i - n]
        out[i] = ((x[i] / prev) - 1.0) * 100.0 if prev != 0.0 else 0.0
    return out


@njit(cache=True, fastmath=FASTMATH)
def mfi_1d_nb(high, low, close, volume, n):
    size = close.shape[0]
    out = _nan_nb(size)
    pos = np.zeros(size)
    neg = np.zeros(size)
    pos_sum = 0.0
    neg_sum = 0.0
    null_run = 0
    prev_tp = 0.0
    for i in range(size):
        tp = (high[i] + low[i] + close[i]) / 3.0
        if i == 0:
            prev_tp = tp
            continue
        if i > n:
            pos_sum -= pos[i - n]
            neg_sum -= neg[i - n]
        diff = tp - prev_tp
        scale = math.fabs(tp) + math.fabs(prev_tp)
        prev_tp = tp
        flow = 0.0 if is_zero_scaled_nb(diff, scale) else tp * volume[i]
        if diff < 0.0:
            neg[i] = flow
        else:
            pos[i] = flow
        pos_sum += pos[i]
        neg_sum += neg[i]
        null_run = null_run + 1 if flow == 0.0 else 0
        if null_run >= n:
            null_run = n
            pos_sum = 0.0
            neg_sum = 0.0
        if i >= n:
            total = pos_sum + neg_sum
            clamped = 0.0 if pos_sum < 0.0 else (total if pos_sum > total else pos_sum)
            out[i] = 0.0 if total <= 0.0 else 100.0 * (clamped / total)
    return out


@njit(cache=True, fastmath=FASTMATH)
def cci_1d_nb(high, low, close, n):
    size = close.shape[0]
    out = _nan_nb(size)
    tp = (high + low + close) / 3.0
    for i in range(n - 1, size):
        avg = 0.0
        magnitude = 0.0
        for slot in range(n):
            avg += tp[i - ((i - slot) % n)]
            magnitude += math.fabs(tp[i - ((i - slot) % n)])
        avg /= n
        dev = 0.0
        for slot in range(n):
            dev += math.fabs(tp[i - ((i - slot) % n)] - avg)
        num = tp[i] - avg
        if is_zero_nb(num) or is_zero_scaled_nb(dev, magnitude):
            out[i] = 0.0
        else:
            out[i] = num / (0.015 * (dev / n))
    return out


@njit(cache=True, fastmath=FASTMATH)
def willr_1d_nb(high, low, close, n):
    out = _nan_nb(close.shape[0])
    for i in range(n - 1, close.shape[0]):
        hi = _window_max_nb(high, i, n)
        lo = _window_min_nb(low, i, n)
        diff = (hi - lo) / (-100.0)
        out[i] = (hi - close[i]) / diff if diff != 0.0 else 0.0
    return out


@njit(cache=True, fastmath=FASTMATH)
def donchian_1d_nb(high, low, n):
    size = high.shape[0]
    upper = _nan_nb(size)
    lower = _nan_nb(size)
    mid = _nan_nb(size)
    for i in range(n - 1, size):
        upper[i] = _window_max_nb(high, i, n)
        lower[i] = _window_min_nb(low, i, n)
        mid[i] = (upper[i] + lower[i]) / 2.0
    return upper, lower, mid


@njit(cache=True, fastmath=FASTMATH)
def vwap_1d_nb(ts, high, low, close, volume, session_ms, offset_ms):
    size = close.shape[0]
    out = _nan_nb(size)
    pv = 0.0
    vol = 0.0
    current = -(2**62)
    for i in range(size):
        session = (ts[i] - offset_ms) // session_ms
        if session != current:
            current = session
            pv = 0.0
            vol = 0.0
        pv += (high[i] + low[i] + close[i]) / 3.0 * volume[i]
        vol += volume[i]
        if vol > 0.0:
            out[i] = pv / vol
    return out


@njit(cache=True, fastmath=FASTMATH)
def relvol_1d_nb(volume, n):
    """Volume over the average volume of the n bars before it."""
    avg = sma_1d_nb(volume, n)
    out = _nan_nb(volume.shape[0])
    for i in range(n, volume.shape[0]):
        if avg[i - 1] > 0.0:
            out[i] = volume[i] / avg[i - 1]
    return out
