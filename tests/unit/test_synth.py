"""The synthetic market: seeded, valid bars, sessions with gaps, volume U, halts, trades."""

import numpy as np
import pytest

from technic_stream.marketdata.synth import SynthConfig, SyntheticMarket, split_into_trades
from technic_stream.messages import Bar


def run(config, steps):
    m = SyntheticMarket(config)
    return m, [m.step() for _ in range(steps)]


def test_same_seed_same_market_other_seed_other_market():
    _, a = run(SynthConfig(symbols=50, seed=3), 20)
    _, b = run(SynthConfig(symbols=50, seed=3), 20)
    _, c = run(SynthConfig(symbols=50, seed=4), 20)
    assert all(np.array_equal(x.close, y.close) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[-1].close, c[-1].close)


def test_every_bar_satisfies_the_wire_contract():
    m, steps = run(SynthConfig(symbols=30, seed=1, tf="5m"), 200)
    for cols in steps:
        for j, i in enumerate(cols.index):
            Bar(symbol=m.symbols[i], tf="5m", ts=cols.ts, open=float(cols.open[j]),
                high=float(cols.high[j]), low=float(cols.low[j]), close=float(cols.close[j]),
                volume=float(cols.volume[j]))  # fmt: skip


def test_sessions_run_on_weekdays_inside_market_hours_with_overnight_gaps():
    _, steps = run(SynthConfig(symbols=200, seed=2, tf="1m", start="2026-01-09"), 390 * 2)
    ts = np.array([s.ts for s in steps])
    first_day, second_day = ts[:390], ts[390:]
    assert np.all(np.diff(first_day) == 60_000) and np.all(np.diff(second_day) == 60_000)
    # 2026-01-09 is a Friday: the next session is Monday 2026-01-12, 14:30 UTC
    assert first_day[0] == 1_767_969_000_000 and second_day[0] == 1_768_228_200_000
    # within a session each bar opens at the previous close; across the night it gaps
    same = np.intersect1d(steps[10].index, steps[11].index)
    prev = dict(zip(steps[10].index, steps[10].close, strict=True))
    nxt = dict(zip(steps[11].index, steps[11].open, strict=True))
    assert all(nxt[i] == prev[i] for i in same)
    last = dict(zip(steps[389].index, steps[389].close, strict=True))
    opens = dict(zip(steps[390].index, steps[390].open, strict=True))
    both = [i for i in opens if i in last]
    assert sum(opens[i] != last[i] for i in both) > 0.9 * len(both)


def test_volume_is_u_shaped_over_the_session():
    _, steps = run(SynthConfig(symbols=500, seed=5, halt_rate=0.0), 390)
    per_minute = np.array([s.volume.sum() for s in steps])
    middle = per_minute[150:240].mean()
    assert per_minute[:15].mean() > 2 * middle and per_minute[-15:].mean() > 2 * middle


def test_halted_symbols_print_nothing_then_resume():
    _, steps = run(SynthConfig(symbols=300, seed=9, halt_rate=0.01, halt_bars=(5, 5)), 100)
    counts = np.zeros(300, dtype=int)
    for s in steps:
        counts[s.index] += 1
    assert counts.min() < 100 and counts.max() == 100  # some halted, not all
    halted = int(np.argmin(counts))
    seen = [halted in set(s.index.tolist()) for s in steps]
    gaps = np.diff(np.flatnonzero(seen))
    assert gaps.max() == 6  # a halt of 5 bars is a hole of 5


def test_trades_aggregate_back_to_exactly_the_bar():
    m = SyntheticMarket(SynthConfig(symbols=40, seed=11))
    cols = m.step()
    trades = split_into_trades(cols, m.tf_ms, np.random.default_rng(0))
    assert np.all(np.diff(trades.ts[trades.index == trades.index[0]]) > 0)
    for j, i in enumerate(cols.index):
        sel = trades.index == i
        if cols.volume[j] < 4:
            assert not sel.any()
            continue
        p, t = trades.price[sel], trades.ts[sel]
        assert t[0] == cols.ts and t[-1] < cols.ts + m.tf_ms
        assert (p[0], p.max(), p.min(), p[-1]) == (
            cols.open[j],
            cols.high[j],
            cols.low[j],
            cols.close[j],
        )
        assert trades.size[sel].sum() == cols.volume[j] and trades.size[sel].min() >= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tf": "7m"}, "timeframe '7m'"),
        ({"tf": "1w"}, "timeframe '1w'"),
        ({"symbols": 0}, "symbols must be between"),
        ({"tf": "4h"}, "390-minute session is not whole 4h bars"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(**kwargs)


def test_cli_refuses_bad_arguments_with_one_line(capsys):
    from technic_stream.cli import main

    assert main(["synth", "--tf", "7m"]) == 2
    assert "timeframe '7m'" in capsys.readouterr().err
    assert main(["synth", "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


class _Recorder:
    """Collects what BarPublisher hands to the producer (the splitting is pure code)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int | None]] = []

    async def send(self, topic, value, *, key=None, partition=None, headers=None):
        self.sent.append((value, partition))


async def test_bar_batches_stay_under_the_message_size_limit():
    from technic_stream.marketdata.publish import BarPublisher
    from technic_stream.messages import BarBatch, decode

    market = SyntheticMarket(SynthConfig(symbols=3_000, seed=1))
    cols = market.step()
    rec = _Recorder()
    pub = BarPublisher(rec, "t", market.symbols, "1m", partitions=2, max_bytes=20_000)  # type: ignore[arg-type]
    assert await pub.batch(cols) == len(cols)
    assert all(len(value) <= 20_000 for value, _ in rec.sent) and len(rec.sent) > 2
    batches = [decode(value, BarBatch, max_bytes=20_000) for value, _ in rec.sent]
    got = sorted(s for b in batches for s in b.symbols)
    assert got == sorted(market.symbols[i] for i in cols.index)
