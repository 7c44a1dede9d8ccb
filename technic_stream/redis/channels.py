"""Channels: dense offsets, an epoch, bounded history and pub/sub, in one atomic step.

Publishing ``data`` (JSON text) to channel ``C`` runs one Lua script that

1. returns at once if an optional idempotency key was used before (a replayed publish
   after a crash is a no-op and reports the offset it got the first time);
2. reads the channel's epoch, starting a new epoch (and empty history) when the channel
   has none — first use, or its history expired or was lost;
3. assigns the next dense offset (1, 2, 3 … per epoch);
4. appends ``{o: offset, d: data}`` to the channel's Redis stream, trimmed to at most
   ``history_size`` entries and ``history_ttl_s`` of age (the stream and the meta hash
   expire together after that much silence, which changes the epoch next time);
5. publishes ``{"channel", "offset", "epoch", "data"}`` on the channel's pub/sub.

So a subscriber that remembers (offset, epoch) can later read exactly what it missed
from the stream, or learn that it cannot (different epoch, or offsets trimmed away) —
the Centrifugo recovery model. Keys (prefix ``technic:``; the braces are literal, a
Redis Cluster hash tag keeping a channel's keys in one slot): ``ch:{C}:meta`` (hash:
``epoch``, ``offset``), ``ch:{C}:hist`` (stream), ``ch:{C}:idem:{key}``; pub/sub channel
``ch:{C}``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

__all__ = ["ChannelPublisher", "History", "Published"]

_PUBLISH = """
local meta, hist, idem = KEYS[1], KEYS[2], KEYS[3]
local name, data, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local new_epoch, idem_ttl = ARGV[5], ARGV[6]
if idem ~= '' then
  local prev = redis.call('GET', idem)
  if prev then
    return {tonumber(prev), redis.call('HGET', meta, 'epoch') or '', 0}
  end
end
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = new_epoch
  redis.call('DEL', hist)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
end
local off = redis.call('HINCRBY', meta, 'offset', 1)
local now = redis.call('TIME')
local min_ms = tonumber(now[1]) * 1000 - tonumber(ttl) * 1000
redis.call('XADD', hist, 'MAXLEN', maxlen, '*', 'o', off, 'd', data)
redis.call('XTRIM', hist, 'MINID', tostring(min_ms))
redis.call('EXPIRE', meta, ttl)
redis.call('EXPIRE', hist, ttl)
redis.call('PUBLISH', KEYS[4],
  '{"channel":' .. cjson.encode(name) .. ',"offset":' .. off .. ',"epoch":"' .. epoch ..
  '","data":' .. data .. '}')
if idem ~= '' then
  redis.call('SET', idem, off, 'EX', idem_ttl)
end
return {off, epoch, 1}
"""


@dataclass(frozen=True, slots=True)
class Published:
    channel: str
    offset: int
    epoch: str
    new: bool  # False: the idempotency key was seen before; nothing was published


@dataclass(frozen=True, slots=True)
class History:
    """What a channel holds after an offset; ``complete`` False when it cannot cover it."""

    epoch: str
    offset: int  # the channel's current (latest) offset
    entries: list[tuple[int, bytes]]  # (offset, data), oldest first
    complete: bool


class ChannelPublisher:
    """Publishes to channels atomically; many channels per call are pipelined."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "technic:",
        *,
        history_size: int = 1_000,
        history_ttl_s: int = 3_600,
        idempotency_ttl_s: int = 86_400,
    ) -> None:
        if history_size < 1 or history_ttl_s < 1:
            raise ValueError("history size and age must be positive")
        self._redis = redis
        self._prefix = prefix
        self.history_size = history_size
        self.history_ttl_s = history_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self._script = redis.register_script(_PUBLISH)

    def keys(self, channel: str, idempotency_key: str | None = None) -> list[str]:
        base = f"{self._prefix}ch:{{{channel}}}"  # a hash tag: one cluster slot per channel
        idem = f"{base}:idem:{idempotency_key}" if idempotency_key else ""
        return [f"{base}:meta", f"{base}:hist", idem, base]

    def pubsub_channel(self, channel: str) -> str:
        return self.keys(channel)[3]

    def _args(self, channel: str, data: bytes) -> list[str | bytes | int]:
        return [channel, data, self.history_size, self.history_ttl_s,
                secrets.token_hex(6), self.idempotency_ttl_s]  # fmt: skip

    async def publish(
        self, channel: str, data: bytes, *, idempotency_key: str | None = None
    ) -> Published:
        """Publish one JSON document (bytes) to ``channel``."""
        _check_json(data)
        res = await self._script(
            keys=self.keys(channel, idempotency_key), args=self._args(channel, data)
        )
        return _published(channel, res)

    async def publish_many(self, items: Sequence[tuple[str, bytes, str | None]]) -> list[Published]:
        """Publish (channel, data, idempotency key or None) items in one pipeline."""
        if not items:
            return []
        for _, data, _ in items:
            _check_json(data)
        # make sure the script is loaded, so the pipeline can use EVALSHA
        await self._redis.script_load(_PUBLISH)
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel, data, idem in items:
                await self._script(
                    keys=self.keys(channel, idem), args=self._args(channel, data), client=pipe
                )
            results = await pipe.execute()
        return [_published(c, r) for (c, _, _), r in zip(items, results, strict=True)]

    async def position(self, channel: str) -> tuple[str, int]:
        """(epoch, latest offset); ("", 0) for a channel with no history."""
        epoch, offset = await self._redis.hmget(self.keys(channel)[0], ["epoch", "offset"])
        return _text(epoch), int(offset or 0)

    async def history(self, channel: str, after: int, epoch: str) -> History:
        """Everything published after offset ``after`` in ``epoch``, if still held."""
        meta, hist, _, _ = self.keys(channel)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(meta, ["epoch", "offset"])
            pipe.xrevrange(hist, count=self.history_size)
            (cur_epoch, cur_off), rows = await pipe.execute()
        current = _text(cur_epoch)
        latest = int(cur_off or 0)
        entries = sorted(
            (int(fields[b"o"]), fields[b"d"]) for _, fields in rows if int(fields[b"o"]) > after
        )
        wanted = latest - after
        complete = current == epoch and (
            wanted == 0 or (len(entries) == wanted and entries[0][0] == after + 1)
        )
        return History(current, latest, entries if complete else [], complete)


def _published(channel: str, res: Sequence[object]) -> Published:
    epoch = res[1].decode() if isinstance(res[1], bytes) else str(res[1])
    return Published(channel, int(res[0]), epoch, bool(int(res[2])))  # type: ignore[call-overload]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _check_json(data: bytes) -> None:
    """Data goes into the envelope verbatim, so it must be one JSON document."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"channel data must be JSON: {exc}") from None
