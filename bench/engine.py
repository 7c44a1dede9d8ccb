"""Engine: end-to-end bars/s and bar→alert latency, ours against Quix Streams + talipp.

    .venv/bin/python bench/engine.py [--symbols 1000] [--steps 1000] [--rate 10000]
                                     [--latency-s 20] [--peer-set full|ema_rsi] [--no-peer]

Starts the local stack (tansu, Redis, nx-27017) itself; every contender gets fresh topics
(8 partitions) holding the same generated bars (``--symbols`` x ``--steps`` one-minute
bars of the synthetic market, seeded), and runs as its own process:

- **ours**: ``technic-stream engine`` with the default indicator set and ten live alert
  rules (crossings and events, ``once_per_bar_close``, unthrottled; ``RULES``), writing
  every symbol's values to its Redis hash and its alerts to ``alerts.fired`` and the
  owner's channel (no client subscribes, so no ``ind.*``/``bars.*`` channel is
  published); once with one JSON bar per message, once with ``BarBatch`` messages.
- **floor** (latency only): ``bench/passthrough_peer.py``, raw aiokafka reading the bars
  and sending a message for every sixth one, no computation: what the broker and the
  client cost on this machine before any engine work.
- **broker** (latency only): no contender; the reader reads the bar topic itself. One
  hop through the local broker: its latency grows with the topic's length (tansu's
  in-memory log), so a long run measures the broker more than anything behind it.
- **peer**: ``bench/quix_peer.py``, a Quix Streams application computing the same
  indicator set with talipp (``--peer-set ema_rsi``: EMA 21 and RSI 14 only) and emitting
  an alert message for two of the rules.

Throughput: the bars are in the topic before the contender starts; bars/s is measured
from its first processed batch to its last (ours: the engine's bar counter, polled every
100 ms; the peer: its own clock from the first bar to the last). Latency: the contender
runs, the script sends JSON bars at ``--rate`` bars/s in 5 ms slices, and each alert's
latency is the time it is read from the alert topic (by a reader in its own process) minus
the time its bar was sent (the machine's wall clock in both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer  # noqa: E402

from technic_stream.config import Settings  # noqa: E402
from technic_stream.kafka import Producer, ensure_topics  # noqa: E402
from technic_stream.local import LocalStack  # noqa: E402
from technic_stream.local.service import ServiceChild  # noqa: E402
from technic_stream.marketdata.run import run_synth  # noqa: E402
from technic_stream.marketdata.synth import SynthConfig, SyntheticMarket  # noqa: E402
from technic_stream.messages import AlertRule, encode  # noqa: E402
from technic_stream.redis import redis_client  # noqa: E402
from technic_stream.topics import topic_name  # noqa: E402

BENCH_OWNER = "bench"

#: ten live alert rules of the kinds people set: crossings and events (a condition that
#: stays true, like ``rsi(14) < 30``, fires on every bar close while it holds)
RULES = [
    "rsi(14) crosses below 30",
    "ema(12) crosses above ema(26)",
    "volume > 3 * avg_volume(20) and volume[1] <= 3 * avg_volume(20)[1]",
    "close > highest(high, 252)[1]",
    "macd(12,26,9).hist > 0 and macd(12,26,9).hist[1] <= 0",
    "close crosses below bb(20,2).lower",
    "adx(14) crosses above 25",
    "change_pct(close, 5) > 10 and change_pct(close, 5)[1] <= 10",
    "stoch(14,3,3).k crosses below 80",
    "relvol(20) > 3 and close > open and relvol(20)[1] <= 3",
]


async def fresh(base: Settings) -> Settings:
    u = uuid.uuid4().hex[:8]
    s = base.model_copy(update={"topic_prefix": f"e{u}.", "redis_prefix": f"e{u}:"})
    await ensure_topics(s)
    return s


async def send_rules(settings: Settings) -> None:
    topic = topic_name(settings.topic_prefix, "alerts.rules")
    async with Producer(settings) as producer:
        for i, expr in enumerate(RULES):
            rule = AlertRule(
                rule_id=f"r{i}", owner=BENCH_OWNER, expr=expr, tf="1m", ts=1,
                throttle_max=100_000, throttle_window_s=1,
            )  # fmt: skip
            await producer.send(topic, encode(rule), key=rule.rule_id.encode())
        await producer.flush()


async def until(cond: Any, what: str, within: float = 600.0, every: float | Any = 0.05) -> float:
    """Poll ``cond`` every ``every`` seconds (or every ``every()``, asked each time)."""
    deadline = time.monotonic() + within
    while True:
        if await cond():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(every() if callable(every) else every)


def engine_child(settings: Settings, log: Path) -> ServiceChild:
    # (the engine's compute threads can be set for a comparison: TECHNIC_* variables are
    # otherwise not passed on to the children)
    threads = os.environ.get("TECHNIC_ENGINE_COMPUTE_THREADS")
    extra = {"TECHNIC_ENGINE_COMPUTE_THREADS": threads} if threads else {}
    return ServiceChild(
        settings, "engine", log,
        TECHNIC_LOG_LEVEL=os.environ.get("BENCH_ENGINE_LOG", "WARNING"), **extra,
    )  # fmt: skip


async def ours_throughput(settings: Settings, total: int, workdir: Path) -> dict[str, float]:
    engine = engine_child(settings, workdir / f"engine-{settings.topic_prefix}log")
    await engine.start()
    try:
        samples: list[tuple[float, float, float]] = []

        async def progressed() -> bool:
            got = await engine.metrics("technic_engine_bars_total", "process_cpu_seconds_total")
            n = got["technic_engine_bars_total"]
            if n > 0:
                samples.append((time.perf_counter(), n, got["process_cpu_seconds_total"]))
            return n >= total

        # (the two samples alone: rendering all of /metrics every 100 ms took ~5 % of the
        # engine's time, and every 20 ms ~7 % at a third of today's rate). Every 50 ms,
        # then every 5 ms over the last tenth: the end is seen within 5 ms, not 50 (a
        # run of 500k BarBatch bars takes about a second, so that was up to 5 % of it)
        def every() -> float:
            return 0.005 if samples and samples[-1][1] >= 0.9 * total else 0.05

        await until(progressed, "the engine to process every bar", every=every)
        (t0, n0, c0), (t1, n1, c1) = samples[0], samples[-1]
        fired = await engine.metric('technic_engine_alerts_total{outcome="fired"}')
        errors = await engine.metric('technic_engine_rules{status="error"}')
        if errors:
            raise RuntimeError(f"{errors:.0f} bench rules were rejected:\n{engine.log_tail()}")
        return {
            "bars_s": (n1 - n0) / (t1 - t0),
            "cpu_us_per_bar": (c1 - c0) / max(n1 - n0, 1) * 1e6,
            "seconds": t1 - t0,
            "alerts": fired,
            "first_sample": n0,
            "samples": len(samples),
        }
    finally:
        engine.signal(15)
        await asyncio.wait_for(engine.wait(), 60)


def quix_child_argv(settings: Settings, expect: int, peer_set: str, group: str) -> list[str]:
    return [
        sys.executable, str(ROOT / "bench" / "quix_peer.py"),
        "--broker", str(settings.kafka_bootstrap),
        "--input", topic_name(settings.topic_prefix, "md.bars"),
        "--output", topic_name(settings.topic_prefix, "alerts.fired"),
        "--group", group, "--expect", str(expect), "--set", peer_set,
    ]  # fmt: skip


async def quix_throughput(settings: Settings, total: int, peer_set: str) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        *quix_child_argv(settings, total, peer_set, f"{settings.topic_prefix}quix"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 1_800)
    if proc.returncode != 0:
        raise RuntimeError(f"quix peer failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    r = json.loads(out.decode().strip().splitlines()[-1])
    return {"bars_s": r["bars"] / r["seconds"], "seconds": r["seconds"], "alerts": r["alerts"]}


class NoAlertsError(RuntimeError):
    """A contender sent no alert while the latency run lasted (it had fallen behind)."""


class PacedBars:
    """The synthetic market's bars as JSON messages at a steady rate; remembers when each
    (symbol, ts) was handed to the producer.

    The messages are encoded before the clock starts: a load generator that encoded them
    as it went took ~85 % of a core at 10,000 bars/s, and its own delays showed as
    latency."""

    def __init__(self, settings: Settings, symbols: int, seed: int) -> None:
        self.settings = settings
        self.market = SyntheticMarket(SynthConfig(symbols=symbols, seed=seed))
        self.keys = [s.encode() for s in self.market.symbols]
        self.sent_at: dict[tuple[str, int], float] = {}
        self.sent = 0

    def _messages(self, total: int) -> list[tuple[tuple[str, int], bytes, bytes]]:
        out: list[tuple[tuple[str, int], bytes, bytes]] = []
        while len(out) < total:
            cols = self.market.step()
            ts = int(cols.ts)
            for j, i in enumerate(cols.index.tolist()):
                sym = self.market.symbols[i]
                out.append(((sym, ts), self.keys[i], orjson.dumps({
                    "type": "bar", "v": 1, "symbol": sym, "tf": "1m", "ts": ts,
                    "open": float(cols.open[j]), "high": float(cols.high[j]),
                    "low": float(cols.low[j]), "close": float(cols.close[j]),
                    "volume": float(cols.volume[j]),
                })))  # fmt: skip
        return out[:total]

    async def run(self, rate: float, seconds: float) -> None:
        topic = topic_name(self.settings.topic_prefix, "md.bars")
        slice_s = 0.005
        per_slice = max(1, round(rate * slice_s))
        messages = self._messages(int(rate * seconds))
        async with Producer(self.settings) as producer:
            start = time.perf_counter()
            for at in range(0, len(messages), per_slice):
                part = messages[at : at + per_slice]
                now = time.time()  # wall clock: the collector is another process
                for bar, key, data in part:
                    self.sent_at[bar] = now
                    await producer.send(topic, data, key=key)
                self.sent += len(part)
                ahead = start + self.sent / rate - time.perf_counter()
                await asyncio.sleep(max(ahead, 0))
            await producer.flush()


async def collect_alerts(bootstrap: str, topic: str, out: Path) -> None:
    """The alert reader, run as its own process (``--collect``): every alert's (symbol,
    bar ts, wall time it was read) to ``out`` when it gets SIGTERM. Reading in the load
    generator's process measured that process's event loop: its fetches stalled for
    seconds while the generator fell behind."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=5,
    )  # fmt: skip
    await consumer.start()
    got: list[tuple[str, int, float]] = []
    try:
        await consumer.getmany(timeout_ms=100)  # joined and positioned
        print("ready", flush=True)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for records in batch.values():
                for r in records:
                    a = orjson.loads(r.value)
                    got.append((a["symbol"], a["ts"], now))
    finally:
        await consumer.stop()
        await asyncio.to_thread(out.write_bytes, orjson.dumps(got))


