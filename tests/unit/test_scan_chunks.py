"""A scan's universe in even chunks: every symbol once, in order, sizes within one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from technic_stream.scan.job import split_even


@given(n=st.integers(0, 5_000), most=st.integers(1, 700))
def test_chunks_cover_the_universe_in_order_with_sizes_within_one(n, most):
    symbols = [f"S{i}" for i in range(n)]
    chunks = split_even(symbols, most)
    assert [s for c in chunks for s in c] == symbols
    assert len(chunks) == -(-n // most)  # as few as the limit allows
    sizes = [len(c) for c in chunks]
    assert all(0 < x <= most for x in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_no_tiny_last_chunk():
    sizes = [len(c) for c in split_even([str(i) for i in range(5_001)], 500)]
    assert sizes == [455] * 7 + [454] * 4
