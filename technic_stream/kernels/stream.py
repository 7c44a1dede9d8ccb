"""Streaming kernels: one call applies a batch of bars to the state of many symbols.

State of one symbol is one float64 row: the scalar fields of every indicator of
the plan first (``soff[j]`` is where indicator ``j``'s start), then its ring
buffers (``roff[j]``). Before a new bar the scalar block is copied to ``prev``;
a corrected bar (same ``ts`` as the last) restores it and re-applies. Rings hold
``n + 1`` slots where re-applying needs the value the replaced bar evicted, ``n``
where it does not (CCI, rolling highs and lows).

Arithmetic follows TA-Lib 0.8 (classic seeding) operation by operation, so the
values match it to rounding. Values before an output is ready are NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from technic_stream.kernels.common import (
    ADX,
    ATR,
    BB,
    CCI,
    DONCHIAN,
    EMA,
    FASTMATH,
    MACD,
    MFI,
    NATR,
    OBV,
    RELVOL,
    ROC,
    RSI,
    SMA,
    SRC_VOLUME,
    STDDEV,
    STOCH,
    VWAP,
    WILLR,
    WMA,
    is_zero_nb,
    is_zero_or_neg_nb,
    is_zero_scaled_nb,
    true_range_nb,
)

__all__ = ["APPLIED", "CORRECTED", "SKIPPED", "apply_bars_nb"]

APPLIED = 0
CORRECTED = 1
SKIPPED = 2

NAN = np.nan


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _not_ready_nb(out, b, oc, count):
    """Outputs oc..oc+count-1 of bar b are not ready yet."""
    for i in range(count):
        out[b, oc + i] = NAN


# Ring slots. A ring of ``cap`` slots holds bar j at slot j % cap. Each kernel takes one
# modulo per ring per bar (``pos`` = slot of the current bar) and derives the others with
# _back, because a 64-bit hardware divide costs tens of cycles.


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _back(pos, d, cap):
    """Slot of the bar ``d`` bars before the one at slot ``pos`` (0 <= d < cap)."""
    slot = pos - d
    return slot + cap if slot < 0 else slot


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _rolling_mean_nb(st, r, t, q, pos, cap, n, j, x):
    """Add x, the j-th value of a series, to the ring at q (slot pos) and the running
    total at st[r, t]; once n values are in, return their mean in TA-Lib's SMA order
    (add, take the total, subtract the trailing value, divide), else NaN."""
    st[r, q + pos] = x
    st[r, t] += x
    if j < n - 1:
        return NAN
    value = st[r, t]
    st[r, t] -= st[r, q + _back(pos, n - 1, cap)]
    return value / n


# Rolling highest / lowest (van Herk / Gil-Werman, streaming) ---------------------------
# Bars are grouped in aligned blocks of n. A window of n bars ending at bar k spans the
# tail of the previous block and the head of the current one, so its extremum is
# max(prefix of the current block, suffix of the previous block from slot k % n + 1).
# The prefix extrema are two scalars (restored with the other scalars on a correction);
# the suffix extrema of the previous block are rebuilt from the value rings once per
# block, when its last bar arrives: O(1) amortised, exact, and a corrected bar needs
# no repair because every array it touched is rewritten when it is re-applied.
# Layout: scalars at sp (prefix max, prefix min); at q the high ring, the low ring,
# the suffix-max array and the suffix-min array, n slots each (bar j at slot j % n).


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _hilo_nb(st, r, sp, q, n, k, h, lo_):
    """Highest high and lowest low of the last n bars (of all bars while k < n)."""
    i = k % n
    qh = q
    ql = q + n
    sh = q + 2 * n
    sl = q + 3 * n
    st[r, qh + i] = h
    st[r, ql + i] = lo_
    if i == 0:
        ph = h
        pl = lo_
    else:
        ph = st[r, sp]
        pl = st[r, sp + 1]
        if h > ph:
            ph = h
        if lo_ < pl:
            pl = lo_
    st[r, sp] = ph
    st[r, sp + 1] = pl
    if i == n - 1:  # the block is complete: it is the window; keep its suffix extrema
        mh = h
        ml = lo_
        st[r, sh + i] = mh
        st[r, sl + i] = ml
        for j in range(n - 2, -1, -1):
            x = st[r, qh + j]
            if x > mh:
                mh = x
            st[r, sh + j] = mh
            y = st[r, ql + j]
            if y < ml:
                ml = y
            st[r, sl + j] = ml
        return ph, pl
    if k < n:
        return ph, pl
    th = st[r, sh + i + 1]
    tl = st[r, sl + i + 1]
    return (th if th > ph else ph), (tl if tl < pl else pl)


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _sma_nb(st, r, s, q, p0, p1, p2, k, x, out, b, oc):
    cap = p0 + 1
    out[b, oc] = _rolling_mean_nb(st, r, s, q, k % cap, cap, p0, k, x)


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _ema_nb(st, r, s, p0, p1, p2, f0, k, x, out, b, oc):
    n = p0
    if k < n:
        st[r, s + 1] += x
        if k < n - 1:
            out[b, oc] = NAN
            return
        st[r, s] = st[r, s + 1] / n
    else:
        st[r, s] = ((x - st[r, s]) * f0) + st[r, s]
    out[b, oc] = st[r, s]


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _wma_nb(st, r, s, q, p0, p1, p2, k, x, out, b, oc):
    n = p0
    cap = n + 1
    pos = k % cap
    st[r, q + pos] = x
    if n == 1:
        out[b, oc] = x
        return
    if k < n - 1:
        st[r, s] += x
        st[r, s + 1] += x * (k + 1)
        out[b, oc] = NAN
        return
    divider = float(n) * (n + 1) / 2.0
    st[r, s] += x
    st[r, s] -= st[r, s + 2]
    st[r, s + 1] += x * n
    if (k - n + 2) % (8 * n) == 0:
        # TA-Lib 0.6 re-anchors both totals from the window every 8 * n outputs.
        st[r, s] = 0.0
        st[r, s + 1] = 0.0
        for w in range(1, n + 1):
            y = st[r, q + _back(pos, n - w, cap)]
            st[r, s] += y
            st[r, s + 1] += y * w
    st[r, s + 2] = st[r, q + _back(pos, n - 1, cap)]
    out[b, oc] = st[r, s + 1] / divider
    st[r, s + 1] -= st[r, s]


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _rsi_value_nb(gain, loss):
    total = gain + loss
    if not is_zero_nb(total):
        return 100.0 * (gain / total)
    return 0.0


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _rsi_nb(st, r, s, p0, p1, p2, k, x, out, b, oc):
    n = p0
    if k == 0:
        st[r, s] = x
        out[b, oc] = NAN
        return
    diff = x - st[r, s]
    st[r, s] = x
    if k <= n:
        if diff < 0.0:
            st[r, s + 2] -= diff
        else:
            st[r, s + 1] += diff
        if k < n:
            out[b, oc] = NAN
            return
        st[r, s + 2] /= n
        st[r, s + 1] /= n
    else:
        st[r, s + 2] *= n - 1
        st[r, s + 1] *= n - 1
        if diff < 0.0:
            st[r, s + 2] -= diff
        else:
            st[r, s + 1] += diff
        st[r, s + 2] /= n
        st[r, s + 1] /= n
    out[b, oc] = _rsi_value_nb(st[r, s + 1], st[r, s + 2])


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _macd_nb(st, r, s, p0, p1, p2, f0, f1, f2, k, x, out, b, oc):
    fast = p0
    slow = p1
    sig = p2
    if slow < fast:
        fast, slow = slow, fast
    # scalars: fast ema, slow ema, fast seed sum, slow seed sum, signal ema, signal seed sum
    if k < slow:
        st[r, s + 3] += x
        if k >= slow - fast:
            st[r, s + 2] += x
        if k < slow - 1:
            _not_ready_nb(out, b, oc, 3)
            return
        st[r, s + 1] = st[r, s + 3] / slow
        st[r, s] = st[r, s + 2] / fast
    else:
        st[r, s] = ((x - st[r, s]) * f0) + st[r, s]
        st[r, s + 1] = ((x - st[r, s + 1]) * f1) + st[r, s + 1]
    line = st[r, s] - st[r, s + 1]
    m = k - (slow - 1)  # index into the MACD line
    if m < sig:
        st[r, s + 5] += line
        if m < sig - 1:
            _not_ready_nb(out, b, oc, 3)
            return
        st[r, s + 4] = st[r, s + 5] / sig
    else:
        st[r, s + 4] = ((line - st[r, s + 4]) * f2) + st[r, s + 4]
    out[b, oc] = line
    out[b, oc + 1] = st[r, s + 4]
    out[b, oc + 2] = line - st[r, s + 4]


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _stddev_window_nb(st, r, s, q, n, inv_n, k, x, pos):
    """Population std of the last n values by shifted sums; NaN until n values.

    Scalars at s: shift, sum of (x - shift), sum of (x - shift)^2. Ring at q (n + 1),
    with the current bar already written at ``pos``; ``inv_n`` is 1 / n, precomputed
    (these moments are ours, not TA-Lib's, so a multiply serves as well as a
    divide). Every n bars the shift moves to
    the window's oldest value and both sums are taken afresh from the ring, so
    neither drift nor a far-away shift builds up.
    """
    cap = n + 1
    if k == 0:
        st[r, s] = x
    d = x - st[r, s]
    st[r, s + 1] += d
    st[r, s + 2] += d * d
    if k < n - 1:
        return NAN
    mean = st[r, s + 1] * inv_n
    second = st[r, s + 2] * inv_n
    var = second - mean * mean
    # Re-anchor every n bars, and at once when cancellation may have eaten digits
    # (variance tiny next to the shifted second moment, e.g. a flat run after a gap).
    if (k - n + 1) % n == 0 or var * 1e6 < second:
        shift = st[r, q + _back(pos, n - 1, cap)]
        s1 = 0.0
        s2 = 0.0
        for back in range(n - 1, -1, -1):
            e = st[r, q + _back(pos, back, cap)] - shift
            s1 += e
            s2 += e * e
        st[r, s] = shift
        st[r, s + 1] = s1
        st[r, s + 2] = s2
        mean = s1 * inv_n
        var = s2 * inv_n - mean * mean
    old = st[r, q + _back(pos, n - 1, cap)] - st[r, s]
    st[r, s + 1] -= old
    st[r, s + 2] -= old * old
    if is_zero_or_neg_nb(var):
        return 0.0
    return math.sqrt(var)


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _bb_nb(st, r, s, q, p0, p1, p2, f0, f1, k, x, out, b, oc):
    n = p0
    nbdev = f0
    cap = n + 1
    pos = k % cap
    st[r, q + pos] = x
    # SMA total (TA-Lib order) at s; shifted sums at s+1..s+3; ring of x at q.
    st[r, s] += x
    std = _stddev_window_nb(st, r, s + 1, q, n, f1, k, x, pos)
    if k < n - 1:
        _not_ready_nb(out, b, oc, 5)
        return
    mid = st[r, s] / n
    st[r, s] -= st[r, q + _back(pos, n - 1, cap)]
    width = std * nbdev
    upper = mid + width
    lower = mid - width
    out[b, oc] = mid
    out[b, oc + 1] = upper
    out[b, oc + 2] = lower
    span = upper - lower
    out[b, oc + 3] = (x - lower) / span if span != 0.0 else NAN
    out[b, oc + 4] = span / mid if mid != 0.0 else NAN


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _stddev_nb(st, r, s, q, p0, p1, p2, f0, f1, k, x, out, b, oc):
    pos = k % (p0 + 1)
    st[r, q + pos] = x
    std = _stddev_window_nb(st, r, s, q, p0, f1, k, x, pos)
    out[b, oc] = std * f0 if k >= p0 - 1 else NAN


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _atr_nb(st, r, s, p0, p1, p2, k, h, lo_, c, out, b, oc, natr):
    n = p0
    if k == 0:
        st[r, s] = c
        out[b, oc] = NAN
        return
    tr = true_range_nb(h, lo_, st[r, s])
    st[r, s] = c
    if k <= n:
        st[r, s + 1] += tr
        if k < n:
            out[b, oc] = NAN
            return
        st[r, s + 2] = st[r, s + 1] / n
    else:
        st[r, s + 2] *= n - 1
        st[r, s + 2] += tr
        st[r, s + 2] /= n
    atr = st[r, s + 2]
    if natr:
        out[b, oc] = (atr / c) * 100.0 if not is_zero_nb(c) else 0.0
    else:
        out[b, oc] = atr


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _stoch_nb(st, r, s, q, p0, p1, p2, k, h, lo_, c, out, b, oc):
    fk = p0
    sk = p1
    sd = p2
    # scalars: prefix high, prefix low, fast %K total, slow %K total
    # rings: the rolling high/low area (4 * fk), fast %K (sk + 1), slow %K (sd + 1)
    qfk = q + 4 * fk
    qsk = qfk + sk + 1
    hi, lo = _hilo_nb(st, r, s, q, fk, k, h, lo_)
    if k < fk - 1:
        _not_ready_nb(out, b, oc, 2)
        return
    diff = (hi - lo) / 100.0
    fast_k = (c - lo) / diff if diff != 0.0 else 0.0
    j = k - (fk - 1)  # index into the fast %K series
    slow_k = _rolling_mean_nb(st, r, s + 2, qfk, j % (sk + 1), sk + 1, sk, j, fast_k)
    if j < sk - 1:
        _not_ready_nb(out, b, oc, 2)
        return
    i = j - (sk - 1)  # index into the slow %K series
    slow_d = _rolling_mean_nb(st, r, s + 3, qsk, i % (sd + 1), sd + 1, sd, i, slow_k)
    if i < sd - 1:
        _not_ready_nb(out, b, oc, 2)
        return
    out[b, oc] = slow_k
    out[b, oc + 1] = slow_d


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _adx_nb(st, r, s, p0, p1, p2, k, h, lo_, c, out, b, oc):
    n = p0
    # scalars: prev high, prev low, prev close, +DM, -DM, TR, sum DX, ADX
    if k == 0:
        st[r, s] = h
        st[r, s + 1] = lo_
        st[r, s + 2] = c
        _not_ready_nb(out, b, oc, 3)
        return
    diff_p = h - st[r, s]
    diff_m = st[r, s + 1] - lo_
    st[r, s] = h
    st[r, s + 1] = lo_
    if k >= n:
        st[r, s + 4] -= st[r, s + 4] / n
        st[r, s + 3] -= st[r, s + 3] / n
    if diff_m > 0 and diff_p < diff_m:
        st[r, s + 4] += diff_m
    elif diff_p > 0 and diff_p > diff_m:
        st[r, s + 3] += diff_p
    tr = true_range_nb(h, lo_, st[r, s + 2])
    if k < n:
        st[r, s + 5] += tr
    else:
        st[r, s + 5] = st[r, s + 5] - st[r, s + 5] / n + tr
    st[r, s + 2] = c
    if k < n:
        _not_ready_nb(out, b, oc, 3)
        return
    trn = st[r, s + 5]
    plus_di = 0.0
    minus_di = 0.0
    dx = NAN
    if not is_zero_nb(trn):
        minus_di = 100.0 * (st[r, s + 4] / trn)
        plus_di = 100.0 * (st[r, s + 3] / trn)
        total = minus_di + plus_di
        if not is_zero_nb(total):
            dx = 100.0 * (math.fabs(minus_di - plus_di) / total)
    out[b, oc + 1] = plus_di
    out[b, oc + 2] = minus_di
    if k < 2 * n:
        if not math.isnan(dx):
            st[r, s + 6] += dx
        if k < 2 * n - 1:
            out[b, oc] = NAN
            return
        st[r, s + 7] = st[r, s + 6] / n
    elif not math.isnan(dx):
        st[r, s + 7] = (st[r, s + 7] * (n - 1) + dx) / n
    out[b, oc] = st[r, s + 7]


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _obv_nb(st, r, s, k, c, v, out, b, oc):
    if k == 0:
        st[r, s] = v
    elif c > st[r, s + 1]:
        st[r, s] += v
    elif c < st[r, s + 1]:
        st[r, s] -= v
    st[r, s + 1] = c
    out[b, oc] = st[r, s]


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _roc_nb(st, r, q, p0, p1, p2, k, x, out, b, oc):
    n = p0
    cap = n + 1
    pos = k % cap
    st[r, q + pos] = x
    if k < n:
        out[b, oc] = NAN
        return
    prev = st[r, q + _back(pos, n, cap)]
    out[b, oc] = ((x / prev) - 1.0) * 100.0 if prev != 0.0 else 0.0


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _mfi_nb(st, r, s, q, p0, p1, p2, k, h, lo_, c, v, out, b, oc):
    """TA-Lib 0.6 MFI: scaled dead-zone on the typical-price change, and the sums
    reset to exact zero once a whole period has carried no money flow."""
    n = p0
    cap = n + 1
    qp = q
    qn = q + cap
    # scalars: previous typical price, positive sum, negative sum, null run
    tp = (h + lo_ + c) / 3.0
    if k == 0:
        st[r, s] = tp
        out[b, oc] = NAN
        return
    pos = k % cap
    if k > n:
        old = _back(pos, n, cap)
        st[r, s + 1] -= st[r, qp + old]
        st[r, s + 2] -= st[r, qn + old]
    diff = tp - st[r, s]
    scale = math.fabs(tp) + math.fabs(st[r, s])
    st[r, s] = tp
    flow = 0.0 if is_zero_scaled_nb(diff, scale) else tp * v
    inflow = 0.0 if diff < 0.0 else flow
    neg = flow if diff < 0.0 else 0.0
    st[r, qp + pos] = inflow
    st[r, qn + pos] = neg
    st[r, s + 1] += inflow
    st[r, s + 2] += neg
    st[r, s + 3] = st[r, s + 3] + 1.0 if flow == 0.0 else 0.0
    if st[r, s + 3] >= n:
        st[r, s + 3] = n
        st[r, s + 1] = 0.0
        st[r, s + 2] = 0.0
    if k < n:
        out[b, oc] = NAN
        return
    out[b, oc] = _mfi_value_nb(st[r, s + 1], st[r, s + 2])


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _mfi_value_nb(pos, neg):
    total = pos + neg
    clamped = 0.0 if pos < 0.0 else (total if pos > total else pos)
    return 0.0 if total <= 0.0 else 100.0 * (clamped / total)


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _cci_nb(st, r, q, p0, p1, p2, k, h, lo_, c, out, b, oc):
    n = p0
    # A ring of n (bar j at slot j % n) is TA-Lib's own circular buffer, so both sums
    # run over the slots in its order. A correction rewrites slot k % n and needs
    # nothing older than the window, so no spare slot is kept.
    tp = (h + lo_ + c) / 3.0
    st[r, q + k % n] = tp
    if k < n - 1:
        out[b, oc] = NAN
        return
    avg = 0.0
    magnitude = 0.0
    for slot in range(n):
        y = st[r, q + slot]
        avg += y
        magnitude += math.fabs(y)
    avg /= n
    dev = 0.0
    for slot in range(n):
        dev += math.fabs(st[r, q + slot] - avg)
    num = tp - avg
    # TA-Lib 0.8.1: the deviation's dead-zone scales with the window's magnitude.
    if is_zero_nb(num) or is_zero_scaled_nb(dev, magnitude):
        out[b, oc] = 0.0
    else:
        out[b, oc] = num / (0.015 * (dev / n))


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _willr_nb(st, r, s, q, p0, p1, p2, k, h, lo_, c, out, b, oc):
    n = p0
    hi, lo = _hilo_nb(st, r, s, q, n, k, h, lo_)
    if k < n - 1:
        out[b, oc] = NAN
        return
    diff = (hi - lo) / (-100.0)
    out[b, oc] = (hi - c) / diff if diff != 0.0 else 0.0


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _donchian_nb(st, r, s, q, p0, p1, p2, k, h, lo_, out, b, oc):
    n = p0
    hi, lo = _hilo_nb(st, r, s, q, n, k, h, lo_)
    if k < n - 1:
        _not_ready_nb(out, b, oc, 3)
        return
    out[b, oc] = hi
    out[b, oc + 1] = lo
    out[b, oc + 2] = (hi + lo) / 2.0


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _vwap_nb(st, r, s, p0, p1, p2, t, h, lo_, c, v, out, b, oc):
    session = (t - p1) // p0
    if session != st[r, s] or (st[r, s + 1] == 0.0 and st[r, s + 2] == 0.0):
        st[r, s] = session
        st[r, s + 1] = 0.0
        st[r, s + 2] = 0.0
    tp = (h + lo_ + c) / 3.0
    st[r, s + 1] += tp * v
    st[r, s + 2] += v
    out[b, oc] = st[r, s + 1] / st[r, s + 2] if st[r, s + 2] > 0.0 else NAN


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _relvol_nb(st, r, s, q, p0, p1, p2, k, v, out, b, oc):
    n = p0
    cap = n + 1
    # scalars: SMA total of volume (TA-Lib order), the previous bar's average
    prev_avg = st[r, s + 1]
    if k < n:
        out[b, oc] = NAN
    else:
        out[b, oc] = v / prev_avg if prev_avg > 0.0 else NAN
    avg = _rolling_mean_nb(st, r, s, q, k % cap, cap, n, k, v)
    if k >= n - 1:
        st[r, s + 1] = avg


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def apply_bars_nb(
    codes,
    iparams,
    fparams,
    soff,
    roff,
    ooff,
    nscalar,
    state,
    prev,
    last_ts,
    count,
    sym,
    ts,
    open_,
    high,
    low,
    close,
    volume,
    out,
    status,
    latest,
    n_rows,
):
    """Apply bars in arrival order; return (applied, corrected, skipped, bad bar).

    ``sym[b]`` is the state row of bar b. ``out[b]`` gets every output after bar b
    (NaN where not ready, and a whole NaN row for a skipped bar) and so does
    ``latest[sym[b]]`` unless skipped; ``status[b]`` says APPLIED, CORRECTED or
    SKIPPED (older than the symbol's last bar). A row outside 0..n_rows-1 stops the
    batch before that bar and its index is returned as the last value (else -1).
    """
    n_ind = codes.shape[0]
    n_out = out.shape[1]
    applied = 0
    corrected = 0
    skipped = 0
    for b in range(sym.shape[0]):
        r = sym[b]
        if r < 0 or r >= n_rows:
            return applied, corrected, skipped, b
        t = ts[b]
        seen = count[r]
        if seen > 0 and t < last_ts[r]:
            skipped += 1
            status[b] = SKIPPED
            for j in range(n_out):
                out[b, j] = NAN
            continue
        if seen > 0 and t == last_ts[r]:
            k = seen - 1
            for f in range(nscalar):
                state[r, f] = prev[r, f]
            corrected += 1
            status[b] = CORRECTED
        else:
            k = seen
            for f in range(nscalar):
                prev[r, f] = state[r, f]
            count[r] = seen + 1
            last_ts[r] = t
            applied += 1
            status[b] = APPLIED
        h = high[b]
        lo = low[b]
        c = close[b]
        v = volume[b]
        for j in range(n_ind):
            code = codes[j]
            s = soff[j]
            q = roff[j]
            oc = ooff[j]
            p0 = iparams[j, 0]
            p1 = iparams[j, 1]
            p2 = iparams[j, 2]
            f0 = fparams[j, 0]
            f1 = fparams[j, 1]
            f2 = fparams[j, 2]
            if code == SMA:
                x = v if p1 == SRC_VOLUME else c
                _sma_nb(state, r, s, q, p0, p1, p2, k, x, out, b, oc)
            elif code == EMA:
                _ema_nb(state, r, s, p0, p1, p2, f0, k, c, out, b, oc)
            elif code == WMA:
                _wma_nb(state, r, s, q, p0, p1, p2, k, c, out, b, oc)
            elif code == RSI:
                _rsi_nb(state, r, s, p0, p1, p2, k, c, out, b, oc)
            elif code == MACD:
                _macd_nb(state, r, s, p0, p1, p2, f0, f1, f2, k, c, out, b, oc)
            elif code == BB:
                _bb_nb(state, r, s, q, p0, p1, p2, f0, f1, k, c, out, b, oc)
            elif code == STDDEV:
                _stddev_nb(state, r, s, q, p0, p1, p2, f0, f1, k, c, out, b, oc)
            elif code == ATR:
                _atr_nb(state, r, s, p0, p1, p2, k, h, lo, c, out, b, oc, False)
            elif code == NATR:
                _atr_nb(state, r, s, p0, p1, p2, k, h, lo, c, out, b, oc, True)
            elif code == STOCH:
                _stoch_nb(state, r, s, q, p0, p1, p2, k, h, lo, c, out, b, oc)
            elif code == ADX:
                _adx_nb(state, r, s, p0, p1, p2, k, h, lo, c, out, b, oc)
            elif code == OBV:
                _obv_nb(state, r, s, k, c, v, out, b, oc)
            elif code == ROC:
                _roc_nb(state, r, q, p0, p1, p2, k, c, out, b, oc)
            elif code == MFI:
                _mfi_nb(state, r, s, q, p0, p1, p2, k, h, lo, c, v, out, b, oc)
            elif code == CCI:
                _cci_nb(state, r, q, p0, p1, p2, k, h, lo, c, out, b, oc)
            elif code == WILLR:
                _willr_nb(state, r, s, q, p0, p1, p2, k, h, lo, c, out, b, oc)
            elif code == VWAP:
                _vwap_nb(state, r, s, p0, p1, p2, t, h, lo, c, v, out, b, oc)
            elif code == DONCHIAN:
                _donchian_nb(state, r, s, q, p0, p1, p2, k, h, lo, out, b, oc)
            elif code == RELVOL:
                _relvol_nb(state, r, s, q, p0, p1, p2, k, v, out, b, oc)
        for i in range(n_out):
            latest[r, i] = out[b, i]
    return applied, corrected, skipped, -1