async def latency(
    settings: Settings,
    start_child: Any,
    ready: Any,
    stop_child: Any,
    args: argparse.Namespace,
    read: str = "alerts.fired",
) -> dict[str, float]:
    await start_child()
    await until(ready, "the contender to be ready", within=120)
    bars = PacedBars(settings, args.symbols, seed=11)
    out = Path(tempfile.mkdtemp()) / "alerts.json"
    collector = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--collect", str(out), "--bootstrap", settings.kafka_bootstrap,
        "--topic", topic_name(settings.topic_prefix, read),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert collector.stdout is not None
    await asyncio.wait_for(collector.stdout.readline(), 60)
    try:
        await bars.run(args.rate, args.latency_s)
        await asyncio.sleep(2.0)  # the last alerts
    finally:
        collector.terminate()
        await asyncio.wait_for(collector.wait(), 60)
        await stop_child()
    lat = [(t, at - t) for sym, ts, at in orjson.loads(out.read_bytes())
           if (t := bars.sent_at.get((sym, ts))) is not None]  # fmt: skip
    if not lat:
        raise NoAlertsError(f"no alert arrived within the run ({bars.sent:,} bars sent)")
    sent = np.array([t for t, _ in lat])
    ms = np.array([x for _, x in lat]) * 1000
    # p99 by when the bar was sent: a start-up stall and a steady queue look different
    t0, parts = sent.min(), []
    for lo in np.arange(0, sent.max() - t0 + 1e-9, WINDOW):
        sel = ms[(sent - t0 >= lo) & (sent - t0 < lo + WINDOW)]
        if len(sel):
            parts.append(f"{lo:.0f}-{lo + WINDOW:.0f} s {np.percentile(sel, 99):.0f}")
    print("  p99 ms by send time: " + ", ".join(parts), file=sys.stderr)
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()), "alerts": len(lat), "bars": bars.sent}  # fmt: skip


