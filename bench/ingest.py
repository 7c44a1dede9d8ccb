"""Ingest: synthetic producer throughput (JSON bars vs BarBatch, trades) and archiver
bars/s into the MongoDB-protocol server, against naive peers in the same run.

    .venv/bin/python bench/ingest.py [--symbols 2000] [--steps 20] [--repeats 3]

Starts the local stack (tansu, Redis, nx-27017) itself. Contenders:

- Producer: ``technic-stream synth`` as one JSON Bar per message, as BarBatch, and as
  trades; the peer is the obvious producer loop — build a pydantic ``Bar`` per bar,
  ``encode`` it and send it — over the same bars and the same aiokafka producer.
- Archive: :class:`BarArchive` (bucket per symbol/day, merged arrays, bulk writes) over
  the same 1m bars as the peer, one document per bar upserted with ``UpdateOne`` (the
  usual schema), via bulk_write in batches of 5,000 (ours) and 500 bars (the peer,
  over the first ``--peer-bars`` bars: on nx-27017 it is too slow for more). Then the whole archiver
  process end to end: BarBatch messages on ``md.bars`` → archived and committed.

Medians of ``--repeats`` runs; every run uses fresh topics and a fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import UpdateOne  # noqa: E402

from technic_stream.app.ops import OpsServer  # noqa: E402
from technic_stream.config import Settings  # noqa: E402
from technic_stream.kafka import Producer, ensure_topics  # noqa: E402
from technic_stream.local import LocalStack  # noqa: E402
from technic_stream.marketdata.archiver import archiver_service  # noqa: E402
from technic_stream.marketdata.run import run_synth  # noqa: E402
from technic_stream.marketdata.synth import SynthConfig, SyntheticMarket  # noqa: E402
from technic_stream.messages import Bar, encode  # noqa: E402
from technic_stream.storage import mongo_client  # noqa: E402
from technic_stream.storage.bars import BarArchive  # noqa: E402
from technic_stream.topics import topic_name  # noqa: E402


async def fresh(base: Settings) -> Settings:
    u = uuid.uuid4().hex[:8]
    s = base.model_copy(update={"topic_prefix": f"b{u}.", "mongo_db": f"b{u}"})
    await ensure_topics(s)
    return s


async def pydantic_peer(settings: Settings, config: SynthConfig, steps: int) -> float:
    """bars/s of the naive producer: a pydantic Bar per bar, encode, send."""
    market = SyntheticMarket(config)
    topic = topic_name(settings.topic_prefix, "md.bars")
    n = 0
    t0 = time.perf_counter()
    async with Producer(settings) as producer:
        for _ in range(steps):
            cols = market.step()
            for j, i in enumerate(cols.index.tolist()):
                bar = Bar(
                    symbol=market.symbols[i], tf="1m", ts=int(cols.ts), open=float(cols.open[j]),
                    high=float(cols.high[j]), low=float(cols.low[j]),
                    close=float(cols.close[j]), volume=float(cols.volume[j]),
                )  # fmt: skip
                await producer.send(topic, encode(bar), key=bar.symbol.encode())
                n += 1
        await producer.flush()
    return n / (time.perf_counter() - t0)


def bars_for_archive(symbols: int, steps: int) -> dict[str, np.ndarray]:
    market = SyntheticMarket(SynthConfig(symbols=symbols, seed=5))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("symbol", "ts", "o", "h", "l", "c", "v")}
    names = np.array(market.symbols, dtype=object)
    for _ in range(steps):
        cols = market.step()
        parts["symbol"].append(names[cols.index])
        parts["ts"].append(np.full(len(cols), cols.ts, dtype=np.int64))
        for k, arr in zip("ohlcv", (cols.open, cols.high, cols.low, cols.close, cols.volume),
                          strict=True):  # fmt: skip
            parts[k].append(arr)
    return {k: np.concatenate(v) for k, v in parts.items()}


async def archive_ours(settings: Settings, bars: dict[str, np.ndarray], batch: int) -> float:
    mongo = mongo_client(settings)
    try:
        archive = BarArchive(mongo[settings.mongo_db])
        await archive.ensure_indexes()
        n = bars["ts"].shape[0]
        t0 = time.perf_counter()
        for lo in range(0, n, batch):
            sl = slice(lo, lo + batch)
            cols = [bars[k][sl] for k in ("symbol", "ts", "o", "h", "l", "c", "v")]
            await archive.write("1m", *cols)
        return n / (time.perf_counter() - t0)
    finally:
        await mongo.close()


async def archive_peer(
    settings: Settings, bars: dict[str, np.ndarray], batch: int, limit: int
) -> float:
    """bars/s of one upserted document per bar (over the first ``limit`` bars: it is slow)."""
    mongo = mongo_client(settings)
    try:
        col = mongo[settings.mongo_db]["bars_flat"]
        await col.create_index([("symbol", 1), ("tf", 1), ("ts", 1)], unique=True)
        n = min(limit, bars["ts"].shape[0])
        t0 = time.perf_counter()
        for lo in range(0, n, batch):
            ops = []
            for i in range(lo, min(lo + batch, n)):
                key = {"symbol": bars["symbol"][i], "tf": "1m", "ts": int(bars["ts"][i])}
                doc = {"open": float(bars["o"][i]), "high": float(bars["h"][i]),
                       "low": float(bars["l"][i]), "close": float(bars["c"][i]),
                       "volume": float(bars["v"][i])}  # fmt: skip
                ops.append(UpdateOne(key, {"$set": doc}, upsert=True))
            await col.bulk_write(ops, ordered=False)
        return n / (time.perf_counter() - t0)
    finally:
        await mongo.close()


async def archiver_end_to_end(settings: Settings, config: SynthConfig, steps: int) -> float:
    """bars/s from the first BarBatch sent on md.bars (the archiver already in its group)
    until the last bar is archived."""
    mongo = mongo_client(settings)
    stop = asyncio.Event()
    try:
        db = mongo[settings.mongo_db]
        async with OpsServer("127.0.0.1", 0) as ops:
            task = asyncio.create_task(archiver_service(settings, stop, ops))
            while True:  # joined its group and holds the partitions
                try:
                    await ops.checks["archiver"]()
                    break
                except (KeyError, RuntimeError):
                    await asyncio.sleep(0.1)
            t0 = time.perf_counter()
            report = await run_synth(settings, config, steps=steps, fmt="batch", progress=None)
            while True:
                n = 0
                async for doc in db["bars"].find({}, {"n": 1}):
                    n += doc["n"]
                if n >= report.bars:
                    break
                await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - t0
            stop.set()
            await task
        return report.bars / elapsed
    finally:
        await mongo.close()


def med(xs: list[float]) -> float:
    return statistics.median(xs)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=2_000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-bars", type=int, default=3_000, help="bars the slow peer writes")
    args = ap.parse_args()
    base_cfg = Settings(ops_port=0, partitions=8, log_level="WARNING")
    with LocalStack(base_cfg) as stack:
        base = stack.settings
        config = SynthConfig(symbols=args.symbols, seed=7)
        results: dict[str, list[float]] = {}

        def add(name: str, value: float) -> None:
            results.setdefault(name, []).append(value)

        for _ in range(args.repeats):
            for fmt in ("bars", "batch", "trades"):
                s = await fresh(base)
                r = await run_synth(s, config, steps=args.steps, fmt=fmt, progress=io.StringIO())
                add(f"synth {fmt}", (r.trades if fmt == "trades" else r.bars) / r.seconds)
            add("peer pydantic Bar per message", await pydantic_peer(await fresh(base), config,
                                                                     args.steps))  # fmt: skip
            bars = bars_for_archive(args.symbols // 4, args.steps * 4)
            add("archive BarArchive (buckets)", await archive_ours(await fresh(base), bars, 5_000))
            add("archive peer (doc per bar, upsert)",
                await archive_peer(await fresh(base), bars, 500, args.peer_bars))  # fmt: skip
            add("archiver process end to end",
                await archiver_end_to_end(await fresh(base), config, args.steps))  # fmt: skip
    print(f"# ingest — {platform.processor() or platform.machine()}, "
          f"{args.symbols} symbols x {args.steps} steps, median of {args.repeats}\n")  # fmt: skip
    print("| path | per second (median) | runs |")
    print("|---|---:|---|")
    for name, xs in results.items():
        unit = "trades" if "trades" in name else "bars"
        runs = ", ".join(f"{x:,.0f}" for x in xs)
        print(f"| {name} | {med(xs):,.0f} {unit}/s | {runs} |")
    json_rate = med(results["synth bars"])
    print()
    print(f"- BarBatch vs JSON Bar messages: {med(results['synth batch']) / json_rate:.1f}x")
    print(f"- JSON Bar (orjson from columns) vs pydantic peer: "
          f"{json_rate / med(results['peer pydantic Bar per message']):.1f}x")  # fmt: skip
    ours = med(results["archive BarArchive (buckets)"])
    peer = med(results["archive peer (doc per bar, upsert)"])
    print(f"- bucketed archive vs document-per-bar upserts: {ours / peer:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
