"""Benchmark WebSocket subscribers: N clients over C channels, in one process (uvloop).

    python bench/ws_clients.py --proto ours|socketio --url WS_URL [--token T]
                               --clients 1000 --channels 100 --out stats.json

Client i subscribes to channel i % C (``ind.1m.C{k}`` on our gateway; room ``C{k}`` via a
``join`` event on the socket.io peer, over its plain engine.io WebSocket transport).
Every message carries ``{"t": publish time, "s": step}``; the client records
receive time - t per step. Prints ``READY`` once all are subscribed; writes per-step
counts and latency percentiles to ``--out`` when each client has seen ``{"end": 1}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]


class Stats:
    def __init__(self) -> None:
        self.lat: dict[int, list[float]] = defaultdict(list)
        self.arrivals: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.lagged = 0
        self.ended = 0
        self.errors: list[str] = []

    def see(self, data: dict[str, Any], now: float) -> bool:
        if "end" in data:
            self.ended += 1
            return True
        step = int(data["s"])
        self.lat[step].append(now - data["t"])
        self.arrivals[step][int(now * 100)] += 1  # 10 ms bins of arrival time
        return False


async def ours(http: aiohttp.ClientSession, url: str, token: str, channel: str,
               stats: Stats, ready: asyncio.Event, subscribed: list[int]) -> None:  # fmt: skip
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {token}"},
                               max_msg_size=0) as ws:  # fmt: skip
        await ws.receive()  # connected
        await ws.send_str(orjson.dumps({"cmd": "subscribe", "channel": channel,
                                        "policy": "drop_oldest"}).decode())  # fmt: skip
        got_reply = False
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                stats.errors.append(f"closed {ws.close_code}")
                return
            now = time.time()
            for line in msg.data.split("\n"):
                doc = orjson.loads(line)
                kind = doc["type"]
                if kind == "pub":
                    if stats.see(doc["data"], now):
                        return
                elif kind == "subscribed" and not got_reply:
                    got_reply = True
                    subscribed[0] += 1
                    if subscribed[0] == subscribed[1]:
                        ready.set()
                elif kind == "lagged":
                    stats.lagged += doc["dropped"]
                elif kind == "error" or kind == "unsubscribed":
                    stats.errors.append(line[:200])


async def socketio(http: aiohttp.ClientSession, url: str, token: str, channel: str,
                   stats: Stats, ready: asyncio.Event, subscribed: list[int]) -> None:  # fmt: skip
    async with http.ws_connect(f"{url}?EIO=4&transport=websocket", max_msg_size=0) as ws:
        opened = await ws.receive()  # 0{"sid":...}
        assert opened.data.startswith("0"), opened
        await ws.send_str("40")
        while True:  # 40{"sid":...}
            msg = await ws.receive()
            if msg.data.startswith("40"):
                break
        await ws.send_str('42["join",' + orjson.dumps(channel).decode() + "]")
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                stats.errors.append(f"closed {ws.close_code}")
                return
            text = msg.data
            if text == "2":  # engine.io ping
                await ws.send_str("3")
                continue
            if text.startswith("42"):
                event, data = orjson.loads(text[2:])[:2]
                if event == "pub":
                    if stats.see(data, time.time()):
                        return
                elif event == "joined":
                    subscribed[0] += 1
                    if subscribed[0] == subscribed[1]:
                        ready.set()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto", choices=("ours", "socketio"), required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", default="")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    stats = Stats()
    ready = asyncio.Event()
    subscribed = [0, args.clients]
    client = ours if args.proto == "ours" else socketio
    names = [f"ind.1m.C{k}" if args.proto == "ours" else f"C{k}" for k in range(args.channels)]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        tasks = []
        for i in range(args.clients):
            tasks.append(asyncio.create_task(client(
                http, args.url, args.token, names[i % args.channels], stats, ready, subscribed
            )))  # fmt: skip
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # don't stampede the server's accept queue
        try:
            await asyncio.wait_for(ready.wait(), 120)
        except TimeoutError:
            failed = [repr(t.exception()) for t in tasks if t.done() and t.exception()]
            print(f"only {subscribed[0]} of {args.clients} subscribed; errors: "
                  f"{(stats.errors + failed)[:5]}", file=sys.stderr)  # fmt: skip
            raise
        print("READY", flush=True)
        done, _ = await asyncio.wait(tasks, timeout=600)
        for t in done:
            if t.exception() is not None:
                stats.errors.append(repr(t.exception()))
    out: dict[str, Any] = {"lagged": stats.lagged, "ended": stats.ended,
                           "errors": stats.errors[:20], "steps": {}}  # fmt: skip
    for step, lat in sorted(stats.lat.items()):
        ms = np.asarray(lat) * 1000
        out["steps"][str(step)] = {
            "count": len(lat), "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()),
            "arrivals": {str(k): v for k, v in stats.arrivals[step].items()},
        }  # fmt: skip
    Path(args.out).write_bytes(orjson.dumps(out))  # noqa: ASYNC240 (once, at the end)


if __name__ == "__main__":
    import gc

    gc.disable()  # the measuring side must not add its own collector pauses
    if uvloop is not None:
        uvloop.install()
    asyncio.run(main())
    sys.exit(0)
