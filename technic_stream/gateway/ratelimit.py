"""Token buckets in Redis, so a limit holds across every gateway process.

One Lua call per decision: refill the bucket by the time elapsed on Redis's own clock
(so processes with skewed clocks agree), take ``cost`` tokens if there are enough, and
say how long until there would be. Key: ``{prefix}rl:{limit}:{subject}`` (a hash that
expires once the bucket would be full again).

The decisions asked for in one turn of the event loop go to Redis together, in one
write (one script call each): under load every request asks for one, and a round trip
apiece was a send, a wake-up and a receive on both sides for a few bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from technic_stream.gateway import metrics as m
from technic_stream.redis.resp import Script, execute

__all__ = ["Decision", "RateLimiter"]

_BUCKET = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(st[1]) or burst
local ts = tonumber(st[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed, retry_ms = 0, 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, retry_ms, math.floor(tokens)}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float
    remaining: int


class RateLimiter:
    def __init__(
        self, redis: aioredis.Redis, prefix: str, name: str, *, rate: float, burst: int
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}rl:{name}:"
        self.name = name
        self.rate = rate
        self.burst = burst
        self._script = Script(_BUCKET)
        self._queue: list[tuple[str, int, asyncio.Future[Any]]] = []
        self._flush: asyncio.Future[None] | None = None

    async def take(self, subject: str, cost: int = 1) -> Decision:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((subject, cost, fut))
        if self._flush is None:  # the first ask of this loop turn: send them all next turn
            self._flush = asyncio.ensure_future(self._send())
        allowed, retry_ms, remaining = (int(x) for x in await fut)
        if not allowed:
            m.RATE_LIMITED.labels(self.name).inc()
        return Decision(bool(allowed), retry_ms / 1000, remaining)

    async def _send(self) -> None:
        batch, self._queue, self._flush = self._queue, [], None
        try:
            replies = await execute(
                self._redis,
                [self._script.call([self._prefix + s], [self.rate, self.burst, c])
                 for s, c, _ in batch],
                scripts=(self._script,),
            )  # fmt: skip
        except asyncio.CancelledError:
            for _, _, fut in batch:
                fut.cancel()
            raise
        except Exception as exc:  # every ask of the batch fails as the call did
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, _, fut), reply in zip(batch, replies, strict=True):
            if not fut.done():  # (a request cancelled meanwhile)
                fut.set_result(reply)