async def redis_load(settings: Settings, reset: bool = False) -> str:
    """Redis's CPU seconds and its dearest commands since the last reset."""
    redis = redis_client(settings)
    try:
        if reset:
            await redis.config_resetstat()
            return ""
        cpu = await redis.info("cpu")
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    top = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:6]
    used = cpu["used_cpu_user"] + cpu["used_cpu_sys"]
    return f"Redis CPU {used:.1f} s since start; by command: " + ", ".join(
        f"{k.removeprefix('cmdstat_')} {v['calls']:,} calls {v['usec'] / 1e6:.2f} s "
        f"({v['usec_per_call']:.1f} µs)" for k, v in top)  # fmt: skip


async def ours_latency(settings: Settings, args: argparse.Namespace, workdir: Path):
    engine = engine_child(settings, workdir / f"engine-lat-{settings.topic_prefix}log")
    await redis_load(settings, reset=True)

    async def stop() -> None:
        print(f"  {await redis_load(settings)}", file=sys.stderr)
        stages = {s: await engine.metric(f'technic_engine_stage_seconds_total{{stage="{s}"}}')
                  for s in ("decode", "compute", "alerts", "encode", "write", "flush")}  # fmt: skip
        total = sum(stages.values()) or 1.0
        n = await engine.metric("technic_engine_batch_seconds_count")
        print("  engine time by stage in the latency run: " + ", ".join(
            f"{s} {v / total:.0%} ({v / max(n, 1) * 1e3:.1f} ms a batch)"
            for s, v in stages.items()), file=sys.stderr)  # fmt: skip
        busy = await engine.metric("technic_engine_batch_seconds_sum")
        bars = await engine.metric("technic_engine_bars_total")
        ages = await engine.metric("technic_engine_record_age_seconds_sum")
        age_n = await engine.metric("technic_engine_record_age_seconds_count")
        print(f"  {n:,.0f} batches of {bars / max(n, 1):,.0f} bars, {busy / max(n, 1) * 1e3:.1f} ms"
              f" each from fetch to written; oldest record per partition-batch"
              f" {ages / max(age_n, 1) * 1e3:.1f} ms old when written (mean)",
              file=sys.stderr)  # fmt: skip
        engine.signal(15)
        await asyncio.wait_for(engine.wait(), 60)

    return await latency(settings, engine.start, engine.ready, stop, args)


