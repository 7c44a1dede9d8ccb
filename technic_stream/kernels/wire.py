"""Bar messages parsed from their JSON bytes in numba: the hot path of ``md.bars``.

``parse_bars`` reads a batch's single-Bar records, concatenated in one byte array,
straight into columns, with no Python object per bar. It accepts a record only when it
is certain to give exactly what ``orjson.loads`` and the strict ``Bar`` model would:

- a JSON object with exactly the ten Bar keys, in any order, any JSON white space;
- ``type`` the string ``bar``, ``v`` the integer ``1``, ``tf`` a known timeframe,
  ``symbol`` a ticker of the contract's pattern, ``ts`` an integer literal;
- every price and the volume a JSON number whose decimal significand has at most 15
  digits and whose exponent is within ±22 — then the significand and the power of ten
  are both exact doubles and one IEEE multiplication or division rounds correctly
  (Clinger's fast path), so the value is bit for bit the one a correct parser gives.

Everything else — an escape in a string, a non-ASCII byte, a longer significand,
another message type, a duplicate or unknown key, bad JSON — is marked for the general
decoder, which either accepts it the same way or says precisely why it is invalid.
Range rules (positive prices, ``low <= high``, ts within 1970-2200) are not checked
here: the caller checks every row's numbers at once, whichever parser read it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["BAR_KEYS", "BATCH_KEYS", "TIMEFRAME_NAMES", "arrival_codes_nb", "joined_symbols_nb",
           "parse_bar_batches", "parse_bars", "same_bytes_nb"]  # fmt: skip

#: key codes of a Bar object, in the order of the output columns
BAR_KEYS = ("type", "v", "symbol", "tf", "ts", "open", "high", "low", "close", "volume")
#: key codes of a BarBatch object (the columns in the same order as a Bar's)
BATCH_KEYS = ("type", "v", "symbols", "tf", "ts", "open", "high", "low", "close", "volume")
#: the timeframes a ``tf`` may name (``messages.TIMEFRAMES``; a test holds them equal)
TIMEFRAME_NAMES = ("1s", "1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w")


def _table(words: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    data = np.frombuffer("".join(words).encode(), dtype=np.uint8).copy()
    ends = np.cumsum([len(w) for w in words]).astype(np.int64)
    return data, np.concatenate((np.zeros(1, np.int64), ends))


_KEY_BYTES, _KEY_AT = _table(BAR_KEYS)
_BATCH_KEY_BYTES, _BATCH_KEY_AT = _table(BATCH_KEYS)
_MIN_ROW_BYTES = 16  # a BarBatch row takes at least '"A",' and six '0,'
_TF_BYTES, _TF_AT = _table(TIMEFRAME_NAMES)
_ALL_KEYS = (1 << len(BAR_KEYS)) - 1
_POW10 = np.array([10.0**k for k in range(23)])  # exact doubles up to 1e22
_MAX_EXACT = 1 << 53
_SIGNIFICAND_DIGITS = 15  # < 2**53 whatever the digits
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True)
def _ws_nb(buf, i, end):
    """The first byte at or after ``i`` that is not JSON white space. Callers test
    ``buf[i] <= 32`` before calling it: the call (or numba's inlining of its loop) in a
    parse loop took two thirds of a BarBatch column's time, white space or none."""
    while i < end:
        c = buf[i]
        if c == 32 or c == 10 or c == 13 or c == 9:
            i += 1
        else:
            break
    return i


@njit(cache=True)
def _string_nb(buf, i, end):
    """(start, stop, next) of the plain ASCII string at ``buf[i] == '"'``; stop < 0 when
    it has an escape, a control or non-ASCII byte, or no end."""
    i += 1
    start = i
    while i < end:
        c = buf[i]
        if c == 34:  # "
            return start, i, i + 1
        if c == 92 or c < 32 or c >= 128:  # \, controls, UTF-8: the general decoder
            return start, -1, i
        i += 1
    return start, -1, i


@njit(cache=True)
def _find_nb(buf, start, stop, table, at):
    """Index of ``buf[start:stop]`` among the table's words, or -1."""
    n = stop - start
    for k in range(at.shape[0] - 1):
        a, b = at[k], at[k + 1]
        if b - a != n:
            continue
        same = True
        for j in range(n):
            if buf[start + j] != table[a + j]:
                same = False
                break
        if same:
            return k
    return -1


@njit(cache=True)
def _ticker_ok_nb(buf, start, stop):
    """``^[A-Z0-9][A-Z0-9._/:^=-]{0,31}$`` (the contract's ``Symbol``)."""
    n = stop - start
    if n < 1 or n > 32:
        return False
    for j in range(n):
        c = buf[start + j]
        if (48 <= c <= 57) or (65 <= c <= 90):
            continue
        # . _ / : ^ = -   (not as the first character)
        if j > 0 and (c == 46 or c == 95 or c == 47 or c == 58 or c == 94 or c == 61 or c == 45):
            continue
        return False
    return True


@njit(cache=True)
def _symbol_nb(buf, s, e, r, sym_at, sym_hash):
    """Record ``buf[s:e]`` as row ``r``'s symbol (where, and its FNV-1a hash) if it is a
    ticker; False if not."""
    if not _ticker_ok_nb(buf, s, e):
        return False
    h = _FNV_OFFSET
    for j in range(s, e):
        h = (h ^ np.uint64(buf[j])) * _FNV_PRIME
    sym_at[r, 0] = s
    sym_at[r, 1] = e
    sym_hash[r] = h
    return True


@njit(cache=True)
def _number_nb(buf, i, end, pow10):
    """Parse the JSON number at ``i``: (value, next, kind) with kind 0 not exactly
    representable by the fast path (or not a number), 1 an integer literal, 2 a
    number with a fraction or an exponent."""
    neg = False
    if i < end and buf[i] == 45:  # -
        neg = True
        i += 1
    if i >= end or not (48 <= buf[i] <= 57):
        return 0.0, i, 0
    m = 0
    digits = 0  # significant digits taken into m
    exp10 = 0
    if buf[i] == 48:  # a leading 0 stands alone
        i += 1
        if i < end and 48 <= buf[i] <= 57:
            return 0.0, i, 0
    else:
        while i < end and 48 <= buf[i] <= 57:
            if digits >= 18:
                return 0.0, i, 0
            m = m * 10 + (buf[i] - 48)
            digits += 1
            i += 1
    kind = 1
    if i < end and buf[i] == 46:  # .
        kind = 2
        i += 1
        if i >= end or not (48 <= buf[i] <= 57):
            return 0.0, i, 0
        while i < end and 48 <= buf[i] <= 57:
            d = buf[i] - 48
            if m == 0 and d == 0:
                exp10 -= 1  # leading zeros of a fraction: scale only
            else:
                if digits >= 18:
                    return 0.0, i, 0
                m = m * 10 + d
                digits += 1
                exp10 -= 1
            i += 1
    if i < end and (buf[i] == 101 or buf[i] == 69):  # e E
        kind = 2
        i += 1
        eneg = False
        if i < end and (buf[i] == 43 or buf[i] == 45):
            eneg = buf[i] == 45
            i += 1
        if i >= end or not (48 <= buf[i] <= 57):
            return 0.0, i, 0
        e = 0
        while i < end and 48 <= buf[i] <= 57:
            if e > 10_000:
                return 0.0, i, 0
            e = e * 10 + (buf[i] - 48)
            i += 1
        exp10 += -e if eneg else e
    if kind == 1:  # an integer literal: exact below 2**53 (an integer 0 has no sign)
        value = float(m)
        if neg and m != 0:
            value = -value
        return value, i, 1 if m < _MAX_EXACT else 0
    if m == 0:
        return (-0.0 if neg else 0.0), i, 2
    if digits > _SIGNIFICAND_DIGITS or exp10 > 22 or exp10 < -22:
        return 0.0, i, 0
    value = float(m) * pow10[exp10] if exp10 >= 0 else float(m) / pow10[-exp10]
    return (-value if neg else value), i, 2


@njit(cache=True)
def _integer_nb(buf, i, end):
    """The integer literal at ``i`` (ts), exactly: (value, next, ok)."""
    neg = False
    if i < end and buf[i] == 45:
        neg = True
        i += 1
    start = i
    v = 0
    while i < end and 48 <= buf[i] <= 57:
        if i - start >= 18:
            return 0, i, False
        v = v * 10 + (buf[i] - 48)
        i += 1
    n = i - start
    if n == 0 or (n > 1 and buf[start] == 48):
        return 0, i, False
    if i < end and (buf[i] == 46 or buf[i] == 101 or buf[i] == 69):
        return 0, i, False  # a float where an integer must be: the general decoder
    return (-v if neg else v), i, True


@njit(cache=True)
def _one_bar_nb(buf, i, end, r, ts, cols, tf, sym_at, sym_hash, keys, key_at, tfs, tf_at, pow10):
    """Parse the record ``buf[i:end]`` into row ``r``; True when it is certainly a Bar."""
    if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
        i = _ws_nb(buf, i, end)
    if i >= end or buf[i] != 123:  # {
        return False
    i += 1
    if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
        i = _ws_nb(buf, i, end)
    seen = 0
    while True:
        if i >= end or buf[i] != 34:
            return False
        ks, ke, i = _string_nb(buf, i, end)
        if ke < 0:
            return False
        k = _find_nb(buf, ks, ke, keys, key_at)
        if k < 0 or seen & (1 << k):
            return False  # an unknown or repeated key
        seen |= 1 << k
        if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
            i = _ws_nb(buf, i, end)
        if i >= end or buf[i] != 58:  # :
            return False
        i += 1
        if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
            i = _ws_nb(buf, i, end)
        if i >= end:
            return False
        if k == 0 or k == 2 or k == 3:  # type, symbol, tf: strings
            if buf[i] != 34:
                return False
            s, e, i = _string_nb(buf, i, end)
            if e < 0:
                return False
            if k == 0:
                if not (e - s == 3 and buf[s] == 98 and buf[s + 1] == 97 and buf[s + 2] == 114):
                    return False  # not "bar"
            elif k == 2:
                if not _symbol_nb(buf, s, e, r, sym_at, sym_hash):
                    return False
            else:
                code = _find_nb(buf, s, e, tfs, tf_at)
                if code < 0:
                    return False
                tf[r] = code
        elif k == 1:  # v: the integer literal 1
            if buf[i] != 49:
                return False
            i += 1
            if i < end and (48 <= buf[i] <= 57 or buf[i] == 46 or buf[i] == 101 or buf[i] == 69):
                return False
        elif k == 4:
            v, i, ok = _integer_nb(buf, i, end)
            if not ok:
                return False
            ts[r] = v
        else:
            x, i, kind = _number_nb(buf, i, end, pow10)
            if kind == 0:
                return False
            cols[k - 5, r] = x
        if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
            i = _ws_nb(buf, i, end)
        if i >= end:
            return False
        if buf[i] == 44:  # ,
            i += 1
            if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
                i = _ws_nb(buf, i, end)
            continue
        if buf[i] != 125:  # }
            return False
        i += 1
        if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
            i = _ws_nb(buf, i, end)
        return i == end and seen == _ALL_KEYS


@njit(cache=True)
def _parse_nb(buf, starts, ts, cols, tf, sym_at, sym_hash, ok, keys, key_at, tfs, tf_at, pow10):
    for r in range(starts.shape[0] - 1):
        ok[r] = _one_bar_nb(buf, starts[r], starts[r + 1], r, ts, cols, tf, sym_at, sym_hash,
                            keys, key_at, tfs, tf_at, pow10)  # fmt: skip


def parse_bars(
    buf: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse records ``buf[starts[r]:starts[r + 1]]`` (uint8, int64 with one more entry
    than records). Returns ``ok`` (bool, the rows certainly read as their Bar), ``ts``
    (int64), ``cols`` (float64 open, high, low, close, volume x rows), ``tf`` (index into
    ``TIMEFRAME_NAMES``), ``sym_at`` (start, stop of each symbol's bytes in ``buf``) and
    ``sym_hash`` (uint64 FNV-1a of those bytes). Rows not ``ok`` hold garbage."""
    n = starts.shape[0] - 1
    ts = np.zeros(n, dtype=np.int64)
    cols = np.zeros((5, n), dtype=np.float64)
    tf = np.zeros(n, dtype=np.int8)
    sym_at = np.zeros((n, 2), dtype=np.int64)
    sym_hash = np.zeros(n, dtype=np.uint64)
    ok = np.zeros(n, dtype=np.bool_)
    _parse_nb(buf, starts, ts, cols, tf, sym_at, sym_hash, ok,
              _KEY_BYTES, _KEY_AT, _TF_BYTES, _TF_AT, _POW10)  # fmt: skip
    return ok, ts, cols, tf, sym_at, sym_hash


_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the table's slot of a hash


@njit(cache=True)
def arrival_codes_nb(hashes):
    """Each row's code — the rank of its hash among the distinct ones in order of first
    arrival — and the first row of each code, through an open-addressing table (sorting
    the hashes, as ``np.unique`` does, was most of the time of coding a batch's symbols).
    """
    n = hashes.shape[0]
    bits = 4
    while (1 << bits) < 2 * min(n, 1024):
        bits += 1
    size = 1 << bits
    shift = np.uint64(64 - bits)
    slots = np.full(size, -1, dtype=np.int64)
    code = np.empty(n, dtype=np.int64)
    first = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        h = hashes[i]
        j = np.int64((h * _MIX) >> shift)
        while True:
            c = slots[j]
            if c < 0:
                slots[j] = k
                first[k] = i
                code[i] = k
                k += 1
                if 2 * k > size:  # half full: twice the slots, the codes placed again
                    bits += 1
                    size = 1 << bits
                    shift = np.uint64(64 - bits)
                    slots = np.full(size, -1, dtype=np.int64)
                    for q in range(k):
                        jq = np.int64((hashes[first[q]] * _MIX) >> shift)
                        while slots[jq] >= 0:
                            jq = (jq + 1) & (size - 1)
                        slots[jq] = q
                break
            if hashes[first[c]] == h:
                code[i] = c
                break
            j = (j + 1) & (size - 1)
    return code, first[:k]


@njit(cache=True)
def same_bytes_nb(buf, sym_at, rep):
    """True when every row's symbol bytes equal those of its representative row
    ``rep[r]`` (a hash collision would make them differ)."""
    for r in range(sym_at.shape[0]):
        q = rep[r]
        if q == r:
            continue
        s, e = sym_at[r, 0], sym_at[r, 1]
        qs, qe = sym_at[q, 0], sym_at[q, 1]
        if e - s != qe - qs:
            return False
        for j in range(e - s):
            if buf[s + j] != buf[qs + j]:
                return False
    return True


@njit(cache=True)
def joined_symbols_nb(buf, sym_at, picks):
    """The symbols of rows ``picks``, in that order, with a newline after each but the
    last (a ticker holds none): one string to decode and split for all of them, where a
    decode per symbol cost ~0.5 µs."""
    size = 0
    for r in picks:
        size += sym_at[r, 1] - sym_at[r, 0] + 1
    out = np.empty(max(size - 1, 0), dtype=np.uint8)
    w = 0
    for k in range(picks.shape[0]):
        r = picks[k]
        if k:
            out[w] = 10
            w += 1
        for j in range(sym_at[r, 0], sym_at[r, 1]):
            out[w] = buf[j]
            w += 1
    return out


@njit(cache=True, inline="always")
def _ticker_nb(buf, i, end):
    """(start, stop, next, FNV-1a hash) of the string at ``buf[i] == '"'`` when it is a
    ticker (``_ticker_ok_nb``: a plain ASCII string of the contract's pattern), in one
    pass; stop < 0 when it is not (or has no end). ``_string_nb`` then ``_symbol_nb``
    give the same, reading each byte three times: most of a BarBatch symbol's cost."""
    i += 1
    s = i
    h = _FNV_OFFSET
    while i < end:
        c = buf[i]
        if c == 34:  # "
            if i - s < 1 or i - s > 32:
                return s, -1, i, h
            return s, i, i + 1, h
        # . _ / : ^ = -   (not as the first character); anything else: not a ticker
        if not ((48 <= c <= 57) or (65 <= c <= 90)) and (i == s or not (
            c == 46 or c == 95 or c == 47 or c == 58 or c == 94 or c == 61 or c == 45
        )):  # fmt: skip
            return s, -1, i, h
        h = (h ^ np.uint64(c)) * _FNV_PRIME
        i += 1
    return s, -1, i, h


@njit(cache=True)
def _batch_array_nb(buf, i, end, k, base, cap, ts, cols, sym_at, sym_hash, pow10):
    """Read the JSON array at ``buf[i] == '['`` as column ``k`` of rows ``base...``:
    (next, count), count < 0 when it is not certainly that column (a value of another
    kind, an escape in a symbol, a number off the fast path, more rows than ``cap``).

    The usual numbers — digits, a fraction, no exponent — are read here in the loop, and
    only the others by ``_number_nb`` (which gives the same for these): a call of it per
    number, returning its tuple, took three times as long as the parse itself."""
    i += 1
    if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
        i = _ws_nb(buf, i, end)
    count = 0
    if i < end and buf[i] == 93:  # ]: empty (the general decoder says why it is bad)
        return i, -1
    while True:
        if base + count >= cap:
            return i, -1
        r = base + count
        if k == 2:  # symbols
            if i >= end or buf[i] != 34:
                return i, -1
            s, e, i, h = _ticker_nb(buf, i, end)
            if e < 0:
                return i, -1
            sym_at[r, 0] = s
            sym_at[r, 1] = e
            sym_hash[r] = h
        else:  # ts (an integer literal, exactly) or a number: the sign and digits first
            start = i
            neg = i < end and buf[i] == 45
            if neg:
                i += 1
            d0 = i
            m = 0
            while i < end and 48 <= buf[i] <= 57:
                m = m * 10 + (buf[i] - 48)
                i += 1
            nd = i - d0
            if k == 4:
                if nd == 0 or nd > 18 or (nd > 1 and buf[d0] == 48):
                    return i, -1
                if i < end and (buf[i] == 46 or buf[i] == 101 or buf[i] == 69):
                    return i, -1  # a float where an integer must be: the general decoder
                ts[r] = -m if neg else m
            else:
                exp10 = 0
                if i < end and buf[i] == 46:  # .
                    i += 1
                    f = i
                    while i < end and 48 <= buf[i] <= 57:
                        m = m * 10 + (buf[i] - 48)
                        i += 1
                    exp10 = f - i
                usual = (
                    nd > 0 and not (nd > 1 and buf[d0] == 48) and nd - exp10 <= 18
                    and not (exp10 == 0 and i > d0 + nd)  # a '.' without digits
                    and not (i < end and (buf[i] == 101 or buf[i] == 69))
                    and m <= _MAX_EXACT and exp10 >= -22
                )  # fmt: skip
                if usual:
                    if exp10 == 0:  # an integer literal (an integer 0 has no sign)
                        x = float(m)
                        if neg and m != 0:
                            x = -x
                        if m == _MAX_EXACT:
                            return i, -1
                    else:  # m and 10**-exp10 exact: one correctly rounded division
                        x = float(m) / pow10[-exp10]
                        if neg:
                            x = -x
                else:
                    x, i, kind = _number_nb(buf, start, end, pow10)
                    if kind == 0:
                        return i, -1
                cols[k - 5, r] = x
        count += 1
        if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
            i = _ws_nb(buf, i, end)
        if i >= end:
            return i, -1
        if buf[i] == 44:  # ,
            i += 1
            if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
                i = _ws_nb(buf, i, end)
            continue
        if buf[i] != 93:  # ]
            return i, -1
        return i + 1, count


@njit(cache=True)
def _one_batch_nb(buf, i, end, base, cap, max_rows, ts, cols, sym_at, sym_hash, keys, key_at,
                  tfs, tf_at, pow10):  # fmt: skip
    """Parse the record ``buf[i:end]`` as a BarBatch into rows ``base...``: its row count
    and timeframe code when it is certainly one (every column as long as ``symbols``, at
    most ``max_rows``), else (-1, 0)."""
    if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
        i = _ws_nb(buf, i, end)
    if i >= end or buf[i] != 123:  # {
        return -1, 0
    i += 1
    if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
        i = _ws_nb(buf, i, end)
    seen = 0
    n = -1
    code = 0
    while True:
        if i >= end or buf[i] != 34:
            return -1, 0
        ks, ke, i = _string_nb(buf, i, end)
        if ke < 0:
            return -1, 0
        k = _find_nb(buf, ks, ke, keys, key_at)
        if k < 0 or seen & (1 << k):
            return -1, 0
        seen |= 1 << k
        if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
            i = _ws_nb(buf, i, end)
        if i >= end or buf[i] != 58:  # :
            return -1, 0
        i += 1
        if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
            i = _ws_nb(buf, i, end)
        if i >= end:
            return -1, 0
        if k == 0 or k == 3:  # type, tf
            if buf[i] != 34:
                return -1, 0
            s, e, i = _string_nb(buf, i, end)
            if e < 0:
                return -1, 0
            if k == 0:
                if e - s != 9:
                    return -1, 0
                for j, c in enumerate((98, 97, 114, 95, 98, 97, 116, 99, 104)):  # bar_batch
                    if buf[s + j] != c:
                        return -1, 0
            else:
                code = _find_nb(buf, s, e, tfs, tf_at)
                if code < 0:
                    return -1, 0
        elif k == 1:  # v: the integer literal 1
            if buf[i] != 49:
                return -1, 0
            i += 1
            if i < end and (48 <= buf[i] <= 57 or buf[i] == 46 or buf[i] == 101 or buf[i] == 69):
                return -1, 0
        else:  # a column
            if buf[i] != 91:  # [
                return -1, 0
            i, count = _batch_array_nb(buf, i, end, k, base, cap, ts, cols, sym_at, sym_hash,
                                       pow10)  # fmt: skip
            if count < 0 or (n >= 0 and count != n) or count > max_rows:
                return -1, 0
            n = count
        if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
            i = _ws_nb(buf, i, end)
        if i >= end:
            return -1, 0
        if buf[i] == 44:  # ,
            i += 1
            if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
                i = _ws_nb(buf, i, end)
            continue
        if buf[i] != 125:  # }
            return -1, 0
        i += 1
        if i < end and buf[i] <= 32:  # (white space is rare: see _ws_nb)
            i = _ws_nb(buf, i, end)
        if i == end and seen == _ALL_KEYS:
            return n, code
        return -1, 0


@njit(cache=True)
def _parse_batches_nb(buf, starts, todo, max_rows, rec, ts, cols, tf, sym_at, sym_hash, ok,
                      keys, key_at, tfs, tf_at, pow10):  # fmt: skip
    cap = ts.shape[0]
    rows = 0
    for j in range(todo.shape[0]):
        r = todo[j]
        n, code = _one_batch_nb(buf, starts[r], starts[r + 1], rows, cap, max_rows, ts, cols,
                                sym_at, sym_hash, keys, key_at, tfs, tf_at, pow10)  # fmt: skip
        if n > 0:
            ok[j] = True
            for q in range(rows, rows + n):
                rec[q] = r
                tf[q] = code
            rows += n
    return rows


def parse_bar_batches(
    buf: np.ndarray, starts: np.ndarray, todo: np.ndarray, max_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse records ``todo`` (indices into ``starts``, as for :func:`parse_bars`) as
    BarBatch messages — any key order and white space, the same certainty rules as a
    Bar's — into rows, record after record. Returns ``ok`` (bool per ``todo`` entry: read
    certainly as its BarBatch), then per row: ``rec`` (its record), ``ts``, ``cols``
    (5 x rows), ``tf``, ``sym_at`` and ``sym_hash`` as :func:`parse_bars` gives them.
    Records not ``ok`` are left to the general decoder."""
    sizes = starts[todo + 1] - starts[todo]
    cap = int((sizes // _MIN_ROW_BYTES + 1).sum())
    rec = np.zeros(cap, dtype=np.int64)
    ts = np.zeros(cap, dtype=np.int64)
    cols = np.zeros((5, cap), dtype=np.float64)
    tf = np.zeros(cap, dtype=np.int8)
    sym_at = np.zeros((cap, 2), dtype=np.int64)
    sym_hash = np.zeros(cap, dtype=np.uint64)
    ok = np.zeros(todo.shape[0], dtype=np.bool_)
    n = _parse_batches_nb(buf, starts, todo.astype(np.int64), max_rows, rec, ts, cols, tf,
                          sym_at, sym_hash, ok, _BATCH_KEY_BYTES, _BATCH_KEY_AT, _TF_BYTES,
                          _TF_AT, _POW10)  # fmt: skip
    return ok, rec[:n], ts[:n], cols[:, :n], tf[:n], sym_at[:n], sym_hash[:n]
