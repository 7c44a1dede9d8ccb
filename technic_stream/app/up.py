"""``technic-stream up``: the embedded default.

Starts (or connects to) the broker, Redis and MongoDB-protocol server, creates
the topics, runs every service that exists, prints where each listens and runs
until SIGINT/SIGTERM, then shuts down in order and stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from contextlib import AsyncExitStack
from typing import TextIO

from technic_stream.app.ops import OpsServer
from technic_stream.app.runtime import install_stop_signals
from technic_stream.app.service import ServiceMain
from technic_stream.config import Settings
from technic_stream.kafka import ensure_topics
from technic_stream.local import LocalStack
from technic_stream.local.servers import kafka_answers
from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client

__all__ = ["SERVICES", "run_up", "service_main"]

log = logging.getLogger(__name__)


def _services() -> list[tuple[str, ServiceMain]]:
    """Every service, in start order: (name, main(settings, stop, ops))."""
    from technic_stream.marketdata.alpaca import alpaca_service
    from technic_stream.marketdata.archiver import archiver_service
    from technic_stream.marketdata.bar_service import bar_service

    return [("bars", bar_service), ("archiver", archiver_service), ("feed", alpaca_service)]


SERVICES: list[tuple[str, ServiceMain]] = _services()


def enabled_services(settings: Settings) -> list[tuple[str, ServiceMain]]:
    """What ``up`` runs: every service, the vendor feed only when it has credentials."""
    return [(n, m) for n, m in SERVICES if n != "feed" or settings.alpaca_key is not None]


def service_main(name: str) -> ServiceMain:
    for known, main in SERVICES:
        if known == name:
            return main
    raise ValueError(f"unknown service {name!r}; services: {', '.join(n for n, _ in SERVICES)}")


async def _kafka_ready(bootstrap: str) -> None:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if not await asyncio.to_thread(kafka_answers, host, int(port)):
        raise ConnectionError("unexpected reply")


async def run_up(settings: Settings, *, out: TextIO = sys.stdout) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    stack = LocalStack(settings)
    try:
        live = await asyncio.to_thread(stack.start)
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
            tasks = {
                name: asyncio.create_task(factory(live, stop, ops), name=name)
                for name, factory in enabled_services(live)
            }
            _print_summary(out, stack, topics, ops.url, list(tasks))
            await stop.wait()
            print("stopping ...", file=out, flush=True)
            if tasks:
                _, pending = await asyncio.wait(tasks.values(), timeout=live.shutdown_grace_s)
                for task in pending:
                    task.cancel()
                for task in pending:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        await asyncio.to_thread(stack.close)
    print("stopped cleanly", file=out, flush=True)
    return 0


def _print_summary(
    out: TextIO, stack: LocalStack, topics: list[str], ops_url: str, services: list[str]
) -> None:
    lines = ["technic-stream is up", ""]
    for ep in stack.endpoints:
        origin = f"started here, pid {ep.pid}" if ep.started_here else "external, configured"
        lines.append(f"  {ep.name:<8} {ep.address:<28} ({origin})")
    lines.append(f"  {'ops':<8} {ops_url:<28} (/healthz /readyz /metrics)")
    lines.append("")
    lines.append(f"  topics   {len(topics)}: {', '.join(topics)}")
    lines.append(f"  services {', '.join(services) if services else '-'}")
    lines.append("")
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), file=out, flush=True)
