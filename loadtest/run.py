"""Headless load test of one gateway process: starts the system (``technic-stream up``),
runs the locust users for a bounded time, fires a burst of concurrent scans, prints a
summary against the targets, stops everything.

    .venv/bin/python loadtest/run.py [--users 100] [--ws-users 50] [--seconds 30]
                                     [--scans 100] [--out loadtest/last]

Targets (issue #11): ≥ 1,000 REST requests/s and 100 concurrent scans, p99 < 100 ms for
the non-scan endpoints on one gateway process, no errors. Needs the bench extras
(``pip install -e '.[bench]'``: locust, websocket-client).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtest.cpu import CpuWindow
from technic_stream.local import free_port

ROOT = Path(__file__).resolve().parent.parent
FINAL = ("done", "failed", "cancelled")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TECHNIC_")}
    env.update({"TECHNIC_OPS_PORT": "0", "TECHNIC_LOG_LEVEL": "WARNING", **extra})
    return env


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "technic_stream", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"technic-stream {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def start_system(out: Path) -> tuple[list[subprocess.Popen[bytes]], str, str, str]:
    """The servers and services (``up --no-replay``: a quiet system), the sample data
    replayed once (the engine's values for the indicator reads), an API key, and the
    gateway under test as its own process, its limits opened for load (one key drives
    every user). The processes, the gateway's URL, the key and its ops URL."""
    up = subprocess.Popen([sys.executable, "-m", "technic_stream", "up", "--no-replay"],
                          cwd=ROOT, env=_env(TECHNIC_GATEWAY_PORT="0"), stdout=subprocess.PIPE,
                          stderr=(out / "up.log").open("wb"))  # fmt: skip
    assert up.stdout is not None
    text = ""
    while "Press Ctrl-C to stop." not in text:
        line = up.stdout.readline().decode()
        if not line:
            raise SystemExit(f"up did not come up:\n{text}")
        text += line
    addr = {
        name: re.search(rf"^  {name}\s+(\S+)", text, re.M) for name in ("kafka", "redis", "mongo")
    }
    if not all(addr.values()):
        raise SystemExit(f"no server addresses in:\n{text}")
    servers = {
        "TECHNIC_KAFKA_BOOTSTRAP": addr["kafka"].group(1),  # type: ignore[union-attr]
        "TECHNIC_REDIS_URL": f"redis://{addr['redis'].group(1)}/0",  # type: ignore[union-attr]
        "TECHNIC_MONGO_URL": f"mongodb://{addr['mongo'].group(1)}/",  # type: ignore[union-attr]
    }
    env = _env(**servers)
    _cli(env, "replay", "--format", "batch", "--adjust", "splits")
    key = _cli(env, "keys", "create", "--owner", "loadtest", "--name", "loadtest").split()[-1]
    port, ops = free_port(), free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "technic_stream", "gateway"], cwd=ROOT,
        env=_env(**servers, TECHNIC_GATEWAY_PORT=str(port), TECHNIC_OPS_PORT=str(ops),
                 TECHNIC_GATEWAY_REST_RATE="1000000",
                 TECHNIC_GATEWAY_REST_BURST="1000000", TECHNIC_GATEWAY_SUBSCRIBE_RATE="100000",
                 TECHNIC_GATEWAY_SUBSCRIBE_BURST="100000",
                 TECHNIC_GATEWAY_MAX_CONNECTIONS_PER_KEY="100000"),
        stdout=subprocess.DEVNULL, stderr=(out / "gateway.log").open("wb"),
    )  # fmt: skip
    host = f"http://127.0.0.1:{port}"
    asyncio.run(_until_values(host, key))
    return [gateway, up], host, key, f"http://127.0.0.1:{ops}"


async def _until_values(host: str, key: str) -> None:
    """Until the gateway answers and the engine has values for every sample symbol."""
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession(host) as http:
        while True:
            try:
                async with http.get("/v1/symbols?tf=1d", headers={"X-API-Key": key}) as r:
                    syms = (await r.json())["symbols"] if r.status == 200 else []
                found = []
                for sym in syms:
                    async with http.get(f"/v1/indicators/1d/{sym}",
                                        headers={"X-API-Key": key}) as r:  # fmt: skip
                        if r.status == 200:
                            found.append(sym)
                if syms and len(found) == len(syms):
                    os.environ["TECHNIC_LOADTEST_SYMBOLS"] = ",".join(found)
                    return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the engine's values of the sample never appeared")
            await asyncio.sleep(0.5)


