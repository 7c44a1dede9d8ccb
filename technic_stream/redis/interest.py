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

Publishers cache the set (re-reading it at most once a second), so a new subscriber
would miss up to a second of a channel's messages. So a :meth:`~ChannelInterest.keep`
that adds a member the set did not hold also increments ``{prefix}interest:rev``, in
the same atomic step; a publisher reads the revision with its writes (a ``GET`` at the
end of a pipeline it sends anyway, :meth:`~ChannelInterest.revision_command`) and
re-reads the set as soon as it changed — one batch after the subscription, not a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis.asyncio as aioredis

from technic_stream.redis.resp import Command, Script, execute

__all__ = ["ChannelInterest", "revision"]

# KEYS: the set, the revision; ARGV: the deadline, then the channels. GT: a later deadline
# wins, new members are added as usual; ZADD's reply counts only the added ones.
_KEEP = Script("""
local args = {'GT'}
for i = 2, #ARGV do
  args[#args + 1] = ARGV[1]
  args[#args + 1] = ARGV[i]
end
local added = redis.call('ZADD', KEYS[1], unpack(args))
if added > 0 then
  redis.call('INCR', KEYS[2])
end
return added
""")


class ChannelInterest:
    def __init__(self, redis: aioredis.Redis, prefix: str = "technic:") -> None:
        self._redis = redis
        self.key = f"{prefix}interest"
        self.rev_key = f"{prefix}interest:rev"

    async def keep(self, channels: Iterable[str], for_s: float) -> int:
        """Want ``channels`` for at least ``for_s`` more seconds (never shortens);
        returns how many of them were not wanted before (and so moved the revision)."""
        until = int((time.time() + for_s) * 1000)
        names = list(dict.fromkeys(channels))
        if not names:
            return 0
        # (unpack() takes some thousands of values: a gateway renews its channels in chunks)
        added = 0
        for i in range(0, len(names), 2_000):
            call = _KEEP.call([self.key, self.rev_key], [until, *names[i : i + 2_000]])
            (n,) = await execute(self._redis, [call], scripts=[_KEEP])
            added += int(n)
        return added

    async def wanted(self) -> set[str]:
        """Channels wanted now (and drops the lapsed ones)."""
        return (await self.wanted_at())[0]

    async def wanted_at(self) -> tuple[set[str], int]:
        """:meth:`wanted` and the revision it is at (the revision read first: a member
        added in between is in the set, and the next read of the revision re-reads it)."""
        now = int(time.time() * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self.rev_key)
            pipe.zremrangebyscore(self.key, "-inf", now - 1)
            pipe.zrange(self.key, 0, -1)
            rev, _, members = await pipe.execute()
        names = {m.decode() if isinstance(m, bytes) else str(m) for m in members}
        return names, revision(rev)

    def revision_command(self) -> Command:
        """The revision's ``GET``, for the end of a pipeline (read its reply with
        :func:`revision`)."""
        return ("GET", self.rev_key)


def revision(reply: bytes | str | None) -> int:
    """The revision in a ``GET`` reply (0: never moved)."""
    return 0 if reply is None else int(reply)
