"""BLAKE2b in numba, for many short messages at once: the alerts' deterministic ids.

An alert's id is ``blake2b(rule_id \\x1f symbol \\x1f tf \\x1f ts [\\x1f seq], 16)`` as
hex (``messages.alert_id``). At a high alert rate, hashing one message at a time from
Python cost ~1.6 µs an id on our machine, most of it the call's overhead, not the hash;
``alert_ids_nb`` builds and hashes every message of one rule's candidates in one call.
The digest is RFC 7693's BLAKE2b (no key, no salt or personalisation, ``digest_size``
16): a test holds it equal to ``hashlib.blake2b`` on messages of every length over
several blocks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["DIGEST_HEX", "alert_ids_nb", "blake2b_hex_nb"]

DIGEST_HEX = 32  # a 16-byte digest as hex

_IV = np.array(
    [
        0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
        0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
    ],
    dtype=np.uint64,
)  # fmt: skip
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_BLOCK = 128
_DIGEST = 16
# h[0] ^= 0x0101kknn: fanout 1, depth 1, no key, digest length nn
_PARAM = np.uint64(0x01010000 | _DIGEST)
_U0 = np.uint64(0)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_R32, _R24, _R16, _R63 = np.uint64(32), np.uint64(24), np.uint64(16), np.uint64(63)
_L32, _L40, _L48, _L1 = np.uint64(32), np.uint64(40), np.uint64(48), np.uint64(1)
_B8, _BFF = np.uint64(8), np.uint64(0xFF)


@njit(cache=True, inline="always")
def _half(a, b, c, d, x, r1, l1, r2, l2):
    """Half of BLAKE2b's mixing function G: rotations (r1, r2) right, ``l = 64 - r``."""
    a = a + b + x
    t = d ^ a
    d = (t >> r1) | (t << l1)
    c = c + d
    t = b ^ c
    b = (t >> r2) | (t << l2)
    return a, b, c, d


@njit(cache=True, inline="always")
def _g(a, b, c, d, x, y):
    """BLAKE2b's mixing function G on four words of the state (kept in registers: an
    array for the state made the hash ~2x slower)."""
    a, b, c, d = _half(a, b, c, d, x, _R32, _L32, _R24, _L40)
    return _half(a, b, c, d, y, _R16, _L48, _R63, _L1)


@njit(cache=True, inline="always")
def _round(v, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15):
    """One round on the state ``v`` (16 words) with the message words in the round's
    order (its row of RFC 7693's SIGMA)."""
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = v
    v0, v4, v8, v12 = _g(v0, v4, v8, v12, x0, x1)
    v1, v5, v9, v13 = _g(v1, v5, v9, v13, x2, x3)
    v2, v6, v10, v14 = _g(v2, v6, v10, v14, x4, x5)
    v3, v7, v11, v15 = _g(v3, v7, v11, v15, x6, x7)
    v0, v5, v10, v15 = _g(v0, v5, v10, v15, x8, x9)
    v1, v6, v11, v12 = _g(v1, v6, v11, v12, x10, x11)
    v2, v7, v8, v13 = _g(v2, v7, v8, v13, x12, x13)
    v3, v4, v9, v14 = _g(v3, v4, v9, v14, x14, x15)
    return (v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15)


@njit(cache=True)
def _compress_nb(h, m, counter, last):
    """Compress the block ``m`` (16 words) into the chain ``h``; ``counter`` is the
    bytes hashed so far, this block included. The twelve rounds are written out, each
    with its message order as literals: in a loop over a SIGMA table the hash took twice
    as long (the words could not stay in registers)."""
    m0, m1, m2, m3, m4, m5, m6, m7 = m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]
    m8, m9, m10, m11, m12, m13, m14, m15 = m[8], m[9], m[10], m[11], m[12], m[13], m[14], m[15]
    v = (
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], _IV[0], _IV[1], _IV[2], _IV[3],
        _IV[4] ^ np.uint64(counter),  # the counter's high word stays 0
        _IV[5], _IV[6] ^ _ONES if last else _IV[6], _IV[7],
    )  # fmt: skip
    v = _round(v, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15)
    v = _round(v, m14, m10, m4, m8, m9, m15, m13, m6, m1, m12, m0, m2, m11, m7, m5, m3)
    v = _round(v, m11, m8, m12, m0, m5, m2, m15, m13, m10, m14, m3, m6, m7, m1, m9, m4)
    v = _round(v, m7, m9, m3, m1, m13, m12, m11, m14, m2, m6, m5, m10, m4, m0, m15, m8)
    v = _round(v, m9, m0, m5, m7, m2, m4, m10, m15, m14, m1, m11, m12, m6, m8, m3, m13)
    v = _round(v, m2, m12, m6, m10, m0, m11, m8, m3, m4, m13, m7, m5, m15, m14, m1, m9)
    v = _round(v, m12, m5, m1, m15, m14, m13, m4, m10, m0, m7, m6, m3, m9, m2, m8, m11)
    v = _round(v, m13, m11, m7, m14, m12, m1, m3, m9, m5, m0, m15, m4, m8, m6, m2, m10)
    v = _round(v, m6, m15, m14, m9, m11, m3, m0, m8, m12, m2, m13, m7, m1, m4, m10, m5)
    v = _round(v, m10, m2, m8, m4, m7, m6, m1, m5, m15, m11, m9, m14, m3, m12, m13, m0)
    v = _round(v, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15)
    v = _round(v, m14, m10, m4, m8, m9, m15, m13, m6, m1, m12, m0, m2, m11, m7, m5, m3)
    for i in range(8):
        h[i] ^= v[i] ^ v[i + 8]


