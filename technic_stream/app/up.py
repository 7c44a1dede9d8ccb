"""``technic-stream up``: the embedded default.

Starts (or connects to) the broker, Redis and MongoDB-protocol server, creates
the topics, runs every service that exists, prints where each listens and runs
until SIGINT/SIGTERM, then shuts down in order and stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import shutil
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from secrets import token_hex
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import SecretStr
from pymongo import AsyncMongoClient

from technic_stream.app.ops import OpsServer, ReadinessCheck
from technic_stream.app.runtime import install_stop_signals
from technic_stream.app.service import ServiceMain
from technic_stream.config import Settings
from technic_stream.kafka import ensure_topics
from technic_stream.local import LocalStack, free_port
from technic_stream.local.servers import kafka_answers
from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client

__all__ = ["SERVICES", "run_up", "service_main"]

log = logging.getLogger(__name__)


def _services() -> list[tuple[str, ServiceMain]]:
    """Every service, in start order: (name, main(settings, stop, ops))."""
    from technic_stream.engine.service import engine_service
    from technic_stream.gateway.service import gateway_service
    from technic_stream.marketdata.alpaca import alpaca_service
    from technic_stream.marketdata.archiver import archiver_service
    from technic_stream.marketdata.bar_service import bar_service
    from technic_stream.notify.service import notifier_service
    from technic_stream.scan.service import scanner_service

    return [
        ("bars", bar_service),
        ("engine", engine_service),
        ("archiver", archiver_service),
        ("scanner", scanner_service),
        ("notifier", notifier_service),
        ("gateway", gateway_service),
        ("feed", alpaca_service),
    ]


SERVICES: list[tuple[str, ServiceMain]] = _services()

#: The synthetic universe ``up`` streams, and its pace (trades per second).
DEMO_SYMBOLS = 500
DEMO_TRADE_RATE = 5_000


def enabled_services(settings: Settings) -> list[tuple[str, ServiceMain]]:
    """What ``up`` runs: every service, the vendor feed only when it has credentials."""
    return [(n, m) for n, m in SERVICES if n != "feed" or settings.alpaca_key is not None]


def service_main(name: str) -> ServiceMain:
    for known, main in SERVICES:
        if known == name:
            return main
    raise ValueError(f"unknown service {name!r}; services: {', '.join(n for n, _ in SERVICES)}")


def _report_exit(task: asyncio.Task[None]) -> None:
    """A service that ends before ``stop`` is a failure: say so (readiness shows it too)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error(
            "service failed",
            extra={"service": task.get_name(), "error": f"{type(exc).__name__}: {exc}"},
            exc_info=exc,
        )


def _starting(name: str) -> ReadinessCheck:
    async def check() -> None:
        raise RuntimeError(f"{name} is starting")

    return check


async def _kafka_ready(bootstrap: str) -> None:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if not await asyncio.to_thread(kafka_answers, host, int(port)):
        raise ConnectionError("unexpected reply")


