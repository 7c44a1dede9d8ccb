from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from technic_stream.data import load_sample


@pytest.fixture(scope="session")
def sample():
    return load_sample()


@st.composite
def ohlcv(draw, min_size: int = 1, max_size: int = 300):
    """Random OHLCV with gaps, flat runs, zero volumes and prices from 1e-3 to 1e6."""
    n = draw(st.integers(min_size, max_size))
    seed = draw(st.integers(0, 2**32 - 1))
    base = draw(st.sampled_from([0.001, 0.05, 1.0, 37.5, 600.0, 25_000.0, 1_000_000.0]))
    vol_scale = draw(st.sampled_from([0.0, 1.0, 1e3, 1e6, 1e9]))
    gap_p = draw(st.sampled_from([0.0, 0.02, 0.2]))
    flat_p = draw(st.sampled_from([0.0, 0.05, 0.5]))
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.02, n)
    gaps = rng.random(n) < gap_p
    steps[gaps] += rng.choice([-1.0, 1.0], gaps.sum()) * rng.uniform(0.1, 1.0, gaps.sum())
    flat = rng.random(n) < flat_p
    steps[flat] = 0.0
    close = base * np.exp(np.cumsum(steps))
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, 0.005, n))
    open_[flat] = close[flat]
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = top * (1 + np.abs(rng.normal(0, 0.01, n)) * ~flat)
    low = bottom * (1 - np.abs(rng.normal(0, 0.01, n)) * ~flat)
    volume = np.floor(rng.exponential(vol_scale, n)) * (rng.random(n) > 0.1)
    ts = 1_600_000_000_000 + np.cumsum(rng.integers(1, 4, n)) * 3_600_000
    return ts.astype(np.int64), open_, high, low, close, volume.astype(float)
