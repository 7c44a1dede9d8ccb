"""Kernels of the engine's book: history and lag rings, and per-bar input gathering.

``record_nb`` records a batch of bars (arrival order) after the indicator kernels ran:
each bar goes into its symbol's history ring (``hist[row, j % H]``, bar j of the symbol)
and its columns (bar fields, then every indicator output) into the lag ring
(``lagv[row, j % D]``); right after, each requested input (column, lag) is read *as of
that bar*. A correction (same ts) overwrites the slot of the bar it corrects. Every lag
is below the ring's depth, so a lagged slot is the bar's slot stepped back, without a
64-bit divide per input (26 of them a bar for the benchmark's rules were a third of the
kernel's time).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from technic_stream.kernels.stream import APPLIED, SKIPPED

__all__ = ["history_bars_nb", "record_nb", "relag_nb", "rule_hits_nb"]

NAN = np.nan


@njit(cache=True, nogil=True)
def record_nb(
    rows, status, ts, o, h, lo, c, v, out, hist, hcount, bseq, lagv, in_col, in_lag, values, seq
):
    """Record each bar (arrival order) in the history and lag rings; gather the inputs.
    ``out`` holds each bar's indicator outputs (the lag ring's columns after the bar's
    five fields)."""
    cap_h = hist.shape[1]
    depth = lagv.shape[1]
    nout = out.shape[1]
    n_in = in_col.shape[0]
    for b in range(rows.shape[0]):
        r = rows[b]
        st = status[b]
        if st == SKIPPED:
            seq[b] = -1
            for i in range(n_in):
                values[i, b] = NAN
            continue
        if st == APPLIED:
            hcount[r] += 1
            bseq[r] = 0
        else:
            bseq[r] += 1
        j = hcount[r] - 1  # absolute index of this bar in the symbol's series
        seq[b] = bseq[r]
        hs = j % cap_h
        hist[r, hs, 0] = ts[b]
        hist[r, hs, 1] = o[b]
        hist[r, hs, 2] = h[b]
        hist[r, hs, 3] = lo[b]
        hist[r, hs, 4] = c[b]
        hist[r, hs, 5] = v[b]
        ls = j % depth
        lagv[r, ls, 0] = o[b]
        lagv[r, ls, 1] = h[b]
        lagv[r, ls, 2] = lo[b]
        lagv[r, ls, 3] = c[b]
        lagv[r, ls, 4] = v[b]
        for k in range(nout):
            lagv[r, ls, 5 + k] = out[b, k]
        for i in range(n_in):
            lag = in_lag[i]
            if j - lag < 0:
                values[i, b] = NAN
            else:
                slot = ls - lag
                values[i, b] = lagv[r, slot + depth if slot < 0 else slot, in_col[i]]


@njit(cache=True)
def history_bars_nb(hist, hcount, n_rows):
    """Every row's remembered bars, oldest first, row after row, with their indices."""
    cap_h = hist.shape[1]
    total = 0
    for r in range(n_rows):
        total += min(hcount[r], cap_h)
    rows = np.empty(total, dtype=np.int64)
    idx = np.empty(total, dtype=np.int64)
    cols = np.empty((6, total))
    b = 0
    for r in range(n_rows):
        n = min(hcount[r], cap_h)
        for j in range(hcount[r] - n, hcount[r]):
            rows[b] = r
            idx[b] = j
            s = j % cap_h
            for k in range(6):
                cols[k, b] = hist[r, s, k]
            b += 1
    return rows, idx, cols


@njit(cache=True)
def relag_nb(old, old_cols, new, new_cols, hist, hcount, n_rows):
    """Copy what survives from an old lag ring into a new one (new depth or columns);
    bar fields are refilled from the history ring as deep as it goes."""
    d_old = old.shape[1]
    d_new = new.shape[1]
    cap_h = hist.shape[1]
    for r in range(n_rows):
        last = hcount[r] - 1
        for back in range(min(d_new, hcount[r])):
            j = last - back
            ns = j % d_new
            if back < d_old:
                os_ = j % d_old
                for k in range(old_cols.shape[0]):
                    new[r, ns, new_cols[k]] = old[r, os_, old_cols[k]]
            if back < cap_h:
                hs = j % cap_h
                for f in range(5):
                    new[r, ns, f] = hist[r, hs, f + 1]


@njit(cache=True, nogil=True)
def rule_hits_nb(out, where, on_close, status, order):
    """(bars, rules) where rule k's condition ``out[where[k]]`` is true on a bar its
    mode lets it see (``on_close[k]``: applied bars only; else any bar not skipped),
    bar by bar, then by ``order`` (the rules in rule-id order): one pass to count, one to
    fill (the numpy form made five arrays of rules x bars; room for every pair, 2 x 8
    bytes a bar and rule, cost more than the second pass)."""
    none = np.empty(0, dtype=np.int64)
    count = _hits_nb(out, where, on_close, status, order, none, none, False)
    bars = np.empty(count, dtype=np.int64)
    ks = np.empty(count, dtype=np.int64)
    _hits_nb(out, where, on_close, status, order, bars, ks, True)
    return bars, ks


@njit(cache=True, inline="always")
def _hits_nb(out, where, on_close, status, order, bars, ks, fill):
    i = 0
    for b in range(status.shape[0]):
        st = status[b]
        if st == SKIPPED:
            continue
        for j in range(order.shape[0]):
            k = order[j]
            if out[where[k], b] == 1.0 and (st == APPLIED or not on_close[k]):
                if fill:
                    bars[i] = b
                    ks[i] = k
                i += 1
    return i