async def _demo_data(settings: Settings, out: TextIO) -> None:
    """What ``up`` streams through the system: the real sample data (split-adjusted daily
    bars, replayed as BarBatch), then a synthetic universe's trades through the bar
    builder at a steady pace."""
    from technic_stream.marketdata.replay import ReplayConfig, run_replay
    from technic_stream.marketdata.run import run_synth
    from technic_stream.marketdata.synth import SynthConfig

    try:
        replay = await run_replay(
            settings, ReplayConfig(adjust="splits", fmt="batch"), progress=None
        )
        print(
            f"replayed the sample data: {replay.bars:,} {replay.tf} bars of "
            f"{replay.symbols} symbols to {replay.topic}",
            file=out,
            flush=True,
        )
        config = SynthConfig(symbols=DEMO_SYMBOLS, seed=7)
        print(
            f"streaming trades of {DEMO_SYMBOLS} synthetic symbols at {DEMO_TRADE_RATE:,}/s "
            "through the bar builder",
            file=out,
            flush=True,
        )
        await run_synth(
            settings, config, steps=390 * 20, fmt="trades", rate=DEMO_TRADE_RATE, progress=None
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a demo feeder must never take the services down
        log.warning("demo data stopped", extra={"error": f"{type(exc).__name__}: {exc}"})


async def _welcome(
    settings: Settings, key: str, out: TextIO, stop: asyncio.Event, check: bool
) -> int:
    """Once the gateway answers: the example rules; with ``check``, the end-to-end check
    (then stop). The exit code: 0, or 1 when a check failed."""
    from technic_stream.app.check import add_example_rules, check_end_to_end, wait_for_gateway

    url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    try:
        await wait_for_gateway(url)
        n = await add_example_rules(url, key)
        print(f"example alert rules for owner demo: {n}", file=out, flush=True)
        if not check:
            return 0
        print("checking end to end ...", file=out, flush=True)
        steps = await check_end_to_end(url, key, out)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the check names what failed; a demo goes on without rules
        if not check:
            log.warning("could not add the example rules", extra={"error": repr(exc)})
            return 0
        print(f"check FAILED: {type(exc).__name__}: {exc}", file=out, flush=True)
        stop.set()
        return 1
    failed = [s.name for s in steps if not s.ok]
    if failed:
        print(f"check FAILED: {', '.join(failed)}", file=out, flush=True)
    else:
        print("check passed: a bar reached Redis, a scan completed, an alert fired end to end",
              file=out, flush=True)  # fmt: skip
    stop.set()
    return 1 if failed else 0


async def run_up(
    settings: Settings, *, out: TextIO = sys.stdout, replay: bool = True, check: bool = False
) -> int:
    if check and not replay:
        raise ValueError("--check needs the demo data (drop --no-replay)")
    stop = asyncio.Event()
    install_stop_signals(stop)
    stack = LocalStack(settings)
    code = 0
    try:
        live = await asyncio.to_thread(stack.start)
        if live.gateway_port == 0:  # pick it now, so the summary can print the URL
            live = live.model_copy(update={"gateway_port": free_port()})
        if live.gateway_jwt_secret is None:  # one secret for this run's tokens
            live = live.model_copy(update={"gateway_jwt_secret": SecretStr(token_hex(32))})
        topics = await ensure_topics(live)
        async with AsyncExitStack() as exits:
            redis = redis_client(live)
            exits.push_async_callback(redis.aclose)
            mongo = mongo_client(live)
            exits.push_async_callback(mongo.close)
            bootstrap = live.kafka_bootstrap
            assert bootstrap is not None
            ops = OpsServer(
                live.ops_host,
                live.ops_port,
                checks={
                    "kafka": lambda: _kafka_ready(bootstrap),
                    "redis": redis.ping,
                    "mongo": lambda: mongo.admin.command("ping"),
                },
            )
            await exits.enter_async_context(ops)
            services = enabled_services(live)
            for name, _ in services:  # not ready until the service says so
                ops.checks[name] = _starting(name)
            tasks = {
                name: asyncio.create_task(factory(live, stop, ops), name=name)
                for name, factory in services
            }
            for task in tasks.values():
                task.add_done_callback(_report_exit)
            demo_key = await _demo_key(live, mongo) if replay else None
            _print_summary(out, stack, topics, ops.url, list(tasks), live, demo_key)
            welcome: asyncio.Task[int] | None = None
            if replay:
                tasks["demo-data"] = asyncio.create_task(_demo_data(live, out), name="demo-data")
                if demo_key is not None and "gateway" in tasks:
                    welcome = asyncio.create_task(_welcome(live, demo_key, out, stop, check))
                elif check:
                    print("check FAILED: no demo API key or no gateway", file=out, flush=True)
                    code = 1
                    stop.set()
            await stop.wait()
            if welcome is not None:
                if not welcome.done():
                    welcome.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    code = max(code, await welcome)
            print("stopping ...", file=out, flush=True)
            if tasks:
                demo = tasks.pop("demo-data", None)
                if demo is not None:  # a producer: stop sending first
                    demo.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await demo
                _, pending = await asyncio.wait(tasks.values(), timeout=live.shutdown_grace_s)
                for task in pending:
                    task.cancel()
                for task in pending:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        await asyncio.to_thread(stack.close)
    print("stopped cleanly", file=out, flush=True)
    return code


async def _demo_key(settings: Settings, mongo: AsyncMongoClient[Any]) -> str | None:
    """An API key for the demo user, so the dashboard and the examples work at once."""
    from technic_stream.gateway.auth import ApiKeys

    try:
        new = await ApiKeys(mongo[settings.mongo_db]).create("demo", name="made by up")
    except Exception as exc:  # the demo goes on; keys can be made with 'keys create'
        log.warning("could not create the demo API key", extra={"error": repr(exc)})
        return None
    return new.key


def _print_summary(
    out: TextIO,
    stack: LocalStack,
    topics: list[str],
    ops_url: str,
    services: list[str],
    settings: Settings,
    demo_key: str | None,
) -> None:
    lines = ["technic-stream is up", ""]
    for ep in stack.endpoints:
        origin = f"started here, pid {ep.pid}" if ep.started_here else "external, configured"
        lines.append(f"  {ep.name:<8} {ep.address:<28} ({origin})")
    lines.append(f"  {'ops':<8} {ops_url:<28} (/healthz /readyz /metrics)")
    if "gateway" in services:
        gw = f"http://{settings.gateway_host}:{settings.gateway_port}"
        lines.append(f"  {'gateway':<8} {gw:<28} (REST /v1, WebSocket /v1/ws, /v1/openapi.json)")
    if demo_key:
        lines.append("")
        lines.append(f"  demo API key (owner demo): {demo_key}")
        if "gateway" in services:
            gw = f"http://{settings.gateway_host}:{settings.gateway_port}"
            lines.append(f"  dashboard: {gw}/#key={demo_key}")
    lines.append("")
    lines.append(f"  topics   {len(topics)}: {', '.join(topics)}")
    lines.append(f"  services {', '.join(services) if services else '-'}")
    if demo_key:
        examples = example_commands(settings, demo_key, "gateway" in services)
        lines += ["", *(f"  {line}" for line in examples)]
    lines.append("")
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), file=out, flush=True)


