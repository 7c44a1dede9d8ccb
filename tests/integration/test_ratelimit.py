"""The REST token bucket against a real Redis, with the asks of one loop turn sent together."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from technic_stream.gateway.ratelimit import RateLimiter
from technic_stream.local import free_port
from technic_stream.redis import redis_client


async def test_concurrent_asks_are_decided_in_order_and_the_burst_holds(settings):
    redis = redis_client(settings)
    try:
        limiter = RateLimiter(redis, settings.redis_prefix, "t", rate=0.001, burst=10)
        got = await asyncio.gather(*(limiter.take("k") for _ in range(40)))
        assert [d.allowed for d in got] == [True] * 10 + [False] * 30
        assert [d.remaining for d in got[:10]] == list(range(9, -1, -1))  # asked in order
        assert all(d.retry_after_s > 100 for d in got[10:])
        other = await limiter.take("another key")  # its own bucket
        assert other.allowed and other.remaining == 9
    finally:
        await redis.aclose()


async def test_every_ask_of_a_batch_fails_when_redis_is_away(settings):
    away = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
    try:
        limiter = RateLimiter(away, settings.redis_prefix, "t", rate=1, burst=10)
        got = await asyncio.gather(*(limiter.take("k") for _ in range(3)), return_exceptions=True)
        assert len(got) == 3 and all(isinstance(e, RedisConnectionError) for e in got), got
        with pytest.raises(RedisConnectionError):  # and the next ask tries again
            await limiter.take("k")
    finally:
        await away.aclose()
