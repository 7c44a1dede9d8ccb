"""`technic-stream synth` through the real broker: everything it sends decodes strictly."""

from __future__ import annotations

import io

from technic_stream.marketdata.publish import partition_of
from technic_stream.marketdata.run import run_synth
from technic_stream.marketdata.synth import SynthConfig, SyntheticMarket
from technic_stream.messages import Bar, BarBatch, Trade, decode
from tests.integration.helpers import read_topic


async def test_bars_arrive_valid_keyed_and_in_order(settings):
    config = SynthConfig(symbols=20, seed=5)
    report = await run_synth(settings, config, steps=15, fmt="bars", progress=io.StringIO())
    records = await read_topic(settings, report.topic, expect=report.bars)
    assert len(records) == report.bars == report.messages
    bars = [decode(r.value, Bar) for r in records]
    assert all(r.key == b.symbol.encode() for r, b in zip(records, bars, strict=True))
    expected = SyntheticMarket(config)
    want = {}
    for _ in range(15):
        cols = expected.step()
        for j, i in enumerate(cols.index):
            want[(expected.symbols[i], cols.ts)] = float(cols.close[j])
    assert {(b.symbol, b.ts): b.close for b in bars} == want
    for sym in {b.symbol for b in bars}:  # one partition per symbol, in time order
        ts = [b.ts for b in bars if b.symbol == sym]
        assert ts == sorted(ts)


async def test_bar_batches_never_mix_partitions(settings):
    config = SynthConfig(symbols=300, seed=8)
    report = await run_synth(settings, config, steps=5, fmt="batch", progress=io.StringIO())
    records = await read_topic(settings, report.topic, expect=report.messages)
    assert len(records) == report.messages
    batches = [decode(r.value, BarBatch) for r in records]
    assert sum(len(b) for b in batches) == report.bars
    parts = settings.partitions
    for r, b in zip(records, batches, strict=True):
        assert set(partition_of(b.symbols, parts).tolist()) == {r.partition}
        assert r.key == b.symbols[0].encode()


async def test_trades_arrive_valid(settings):
    config = SynthConfig(symbols=10, seed=2)
    report = await run_synth(settings, config, steps=3, fmt="trades", progress=io.StringIO())
    assert report.topic.endswith("md.trades") and report.trades > 3 * 10 * 4 * 0.5
    records = await read_topic(settings, report.topic, expect=report.trades)
    trades = [decode(r.value, Trade) for r in records]
    assert len(trades) == report.trades
