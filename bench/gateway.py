"""Gateway fan-out: ours against python-socketio + its Redis manager, same workload, same run.

    .venv/bin/python bench/gateway.py [--clients 1000] [--channels 100]
                                      [--rates 10000,25000,50000,100000,150000] [--step-s 4]
                                      [--no-peer]

Starts the local Redis (and the broker and MongoDB server our gateway opens), then for
each contender: the server as its own process, ``--clients`` WebSocket subscribers in
another (``bench/ws_clients.py``; client i on channel i % channels, so each message goes
to clients/channels subscribers), and publishes from this process through Redis pub/sub
at each rate of deliveries/s for ``--step-s`` seconds. Ours gets the channel envelope our
publisher writes (``{"channel","offset","epoch","data"}`` on ``technic:ch:{C}``); the
peer gets exactly what ``AsyncRedisManager.emit(..., room=C)`` publishes. Every message
carries its publish time; clients record publish→receive latency.

Reported per rate: deliveries/s received, the server's CPU use, deliveries per server
CPU-second, p50/p99/max latency; and the server's memory per idle connection (RSS growth
after the clients connected and subscribed, before any traffic, / clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from technic_stream.config import Settings  # noqa: E402
from technic_stream.gateway.auth import Principal, Tokens  # noqa: E402
from technic_stream.local import LocalStack, free_port  # noqa: E402
from technic_stream.redis import redis_client  # noqa: E402
from technic_stream.redis.resp import execute  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SECRET = secrets.token_hex(32)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def wait_http(url: str, within: float = 60.0) -> None:
    import aiohttp

    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not answer")


class Contender:
    name: str

    def __init__(self, settings: Settings, args: argparse.Namespace, work: Path) -> None:
        self.settings = settings
        self.args = args
        self.work = work
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.offsets = [0] * args.channels

    async def start(self) -> None:
        raise NotImplementedError

    def client_args(self, i: int = 0) -> list[str]:
        raise NotImplementedError

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid]

    @property
    def servers(self) -> int:
        return 1

    def message(self, k: int, data: bytes) -> tuple[bytes, bytes]:
        raise NotImplementedError

    async def prepare(self, redis: Any) -> None:
        return None

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Ours(Contender):
    name = "technic-stream gateway"

    async def start(self) -> None:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("TECHNIC_")}
        env.update({
            "TECHNIC_KAFKA_BOOTSTRAP": s.kafka_bootstrap or "",
            "TECHNIC_REDIS_URL": s.redis_url or "", "TECHNIC_MONGO_URL": s.mongo_url or "",
            "TECHNIC_GATEWAY_PORT": str(self.port), "TECHNIC_REDIS_PREFIX": s.redis_prefix,
            "TECHNIC_OPS_PORT": "0", "TECHNIC_GATEWAY_JWT_SECRET": SECRET,
            "TECHNIC_GATEWAY_MAX_CONNECTIONS_PER_KEY": "100000",
            "TECHNIC_GATEWAY_SUBSCRIBE_BURST": "100000", "TECHNIC_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        log = (self.work / "gateway.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "technic_stream", "gateway", env=env, stdout=log, stderr=log
        )
        await wait_http(f"http://127.0.0.1:{self.port}/v1/openapi.json")

    def client_args(self, i: int = 0) -> list[str]:
        tokens = Tokens(self.settings.model_copy(update={"gateway_jwt_secret": SecretStr(SECRET)}))
        token, _ = tokens.issue(Principal("bench", frozenset(), "bench", None), ttl_s=3600)
        return ["--proto", "ours", "--url", f"ws://127.0.0.1:{self.port}/v1/ws", "--token", token]

    async def prepare(self, redis: Any) -> None:
        self.epoch = secrets.token_hex(6)
        p = self.settings.redis_prefix
        await execute(redis, [
            ["HSET", f"{p}ch:{{ind.1m.C{k}}}:meta", "epoch", self.epoch, "offset", 0]
            for k in range(self.args.channels)
        ])  # fmt: skip
        self.channels = [f"{p}ch:{{ind.1m.C{k}}}".encode() for k in range(self.args.channels)]

    def message(self, k: int, data: bytes) -> tuple[bytes, bytes]:
        self.offsets[k] += 1
        env = b'{"channel":"ind.1m.C%d","offset":%d,"epoch":"%s","data":%s}' % (
            k,
            self.offsets[k],
            self.epoch.encode(),
            data,
        )
        return self.channels[k], env


class OursMany(Ours):
    """``n`` gateway processes on the same Redis; the clients split evenly across them
    (each publish reaches every gateway through its own pub/sub subscription)."""

    def __init__(self, settings: Settings, args: argparse.Namespace, work: Path, n: int) -> None:
        super().__init__(settings, args, work)
        self.name = f"technic-stream gateway x{n}"
        self.others = [Ours(settings, args, work) for _ in range(n - 1)]

    @property
    def servers(self) -> int:
        return 1 + len(self.others)

    async def start(self) -> None:
        await asyncio.gather(super().start(), *(o.start() for o in self.others))

    def client_args(self, i: int = 0) -> list[str]:
        return super().client_args() if i == 0 else self.others[i - 1].client_args()

    def pids(self) -> list[int]:
        return [*super().pids(), *(p for o in self.others for p in o.pids())]

    async def stop(self) -> None:
        await asyncio.gather(super().stop(), *(o.stop() for o in self.others))


class SocketIO(Contender):
    name = "python-socketio + AsyncRedisManager"

    async def start(self) -> None:
        log = (self.work / "socketio.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "socketio_peer.py"), "--port", str(self.port),
            "--redis", self.settings.redis_url or "", stdout=log, stderr=log,
        )  # fmt: skip
        await wait_http(f"http://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=polling")
        self.host_id = secrets.token_hex(16)

    def client_args(self, i: int = 0) -> list[str]:
        return ["--proto", "socketio", "--url", f"ws://127.0.0.1:{self.port}/socket.io/"]

    def message(self, k: int, data: bytes) -> tuple[bytes, bytes]:
        # what AsyncRedisManager.emit("pub", data, room=f"C{k}") publishes
        msg = {"method": "emit", "event": "pub", "data": [orjson.loads(data)], "binary": False,
               "namespace": "/", "room": f"C{k}", "skip_sid": None, "callback": None,
               "host_id": self.host_id}  # fmt: skip
        return b"socketio", json.dumps(msg).encode()


async def run_contender(c: Contender, redis: Any, args: argparse.Namespace) -> dict[str, Any]:
    await c.start()
    pids = c.pids()
    n = c.servers
    try:
        await c.prepare(redis)
        await asyncio.sleep(1.0)
        rss0 = sum(rss_kb(p) for p in pids)
        outs = [c.work / f"{c.__class__.__name__}-{i}.json" for i in range(n)]
        clients = [await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "ws_clients.py"), *c.client_args(i),
            "--clients", str(args.clients // n), "--channels", str(args.channels),
            "--out", str(outs[i]), stdout=asyncio.subprocess.PIPE,
        ) for i in range(n)]  # fmt: skip
        for cl in clients:
            assert cl.stdout is not None
            line = await asyncio.wait_for(cl.stdout.readline(), 180)
            if line.strip() != b"READY":
                raise RuntimeError(f"clients did not get ready: {line!r}")
        await asyncio.sleep(2.0)
        idle_kb = (sum(rss_kb(p) for p in pids) - rss0) / args.clients
        print(f"  {c.name}: {args.clients} clients subscribed; {idle_kb:.1f} KB per idle "
              "connection", file=sys.stderr)  # fmt: skip
        fanout = args.clients // args.channels
        cpids = [cl.pid for cl in clients]
        steps = []
        for s, rate in enumerate(args.rates):
            publishes = rate / fanout
            cpu0, c0, t0 = _cpu(pids), _cpu(cpids), time.perf_counter()
            start = time.time()
            sent = await publish(c, redis, s, publishes, args.step_s)
            end = time.time()
            cpu1, c1, t1 = _cpu(pids), _cpu(cpids), time.perf_counter()
            drained = sum([await idle(p) for p in pids])  # the servers' work, to the last one
            steps.append({"rate": rate, "sent": sent, "cpu": (cpu1 - cpu0) / (t1 - t0),
                          "client_cpu": (c1 - c0) / (t1 - t0), "cpu_s": drained - cpu0,
                          "start": start, "end": end})  # fmt: skip
            print(f"    step {s}: offered {rate:,} deliveries/s, server CPU "
                  f"{steps[-1]['cpu']:.0%}, clients' CPU {steps[-1]['client_cpu']:.0%}",
                  file=sys.stderr)  # fmt: skip
        end = orjson.dumps({"end": 1, "t": 0, "s": -1})
        await execute(redis, [["PUBLISH", *c.message(k, end)] for k in range(args.channels)])
        for cl in clients:
            await asyncio.wait_for(cl.wait(), 120)
        result = _merged([orjson.loads(o.read_bytes()) for o in outs])
        for s, st in enumerate(steps):
            got = result["steps"].get(str(s), {"count": 0, "p50": 0, "p99": 0, "max": 0})
            arrivals = got.pop("arrivals", {})
            st.update(got)
            # received while the step ran (and 0.5 s after): what the server kept up with
            deadline = int((st["end"] + 0.5) * 100)
            on_time = sum(n for b, n in arrivals.items() if int(b) <= deadline)
            st["delivered_per_s"] = on_time / (st["end"] - st["start"])
            st["per_cpu_s"] = got["count"] / st["cpu_s"] if st["cpu_s"] else 0.0
            st["expected"] = st["sent"] * fanout
        return {"name": c.name, "idle_kb": idle_kb, "steps": steps, "lagged": result["lagged"],
                "errors": result["errors"]}  # fmt: skip
    finally:
        await c.stop()


def _cpu(pids: list[int]) -> float:
    return sum(cpu_s(p) for p in pids)


def _merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several client processes' results as one: counts and arrivals add up; p50 is the
    count-weighted mean of the parts', p99 and max the worst part's (an upper bound)."""
    if len(parts) == 1:
        return parts[0]
    errors = [e for p in parts for e in p["errors"]]
    out: dict[str, Any] = {"lagged": sum(p["lagged"] for p in parts), "errors": errors,
                           "steps": {}}  # fmt: skip
    for step in {k for p in parts for k in p["steps"]}:
        got = [p["steps"][step] for p in parts if step in p["steps"]]
        count = sum(g["count"] for g in got)
        arrivals: dict[str, int] = {}
        for g in got:
            for b, n in g.get("arrivals", {}).items():
                arrivals[b] = arrivals.get(b, 0) + n
        out["steps"][step] = {
            "count": count, "arrivals": arrivals,
            "p50": sum(g["p50"] * g["count"] for g in got) / count if count else 0.0,
            "p99": max(g["p99"] for g in got), "max": max(g["max"] for g in got),
        }  # fmt: skip
    return out


