"""Scale-out: 1, 2 and 3 engine processes in one consumer group, on the same bars.

    .venv/bin/python bench/scaleout.py [--symbols 1000] [--steps 500] [--out bench/results]

Each run gets fresh topics (8 partitions) holding the same generated bars (JSON, one per
message) and the ten live rules of ``bench/engine.py``; its engines start together (the
group rebalances as each joins); a last run starts three and stops one halfway (another
rebalance: its partitions move to the others, restored from their checkpoints).
Throughput is the bars in the topic over the time from the first processed batch until
the group has committed every bar (offsets are committed only once a bar's outputs are
written).

Exactness after every rebalance: a checksum over every symbol's Redis hash (all fields,
as stored) and the set of alert ids on ``alerts.fired`` must equal the 1-process run's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine import engine_child, fresh, send_rules, until  # noqa: E402

from technic_stream.config import Settings  # noqa: E402
from technic_stream.engine.service import ENGINE_GROUP  # noqa: E402
from technic_stream.local import LocalStack  # noqa: E402
from technic_stream.local.service import ServiceChild  # noqa: E402
from technic_stream.marketdata.run import run_synth  # noqa: E402
from technic_stream.marketdata.synth import SynthConfig  # noqa: E402
from technic_stream.redis import redis_client  # noqa: E402
from technic_stream.topics import group_name, topic_name  # noqa: E402


async def redis_checksum(settings: Settings) -> tuple[str, int]:
    """sha256 over every ``ind:*`` hash (sorted keys, sorted fields, raw values); count."""
    redis = redis_client(settings)
    try:
        keys = sorted([k async for k in redis.scan_iter(f"{settings.redis_prefix}ind:*",
                                                        count=1_000)])  # fmt: skip
        h = hashlib.sha256()
        async with redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hgetall(k)
            rows = await pipe.execute()
        for k, row in zip(keys, rows, strict=True):
            h.update(k[len(settings.redis_prefix) :])
            for f in sorted(row):
                h.update(b"\x1f" + f + b"=" + row[f])
        return h.hexdigest(), len(keys)
    finally:
        await redis.aclose()


async def alert_ids(settings: Settings, idle_s: float = 3.0) -> tuple[set[str], int]:
    """The distinct alert ids on ``alerts.fired`` and the number of messages: read from
    the start until nothing new comes for ``idle_s`` (the local broker's end offsets
    lag its last batch, so they cannot say when the topic is read)."""
    topic = topic_name(settings.topic_prefix, "alerts.fired")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ids: set[str] = set()
        n = 0
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
            for records in batch.values():
                for r in records:
                    ids.add(json.loads(r.value)["alert_id"])
                    n += 1
            if batch:
                quiet_since = time.monotonic()
        return ids, n
    finally:
        await consumer.stop()


class Committed:
    """The engine group's committed offsets over ``md.bars``, summed: on a fresh topic of
    one bar per message, how many bars have their outputs written (offsets are committed
    only after that)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = topic_name(settings.topic_prefix, "md.bars")
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
            group_id=group_name(settings.topic_prefix, ENGINE_GROUP),
        )  # fmt: skip
        self.tps: list[TopicPartition] = []

    async def __aenter__(self) -> Committed:
        await self.consumer.start()
        await self.consumer._client.force_metadata_update()
        parts = sorted(self.consumer.partitions_for_topic(self.topic) or [])
        self.tps = [TopicPartition(self.topic, p) for p in parts]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def total(self) -> int:
        return sum([await self.consumer.committed(tp) or 0 for tp in self.tps])


async def run(settings: Settings, total: int, procs: int, work: Path, stop_one: bool
              ) -> dict[str, float]:  # fmt: skip
    children: list[ServiceChild] = [engine_child(settings, work / f"e{procs}-{i}.log")
                                    for i in range(procs)]  # fmt: skip
    for c in children:
        await c.start()
    try:
        async with Committed(settings) as committed:

            async def started() -> bool:
                got = await asyncio.gather(*(c.metric("technic_engine_bars_total")
                                             for c in children))  # fmt: skip
                return sum(got) > 0

            t0 = await until(started, "the first batch", every=0.02)
            stopped = False
            while (done := await committed.total()) < total:
                if stop_one and not stopped and done >= total / 2:
                    children[-1].signal(15)  # its partitions move to the others
                    await asyncio.wait_for(children[-1].wait(), 60)
                    stopped = True
                await asyncio.sleep(0.05)
            t1 = time.perf_counter()
        return {"bars_s": total / (t1 - t0), "seconds": t1 - t0}
    finally:
        for c in children:
            if c.proc is not None and c.proc.returncode is None:
                c.signal(15)
        for c in children:
            await asyncio.wait_for(c.wait(), 60)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=1_000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--only", type=int, choices=(1, 2, 3), help="those runs only")
    ap.add_argument("--keep-logs", type=Path, help="the engines' logs go here")
    args = ap.parse_args()
    config = SynthConfig(symbols=args.symbols, seed=7)
    rows = []
    reference: tuple[str, set[str]] | None = None
    with LocalStack(Settings(ops_port=0, partitions=8, log_level="WARNING")) as stack, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        runs = [(1, False), (2, False), (3, False), (3, True)]
        for procs, stop_one in [r for r in runs if args.only in (None, r[0])]:
            s = await fresh(stack.settings)
            await send_rules(s)
            r = await run_synth(s, config, steps=args.steps, fmt="bars", progress=None)
            got = await run(s, r.bars, procs, args.keep_logs or Path(tmp), stop_one)
            checksum, hashes = await redis_checksum(s)
            ids, messages = await alert_ids(s)
            if reference is None:
                reference = (checksum, ids)
            row = {"processes": procs, "stopped_one_halfway": stop_one, "bars": r.bars, **got,
                   "hashes": hashes, "checksum": checksum[:16], "alerts": len(ids),
                   "alert_messages": messages, "values_exact": checksum == reference[0],
                   "alerts_exact": ids == reference[1]}  # fmt: skip
            rows.append(row)
            print(f"  {row}", file=sys.stderr)
    base = rows[0]["bars_s"]
    print(f"\n# scale-out — {platform.machine()}, {args.symbols:,} symbols x {args.steps} bars "
          f"(JSON), 8 partitions, ten live rules\n")  # fmt: skip
    print("| engine processes | bars/s | vs 1 | Redis values = 1-process run | alert ids = "
          "1-process run | alert messages (replays) |")  # fmt: skip
    print("|---|---:|---:|---|---|---:|")
    for row in rows:
        label = f"{row['processes']}" + (" → 2 (one stopped halfway)"
                                          if row["stopped_one_halfway"] else "")  # fmt: skip
        print(f"| {label} | {row['bars_s']:,.0f} | {row['bars_s'] / base:.2f}x | "
              f"{'yes' if row['values_exact'] else 'NO'} ({row['hashes']:,} hashes, "
              f"{row['checksum']}) | {'yes' if row['alerts_exact'] else 'NO'} "
              f"({row['alerts']:,}) | {row['alert_messages']:,} |")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaleout.json").write_text(json.dumps(rows, indent=1))
    if not all(r["values_exact"] and r["alerts_exact"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
