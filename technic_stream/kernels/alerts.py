"""A rule's alerts as JSON and as the alert gate's arguments, assembled in numba.

Each candidate goes to the gate as three RESP bulk strings — its symbol, its alert id and
the alert's JSON — and the JSON alone to Kafka. The texts come ready: the ids as hex, the
symbols raw and JSON-quoted, the floats as orjson's dump of them (the shortest text that
reads back, ``null`` for NaN and infinities), the messages as JSON; what is left is byte
shuffling around the template's constant pieces, which cost a Python ``%`` format per
alert (with one argument per field) and another per candidate for its RESP framing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["framed_alerts_nb"]


@njit(cache=True, inline="always")
def _ndigits(v):
    """Decimal digits of v >= 0."""
    d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d


@njit(cache=True, inline="always")
def _put_uint(out, w, v):
    """Write v >= 0 in decimal at ``out[w:]``; return the end."""
    end = w + _ndigits(v)
    p = end - 1
    while True:
        out[p] = 48 + v % 10
        v //= 10
        p -= 1
        if v == 0:
            break
    return end


@njit(cache=True, inline="always")
def _put_bulk_head(out, w, n):
    """``$n\\r\\n`` at ``out[w:]``; return the end."""
    out[w] = 36  # $
    w = _put_uint(out, w + 1, n)
    out[w] = 13
    out[w + 1] = 10
    return w + 2


@njit(cache=True, inline="always")
def _copy(out, w, src, a, b):
    """``src[a:b]`` to ``out[w:]``; return the end."""
    out[w : w + b - a] = src[a:b]
    return w + b - a


@njit(cache=True, inline="always")
def _bulk_len(n):
    """Bytes of a RESP bulk string of n bytes: ``$n\\r\\n``, them, ``\\r\\n``."""
    return 1 + _ndigits(n) + 2 + n + 2


@njit(cache=True, inline="always")
def _int_len(v):
    return _ndigits(-v) + 1 if v < 0 else _ndigits(v)


@njit(cache=True)
def framed_alerts_nb(pieces, piece_at, ids, id_len, raw, raw_at, quoted, q_at, ts, js, nf, msg,
                     msg_at):  # fmt: skip
    """For each of the n alerts, ``$len\\r\\nsymbol\\r\\n$len\\r\\nid\\r\\n$len\\r\\njson\\r\\n``
    end to end, and where each JSON is in that (``at[i]``, ``at[i] + size[i]``).

    The JSON of alert i is ``P0 id P1 quoted P2 ts P3 f0 P4 f1 ... P(2+nf) f(nf-1)
    P(3+nf) msg P(4+nf)`` with Pk = ``pieces[piece_at[k]:piece_at[k + 1]]``; ``f`` are
    its nf floats, in order in ``js`` (orjson's ``[a,b,...]`` of n * nf floats), the
    id is ``ids[i * id_len:][:id_len]``, the symbols and messages are slices by ``raw_at``,
    ``q_at`` and ``msg_at`` (n + 1 starts each; ``q_at`` empty: each quoted symbol is
    its raw one in quotes). Returns an empty buffer if ``js`` does
    not hold n * nf numbers."""
    n = ts.shape[0]
    at = np.empty(n, dtype=np.int64)
    size = np.empty(n, dtype=np.int64)
    f_at = np.empty(n * nf + 1, dtype=np.int64)  # f_at[k]: start of float k; +1: its end + 1
    empty = np.empty(0, dtype=np.uint8)
    if js.shape[0] < 2 or js[0] != 91:  # [
        return empty, at, size
    k = 0
    i = 1
    if n * nf == 0:
        if js[1] != 93:
            return empty, at, size
    else:
        while k < n * nf:
            f_at[k] = i
            while i < js.shape[0] and js[i] != 44 and js[i] != 93:  # , ]
                i += 1
            if i >= js.shape[0] or i == f_at[k]:
                return empty, at, size
            k += 1
            if (js[i] == 93) != (k == n * nf):
                return empty, at, size
            i += 1
        f_at[k] = i  # (one past the last float's end + 1)
    fixed = piece_at[piece_at.shape[0] - 1] - piece_at[0] + id_len
    plain = q_at.shape[0] == 0  # each quoted symbol is its raw bytes in quotes
    total = 0
    for r in range(n):
        q = raw_at[r + 1] - raw_at[r] + 2 if plain else q_at[r + 1] - q_at[r]
        s = fixed + q + _int_len(ts[r]) + (msg_at[r + 1] - msg_at[r])
        s += f_at[(r + 1) * nf] - f_at[r * nf] - nf  # the floats, without their commas
        size[r] = s
        total += _bulk_len(raw_at[r + 1] - raw_at[r]) + _bulk_len(id_len) + _bulk_len(s)
    out = np.empty(total, dtype=np.uint8)
    w = 0
    for r in range(n):
        a, b = raw_at[r], raw_at[r + 1]
        w = _put_bulk_head(out, w, b - a)
        w = _copy(out, w, raw, a, b)
        out[w] = 13
        out[w + 1] = 10
        w = _put_bulk_head(out, w + 2, id_len)
        w = _copy(out, w, ids, r * id_len, (r + 1) * id_len)
        out[w] = 13
        out[w + 1] = 10
        w = _put_bulk_head(out, w + 2, size[r])
        at[r] = w
        for p in range(piece_at.shape[0] - 1):
            a, b = piece_at[p], piece_at[p + 1]
            w = _copy(out, w, pieces, a, b)
            if p == 0:
                w = _copy(out, w, ids, r * id_len, (r + 1) * id_len)
            elif p == 1:
                if plain:
                    out[w] = 34  # "
                    w = _copy(out, w + 1, raw, raw_at[r], raw_at[r + 1])
                    out[w] = 34
                    w += 1
                else:
                    w = _copy(out, w, quoted, q_at[r], q_at[r + 1])
            elif p == 2:
                v = ts[r]
                if v < 0:
                    out[w] = 45  # -
                    w += 1
                    v = -v
                w = _put_uint(out, w, v)
            elif p < 3 + nf:
                f = r * nf + p - 3
                w = _copy(out, w, js, f_at[f], f_at[f + 1] - 1)
            elif p == 3 + nf:
                w = _copy(out, w, msg, msg_at[r], msg_at[r + 1])
        out[w] = 13
        out[w + 1] = 10
        w += 2
    return out, at, size
