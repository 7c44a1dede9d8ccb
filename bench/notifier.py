"""Notifier: alert→webhook delivery latency at a steady alert rate, ours against a naive
notifier (aiokafka + aiohttp, one awaited POST per alert, no ledger, no retries).

    .venv/bin/python bench/notifier.py [--rate 1000] [--seconds 10] [--owners 100]

Starts the local stack itself. ``--owners`` owners each have one webhook on a local
receiver that runs as its own process (aiohttp; it checks every signature, as a
customer's would, and records when each delivery arrived). Alerts are sent to
``alerts.fired`` at ``--rate`` per second, each stamped ``fired_at`` = its send time;
a delivery's latency is its arrival minus that (the machine's wall clock in both
processes). Each contender runs as its own process on fresh topics.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from technic_stream.config import Settings  # noqa: E402
from technic_stream.kafka import Producer, ensure_topics  # noqa: E402
from technic_stream.local import LocalStack, free_port  # noqa: E402
from technic_stream.local.service import ServiceChild  # noqa: E402
from technic_stream.messages import Alert, alert_id, encode  # noqa: E402
from technic_stream.storage import mongo_client  # noqa: E402
from technic_stream.topics import topic_name  # noqa: E402

SECRET = "bench-secret-bench-secret"


# -- the receiver (its own process) --------------------------------------------------------


async def receive(port: int, out: Path) -> None:
    from aiohttp import web

    from technic_stream.notify.webhook import verify

    got: list[tuple[str, float]] = []
    bad = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal bad
        body = await request.read()
        if not verify(SECRET, request.headers.get("X-Technic-Timestamp", "0"), body,
                      request.headers.get("X-Technic-Signature", "")):  # fmt: skip
            bad += 1
            return web.Response(status=401)
        got.append((request.headers["X-Technic-Event-Id"], time.time()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook/{owner}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()
    await asyncio.to_thread(out.write_bytes, orjson.dumps({"got": got, "bad": bad}))


# -- the naive peer (its own process) ------------------------------------------------------


async def naive(bootstrap: str, topic: str, group: str, port: int) -> None:
    """What a first notifier looks like: read, POST each alert, commit per batch."""
    import aiohttp
    from aiokafka import AIOKafkaConsumer

    from technic_stream.notify.webhook import sign

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=10)  # fmt: skip
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with aiohttp.ClientSession() as http:
        await consumer.getmany(timeout_ms=100)
        print("ready", flush=True)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    a = orjson.loads(r.value)
                    eid = f"{a['alert_id']}:{a['owner']}"
                    body = orjson.dumps({"event_id": eid, "alert": a})
                    ts = int(time.time())
                    headers = {"X-Technic-Event-Id": eid, "X-Technic-Timestamp": str(ts),
                               "X-Technic-Signature": sign(SECRET, ts, body),
                               "Content-Type": "application/json"}  # fmt: skip
                    async with http.post(f"http://127.0.0.1:{port}/hook/{a['owner']}",
                                         data=body, headers=headers) as resp:  # fmt: skip
                        await resp.read()
            if batch:
                await consumer.commit()
    await consumer.stop()


# -- the run -------------------------------------------------------------------------------


async def child(*argv: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, *argv,
                                                stdout=asyncio.subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 60)
    return proc


async def fresh(base: Settings, owners: int, port: int) -> Settings:
    tag = uuid.uuid4().hex[:8]
    s = base.model_copy(update={"topic_prefix": f"b{tag}.", "redis_prefix": f"b{tag}:",
                                "mongo_db": f"b{tag}"})  # fmt: skip
    await ensure_topics(s)
    mongo = mongo_client(s)
    try:
        await mongo[s.mongo_db]["webhooks"].insert_many([
            {"_id": f"o{i}", "owner": f"o{i}", "url": f"http://127.0.0.1:{port}/hook/o{i}",
             "secret": SECRET, "active": True, "created_at": datetime.now(UTC)}
            for i in range(owners)
        ])  # fmt: skip
    finally:
        await mongo.close()
    return s


async def send_alerts(s: Settings, rate: float, seconds: float, owners: int) -> int:
    topic = topic_name(s.topic_prefix, "alerts.fired")
    total, sent = int(rate * seconds), 0
    start = time.perf_counter()
    async with Producer(s) as producer:
        while sent < total:
            for _ in range(min(max(1, int(rate * 0.005)), total - sent)):
                owner = f"o{sent % owners}"
                ts = 1_700_000_000_000 + sent * 60_000
                a = Alert(alert_id=alert_id("bench", "AAPL", "1m", ts), rule_id="bench",
                          owner=owner, symbol="AAPL", tf="1m", ts=ts,
                          fired_at=int(time.time() * 1000), close=100.0)  # fmt: skip
                await producer.send(topic, encode(a), key=owner.encode())
                sent += 1
            ahead = start + sent / rate - time.perf_counter()
            await asyncio.sleep(max(ahead, 0))
        await producer.flush()
    return sent


async def run_one(name: str, base: Settings, args: argparse.Namespace, tmp: Path) -> dict:
    port = free_port()
    s = await fresh(base, args.owners, port)
    out = tmp / f"{name}.json"
    receiver = await child("--receive", str(port), str(out))
    if name == "ours":
        proc = ServiceChild(s, "notifier", tmp / "notifier.log", TECHNIC_LOG_LEVEL="WARNING")
        await proc.start()
        for _ in range(300):  # ready once it has joined its group
            if await proc.ready():
                break
            await asyncio.sleep(0.2)
    else:
        topic = topic_name(s.topic_prefix, "alerts.fired")
        peer = await child("--naive", str(s.kafka_bootstrap), topic, "naive", str(port))
    sent_at = time.time()
    sent = await send_alerts(s, args.rate, args.seconds, args.owners)
    await asyncio.sleep(2.0)  # the last deliveries
    if name == "ours":
        proc.signal(15)
        await asyncio.wait_for(proc.wait(), 60)
    else:
        peer.terminate()
        await asyncio.wait_for(peer.wait(), 60)
    receiver.terminate()
    await asyncio.wait_for(receiver.wait(), 60)
    data = orjson.loads(out.read_bytes())
    # fired_at is in the alert; recover it from the send schedule: alert k fired at
    # sent_at + k / rate (the sender paces to it); the receiver knows ids only
    order = {alert_id("bench", "AAPL", "1m", 1_700_000_000_000 + k * 60_000): k
             for k in range(sent)}  # fmt: skip
    ms = []
    for eid, at in data["got"]:
        k = order.get(eid.split(":")[0])
        if k is not None:
            ms.append((at - (sent_at + k / args.rate)) * 1000)
    arr = np.array(ms)
    return {"sent": sent, "delivered": len(ms), "unique": len({e for e, _ in data["got"]}),
            "bad": data["bad"], "p50": float(np.percentile(arr, 50)),
            "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}  # fmt: skip


async def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--receive":
        await receive(int(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--naive":
        await naive(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--owners", type=int, default=100)
    args = ap.parse_args()
    rows = {}
    with LocalStack(Settings(ops_port=0, log_level="WARNING")) as stack, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        for name in ("ours", "naive"):
            rows[name] = await run_one(name, stack.settings, args, Path(tmp))
            print(f"  {name}: {rows[name]}", file=sys.stderr)
    print(f"# notifier — {platform.processor() or platform.machine()}, {args.rate:,.0f} "
          f"alerts/s for {args.seconds:.0f} s to {args.owners} webhooks\n")  # fmt: skip
    print("| contender | delivered / sent | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    names = {"ours": "technic-stream notifier (ledger, ordered retries)",
             "naive": "naive: aiokafka + aiohttp, one awaited POST per alert"}  # fmt: skip
    for key, r in rows.items():
        print(f"| {names[key]} | {r['unique']:,} / {r['sent']:,} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['max']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
