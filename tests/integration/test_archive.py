"""Replay → Kafka → archiver → MongoDB buckets, and backfill, against the real servers."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import orjson
import pytest

from technic_stream.app.ops import OpsServer
from technic_stream.marketdata.archiver import archiver_service, run_backfill
from technic_stream.marketdata.replay import ReplayConfig, load_replay, run_replay
from technic_stream.messages import Alert, ScanMatch, ScanResult, alert_id, encode
from technic_stream.storage import mongo_client
from technic_stream.storage.bars import BarArchive
from technic_stream.topics import topic_name
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.timeout(240)


async def _archive_contents(settings, symbols) -> dict[str, dict[str, np.ndarray]]:
    mongo = mongo_client(settings)
    try:
        archive = BarArchive(mongo[settings.mongo_db])
        return {s: await archive.read(s, "1d") for s in symbols}
    finally:
        await mongo.close()


def _source(data) -> dict[str, dict[str, np.ndarray]]:
    b = data.bars
    out = {}
    for sym in sorted(set(b.symbol.tolist())):
        m = b.symbol == sym
        out[sym] = {f: getattr(b, f)[m] for f in ("ts", "open", "high", "low", "close", "volume")}
    return out


def _assert_same(archived, source) -> None:
    assert archived.keys() == source.keys()
    for sym, cols in source.items():
        for f, want in cols.items():
            got = archived[sym][f]
            assert got.shape == want.shape, (sym, f)
            assert np.array_equal(got, want), (sym, f)  # bit-exact through JSON and BSON


async def _until(predicate, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.25)


async def test_replayed_sample_is_archived_row_for_row(settings):
    config = ReplayConfig(adjust="splits", fmt="batch")
    data = load_replay(config)
    source = _source(data)
    stop = asyncio.Event()
    async with OpsServer("127.0.0.1", 0) as ops:
        service = asyncio.create_task(archiver_service(settings, stop, ops))
        report = await run_replay(settings, config, data=data, progress=io.StringIO())
        assert report.bars == 12_154 and report.skipped == 0

        # a bad record and a scan result and an alert go through the same process
        bars_topic = topic_name(settings.topic_prefix, "md.bars")
        from technic_stream.kafka import Producer

        fired = Alert(
            alert_id=alert_id("r1", "AAPL", "1d", 1), rule_id="r1", owner="u1",
            symbol="AAPL", tf="1d", ts=1, fired_at=2, close=10.0,
        )  # fmt: skip
        result = ScanResult(
            scan_id="s1", owner="u1", status="done", total_matches=1, symbols_scanned=5, ts=3,
            matches=[ScanMatch(symbol="IBM", ts=1, score=2.5)],
        )  # fmt: skip
        async with Producer(settings) as producer:
            bad = {"type": "bar", "v": 1, "symbol": "AAPL", "tf": "1d", "ts": 5}
            await producer.send(bars_topic, orjson.dumps(bad), key=b"AAPL")
            for _ in range(2):  # redelivered: stored once
                await producer.send(
                    topic_name(settings.topic_prefix, "alerts.fired"), encode(fired), key=b"u1"
                )
                await producer.send(
                    topic_name(settings.topic_prefix, "scan.results"), encode(result), key=b"s1"
                )
            await producer.flush()

        mongo = mongo_client(settings)
        db = mongo[settings.mongo_db]

        async def archived_everything() -> bool:
            n = 0
            async for doc in db["bars"].find({"tf": "1d"}, {"n": 1}):
                n += doc["n"]
            return n == 12_154 and await db["alerts"].count_documents({}) == 1

        try:
            await _until(archived_everything)
            await _until(lambda: _ready(ops))
            assert await db["scan_results"].count_documents({}) == 1
            stored = await db["scan_results"].find_one({"_id": "s1:final"})
            assert stored["matches"][0]["symbol"] == "IBM"
            assert (await db["alerts"].find_one({"_id": fired.alert_id}))["rule_id"] == "r1"
        finally:
            await mongo.close()
        stop.set()
        await asyncio.wait_for(service, 30)

    _assert_same(await _archive_contents(settings, source), source)
    dlq = await read_topic(settings, topic_name(settings.topic_prefix, "dlq"), expect=1)
    assert len(dlq) == 1
    headers = dict(dlq[0].headers)
    assert headers["error-reason"] == b"missing field(s) ['close', 'high', 'low', 'open', 'volume']"


async def _ready(ops: OpsServer) -> bool:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"{ops.url}/readyz") as r:
        return r.status == 200


async def test_backfill_equals_the_source_and_is_idempotent(settings):
    config = ReplayConfig(adjust="full")
    data = load_replay(config)
    source = _source(data)
    first = await run_backfill(settings, config, chunk_rows=3_000, progress=io.StringIO())
    assert first.bars == 12_154 and first.buckets_written > 0
    again = await run_backfill(settings, config, progress=io.StringIO())
    assert again.buckets_written == 0  # nothing changed, nothing written
    _assert_same(await _archive_contents(settings, source), source)


async def test_corrections_replace_and_concurrent_writers_lose_nothing(settings):
    mongo = mongo_client(settings)
    try:
        db = mongo[settings.mongo_db]
        a, b = BarArchive(db), BarArchive(db)
        day = 86_400_000
        ts = np.arange(10, dtype=np.int64) * day
        px = np.full(10, 10.0)
        await a.write("1d", ["X"] * 10, ts, px, px + 1, px - 1, px, px)
        await b.read("X", "1d")  # b now caches nothing: reads on write
        # b corrects bar 3 and adds bar 10; a (stale cache) corrects bar 5 afterwards
        await b.write(
            "1d", ["X", "X"], np.array([3 * day, 10 * day]), *([np.array([20.0, 30.0])] * 5)
        )
        stats = await a.write("1d", ["X"], ts[[5]], *([np.array([50.0])] * 5))
        assert stats.retries == 1
        got = await a.read("X", "1d")
        assert got["ts"].tolist() == [i * day for i in range(11)]
        assert got["close"].tolist() == [10, 10, 10, 20, 10, 50, 10, 10, 10, 10, 30]
    finally:
        await mongo.close()
