"""The scan ETA: exact on a steady run, not fooled by warm-up, follows a change of pace."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from technic_stream.scan.eta import Eta


def run(eta: Eta, chunk_seconds: list[float], size: int, t0: float = 0.0) -> float:
    """Chunks of ``size`` symbols finishing after the given seconds each; the clock."""
    t, done = t0, eta._samples[-1][1] if eta._samples else 0
    for dt in chunk_seconds:
        t += dt
        done += size
        eta.observe(t, done)
    return t


def test_nothing_to_say_before_computing_or_before_a_chunk():
    eta = Eta(100)
    assert eta.estimate(1.0) == (0.0, None)
    eta.start(1.0, 0)
    assert eta.estimate(1.0) == (0.0, None)


@given(
    per_chunk=st.floats(0.01, 5.0),
    size=st.integers(1, 1_000),
    chunks=st.integers(4, 200),
    warmup=st.floats(0.0, 60.0),
)
def test_on_a_steady_run_the_eta_at_half_way_is_the_time_left(per_chunk, size, chunks, warmup):
    eta = Eta(size * chunks)
    eta.start(0.0, 0)
    half = chunks // 2
    # the first chunk is slow (compiling, cold reads); the rest steady
    t = run(eta, [per_chunk + warmup] + [per_chunk] * (half - 1), size)
    rate, ms = eta.estimate(t)
    assert rate == pytest.approx(size / per_chunk)
    assert ms == pytest.approx((chunks - half) * per_chunk * 1000, abs=1)


def test_the_estimate_counts_down_between_chunks():
    eta = Eta(1_000)
    eta.start(0.0, 0)
    t = run(eta, [1.0] * 5, 100)
    _, at_chunk = eta.estimate(t)
    _, later = eta.estimate(t + 0.4)
    assert at_chunk == 5_000 and later == 4_600


def test_a_faster_pace_is_followed_once_it_fills_the_window():
    eta = Eta(10_000, window=0.75)
    eta.start(0.0, 0)
    t = run(eta, [1.0] * 10, 100)  # 100 symbols/s
    t = run(eta, [0.5] * 20, 100, t)  # another worker joined: 200 symbols/s
    between, _ = eta.estimate(t)
    assert 100 < between < 200  # on its way
    # the window is the recent 3/4 of the run: 30 s of the new pace after 9 s of the old
    t = run(eta, [0.5] * 40, 100, t)
    rate, ms = eta.estimate(t)
    assert rate == pytest.approx(200)
    assert ms == pytest.approx((10_000 - 7_000) / 200 * 1000, abs=1)


def test_a_resumed_scan_measures_only_its_own_progress():
    eta = Eta(1_000)
    eta.start(0.0, 600)  # 600 symbols were checkpointed by the previous worker
    t = run(eta, [1.0, 1.0, 1.0], 100)
    rate, ms = eta.estimate(t)
    assert rate == pytest.approx(100) and ms == 1_000


def test_by_default_the_whole_run_after_the_first_chunk_is_the_window():
    eta = Eta(10_000)
    eta.start(0.0, 0)
    t = run(eta, [1.0] * 10, 100)  # 100 symbols/s
    t = run(eta, [0.5] * 60, 100, t)  # 200 symbols/s from here on
    rate, _ = eta.estimate(t)
    assert rate == pytest.approx((6_900) / 39.0)  # everything after the first chunk


def test_one_slow_chunk_barely_moves_the_estimate():
    eta = Eta(6_000)
    eta.start(0.0, 0)
    t = run(eta, [1.0] * 29 + [3.0], 100)  # one chunk three times as slow
    _, ms = eta.estimate(t)
    steady = 30 * 1_000  # 3,000 symbols left at 100/s
    assert abs(ms - steady) / steady < 0.15


def test_a_pipelined_scan_counts_its_last_chunk_as_compute_only():
    # chunks finish every 1.0 s (the next chunk's load is the slower stage); computing
    # and storing a chunk takes 0.4 s, so the last one is done 0.4 s after its load
    eta = Eta(2_000)
    eta.start(0.0, 0)
    for _ in range(10):
        eta.busy(0.4, 100)
    t = run(eta, [1.0] * 10, 100)
    _, ms = eta.estimate(t)
    assert ms == 9_000 + 400  # nine steady steps, then the last chunk's compute
    _, ms_later = eta.estimate(t + 0.3)
    assert ms_later == 9_100


def test_a_compute_bound_scan_gets_no_saving():
    eta = Eta(1_000)
    eta.start(0.0, 0)
    for _ in range(5):
        eta.busy(1.0, 100)  # computing is the whole step
    t = run(eta, [1.0] * 5, 100)
    assert eta.estimate(t)[1] == 5_000