async def floor_latency(settings: Settings, args: argparse.Namespace):
    """The same harness around ``bench/passthrough_peer.py`` (raw aiokafka, no work)."""
    proc: list[asyncio.subprocess.Process] = []

    async def start() -> None:
        proc.append(await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "passthrough_peer.py"),
            "--broker", str(settings.kafka_bootstrap),
            "--input", topic_name(settings.topic_prefix, "md.bars"),
            "--output", topic_name(settings.topic_prefix, "alerts.fired"),
            "--group", f"{settings.topic_prefix}floor", stdout=asyncio.subprocess.PIPE,
        ))  # fmt: skip
        assert proc[0].stdout is not None
        await asyncio.wait_for(proc[0].stdout.readline(), 60)

    async def ready() -> bool:
        return True  # start() returned once it had joined

    async def stop() -> None:
        proc[0].terminate()
        await asyncio.wait_for(proc[0].wait(), 60)

    return await latency(settings, start, ready, stop, args)


async def broker_latency(settings: Settings, args: argparse.Namespace):
    """The broker alone: the reader reads the bars themselves, as they arrive (one hop,
    no consumer group, nothing sent back) — the least any contender can measure."""

    async def nothing() -> None:
        return None

    async def ready() -> bool:
        return True

    return await latency(settings, nothing, ready, nothing, args, read="md.bars")


