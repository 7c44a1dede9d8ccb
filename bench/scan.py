"""Scans end to end: history scans cold (MongoDB) and warm (Redis cache), snapshot scans.

    .venv/bin/python bench/scan.py [--symbols 5000] [--bars 252] [--snapshot 10000] [--runs 3]
        [--chunk-symbols N] [--no-workers2]

Starts the local servers, writes ``--symbols`` generated symbols x ``--bars`` daily bars
into the archive, runs ``technic-stream scanner`` as its own process (then a second one,
for the cold scan on two workers), and times each scan from sending its ``ScanRequest`` to
reading its final ``ScanResult`` on ``scan.results``; the ETA shown at 40-60 % is
compared with the time that was actually left. Cold runs start with the cache
invalidated (a write to the archive bumps the timeframe's generation); warm runs repeat the
scan with everything cached. The snapshot scan reads the engine's latest values for
``--snapshot`` symbols from Redis (written here the way the engine writes them).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from technic_stream.config import Settings  # noqa: E402
from technic_stream.kafka import Producer, ensure_topics  # noqa: E402
from technic_stream.local import LocalStack  # noqa: E402
from technic_stream.local.service import ServiceChild  # noqa: E402
from technic_stream.marketdata.synth import SynthConfig, SyntheticMarket  # noqa: E402
from technic_stream.messages import ScanProgress, ScanRequest, ScanResult, decode, encode  # noqa: E402
from technic_stream.redis import redis_client  # noqa: E402
from technic_stream.storage import mongo_client  # noqa: E402
from technic_stream.storage.bars import BarArchive  # noqa: E402
from technic_stream.topics import topic_name  # noqa: E402

FINAL = ("done", "failed", "cancelled")
RULE = "rsi(14) < 45 and close > sma(50) rank by volume desc"
SNAPSHOT_RULE = "rsi_14 < 30 and close > sma_50"  # written below as the engine would


async def fill_archive(settings: Settings, symbols: int, bars: int) -> tuple[list[str], int]:
    market = SyntheticMarket(SynthConfig(symbols=symbols, seed=5, tf="1d"))
    steps = [market.step() for _ in range(bars)]
    names = np.array(market.symbols)
    mongo = mongo_client(settings)
    t0 = time.perf_counter()
    try:
        archive = BarArchive(mongo[settings.mongo_db])
        await archive.ensure_indexes()
        per = max(1, 60_000 // bars)  # symbols per write call
        for lo in range(0, symbols, per):
            hi = min(symbols, lo + per)
            sel = [(c, (c.index >= lo) & (c.index < hi)) for c in steps]
            await archive.write(
                "1d",
                np.concatenate([names[c.index[m]] for c, m in sel]),
                np.concatenate([np.full(int(m.sum()), int(c.ts)) for c, m in sel]),
                *(np.concatenate([getattr(c, f)[m] for c, m in sel])
                  for f in ("open", "high", "low", "close", "volume")),
            )  # fmt: skip
    finally:
        await mongo.close()
    print(f"  archive: {symbols:,} symbols x {bars} bars in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)  # fmt: skip
    return list(market.symbols), int(steps[bars // 3].ts)


async def invalidate(settings: Settings, i: int) -> None:
    """Write a new bar (a different one each time: an identical bar writes nothing)."""
    mongo = mongo_client(settings)
    try:
        await BarArchive(mongo[settings.mongo_db]).write(
            "1d", ["ZZBENCH"], np.array([86_400_000 * (i + 1)]), *(np.array([1.0]),) * 4,
            np.array([1.0]),
        )  # fmt: skip
    finally:
        await mongo.close()


async def timed_scan(
    settings: Settings, req: ScanRequest, scanner: ServiceChild, within: float = 300
) -> tuple[tuple[float, ScanResult], list[ScanProgress]]:
    try:
        return await asyncio.wait_for(_followed_scan(settings, req), within)
    except TimeoutError:
        raise TimeoutError(f"no result for {req.scan_id} in {within} s; the scanner's log:\n"
                           f"{scanner.log_tail()}") from None  # fmt: skip


async def _followed_scan(
    settings: Settings, req: ScanRequest
) -> tuple[tuple[float, ScanResult], list[ScanProgress]]:
    """Send ``req``; the seconds to its final result, the result, and its progress events."""
    topics = [topic_name(settings.topic_prefix, t) for t in ("scan.results", "scan.progress")]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, fetch_max_wait_ms=5)  # fmt: skip
    await consumer.start()
    progress: list[ScanProgress] = []
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics
               for p in sorted(consumer.partitions_for_topic(t) or [])]  # fmt: skip
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        async with Producer(settings) as producer:
            t0 = time.perf_counter()
            await producer.send_and_wait(topic_name(settings.topic_prefix, "scan.requests"),
                                         encode(req), key=req.scan_id.encode())  # fmt: skip
            result: tuple[float, ScanResult] | None = None
            # timed to the final result; the last progress event (status) comes just after
            while result is None or not progress or progress[-1].stage not in FINAL:
                batch = await consumer.getmany(timeout_ms=50)
                for tp, records in batch.items():
                    for r in records:
                        if r.key != req.scan_id.encode():
                            continue
                        if tp.topic == topics[1]:
                            progress.append(decode(r.value, ScanProgress))
                            continue
                        res = decode(r.value, ScanResult)
                        if res.status != "partial":
                            result = (time.perf_counter() - t0, res)
            return result, progress
    finally:
        await consumer.stop()


def eta_error(progress: list[ScanProgress]) -> float | None:
    """Median relative error of the ETAs shown at 40-60 % against the time that was left
    (progress timestamps are the worker's clock, so both ends are measured alike)."""
    end = next((p for p in progress if p.stage == "done"), None)
    around = [p for p in progress if p.stage in ("load_data", "compute") and 40 <= p.percent <= 60]
    if end is None:
        return None
    errors = [abs(p.eta_ms - (end.ts - p.ts)) / max(1, end.ts - p.ts)
              for p in around if p.eta_ms is not None]  # fmt: skip
    return statistics.median(errors) if errors else None


async def snapshot_values(settings: Settings, n: int) -> list[str]:
    rng = np.random.default_rng(1)
    redis = redis_client(settings)
    names = [f"SNAP{i:05d}" for i in range(n)]
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for s in names:
                pipe.hset(f"{settings.redis_prefix}ind:1d:{s}", mapping={
                    "ts": 1_700_000_000_000, "close": float(rng.uniform(10, 500)),
                    "rsi_14": float(rng.uniform(5, 95)), "sma_50": float(rng.uniform(10, 500)),
                    "volume": float(rng.uniform(1e4, 1e7)),
                })  # fmt: skip
            await pipe.execute()
    finally:
        await redis.aclose()
    return names


def req(scan_id: str, rule: str, **kw: object) -> ScanRequest:
    return ScanRequest(scan_id=scan_id, owner="bench", rule=rule, ts=int(time.time() * 1000),
                       limit=100, **kw)  # type: ignore[arg-type]  # fmt: skip


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=5_000)
    ap.add_argument("--bars", type=int, default=252)
    ap.add_argument("--snapshot", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chunk-symbols", type=int, default=Settings().scan_chunk_symbols)
    ap.add_argument("--no-workers2", dest="workers2", action="store_false",
                    help="skip the cold scans with two workers")  # fmt: skip
    args = ap.parse_args()
    base = Settings(ops_port=0, log_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp, LocalStack(base) as stack:
        settings = stack.settings.model_copy(update={"topic_prefix": "bench.",
                                                     "redis_prefix": "bench:",
                                                     "mongo_db": "bench"})  # fmt: skip
        await ensure_topics(settings)
        _, start = await fill_archive(settings, args.symbols, args.bars)
        snap = await snapshot_values(settings, args.snapshot)

        async def start_scanner(name: str) -> ServiceChild:
            child = ServiceChild(settings, "scanner", Path(tmp) / f"{name}.log",
                                 TECHNIC_LOG_LEVEL="WARNING",
                                 TECHNIC_SCAN_CHUNK_SYMBOLS=str(args.chunk_symbols))  # fmt: skip
            await child.start()
            deadline = time.monotonic() + 60
            while not await child.ready():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"scanner not ready:\n{child.log_tail()}")
                await asyncio.sleep(0.2)
            return child

        scanner = await start_scanner("scanner")
        second: ServiceChild | None = None
        try:
            cold, warm, snapshot, etas = [], [], [], []
            for i in range(args.runs):
                await invalidate(settings, i)
                history = {"universe": "all", "mode": "history", "start": start}
                (t, res), progress = await timed_scan(settings, req(f"cold{i}", RULE, **history),
                                                      scanner)  # fmt: skip
                cold.append(t)
                if (err := eta_error(progress)) is not None:
                    etas.append(err)
                else:
                    print(f"  (no ETA judged: {len(progress)} progress events, stages "
                          f"{sorted({p.stage for p in progress})})", file=sys.stderr)  # fmt: skip
                print(f"  cold {t:.2f} s: {res.total_matches:,} matches in "
                      f"{res.symbols_scanned:,} symbols", file=sys.stderr)  # fmt: skip
                (t, res2), _ = await timed_scan(settings, req(f"warm{i}", RULE, **history),
                                                scanner)  # fmt: skip
                assert res2.total_matches == res.total_matches
                warm.append(t)
                print(f"  warm {t:.2f} s", file=sys.stderr)
                rule = SNAPSHOT_RULE.replace("rsi_14", "rsi(14)").replace("sma_50", "sma(50)")
                (t, res3), _ = await timed_scan(settings, req(f"snap{i}", rule, symbols=snap),
                                                scanner)  # fmt: skip
                snapshot.append(t)
                print(f"  snapshot {t * 1000:.0f} ms: {res3.total_matches:,} of "
                      f"{res3.symbols_scanned:,}", file=sys.stderr)  # fmt: skip
            # the same cold scan with a second worker in the groups (chunks shared out)
            two: list[float] = []
            if args.workers2:
                second = await start_scanner("second")
                await asyncio.sleep(5)  # both workers' rebalances settle
                for i in range(args.runs):
                    await invalidate(settings, 100 + i)
                    (t, _), _ = await timed_scan(settings, req(f"two{i}", RULE, **history),
                                                 scanner)  # fmt: skip
                    two.append(t)
                    print(f"  cold, two workers {t:.2f} s", file=sys.stderr)
        finally:
            for child in (scanner, second):
                if child is not None:
                    child.signal(15)
                    await asyncio.wait_for(child.wait(), 60)
    print(f"\n{args.symbols:,} symbols x {args.bars} daily bars, rule `{RULE}`, "
          f"{args.runs} runs\n")  # fmt: skip
    print("| scan | median | runs | target |")
    print("|---|---:|---|---|")
    fmt = ", ".join
    print(f"| history, cold (MongoDB) | {statistics.median(cold):.2f} s | "
          f"{fmt(f'{x:.2f}' for x in cold)} | ≤ 10 s |")  # fmt: skip
    print(f"| history, warm (Redis cache) | {statistics.median(warm):.2f} s | "
          f"{fmt(f'{x:.2f}' for x in warm)} | ≤ 1 s |")  # fmt: skip
    print(f"| snapshot, {args.snapshot:,} symbols | {statistics.median(snapshot) * 1000:.0f} ms "
          f"| {fmt(f'{x * 1000:.0f}' for x in snapshot)} | ≤ 100 ms |")  # fmt: skip
    if two:
        speedup = statistics.median(cold) / statistics.median(two)
        print(f"| history, cold, two workers | {statistics.median(two):.2f} s | "
              f"{fmt(f'{x:.2f}' for x in two)} | {speedup:.2f}x one worker |")  # fmt: skip
    if etas:
        print(f"| ETA error at 50 %, cold scans | {statistics.median(etas) * 100:.1f} % | "
              f"{fmt(f'{x * 100:.1f}' for x in etas)} | ≤ 10 % |")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