async def idle(pid: int, within: float = 60.0) -> float:
    """Wait until ``pid`` uses < 5 % CPU over 200 ms; its CPU seconds then."""
    deadline = time.monotonic() + within
    before = cpu_s(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = cpu_s(pid)
        if now - before < 0.01:
            return now
        before = now
    return cpu_s(pid)


async def publish(c: Contender, redis: Any, step: int, per_s: float, seconds: float) -> int:
    """``per_s`` messages a second round-robin over the channels, in 5 ms slices."""
    total = int(per_s * seconds)
    sent = 0
    k = 0
    start = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * per_s) + 1)
        cmds = []
        while sent < due:
            data = b'{"t":%r,"s":%d}' % (time.time(), step)
            cmds.append(["PUBLISH", *c.message(k, data)])
            k = (k + 1) % len(c.offsets)
            sent += 1
        if cmds:
            await execute(redis, cmds)
        await asyncio.sleep(0.005)
    return sent


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    fanout = args.clients // args.channels
    print(f"\n{args.clients:,} WebSocket clients on {args.channels} channels "
          f"({fanout} subscribers per message), {args.step_s:.0f} s per rate\n")  # fmt: skip
    print("| contender | offered deliveries/s | received/s (on time) | server CPU | clients' "
          "CPU | deliveries per server CPU-s | p50 ms | p99 ms | max ms |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for st in r["steps"]:
            print(f"| {r['name']} | {st['rate']:,} | {st['delivered_per_s']:,.0f} | "
                  f"{st['cpu']:.0%} | {st['client_cpu']:.0%} | {st['per_cpu_s']:,.0f} | "
                  f"{st['p50']:.1f} | {st['p99']:.1f} | {st['max']:.1f} |")  # fmt: skip
    print("\n| contender | memory per idle connection | dropped (lagged) | errors |")
    print("|---|---:|---:|---|")
    for r in results:
        print(f"| {r['name']} | {r['idle_kb']:.1f} KB | {r['lagged']:,} | "
              f"{'; '.join(r['errors'][:3]) or '-'} |")  # fmt: skip
    pair = [results[0], *(r for r in results if r["name"].startswith("python-socketio"))]
    if len(pair) == 2:
        best = [max(st["per_cpu_s"] for st in r["steps"]) for r in pair]
        top = [max(st["delivered_per_s"] for st in r["steps"]) for r in pair]
        print(f"\nbest deliveries per server CPU-second: ours {best[0]:,.0f}, peer "
              f"{best[1]:,.0f} → {best[0] / best[1]:.1f}x; best received/s: ours "
              f"{top[0]:,.0f}, peer {top[1]:,.0f} → {top[0] / top[1]:.1f}x")  # fmt: skip


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--rates", default="10000,25000,50000,100000,150000")
    ap.add_argument("--step-s", type=float, default=4.0)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="also run this many of our gateway processes (clients split evenly)",
    )
    ap.add_argument("--json", type=Path, help="also write the results here (bench/run_all)")
    args = ap.parse_args()
    args.rates = [int(x) for x in args.rates.split(",")]
    base = Settings(ops_port=0, redis_prefix="bench:", log_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp, LocalStack(base) as stack:
        settings = stack.settings
        redis = redis_client(settings)
        try:
            work = Path(tmp)
            results = [await run_contender(Ours(settings, args, work), redis, args)]
            if args.gateways > 1:
                many = OursMany(settings, args, work, args.gateways)
                results.append(await run_contender(many, redis, args))
            if not args.no_peer:
                results.append(await run_contender(SocketIO(settings, args, work), redis, args))
        finally:
            await redis.aclose()
    report(args, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    asyncio.run(main())
