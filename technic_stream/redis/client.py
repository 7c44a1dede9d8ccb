"""Building the asyncio Redis client from settings."""

from __future__ import annotations

import redis.asyncio as aioredis

from technic_stream.config import Settings

__all__ = ["redis_client"]


def redis_client(
    settings: Settings, *, url: str | None = None, max_connections: int = 50
) -> aioredis.Redis:
    """An asyncio Redis client with connect/read timeouts and health checks.

    No I/O happens here; the first command connects. Close with ``await client.aclose()``.
    """
    target = url or settings.redis_url
    if not target:
        raise ValueError("no Redis URL configured (TECHNIC_REDIS_URL)")
    # A blocking pool: a burst of concurrent commands waits for a free connection
    # (up to the timeout) instead of failing with "Too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(
        target,
        max_connections=max_connections,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
        retry_on_timeout=True,
        decode_responses=False,
    )
    return aioredis.Redis(connection_pool=pool)
