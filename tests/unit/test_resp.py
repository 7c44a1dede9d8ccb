"""The hand packer: inline HSET words read back as the very floats written."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from technic_stream.redis.resp import InlineHset, KeyedCommand, pack


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


@given(st.lists(st.floats(allow_infinity=False), min_size=1, max_size=30))
def test_inline_words_round_trip_bit_exact(xs):
    hset = InlineHset([f"f{i}" for i in range(len(xs) + 1)])
    line = hset.command("technic:ind:1m:AAPL", [1767623400000, *xs])
    assert isinstance(line, bytes) and line.endswith(b"\r\n")
    words = line[:-2].split(b" ")
    assert words[:2] == [b"HSET", b"technic:ind:1m:AAPL"]
    assert words[2:4] == [b"f0", b"1767623400000"]
    for x, word in zip(xs, words[5::2], strict=True):
        back = float(word)
        assert (math.isnan(x) and math.isnan(back)) or _bits(back) == _bits(x)


def test_a_key_with_a_space_falls_back_to_resp_and_bad_field_names_are_refused():
    hset = InlineHset(["ts", "close"])
    cmd = hset.command("odd key", [1, 2.5])
    want = b"*6\r\n$4\r\nHSET\r\n$7\r\nodd key\r\n$2\r\nts\r\n$1\r\n1\r\n"
    assert pack([cmd]) == want + b"$5\r\nclose\r\n$3\r\n2.5\r\n"
    with pytest.raises(ValueError):
        InlineHset(["two words"])
    with pytest.raises(ValueError):
        hset.command("k", [1])


def test_quotes_and_very_long_lines_use_the_resp_form():
    hset = InlineHset(["ts", "close"])
    assert isinstance(hset.command('it"s', [1, 2.5]), list)
    wide = InlineHset([f"field_{i:05d}" for i in range(4_000)])
    assert isinstance(wide.command("k", [1.0] * 4_000), list)  # > 60 KB inline
    assert isinstance(InlineHset(["a"]).command("k", [1.0]), bytes)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["technic:ind:1m:AAPL", "technic:ind:5m:BRK.B", "a key", "K"]),
            st.integers(-(2**62), 2**62),
            st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3),
        ),
        min_size=1,
        max_size=30,
    )
)
@example([("K", 1, [math.nan, -0.0, 1e22]), ("a key", -5, [1.5, math.inf, 2.0]),
          ("technic:ind:1m:AAPL", 1_700_000_000_000, [100.25, 1e-7, -3.3e17])])  # fmt: skip
def test_many_rows_give_the_bytes_of_one_row_at_a_time(rows):
    """``InlineHset.many`` (one orjson dump, lines assembled in numba) gives, row for row,
    what ``command`` gives — NaN, -0.0, exponents, negative ts — and the RESP form where
    a row holds an infinity or its key is not a word."""
    import numpy as np

    h = InlineHset(["ts", "a", "b", "c"])
    keys = [k for k, _, _ in rows]
    ts = np.array([t for _, t, _ in rows], dtype=np.int64)
    values = np.array([v for _, _, v in rows], dtype=np.float64).reshape(len(rows), 3)
    want = []
    for key, t, vals in rows:
        if any(math.isinf(x) for x in vals):
            want.append(h.general(key, [t, *vals]))
        else:
            want.append(h.command(key, [t, *vals]))
    got = h.many(keys, ts, values)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, bytes):
            assert g == w
        else:  # the RESP form: NaN compares unequal to itself, so compare the text
            assert [str(x) for x in g] == [str(x) for x in w]


def test_many_reuses_its_line_buffer_across_calls_of_any_size():
    """The line buffer kept between calls (grown when a call needs more) never leaks one
    call's bytes into the next: big, small, bigger, each row as ``command`` gives it."""
    import numpy as np

    h = InlineHset(["ts", "a", "b", "c"])
    rng = np.random.default_rng(7)
    for n in (200, 3, 1, 50, 900, 10):
        keys = [f"technic:ind:1m:S{i}" for i in range(n)]
        ts = rng.integers(0, 2**40, n)
        values = rng.normal(0, 1e6, (n, 3)) * 10.0 ** rng.integers(-20, 20, (n, 3))
        got = h.many(keys, ts, values)
        rows = zip(keys, ts.tolist(), values.tolist(), strict=True)
        assert got == [h.command(k, [t, *v]) for k, t, v in rows]
    assert h._scratch is not None and h._scratch.shape[0] >= 900 * 40


_ARGS = st.lists(
    st.one_of(st.text(max_size=20), st.binary(max_size=20), st.integers(), st.floats()),
    max_size=5,
)


@given(head=_ARGS.filter(bool), tail=_ARGS, key=st.one_of(st.text(max_size=40), st.binary()))
def test_a_keyed_command_is_the_command_packed_whole(head, tail, key):
    assert KeyedCommand(head, tail)(key) == pack([[*head, key, *tail]])
