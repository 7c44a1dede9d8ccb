"""The numba BLAKE2b is ``hashlib.blake2b(digest_size=16)``, and the batch of alert ids
is :func:`alert_id` of each message, whatever the lengths and numbers."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from technic_stream.kernels.digest import alert_ids_nb, blake2b_hex_nb
from technic_stream.messages import alert_id

_INT64 = st.integers(-(2**63), 2**63 - 1)


@given(st.binary(max_size=700))
@example(b"")
@example(b"\xff" * 127)
@example(b"\x01" * 128)
@example(b"\x80" * 129)
@example(bytes(range(256)))
@example(bytes(range(256)) + b"x")
def test_blake2b_is_hashlibs(data):
    assert blake2b_hex_nb(data) == hashlib.blake2b(data, digest_size=16).hexdigest().encode()


@given(
    rule_id=st.text(min_size=1, max_size=200),
    tf=st.sampled_from(["1m", "1d", "15m"]),
    rows=st.lists(st.tuples(st.text(st.characters(blacklist_characters="\x1f"), min_size=1,
                                    max_size=12), _INT64, _INT64), max_size=30),
)  # fmt: skip
@example(rule_id="r", tf="1m", rows=[("A", -(2**63), -(2**63)), ("B", 2**63 - 1, 0)])
def test_alert_ids_are_alert_id(rule_id, tf, rows):
    syms = [s.encode() for s, _, _ in rows]
    ts = np.array([t for _, t, _ in rows], dtype=np.int64)
    seqs = np.array([q for _, _, q in rows], dtype=np.int64)
    lengths = np.array([len(s) for s in syms], dtype=np.int64)
    pre, mid = f"{rule_id}\x1f".encode(), f"\x1f{tf}\x1f".encode()
    got = alert_ids_nb(pre, mid, b"".join(syms), lengths, ts, seqs).tobytes()
    assert got == b"".join(alert_id(rule_id, s, tf, t, q).encode() for s, t, q in rows)
    plain = alert_ids_nb(pre, mid, b"".join(syms), lengths, ts, np.empty(0, np.int64))
    assert plain.tobytes() == b"".join(alert_id(rule_id, s, tf, t).encode() for s, t, _ in rows)


def test_lengths_that_do_not_cover_the_symbols_are_refused():
    one = np.array([1], dtype=np.int64)
    with pytest.raises(ValueError, match="do not add up"):
        alert_ids_nb(b"r\x1f", b"\x1f1m\x1f", b"AB", one, one, one)
    with pytest.raises(ValueError, match="differ in length"):
        alert_ids_nb(b"r\x1f", b"\x1f1m\x1f", b"A", one, np.array([1, 2]), one)