def run_locust(host: str, key: str, users: int, ws_users: int, seconds: int, out: Path,
               task_rate: float, system: dict[str, int]) -> dict[str, float]:  # fmt: skip
    """Locust headless for ``seconds``; returns the share of one core each process took
    from the end of the ramp to a second before the end (``system``: the gateway's and
    ``up``'s pids; ``up``'s servers count each under its own name)."""
    env = {**os.environ, "TECHNIC_LOADTEST_KEY": key, "TECHNIC_LOADTEST_WS_USERS": str(ws_users),
           "TECHNIC_LOADTEST_TASK_RATE": str(task_rate),
           "TECHNIC_LOADTEST_MIX": os.environ.get("TECHNIC_LOADTEST_MIX", "mixed")}  # fmt: skip
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
           "--headless", "-u", str(users + ws_users), "-r", str(max(10, (users + ws_users) // 5)),
           "-t", f"{seconds}s", "--host", host, "--csv", str(out), "--only-summary",
           "--stop-timeout", "5"]  # fmt: skip
    began = time.monotonic()
    locust = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        window = CpuWindow({**system, "locust": locust.pid}, split=("services (up)",))
        ramp = min(6.0, seconds / 3)  # (users start at a fifth of them a second)
        time.sleep(ramp)
        window.start()
        time.sleep(max(0.5, seconds - ramp - 1))
        cpu = window.stop()
        locust.wait(seconds + 120 - (time.monotonic() - began))
    except BaseException:
        locust.kill()
        raise
    return cpu


async def scan_burst(host: str, key: str, n: int) -> dict[str, float]:
    """``n`` snapshot scans submitted at once; seconds until all finished, and how many
    ended ``done``."""
    async with aiohttp.ClientSession(host) as http:
        async with http.post("/v1/auth/token", json={"api_key": key}) as r:
            h = {"Authorization": f"Bearer {(await r.json())['token']}"}
        ids = [f"burst-{uuid.uuid4().hex[:12]}" for _ in range(n)]
        body = {"rule": "rsi(14) < 50 rank by volume desc", "universe": "all", "tf": "1d",
                "mode": "snapshot", "limit": 20}  # fmt: skip
        t0 = time.perf_counter()

        async def submit(sid: str) -> int:
            async with http.post("/v1/scans", json={**body, "scan_id": sid}, headers=h) as r:
                return r.status

        accepted = await asyncio.gather(*(submit(s) for s in ids))
        status: dict[str, str] = {}
        while len(status) < n and time.perf_counter() - t0 < 120:
            for sid in ids:
                if sid in status:
                    continue
                async with http.get(f"/v1/scans/{sid}", headers=h) as r:
                    st = (await r.json()).get("status")
                if st in FINAL:
                    status[sid] = st
            await asyncio.sleep(0.1)
        return {"submitted": n, "accepted": sum(1 for s in accepted if s == 202),
                "done": sum(1 for s in status.values() if s == "done"),
                "seconds": time.perf_counter() - t0}  # fmt: skip


_BUCKET = re.compile(
    r'^technic_gateway_request_seconds_bucket\{le="([^"]+)",route="([^"]+)",status="(\d+)"\}'
    r" ([0-9.e+]+)$"
)


async def server_side(ops: str) -> dict[str, float]:
    """The gateway's own p99 per route (ms: the upper bound of the histogram bucket it
    falls in), from its ``/metrics``: the time from its handler's start to its response,
    without the sockets, the event loop's queue or the client around it."""
    async with aiohttp.ClientSession() as http, http.get(f"{ops}/metrics") as r:
        text = await r.text()
    cum: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        if m := _BUCKET.match(line):
            le, route, _, n = m.groups()
            bounds = cum.setdefault(route, {})
            bounds[float(le)] = bounds.get(float(le), 0.0) + float(n)  # statuses summed
    out = {}
    for route, bounds in cum.items():
        total = bounds.get(math.inf, 0.0)
        if total and route not in ("/v1/ws", "unmatched"):
            out[route] = next(le for le in sorted(bounds) if bounds[le] >= 0.99 * total) * 1000
    return out


def summary(stats_csv: Path) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    with stats_csv.open() as f:
        for row in csv.DictReader(f):
            name = f"{row['Type']} {row['Name']}".strip()
            rows[name] = {
                "count": float(row["Request Count"]), "failures": float(row["Failure Count"]),
                "rps": float(row["Requests/s"]), "p50": float(row["50%"] or 0),
                "p99": float(row["99%"] or 0),
            }  # fmt: skip
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100, help="REST users")
    ap.add_argument(
        "--task-rate",
        type=float,
        default=10.0,
        help="tasks a second per REST user (a task is 1-4 requests; 10: ~1,100 requests/s "
        "from 100 mixed users)",
    )
    ap.add_argument(
        "--mix",
        choices=("mixed", "read"),
        default="mixed",
        help="mixed: reads, rule CRUD and scans; read: indicators and me only",
    )
    ap.add_argument("--ws-users", type=int, default=50, help="WebSocket users")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--scans", type=int, default=100, help="concurrent scans in the burst")
    ap.add_argument("--out", type=Path, default=ROOT / "loadtest" / "last")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    args = ap.parse_args()
    os.environ["TECHNIC_LOADTEST_MIX"] = args.mix
    args.out.mkdir(parents=True, exist_ok=True)
    procs, host, key, ops = start_system(args.out)
    try:
        print(f"system up at {host}; locust: {args.users} REST + {args.ws_users} WebSocket "
              f"users for {args.seconds} s", file=sys.stderr)  # fmt: skip
        system = {"gateway": procs[0].pid, "services (up)": procs[1].pid}
        cpu = run_locust(host, key, args.users, args.ws_users, args.seconds, args.out / "locust",
                         args.task_rate, system)  # fmt: skip
        inside = asyncio.run(server_side(ops))
        burst = asyncio.run(scan_burst(host, key, args.scans))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    rows = summary(args.out / "locust_stats.csv")
    agg = rows.pop("Aggregated", rows.pop(" Aggregated", {}))
    non_scan = {n: r for n, r in rows.items()
                if not n.startswith(("SCAN", "WS")) and "/v1/scans" not in n}  # fmt: skip
    rest_rps = sum(r["rps"] for n, r in rows.items() if not n.startswith(("SCAN", "WS")))
    worst_p99 = max((r["p99"] for r in non_scan.values()), default=0.0)
    failures = sum(r["failures"] for r in rows.values())
    print(
        "\n| request | count | failures | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|"
    )
    for name, r in sorted(rows.items()):
        print(f"| {name} | {r['count']:,.0f} | {r['failures']:,.0f} | {r['rps']:,.1f} | "
              f"{r['p50']:,.0f} | {r['p99']:,.0f} |")  # fmt: skip
    if inside:
        print("\nthe gateway's own p99 (handler start to response, histogram bucket): "
              + ", ".join(f"{r} ≤ {ms:,.0f} ms" for r, ms in sorted(inside.items())))  # fmt: skip
    if cpu:
        print(f"\nCPU during the run, % of one core ({os.cpu_count()} here): "
              + ", ".join(f"{n} {v:.0f}" for n, v in cpu.items())
              + f" — {sum(cpu.values()):.0f} in all")  # fmt: skip
    print(f"\nREST requests/s (all endpoints): {rest_rps:,.0f} (target ≥ 1,000)")
    print(f"worst p99 of a non-scan endpoint: {worst_p99:,.0f} ms (target < 100 ms)")
    print(f"failures: {failures:,.0f} (target 0)")
    print(
        f"scan burst: {burst['accepted']:.0f}/{burst['submitted']:.0f} accepted, "
        f"{burst['done']:.0f} done in {burst['seconds']:.1f} s (target: 100 concurrent)"
    )
    (args.out / "summary.json").write_text(json.dumps(
        {"rows": rows, "aggregated": agg, "rest_rps": rest_rps, "worst_p99_ms": worst_p99,
         "failures": failures, "burst": burst, "server_p99_ms": inside, "cpu_pct": cpu,
         "median_p50": statistics.median(
             [r["p50"] for r in non_scan.values()] or [0])}, indent=1))  # fmt: skip
    ok = rest_rps >= 1000 and worst_p99 < 100 and failures == 0 and burst["done"] == args.scans
    print(f"targets: {'all met' if ok else 'not all met'}")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