async def quix_latency(settings: Settings, args: argparse.Namespace):
    proc: list[asyncio.subprocess.Process] = []
    group = f"{settings.topic_prefix}quix"

    async def start() -> None:
        argv = quix_child_argv(settings, 10**12, args.peer_set, group)
        null = asyncio.subprocess.DEVNULL
        proc.append(await asyncio.create_subprocess_exec(*argv, stdout=null, stderr=null))

    started = time.monotonic()

    async def ready() -> bool:
        # Quix has no readiness endpoint; it reads from the earliest offset, so joining late
        # only delays the first bars. Give it the time it takes to join on this machine.
        return time.monotonic() - started > 10.0

    async def stop() -> None:
        proc[0].terminate()
        await asyncio.wait_for(proc[0].wait(), 60)

    return await latency(settings, start, ready, stop, args)


WINDOW = float(os.environ.get("BENCH_WINDOW", 4))  # seconds per window of the p99 line


def med(xs: list[float]) -> float:
    return statistics.median(xs)


async def main() -> None:
    if "--collect" in sys.argv:
        cp = argparse.ArgumentParser()
        cp.add_argument("--collect", type=Path)
        cp.add_argument("--bootstrap")
        cp.add_argument("--topic")
        c = cp.parse_args()
        await collect_alerts(c.bootstrap, c.topic, c.collect)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=1_000)
    ap.add_argument("--steps", type=int, default=1_000)
    ap.add_argument("--rate", type=float, default=10_000, help="bars/s of the latency runs")
    ap.add_argument("--latency-s", type=float, default=20.0)
    ap.add_argument("--peer-set", choices=("full", "ema_rsi"), default="full")
    ap.add_argument("--no-peer", action="store_true", help="ours only")
    ap.add_argument("--no-rules", action="store_true", help="ours without live alert rules")
    ap.add_argument("--repeats", type=int, default=1, help="throughput runs of ours")
    ap.add_argument("--peer-repeats", type=int, default=1, help="throughput runs of the peer")
    ap.add_argument("--skip-throughput", action="store_true", help="latency runs only")
    ap.add_argument("--no-floor", action="store_true", help="without the pass-through floor")
    ap.add_argument("--json", type=Path, help="also write the results here (bench/run_all)")
    args = ap.parse_args()
    config = SynthConfig(symbols=args.symbols, seed=7)
    rows: dict[str, list[dict[str, float]]] = {}
    with LocalStack(Settings(ops_port=0, partitions=8, log_level="WARNING")) as stack, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        base = stack.settings
        work = Path(tmp)
        for run in range(0 if args.skip_throughput else args.repeats):
            for fmt in ("bars", "batch"):
                s = await fresh(base)
                if not args.no_rules:
                    await send_rules(s)
                r = await run_synth(s, config, steps=args.steps, fmt=fmt, progress=None)
                print(f"ours {fmt}: {r.bars:,} bars in the topic", file=sys.stderr)
                rows.setdefault(f"ours {fmt}", []).append(await ours_throughput(s, r.bars, work))
                print(f"  {rows[f'ours {fmt}'][-1]}", file=sys.stderr)
            if not args.no_peer and run < args.peer_repeats:
                s = await fresh(base)
                r = await run_synth(s, config, steps=args.steps, fmt="bars", progress=None)
                rows.setdefault("quix", []).append(await quix_throughput(s, r.bars, args.peer_set))
                print(f"  quix {rows['quix'][-1]}", file=sys.stderr)
        s = await fresh(base)
        if not args.no_rules:
            await send_rules(s)
        lat = {"ours": await ours_latency(s, args, work)}
        print(f"  latency ours {lat['ours']}", file=sys.stderr)
        if not args.no_floor:
            floor = await floor_latency(await fresh(base), args)
            lat["floor: raw aiokafka pass-through"] = floor
            print(f"  latency floor {floor}", file=sys.stderr)
            hop = await broker_latency(await fresh(base), args)
            lat["broker: one hop, bars read as sent"] = hop
            print(f"  latency broker {hop}", file=sys.stderr)
        if not args.no_peer:
            try:
                lat["quix"] = await quix_latency(await fresh(base), args)
            except NoAlertsError as exc:  # too far behind to deliver one within the run
                nan = float("nan")
                lat["quix"] = {"p50": nan, "p99": nan, "max": nan, "alerts": 0, "note": str(exc)}
            print(f"  latency quix {lat['quix']}", file=sys.stderr)
    report(args, rows, lat)
    if args.json:
        args.json.write_text(json.dumps({"rate": args.rate, "throughput": rows, "latency": lat},
                                        indent=1, default=str))  # fmt: skip