def _redacted(value: str) -> str:
    """A URL's password as ``***`` (the terminal is no place for it)."""
    parts = urlsplit(value) if "://" in value else None
    return value.replace(parts.password, "***") if parts and parts.password else value


def example_commands(settings: Settings, key: str, gateway: bool) -> list[str]:
    """What to try against the running demo (printed by ``up``; a test runs each)."""
    lines = []
    if gateway:
        gw = f"http://{settings.gateway_host}:{settings.gateway_port}"
        scan = '{"rule": "rsi(14) < 50 rank by volume desc", "universe": "all", "tf": "1d"}'
        lines += [
            "try it (the demo key also works as a header):",
            f"  curl -s {gw}/v1/indicators/1d/AAPL -H 'X-API-Key: {key}'",
            f"  curl -s {gw}/v1/scans -H 'X-API-Key: {key}' -H 'Content-Type: application/json' "
            f"-d '{scan}'",
        ]
    env = {
        "TECHNIC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TECHNIC_REDIS_URL": settings.redis_url,
        "TECHNIC_MONGO_URL": settings.mongo_url,
        "TECHNIC_TOPIC_PREFIX": settings.topic_prefix,
        "TECHNIC_REDIS_PREFIX": settings.redis_prefix,
        "TECHNIC_MONGO_DB": settings.mongo_db,
    }
    defaults = Settings.model_fields
    exports = " ".join(
        f"{name}={shlex.quote(_redacted(str(value)))}" for name, value in env.items()
        if value is not None and value != defaults[name.removeprefix("TECHNIC_").lower()].default
    )  # fmt: skip
    cli = _cli_path()
    lines += [
        "from another shell, with these servers:",
        f"  export {exports}",
        f'  {cli} scan "rsi(14) < 30 rank by volume desc" --mode history --start 2010-01-01',
        f'  {cli} rules check "crosses_above(ema(12), ema(26)) and adx(14) > 20"',
    ]
    return lines


def _cli_path() -> str:
    """How this shell reaches the command: its name where it is on the PATH, else the
    path of this interpreter's (``.venv/bin/technic-stream`` after ``make demo``)."""
    exe = Path(sys.executable).parent / "technic-stream"
    if not exe.exists() or shutil.which("technic-stream") == str(exe):
        return "technic-stream"
    with contextlib.suppress(ValueError):
        return str(exe.relative_to(Path.cwd()))
    return str(exe)