@njit(cache=True)
def _digest_hex_nb(msg, n, h, m, out, at):
    """BLAKE2b-128 of ``msg[:n]`` as 32 hex bytes into ``out[at:]``; ``msg`` is padded
    with zeros to a whole number of blocks past ``n`` (it is overwritten here)."""
    for i in range(8):
        h[i] = _IV[i]
    h[0] ^= _PARAM
    blocks = max(1, (n + _BLOCK - 1) // _BLOCK)
    for i in range(n, blocks * _BLOCK):
        msg[i] = 0
    for b in range(blocks):
        base = b * _BLOCK
        for w in range(16):
            x = _U0
            for j in range(7, -1, -1):
                x = (x << _B8) | np.uint64(msg[base + 8 * w + j])
            m[w] = x
        last = b == blocks - 1
        _compress_nb(h, m, n if last else base + _BLOCK, last)
    for k in range(_DIGEST):
        byte = (h[k >> 3] >> np.uint64(8 * (k & 7))) & _BFF
        out[at + 2 * k] = _HEX[byte >> np.uint64(4)]
        out[at + 2 * k + 1] = _HEX[byte & np.uint64(15)]


def _scratch(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A message buffer for up to ``n`` bytes (whole blocks), the chain words, the
    message words."""
    blocks = max(1, -(-n // _BLOCK))
    return (
        np.zeros(blocks * _BLOCK, dtype=np.uint8),
        np.empty(8, dtype=np.uint64),
        np.empty(16, dtype=np.uint64),
    )


def blake2b_hex_nb(data: bytes) -> bytes:
    """``hashlib.blake2b(data, digest_size=16).hexdigest()`` as bytes (for tests and
    one-off use; :func:`alert_ids_nb` is the batch path)."""
    msg, h, m = _scratch(len(data))
    msg[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(DIGEST_HEX, dtype=np.uint8)
    _digest_hex_nb(msg, len(data), h, m, out, 0)
    return out.tobytes()


@njit(cache=True)
def _decimal_nb(x, msg, at):
    """``str(x)`` of an int64 into ``msg[at:]``; returns the end."""
    if x < 0:
        msg[at] = 45  # '-'
        at += 1
        u = np.uint64(-(x + 1)) + np.uint64(1)  # |x|, INT64_MIN included
    else:
        u = np.uint64(x)
    digits = 1
    t = u // np.uint64(10)
    while t > 0:
        digits += 1
        t //= np.uint64(10)
    for k in range(digits - 1, -1, -1):
        msg[at + k] = 48 + np.uint8(u % np.uint64(10))
        u //= np.uint64(10)
    return at + digits


@njit(cache=True)
def alert_ids_nb(pre, mid, syms, lengths, ts, seqs):
    """The 32 hex bytes of each message ``pre + symbol + mid + str(ts[i])``, plus
    ``\\x1f + str(seqs[i])`` where ``seqs`` is not empty and ``seqs[i]`` is not 0, back to
    back; symbol ``i`` is the next ``lengths[i]`` bytes of ``syms``. ``pre``, ``mid`` and
    ``syms`` are bytes (or uint8 arrays)."""
    n = ts.shape[0]
    if lengths.shape[0] != n or (seqs.shape[0] != 0 and seqs.shape[0] != n):
        raise ValueError("lengths, ts and seqs differ in length")
    total = 0
    longest = 0
    for size in lengths:
        total += size
        longest = max(longest, size)
    if total != len(syms):
        raise ValueError("the symbols' lengths do not add up to their bytes")
    longest += len(pre) + len(mid) + 44  # two int64s, a sign each, one \x1f
    msg = np.zeros((longest + _BLOCK - 1) // _BLOCK * _BLOCK, dtype=np.uint8)
    h = np.empty(8, dtype=np.uint64)
    m = np.empty(16, dtype=np.uint64)
    out = np.empty(n * DIGEST_HEX, dtype=np.uint8)
    at = 0
    for i in range(n):
        w = 0
        for c in pre:
            msg[w] = c
            w += 1
        for k in range(at, at + lengths[i]):
            msg[w] = syms[k]
            w += 1
        at += lengths[i]
        for c in mid:
            msg[w] = c
            w += 1
        w = _decimal_nb(ts[i], msg, w)
        if seqs.shape[0] and seqs[i] != 0:
            msg[w] = 31
            w = _decimal_nb(seqs[i], msg, w + 1)
        _digest_hex_nb(msg, w, h, m, out, i * DIGEST_HEX)
    return out
