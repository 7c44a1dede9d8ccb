"""Redis inline ``HSET`` lines for many rows at once, assembled in numba.

The numbers come formatted already: orjson's dump of the value matrix (the shortest text
that reads back as the same float, as ``repr`` gives; ``null`` for NaN), so what is left
is byte shuffling — key, then each field's name and its number, per row — which costs a
Python ``%`` format with one argument per field when done a row at a time.
"""

from __future__ import annotations

import numpy as np
import orjson
from numba import njit

__all__ = ["hset_lines"]

_NAN = np.frombuffer(b"nan", dtype=np.uint8)
_HSET = np.frombuffer(b"HSET ", dtype=np.uint8)


@njit(cache=True)
def _lines_nb(js, ts, keys, key_at, names, name_at, out, line_at, hset, nan):
    """Write row r's line ``HSET key f0 ts f1 v1 ...\\r\\n`` into ``out`` from
    ``line_at[r]``; the numbers v1... are read in order from ``js`` (``[[..],[..]]``).
    Returns the end of the last line, or -1 if ``js`` is not the expected shape."""
    w = 0
    i = 1  # past the outer [
    n_rows = ts.shape[0]
    n_vals = name_at.shape[0] - 2  # fields after ts
    for r in range(n_rows):
        line_at[r] = w
        for j in range(hset.shape[0]):
            out[w + j] = hset[j]
        w += hset.shape[0]
        a, b = key_at[r], key_at[r + 1]
        out[w : w + b - a] = keys[a:b]
        w += b - a
        # ts, an integer
        out[w] = 32
        w += 1
        a, b = name_at[0], name_at[1]
        out[w : w + b - a] = names[a:b]
        w += b - a
        out[w] = 32
        w += 1
        v = ts[r]
        if v < 0:
            out[w] = 45
            w += 1
            v = -v
        start = w
        while True:
            out[w] = 48 + v % 10
            w += 1
            v //= 10
            if v == 0:
                break
        lo, hi = start, w - 1
        while lo < hi:
            out[lo], out[hi] = out[hi], out[lo]
            lo += 1
            hi -= 1
        if i >= js.shape[0] or js[i] != 91:  # [
            return -1
        i += 1
        for f in range(n_vals):
            out[w] = 32
            w += 1
            a, b = name_at[f + 1], name_at[f + 2]
            out[w : w + b - a] = names[a:b]
            w += b - a
            out[w] = 32
            w += 1
            s = i
            while i < js.shape[0] and js[i] != 44 and js[i] != 93:  # , ]
                i += 1
            if i >= js.shape[0] or i == s:
                return -1
            if js[s] == 110:  # null: NaN
                out[w : w + 3] = nan
                w += 3
            else:
                out[w : w + i - s] = js[s:i]
                w += i - s
            if f < n_vals - 1:
                if js[i] != 44:
                    return -1
                i += 1
        if js[i] != 93:
            return -1
        i += 2  # past "]," (or "]]" at the end)
        out[w] = 13
        out[w + 1] = 10
        w += 2
    line_at[n_rows] = w
    return w


def hset_lines(
    keys: list[bytes],
    names: list[bytes],
    ts: np.ndarray,
    values: np.ndarray,
    scratch: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """One inline ``HSET`` line per row (fields ``names``: the integer ``ts`` first, then
    the columns of ``values``) end to end, and each line's start (one more than rows);
    None if orjson's text was not the expected shape. The caller makes sure keys and
    names are single words and no value is infinite (orjson writes it as NaN).

    The lines are written into ``scratch`` when it is large enough (else into a new
    array, which the caller may keep as its next scratch: it is the view's ``base``): a
    fresh buffer per call cost more in page faults, on our VM, than writing the lines."""
    rows = values.shape[0]
    if len(names) != values.shape[1] + 1 or len(keys) != rows:
        raise ValueError("one name per value column, after ts; one key per row")
    js = np.frombuffer(
        orjson.dumps(np.ascontiguousarray(values, dtype=np.float64),
                     option=orjson.OPT_SERIALIZE_NUMPY),
        dtype=np.uint8,
    )  # fmt: skip
    key_buf = np.frombuffer(b"".join(keys), dtype=np.uint8)
    key_at = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum([len(k) for k in keys], out=key_at[1:])
    name_buf = np.frombuffer(b"".join(names), dtype=np.uint8)
    name_at = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum([len(n) for n in names], out=name_at[1:])
    size = len(js) + rows * (len(_HSET) + 24 + 2 + 2 * len(names)) + len(key_buf)
    size += rows * len(name_buf) + 3 * values.size
    if scratch is not None and scratch.shape[0] >= size:
        out = scratch
    else:
        out = np.empty(max(size, 2 * (0 if scratch is None else scratch.shape[0])), np.uint8)
    line_at = np.empty(rows + 1, dtype=np.int64)
    end = _lines_nb(js, np.ascontiguousarray(ts, dtype=np.int64), key_buf, key_at, name_buf,
                    name_at, out, line_at, _HSET, _NAN)  # fmt: skip
    if end < 0:
        return None
    return out[:end], line_at
