"""The bar builder equals an offline aggregation of the same trades: late trades, quiet
symbols, the clock, session-aware daily bars and restart from a snapshot."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from technic_stream.marketdata.builder import DAY_MS, BarBuilder, BuiltBars, Session
from technic_stream.messages import TIMEFRAME_MS

T0 = int(datetime(2026, 3, 2, 14, 30, tzinfo=UTC).timestamp() * 1000)  # Monday 09:30 New York
TFS = ("1s", "1m", "5m", "1d")
GRACE = 2_000
FAR = 10**15  # a wall clock far enough ahead to close everything


def _session(ts: int) -> tuple[int, int]:
    day = ts // DAY_MS
    o = day * DAY_MS + (14 * 60 + 30) * 60_000  # 09:30 EST (March 2: before DST)
    return o, day * DAY_MS + 21 * 3_600_000


def offline(trades, tfs=TFS, grace=GRACE):
    """(tf, symbol, ts) → (o, h, l, c, v) of the trades the clock had not made too late."""
    clock = -1
    groups: dict[tuple[str, str, int], list[tuple[int, int, float, float]]] = {}
    for i, (sym, ts, px, sz) in enumerate(trades):
        clock = max(clock, ts)
        for tf in tfs:
            if tf == "1d":
                o, c = _session(ts)
                if not o <= ts < c:
                    continue
                start, end = ts - ts % DAY_MS, c
            else:
                d = TIMEFRAME_MS[tf]
                start, end = ts - ts % d, ts - ts % d + d
            if end + grace <= clock:
                continue  # dropped: too late
            groups.setdefault((tf, sym, start), []).append((ts, i, px, sz))
    out = {}
    for key, rows in groups.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        px = [r[2] for r in rows]
        out[key] = (px[0], max(px), min(px), px[-1], sum(r[3] for r in rows))
    return out


def collect(into: dict, built: BuiltBars) -> None:
    for j in range(len(built)):
        key = (built.tf[j], built.symbol[j], int(built.ts[j]))
        into[key] = (
            float(built.open[j]), float(built.high[j]), float(built.low[j]),
            float(built.close[j]), float(built.volume[j]),
        )  # fmt: skip


def run(trades, cuts, *, restart_at=None, wall=0):
    builder = BarBuilder(TFS, grace_ms=GRACE)
    got: dict = {}
    bounds = [0, *sorted(set(cuts)), len(trades)]
    for n, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if restart_at == n:  # the process dies here; a new one restores the checkpoint
            state = orjson.loads(
                orjson.dumps(builder.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY)
            )
            builder = BarBuilder(TFS, grace_ms=GRACE)
            builder.restore(state, wall)
        chunk = trades[lo:hi]
        if not chunk:
            continue
        built = builder.apply(
            [t[0] for t in chunk], np.array([t[1] for t in chunk]),
            np.array([t[2] for t in chunk]), np.array([t[3] for t in chunk]), wall,
        )  # fmt: skip
        now = builder.clock(wall)
        for j in range(len(built)):  # closed only once the clock passed the bar's end
            tf, ts = built.tf[j], int(built.ts[j])
            end = _session(ts + 1)[1] if tf == "1d" else ts + TIMEFRAME_MS[tf]
            assert end <= now
            if j and (built.tf[j - 1], built.symbol[j - 1]) == (tf, built.symbol[j]):
                assert built.ts[j - 1] < ts  # oldest first, each bar once per batch
        collect(got, built)
    return builder, got


trade_lists = st.lists(
    st.tuples(
        st.sampled_from(["AAA", "BBB", "CCC"]),
        st.integers(0, 4_000),  # step of event time (ms)
        st.one_of(st.just(0), st.integers(1, 4_000), st.integers(60_000, 400_000)),  # lateness
        st.floats(1, 100).map(lambda x: round(x, 2)),
        st.integers(1, 500),
    ),
    min_size=1,
    max_size=250,
)


def _materialise(raw):
    t = T0 - 20 * 60_000  # start before the open: pre-market trades too
    out = []
    for sym, step, late, px, sz in raw:
        t += step
        out.append((sym, max(t - late, T0 - 3_600_000), px, float(sz)))
    return out


@given(trade_lists, st.lists(st.integers(0, 250), max_size=6), st.integers(0, 7))
def test_bars_equal_the_offline_aggregation(raw, cuts, restart_at):
    trades = _materialise(raw)
    cuts = [c for c in cuts if c <= len(trades)]
    builder, got = run(trades, cuts)
    want = offline(trades)
    collect(got, builder.sweep(FAR))  # the feed goes quiet for good: everything closes
    assert got == want
    # the same stream with a crash and a restore from the checkpoint gives the same bars
    builder2, got2 = run(trades, cuts, restart_at=restart_at)
    collect(got2, builder2.sweep(FAR))
    assert got2 == want
    dropped = sum(builder.dropped.values())
    assert dropped == sum(builder2.dropped.values())


def test_a_quiet_symbol_closes_on_the_clock_and_late_trades_correct_then_drop():
    b = BarBuilder(("1s", "1m"), grace_ms=GRACE)
    got: dict = {}
    emitted: list[tuple[str, str, int]] = []

    def step(trades, wall):
        cols = [np.array([t[k] for t in trades]) for k in (1, 2, 3)]
        built = b.apply([t[0] for t in trades], *cols, wall)
        emitted.extend(zip(built.tf, built.symbol, built.ts.tolist(), strict=True))
        collect(got, built)

    step([("AAA", T0 + 100, 10.0, 1.0), ("BBB", T0 + 200, 20.0, 1.0)], wall=0)
    assert emitted == []  # nothing has closed
    # BBB trades on; AAA is quiet. Once the clock passes 1s, AAA's 1s bar closes too.
    step([("BBB", T0 + 1_050, 21.0, 1.0)], wall=0)
    assert ("1s", "AAA", T0) in emitted and ("1s", "BBB", T0) in emitted
    # a late AAA trade inside the grace window: the same bar again, corrected
    step([("AAA", T0 + 900, 9.0, 2.0)], wall=0)
    assert emitted.count(("1s", "AAA", T0)) == 2
    assert got[("1s", "AAA", T0)] == (10.0, 10.0, 9.0, 9.0, 3.0)
    # the whole feed goes quiet: wall time moves the clock; the minute closes by itself
    emitted.clear()
    collect(got, b.sweep(59_000))  # clock = T0 + 1_050 + 59_000 > T0 + 60_000
    assert got[("1m", "AAA", T0)] == (10.0, 10.0, 9.0, 9.0, 3.0)
    assert got[("1m", "BBB", T0)] == (20.0, 21.0, 20.0, 21.0, 2.0)
    # a trade for the first second, now far beyond its grace: counted and dropped
    step([("AAA", T0 + 500, 1.0, 1.0)], wall=59_000)
    assert b.dropped == {"1s": 1, "1m": 0}  # the minute is still within its grace
    assert got[("1m", "AAA", T0)] == (10.0, 10.0, 1.0, 9.0, 4.0)


def test_daily_bars_follow_the_session():
    b = BarBuilder(("1m", "1d"), grace_ms=0, session=Session())
    pre, during, after = T0 - 3_600_000, T0 + 60_000, T0 + 7 * 3_600_000  # 08:30, 09:31, 16:30
    got: dict = {}
    collect(got, b.apply(["AAA"] * 3, np.array([pre, during, after]),
                         np.array([5.0, 10.0, 50.0]), np.ones(3), 0))  # fmt: skip
    day = T0 - T0 % DAY_MS
    assert got[("1d", "AAA", day)] == (10.0, 10.0, 10.0, 10.0, 1.0)  # only the session trade
    assert ("1m", "AAA", pre) in got and ("1m", "AAA", after - after % 60_000) not in got
    # the close came at 16:00, not at midnight: after-hours trades never reach the bar
    saturday = T0 + 5 * DAY_MS
    collect(got, b.apply(["AAA"], np.array([saturday]), np.array([7.0]), np.ones(1), 0))
    collect(got, b.sweep(FAR))
    assert not any(k[0] == "1d" and k[2] == saturday - saturday % DAY_MS for k in got)
