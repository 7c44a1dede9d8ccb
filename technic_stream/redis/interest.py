"""Which market channels anyone wants: the engine publishes ``ind.*``/``bars.*`` only there.

Appending to a channel (offset, bounded history stream, pub/sub) costs Redis tens of
microseconds; a market-wide feed updates thousands of symbols a second while dashboards
watch a few hundred. So gateways record interest, and publishers skip channels nobody
wants. Interest is a sorted set ``{prefix}interest``: member = channel, score = the epoch
ms until which it is wanted. A gateway calls :meth:`ChannelInterest.keep` when a client
subscribes and periodically while it stays subscribed, and once more on unsubscribe with
the channel's history age, so a client that comes back within that time still finds a
gapless history to recover from. A channel that loses all interest for longer simply
expires, and the next subscriber gets a new epoch (``recovered: false``), as after any
history loss.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis.asyncio as aioredis

__all__ = ["ChannelInterest"]


class ChannelInterest:
    def __init__(self, redis: aioredis.Redis, prefix: str = "technic:") -> None:
        self._redis = redis
        self.key = f"{prefix}interest"

    async def keep(self, channels: Iterable[str], for_s: float) -> None:
        """Want ``channels`` for at least ``for_s`` more seconds (never shortens)."""
        until = int((time.time() + for_s) * 1000)
        mapping = dict.fromkeys(channels, until)
        if mapping:
            # GT: a later deadline wins; new members are added as usual
            await self._redis.zadd(self.key, mapping, gt=True)

    async def wanted(self) -> set[str]:
        """Channels wanted now (and drops the lapsed ones)."""
        now = int(time.time() * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.key, "-inf", now - 1)
            pipe.zrange(self.key, 0, -1)
            _, members = await pipe.execute()
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}
