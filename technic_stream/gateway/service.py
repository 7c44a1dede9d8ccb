"""``technic-stream gateway`` (and the ``gateway`` service of ``up``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from technic_stream.app.ops import OpsServer
from technic_stream.app.runtime import settle_gc
from technic_stream.config import Settings
from technic_stream.gateway.app import Gateway
from technic_stream.kafka import Producer
from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client

__all__ = ["gateway_service"]

log = logging.getLogger(__name__)


async def gateway_service(
    settings: Settings,
    stop: asyncio.Event,
    ops: OpsServer,
    *,
    started: Callable[[Gateway, int], None] | None = None,
) -> None:
    """Serve HTTP and WebSocket on ``gateway_host:gateway_port`` until ``stop``; then stop
    accepting, close every client with GOING_AWAY and close the clients of the servers.
    ``started`` gets the gateway and its bound port (tests and ``up`` use port 0)."""
    redis = redis_client(settings)
    mongo = mongo_client(settings)
    runner: web.AppRunner | None = None
    try:
        async with Producer(settings) as producer:
            gw = Gateway(settings, redis, mongo, producer)
            await gw.start()
            try:
                app = gw.application()
                # shutdown_timeout: how long open HTTP requests may take to finish on stop
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
                await runner.setup()
                site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
                await site.start()
                port = int(runner.addresses[0][1])
                ops.checks["gateway"] = gw.ready
                log.info(
                    "gateway listening",
                    extra={"url": f"http://{settings.gateway_host}:{port}", "ws": "/v1/ws"},
                )
                if started is not None:
                    started(gw, port)
                settle_gc()
                await stop.wait()
                log.info("gateway stopping: closing clients with GOING_AWAY")
                await gw.aclose()
            finally:
                if runner is not None:
                    await runner.cleanup()
                await gw.hub.aclose()
    finally:
        await redis.aclose()
        await mongo.close()