def report(args: argparse.Namespace, rows: dict[str, list[dict[str, float]]], lat) -> None:
    total = args.symbols * args.steps
    print(f"# engine — {platform.processor() or platform.machine()}, {args.symbols:,} symbols"
          f" x {args.steps} bars (~{total:,}), 8 partitions, runs: ours {args.repeats},"
          f" the peer {min(args.peer_repeats, args.repeats)}\n")  # fmt: skip
    if rows:
        print("| contender | bars/s (median) | runs | its CPU µs a bar | alerts |")
        print("|---|---:|---|---|---:|")
        names = {
            "ours bars": "technic-stream engine, JSON bar per message",
            "ours batch": "technic-stream engine, BarBatch",
            "quix": f"Quix Streams + talipp ({args.peer_set}), JSON bar per message",
        }
        for key, runs in rows.items():
            xs = [r["bars_s"] for r in runs]
            cpu = ", ".join(f"{r['cpu_us_per_bar']:.2f}" for r in runs if "cpu_us_per_bar" in r)
            print(f"| {names[key]} | {med(xs):,.0f} | {', '.join(f'{x:,.0f}' for x in xs)} "
                  f"| {cpu or '—'} | {runs[-1]['alerts']:,.0f} |")  # fmt: skip
    if "quix" in rows and "ours bars" in rows:
        ratio = med([r["bars_s"] for r in rows["ours bars"]]) / med(
            [r["bars_s"] for r in rows["quix"]]
        )
        print(f"\nJSON bars, ours vs the peer: {ratio:.1f}x")
    print(f"\nbar→alert latency at {args.rate:,.0f} bars/s for {args.latency_s:.0f} s:\n")
    print("| contender | p50 ms | p99 ms | max ms | alerts |")
    print("|---|---:|---:|---:|---:|")
    for key, r in lat.items():
        if not r["alerts"]:
            print(f"| {key} | — | — | — | 0 ({r.get('note', 'none')}) |")
            continue
        print(f"| {key} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['alerts']:,} |")


if __name__ == "__main__":
    asyncio.run(main())
