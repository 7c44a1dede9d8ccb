"""The latency floor of ``bench/engine.py``: raw aiokafka, no computation. Reads the bar
topic in a consumer group and, for every sixth bar (about the share of bars that fire an
alert in the engine's run), sends ``{"symbol", "ts"}`` to the alert topic; flushes and
commits per fetched batch, as any at-least-once consumer must.

    python bench/passthrough_peer.py --broker HOST:PORT --input T --output T2 --group G

Prints ``ready`` once it has joined the group; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    args = ap.parse_args()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        args.input, bootstrap_servers=args.broker, group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=10,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=args.broker, acks="all")
    await consumer.start()
    await producer.start()
    try:
        await consumer.getmany(timeout_ms=100)
        print("ready", flush=True)
        n = 0
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for records in batch.values():
                for r in records:
                    n += 1
                    if n % 6 == 0:
                        bar = orjson.loads(r.value)
                        out = orjson.dumps({"symbol": bar["symbol"], "ts": bar["ts"]})
                        await producer.send(args.output, out, key=r.key)
            if batch:
                await producer.flush()
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main())
