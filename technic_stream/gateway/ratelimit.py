"""Token buckets in Redis, so a limit holds across every gateway process.

One Lua call per decision: refill the bucket by the time elapsed on Redis's own clock
(so processes with skewed clocks agree), take ``cost`` tokens if there are enough, and
say how long until there would be. Key: ``{prefix}rl:{limit}:{subject}`` (a hash that
expires once the bucket would be full again).

The decisions asked for in one turn of the event loop go to Redis together, in one
write (one script call each, through an :class:`~technic_stream.redis.resp.AutoPipeline`
the gateway's two limiters share): under load every request asks for one, and a
round trip apiece was a send, a wake-up and a receive on both sides for a few bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from technic_stream.gateway import metrics as m
from technic_stream.redis.resp import AutoPipeline, KeyedCommand, Script

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
        self,
        redis: aioredis.Redis,
        prefix: str,
        name: str,
        *,
        rate: float,
        burst: int,
        pipeline: AutoPipeline | None = None,
    ) -> None:
        self._pipe = pipeline or AutoPipeline(redis)
        self._prefix = f"{prefix}rl:{name}:"
        self.name = name
        self.rate = rate
        self.burst = burst
        self._script = Script(_BUCKET)
        # the call packed once but for its key: EVALSHA sha 1 <key> rate burst cost (the
        # numbers formatted per request were a tenth of a cheap request's Redis work)
        self._calls = {1: self._call_of(1)}

    def _call_of(self, cost: int) -> KeyedCommand:
        return KeyedCommand(["EVALSHA", self._script.sha, 1], [self.rate, self.burst, cost])

    async def take(self, subject: str, cost: int = 1) -> Decision:
        call = (self._calls.get(cost) or self._call_of(cost))(self._prefix + subject)
        allowed, retry_ms, remaining = (int(x) for x in await self._pipe(call, self._script))
        if not allowed:
            m.RATE_LIMITED.labels(self.name).inc()
        return Decision(bool(allowed), retry_ms / 1000, remaining)
