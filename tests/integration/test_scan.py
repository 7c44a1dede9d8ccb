"""Scans against the local broker, Redis and MongoDB server: results, progress, cancel,
resume and redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from technic_stream.config import Settings
from technic_stream.kafka import Producer
from technic_stream.marketdata.archiver import run_backfill
from technic_stream.marketdata.replay import ReplayConfig
from technic_stream.marketdata.synth import SynthConfig, SyntheticMarket
from technic_stream.messages import ScanControl, ScanProgress, ScanRequest, decode, encode
from technic_stream.redis import redis_client
from technic_stream.rules import compile_rules, parse_rule
from technic_stream.scan.service import ScanWorker, scanner_service
from technic_stream.storage import mongo_client
from technic_stream.storage.bars import BarArchive
from technic_stream.storage.scans import INLINE_SYMBOLS
from technic_stream.topics import topic_name
from tests.integration.engine_helpers import wait_for
from tests.integration.helpers import read_topic, run_cli, running_service
from tests.rules.reference import evaluate

SAMPLE = ("AAPL", "FB", "GOOG", "IBM", "MSFT")
START_2012 = int(datetime(2012, 1, 1, tzinfo=UTC).timestamp() * 1000)


def running_scanner(settings: Settings) -> contextlib.AbstractAsyncContextManager[ScanWorker]:
    return running_service(scanner_service, settings)


async def submit(settings: Settings, req: ScanRequest) -> None:
    async with Producer(settings) as producer:
        topic = topic_name(settings.topic_prefix, "scan.requests")
        await producer.send_and_wait(topic, encode(req), key=req.scan_id.encode())


async def cancel(settings: Settings, scan_id: str, owner: str) -> None:
    ctl = ScanControl(scan_id=scan_id, owner=owner, action="cancel", ts=int(time.time() * 1000))
    async with Producer(settings) as producer:
        topic = topic_name(settings.topic_prefix, "scan.control")
        await producer.send_and_wait(topic, encode(ctl), key=scan_id.encode())


async def scan_doc(settings: Settings, scan_id: str, *, final: bool = True, within: float = 60):
    mongo = mongo_client(settings)
    try:
        async with asyncio.timeout(within):
            while True:
                doc = await mongo[settings.mongo_db]["scans"].find_one({"_id": scan_id})
                if doc is not None and (not final or doc.get("status") in
                                        ("done", "failed", "cancelled")):  # fmt: skip
                    return doc
                await asyncio.sleep(0.05)
    finally:
        await mongo.close()


def request(scan_id: str, rule: str, **kw) -> ScanRequest:
    return ScanRequest(scan_id=scan_id, owner="alice", rule=rule, ts=int(time.time() * 1000), **kw)


async def reference_matches(
    settings: Settings, rule_text: str, symbols, tf: str, start: int, *, last_only: bool = False
) -> list[tuple[str, int, float]]:
    """Every (symbol, ts, score) where the plain-Python reference evaluator says the rule
    holds, on the indicator columns of the archived series."""
    rule = parse_rule(rule_text)
    rs = compile_rules([rule])
    mongo = mongo_client(settings)
    out = []
    try:
        archive = BarArchive(mongo[settings.mongo_db])
        for s in symbols:
            bars = await archive.read(s, tf)
            n = len(bars["ts"])
            cols = {k: v.tolist() for k, v in rs.series_columns(bars).items()}
            cond, score = evaluate(rule, cols, n)
            rng = [n - 1] if last_only else range(n)
            for t in rng:
                if cond[t] == 1.0 and bars["ts"][t] >= start:
                    out.append((s, int(bars["ts"][t]), score[t]))
    finally:
        await mongo.close()
    return out


@pytest.fixture
async def sample_archive(settings):
    await run_backfill(settings, ReplayConfig(adjust="splits"), progress=None)
    return settings


async def test_history_scan_finds_exactly_what_the_reference_finds_ranked(sample_archive):
    settings = sample_archive.model_copy(update={"scan_chunk_symbols": 2})
    rule = "rsi(14) < 30 and close < sma(50) rank by volume desc"
    async with running_scanner(settings) as worker:
        await submit(settings, request("h1", rule, mode="history", start=START_2012,
                                       limit=10_000))  # fmt: skip
        doc = await scan_doc(settings, "h1")
        assert doc["status"] == "done", doc
        assert worker.computed["h1"] == 3  # 5 symbols, 2 per chunk
    expected = await reference_matches(settings, rule, SAMPLE, "1d", START_2012)
    assert len(expected) > 20
    got = [(m["symbol"], m["ts"], m["score"]) for m in doc["top"]]
    assert doc["total_matches"] == len(expected) and doc["symbols_scanned"] == 5
    assert sorted(got) == sorted(expected)
    scores = [s for _, _, s in got]
    assert scores == sorted(scores, reverse=True)  # rank by volume desc
    # progress: monotonic, at most the promised rate, ending at 100 % done
    records = await read_topic(settings, topic_name(settings.topic_prefix, "scan.progress"),
                               expect=4)  # fmt: skip
    events = [decode(r.value, ScanProgress) for r in records]
    percents = [e.percent for e in events]
    assert percents == sorted(percents) and events[-1].stage == "done"
    assert events[-1].percent == 100 and events[-1].done == events[-1].total == 5
    assert [e.stage for e in events][:1] == ["resolve_universe"]
    assert events[-1].matches == len(expected)


async def test_snapshot_scan_uses_the_engines_values_and_reports_unknown_symbols(sample_archive):
    settings = sample_archive
    rule = "rsi(14) < 30"
    redis = redis_client(settings)
    try:  # the engine's latest values for AAPL say oversold (the archive does not)
        await redis.hset(f"{settings.redis_prefix}ind:1d:AAPL",
                         mapping={"ts": 1, "rsi_14": 12.5})  # fmt: skip
    finally:
        await redis.aclose()
    async with running_scanner(settings):
        await submit(settings, request("s1", rule, symbols=[*SAMPLE, "NOPE"]))
        doc = await scan_doc(settings, "s1")
    assert doc["status"] == "done" and doc["unknown_symbols"] == ["NOPE"]
    expected = await reference_matches(settings, rule, SAMPLE[1:], "1d", 0, last_only=True)
    got = sorted((m["symbol"], m["ts"]) for m in doc["top"])
    assert got == sorted([("AAPL", 1), *((s, ts) for s, ts, _ in expected)])
    assert doc["top"][0]["values"] == {"rsi_14": 12.5}


async def test_an_invalid_rule_fails_the_scan_at_once_with_the_rule_error(settings):
    async with running_scanner(settings):
        await submit(settings, request("bad", "rsi(14) < < 30", symbols=["AAPL"]))
        doc = await scan_doc(settings, "bad")
    assert doc["status"] == "failed" and "column 11" in doc["error"]


async def _synthetic_archive(settings: Settings, symbols: int, days: int) -> list[str]:
    market = SyntheticMarket(SynthConfig(symbols=symbols, seed=3, tf="1d"))
    cols = [market.step() for _ in range(days)]
    mongo = mongo_client(settings)
    try:
        archive = BarArchive(mongo[settings.mongo_db])
        names = np.array(market.symbols)
        ts = np.concatenate([np.full(len(c.index), int(c.ts)) for c in cols])
        await archive.write(
            "1d", np.concatenate([names[c.index] for c in cols]), ts,
            *(np.concatenate([getattr(c, f) for c in cols]) for f in
              ("open", "high", "low", "close", "volume")),
        )  # fmt: skip
    finally:
        await mongo.close()
    return list(market.symbols)


async def test_cancel_stops_within_a_chunk_and_keeps_partial_results(settings):
    settings = settings.model_copy(update={"scan_chunk_symbols": 5})
    await _synthetic_archive(settings, 200, 150)
    async with running_scanner(settings):
        await submit(settings, request("c1", "close > sma(20)", mode="history", start=0))
        first = await read_topic(settings, topic_name(settings.topic_prefix, "scan.results"),
                                 expect=1)  # fmt: skip
        assert orjson.loads(first[0].value)["status"] == "partial"
        await cancel(settings, "c1", "alice")
        doc = await scan_doc(settings, "c1")
    assert doc["status"] == "cancelled"
    assert 0 < doc["symbols_scanned"] < 200  # stopped early, what it found is kept
    mongo = mongo_client(settings)
    try:
        chunks = await mongo[settings.mongo_db]["scan_chunks"].count_documents({"scan_id": "c1"})
    finally:
        await mongo.close()
    assert chunks == doc["symbols_scanned"] // 5 and doc["total_matches"] > 0


async def test_a_stopped_worker_resumes_from_checkpoints_and_a_done_scan_is_not_recomputed(
    settings,
):
    settings = settings.model_copy(update={"scan_chunk_symbols": 5})
    symbols = await _synthetic_archive(settings, 200, 150)
    req = request("r1", "close > sma(20) rank by close desc", mode="history", start=0,
                  limit=50)  # fmt: skip
    chunks_key = f"{settings.redis_prefix}scan:r1:chunks"
    redis = redis_client(settings)
    try:
        async with running_scanner(settings) as first:
            await submit(settings, req)
            await wait_for(lambda: first.computed["r1"] >= 3, "three chunks", within=30)
        # stopped mid-scan (SIGTERM's path): the request stayed uncommitted
        checkpointed = await redis.hlen(chunks_key)
        assert first.computed["r1"] == checkpointed  # each chunk computed once
        assert 3 <= checkpointed < 40
        async with running_scanner(settings) as second:
            doc = await scan_doc(settings, "r1")
            assert doc["status"] == "done"
            assert second.computed["r1"] == 40 - checkpointed  # only the rest
            before = second.last_jobs["r1"]
            await submit(settings, req)  # redelivered once more: answered from MongoDB
            await wait_for(lambda: second.last_jobs["r1"] is not before, "the rerun")
            await scan_doc(settings, "r1")
            assert second.computed["r1"] == 40 - checkpointed and await redis.hlen(chunks_key) == 40
    finally:
        await redis.aclose()
    expected = await reference_matches(settings, req.rule, symbols, "1d", 0)
    assert doc["total_matches"] == len(expected)
    top = sorted(expected, key=lambda m: (-m[2], m[0], m[1]))[:50]
    got = [(m["symbol"], m["ts"], m["score"]) for m in doc["top"]]
    assert [(s, t) for s, t, _ in got] == [(s, t) for s, t, _ in top]
    assert all(math.isclose(a[2], b[2]) for a, b in zip(got, top, strict=True))


async def _scan_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {"TECHNIC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "TECHNIC_TOPIC_PREFIX": settings.topic_prefix}  # fmt: skip
    return await run_cli("scan", *args, env=env)


async def test_the_scan_command_shows_progress_and_prints_the_ranked_table(sample_archive):
    settings = sample_archive
    rule = "close > sma(200) rank by close desc"
    async with running_scanner(settings):
        code, out, err = await _scan_cli(settings, rule, "--mode", "history", "--start",
                                         "2013-06-01", "--limit", "5", "--id", "cli1")  # fmt: skip
    assert code == 0, err
    assert "scan cli1 submitted" in err and "compute" in err and "done" in err
    rows = [line.split() for line in out.splitlines()[1:]]
    expected = await reference_matches(settings, rule, SAMPLE, "1d", day("2013-06-01"))
    best = sorted(expected, key=lambda m: (-m[2], m[0], m[1]))[:5]
    assert [(r[1], r[2]) for r in rows] == [
        (s, datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d")) for s, ts, _ in best
    ]
    assert f"done: {len(expected):,} matches in 5 symbols" in err
    code, _, err = await _scan_cli(settings, "rsi(14) <")
    assert code == 2 and "column" in err and "^" in err


def day(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)


async def test_loaded_bars_are_cached_until_the_archive_changes(sample_archive):
    settings = sample_archive
    rule = "close > sma(20)"
    async with running_scanner(settings):
        await submit(settings, request("k1", rule, mode="history", start=START_2012))
        first = await scan_doc(settings, "k1")
        await submit(settings, request("k2", rule, mode="history", start=START_2012))
        second = await scan_doc(settings, "k2")
        p1, p2 = first["progress"], second["progress"]
        assert (p1["cache_hits"], p1["cache_misses"]) == (0, 5)
        assert (p2["cache_hits"], p2["cache_misses"]) == (5, 0)
        assert second["total_matches"] == first["total_matches"] > 0
        # new bars for the timeframe: the cached arrays no longer answer
        mongo = mongo_client(settings)
        try:
            await BarArchive(mongo[settings.mongo_db]).write(
                "1d", ["IBM"], np.array([START_2012 * 2]), *(np.array([150.0]),) * 4,
                np.array([1e6]),
            )  # fmt: skip
        finally:
            await mongo.close()
        await submit(settings, request("k3", rule, mode="history", start=START_2012))
        third = await scan_doc(settings, "k3")
        assert third["progress"]["cache_misses"] == 5


async def test_kill_9_mid_scan_resumes_on_another_worker_without_recomputing_checkpoints(
    settings, tmp_path
):
    from technic_stream.local.service import ServiceChild

    symbols = await _synthetic_archive(settings, 200, 150)
    req = request("k9", "close > sma(20) rank by close desc", mode="history", start=0,
                  limit=20)  # fmt: skip
    chunks_key = f"{settings.redis_prefix}scan:k9:chunks"

    def worker(name: str) -> ServiceChild:
        return ServiceChild(
            settings, "scanner", tmp_path / f"{name}.log",
            TECHNIC_SCAN_CHUNK_SYMBOLS="5", TECHNIC_SCAN_WORKER_TTL_S="2",
        )  # fmt: skip

    async def until(cond, what: str, child: ServiceChild) -> None:
        async with asyncio.timeout(90):
            while not await cond():
                assert child.proc is not None and child.proc.returncode is None, child.log_tail()
                await asyncio.sleep(0.02)

    redis = redis_client(settings)
    first, second = worker("first"), worker("second")
    try:
        await first.start()
        await until(first.ready, "the first worker", first)
        await submit(settings, req)

        async def some_done() -> bool:
            return await redis.hlen(chunks_key) >= 4

        await until(some_done, "a few checkpointed chunks", first)
        first.signal(signal.SIGKILL)
        await first.wait()
        checkpointed = await redis.hlen(chunks_key)
        assert 4 <= checkpointed < 40
        await second.start()
        await until(second.ready, "the second worker", second)
        doc = await scan_doc(settings, "k9", within=90)
        assert doc["status"] == "done"
        computed = await second.metric("technic_scan_chunks_computed_total")
        assert computed == 40 - checkpointed  # the checkpointed chunks were not redone
    finally:
        for child in (first, second):
            if child.proc is not None and child.proc.returncode is None:
                child.signal(signal.SIGTERM)
                await asyncio.wait_for(child.wait(), 30)
        await redis.aclose()
    expected = await reference_matches(settings, req.rule, symbols, "1d", 0)
    assert doc["total_matches"] == len(expected) and doc["symbols_scanned"] == 200
    best = sorted(expected, key=lambda m: (-m[2], m[0], m[1]))[:20]
    assert [(m["symbol"], m["ts"]) for m in doc["top"]] == [(s, t) for s, t, _ in best]


async def test_two_workers_split_one_large_scans_chunks(settings):
    settings = settings.model_copy(update={"scan_chunk_symbols": 5})
    symbols = await _synthetic_archive(settings, 400, 200)
    req = request("two", "close > sma(20) rank by close desc", mode="history", start=0,
                  limit=20)  # fmt: skip
    async with running_scanner(settings) as a, running_scanner(settings) as b:

        def split() -> bool:  # both in both groups, the partitions shared out
            return (
                all(
                    len(w.consumers) == 2 and all(c.assignment() for c in w.consumers)
                    for w in (a, b)
                )
                and sum(len(w.consumers[1].assignment()) for w in (a, b)) == settings.partitions
            )

        await wait_for(split, "both workers in the groups", within=60)
        await submit(settings, req)
        doc = await scan_doc(settings, "two", within=90)
    assert doc["status"] == "done" and doc["symbols_scanned"] == 400
    # every chunk computed exactly once, and each worker computed a share of them
    assert a.computed["two"] + b.computed["two"] == 80
    assert a.computed["two"] >= 8 and b.computed["two"] >= 8, (a.computed, b.computed)
    expected = await reference_matches(settings, req.rule, symbols, "1d", 0)
    assert doc["total_matches"] == len(expected)
    best = sorted(expected, key=lambda m: (-m[2], m[0], m[1]))[:20]
    assert [(m["symbol"], m["ts"]) for m in doc["top"]] == [(s, t) for s, t, _ in best]


async def test_progress_carries_rate_and_eta_counting_down_to_done(settings):
    # how close the ETA comes to the time actually left is measured by bench/scan.py
    # (timing belongs in benchmarks); the estimator's arithmetic by tests/unit/test_scan_eta.py
    settings = settings.model_copy(update={"scan_chunk_symbols": 10, "scan_progress_hz": 20.0})
    await _synthetic_archive(settings, 300, 120)
    async with running_scanner(settings):
        await submit(settings, request("eta", "close > sma(50)", mode="history", start=0))
        doc = await scan_doc(settings, "eta", within=120)
        records = await read_topic(settings, topic_name(settings.topic_prefix, "scan.progress"),
                                   expect=10)  # fmt: skip
    assert doc["status"] == "done"
    events = [decode(r.value, ScanProgress) for r in records]
    computing = [e for e in events if e.stage == "compute" and e.done >= 30]
    assert computing and all(e.rate > 0 and e.eta_ms is not None for e in computing)
    # symbols left / rate: the ETA is the rest of the work at the measured pace
    for e in computing:
        assert e.eta_ms <= (e.total - e.done) / e.rate * 1000 + 1
    assert events[-1].stage == "done" and events[-1].eta_ms == 0


async def test_a_waiting_scan_is_told_its_queue_position(settings):
    settings = settings.model_copy(update={"scan_chunk_symbols": 5, "scan_concurrency": 1})
    await _synthetic_archive(settings, 100, 150)
    async with running_scanner(settings):
        for n in range(3):
            await submit(settings, request(f"q{n}", "close > sma(20)", mode="history", start=0))
        docs = [await scan_doc(settings, f"q{n}", within=90) for n in range(3)]
        records = await read_topic(settings, topic_name(settings.topic_prefix, "scan.progress"),
                                   expect=12)  # fmt: skip
    assert all(d["status"] == "done" for d in docs)
    events = [decode(r.value, ScanProgress) for r in records]
    queued = [e for e in events if e.stage == "queued"]
    # one slot and three scans: at least one waited and was told where it stood
    assert queued and all(e.queue_position is not None and e.queue_position >= 1 for e in queued)
    for scan_id in {e.scan_id for e in queued}:
        stages = [e.stage for e in events if e.scan_id == scan_id]
        assert stages[0] == "queued" and stages[-1] == "done"
        assert "queued" not in stages[stages.index("resolve_universe") :]
    assert {d["total_matches"] for d in docs} == {docs[0]["total_matches"]}


async def test_a_snapshot_of_a_generated_universe_matches_the_reference_ranked(settings):
    # half the symbols have the engine's latest values in Redis (written as the engine
    # writes them: the batch twins' last values), the rest answer from the archive
    rule = "rsi(14) < 50 and close > sma(20) rank by rsi(14) asc"
    symbols = await _synthetic_archive(settings, 120, 80)
    rs = compile_rules([rule])
    mongo, redis = mongo_client(settings), redis_client(settings)
    try:
        archive = BarArchive(mongo[settings.mongo_db])
        async with redis.pipeline(transaction=False) as pipe:
            for s in symbols[::2]:
                bars = await archive.read(s, "1d")
                cols = rs.series_columns(bars)
                pipe.hset(f"{settings.redis_prefix}ind:1d:{s}", mapping={
                    "ts": int(bars["ts"][-1]), **{c: float(v[-1]) for c, v in cols.items()},
                })  # fmt: skip
            await pipe.execute()
    finally:
        await mongo.close()
        await redis.aclose()
    async with running_scanner(settings):
        await submit(settings, request("snapgen", rule, symbols=symbols, limit=10_000))
        doc = await scan_doc(settings, "snapgen")
    assert doc["status"] == "done" and doc["symbols_scanned"] == 120
    expected = await reference_matches(settings, rule, symbols, "1d", 0, last_only=True)
    assert 0 < len(expected) < 120
    got = [(m["symbol"], m["ts"]) for m in doc["top"]]
    best = sorted(expected, key=lambda m: (m[2], m[0], m[1]))  # rsi ascending
    assert got == [(s, t) for s, t, _ in best]
    assert all(math.isclose(m["score"], e[2], rel_tol=1e-12)
               for m, e in zip(doc["top"], best, strict=True))  # fmt: skip


async def test_a_snapshot_of_thousands_of_symbols_from_the_engine_values_alone(settings):
    # more symbols than the scan document keeps inline: the whole list goes beside it
    n = INLINE_SYMBOLS + 200
    rng = np.random.default_rng(11)
    closes = rng.uniform(10, 200, n).round(4)
    closes[5] = float("nan")  # not ready: no match
    symbols = [f"V{i:05d}" for i in range(n)]
    redis = redis_client(settings)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for s, c in zip(symbols, closes.tolist(), strict=True):
                pipe.hset(f"{settings.redis_prefix}ind:1d:{s}",
                          mapping={"ts": 1_700_000_000_000, "close": repr(c)})  # fmt: skip
            await pipe.execute()
    finally:
        await redis.aclose()
    async with running_scanner(settings):
        await submit(settings, request("snapmany", "close > 150 rank by close desc",
                                       symbols=symbols, limit=10_000))  # fmt: skip
        doc = await scan_doc(settings, "snapmany")
    assert doc["status"] == "done" and doc["symbols_scanned"] == n
    order = sorted((i for i in range(n) if closes[i] > 150), key=lambda i: -closes[i])
    assert [m["symbol"] for m in doc["top"]] == [symbols[i] for i in order]
    assert [m["score"] for m in doc["top"]] == [closes[i] for i in order]
    assert doc["request"]["symbols_count"] == n
    mongo = mongo_client(settings)
    try:
        kept = await mongo[settings.mongo_db]["scan_symbols"].find_one({"_id": "snapmany"})
    finally:
        await mongo.close()
    assert kept is not None and kept["symbols"] == symbols
