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
from typing import Any

import orjson
import redis.asyncio as aioredis

from technic_stream.redis.resp import Arg, Script, execute

__all__ = ["ChannelPublisher", "History", "Published"]

# Appending, shared by every script that publishes (the alert gate appends its firings
# in the same atomic step as its decisions). ``open_channel`` reads the channel's epoch
# and offset (starting a new epoch when the channel has none); ``add`` appends one message
# at the next offset (stream, and pub/sub when anyone listens); ``close_channel`` stores
# the offset, trims the stream to its size (exactly) and age and renews the expiry — once
# per call however many messages were added. (The script is atomic, so no reader sees the
# stream between an append and the trim; an ``XADD … MAXLEN`` per message cost Redis ~9 µs
# a message more, each trim rewriting the stream's first node.)
APPEND_LUA = """
local function open_channel(meta, hist, new_epoch)
  local st = redis.call('HMGET', meta, 'epoch', 'offset')
  if not st[1] then
    redis.call('DEL', hist)
    return {meta = meta, hist = hist, epoch = new_epoch, off = 0}
  end
  return {meta = meta, hist = hist, epoch = st[1], off = tonumber(st[2]) or 0}
end
local function add(ch, name, data)
  if not ch.head then  -- the envelope's constant parts, once per channel and call
    ch.head = '{"channel":' .. cjson.encode(name) .. ',"offset":'
    ch.tail = ',"epoch":"' .. ch.epoch .. '","data":'
    ch.pubsub = string.sub(ch.meta, 1, -6)
  end
  if ch.heard == nil then
    -- nobody listening (no subscriber of the channel, no pattern anywhere): nothing to
    -- send; the script is atomic, so none can subscribe before it ends
    ch.heard = redis.call('PUBSUB', 'NUMSUB', ch.pubsub)[2] > 0
      or redis.call('PUBSUB', 'NUMPAT') > 0
  end
  ch.off = ch.off + 1
  redis.call('XADD', ch.hist, '*', 'o', ch.off, 'd', data)
  if ch.heard then
    redis.call('PUBLISH', ch.pubsub, ch.head .. ch.off .. ch.tail .. data .. '}')
  end
  return ch.off
end
local function close_channel(ch, ttl, min_id, maxlen)
  redis.call('HSET', ch.meta, 'epoch', ch.epoch, 'offset', ch.off)
  redis.call('XTRIM', ch.hist, 'MAXLEN', maxlen)
  redis.call('XTRIM', ch.hist, 'MINID', min_id)
  redis.call('EXPIRE', ch.meta, ttl)
  redis.call('EXPIRE', ch.hist, ttl)
end
"""

# Publishes n items in one call. KEYS: per item (meta, hist, idem) — idem is '' when the
# item has no idempotency key; ARGV: maxlen, ttl, idem ttl, a new epoch for channels
# that have none, then per item (name, data). Returns per item (offset, epoch, new).
_PUBLISH = (
    APPEND_LUA
    + """
local maxlen, ttl, idem_ttl, new_epoch = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local now = redis.call('TIME')
local min_id = tostring(tonumber(now[1]) * 1000 - ttl * 1000)
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local meta, hist, idem = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local prev = false
  if idem ~= '' then
    prev = redis.call('GET', idem)
  end
  if prev then
    out[#out + 1] = tonumber(prev)
    out[#out + 1] = redis.call('HGET', meta, 'epoch') or ''
    out[#out + 1] = 0
  else
    local ch = open_channel(meta, hist, new_epoch)
    ch.heard = true  -- (one message a channel: asking who listens would cost more)
    local off = add(ch, ARGV[5 + 2 * i], ARGV[6 + 2 * i])
    close_channel(ch, ttl, min_id, maxlen)
    if idem ~= '' then
      redis.call('SET', idem, off, 'EX', idem_ttl)
    end
    out[#out + 1] = off
    out[#out + 1] = ch.epoch
    out[#out + 1] = 1
  end
end
return out
"""
)

#: items per script call: long enough to amortise the call, short enough that Redis is
#: never blocked for long (a few ms)
_CHUNK = 200


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
        self._script = Script(_PUBLISH)
        self.scripts = (self._script,)

    def keys(self, channel: str, idempotency_key: str | None = None) -> list[str]:
        base = f"{self._prefix}ch:{{{channel}}}"  # a hash tag: one cluster slot per channel
        idem = f"{base}:idem:{idempotency_key}" if idempotency_key else ""
        return [f"{base}:meta", f"{base}:hist", idem, base]

    def pubsub_channel(self, channel: str) -> str:
        return self.keys(channel)[3]

    async def publish(
        self, channel: str, data: bytes, *, idempotency_key: str | None = None
    ) -> Published:
        """Publish one JSON document (bytes) to ``channel``."""
        return (await self.publish_many([(channel, data, idempotency_key)]))[0]

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, str | None]], *, validate: bool = True
    ) -> list[Published]:
        """Publish (channel, data, idempotency key or None) items, in order, in one round
        trip (one script call per couple of hundred items). ``validate=False`` skips the
        JSON check for data this process serialised itself."""
        if not items:
            return []
        replies = await execute(
            self._redis, self.commands(items, validate=validate), scripts=self.scripts
        )
        return self.results(items, replies)

    def commands(
        self, items: Sequence[tuple[str, bytes, str | None]], *, validate: bool = True
    ) -> list[list[Arg]]:
        """The script calls that publish ``items`` (to send with other commands in one
        :func:`~technic_stream.redis.resp.execute`; read the replies with :meth:`results`)."""
        if validate:
            items = [(ch, _check_json(data), idem) for ch, data, idem in items]
        calls = []
        for lo in range(0, len(items), _CHUNK):
            keys: list[Arg] = []
            args: list[Arg] = self.append_args()
            for channel, data, idem in items[lo : lo + _CHUNK]:
                keys += self.keys(channel, idem)[:3]
                args += (channel, data)
            calls.append(self._script.call(keys, args))
        return calls

    def results(
        self, items: Sequence[tuple[str, bytes, str | None]], replies: Sequence[Any]
    ) -> list[Published]:
        flat = [x for reply in replies for x in reply]
        return [
            Published(channel, int(flat[3 * i]), _text(flat[3 * i + 1]), bool(flat[3 * i + 2]))
            for i, (channel, _, _) in enumerate(items)
        ]

    def append_args(self) -> list[Arg]:
        """maxlen, ttl, idempotency ttl and a fresh epoch: the arguments every publishing
        script starts with."""
        return [self.history_size, self.history_ttl_s, self.idempotency_ttl_s,
                secrets.token_hex(6)]  # fmt: skip

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


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _check_json(data: bytes) -> bytes:
    """Data goes into the envelope verbatim, so it must be one JSON document — and on one
    line: the gateway joins several messages into one frame with newlines."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"channel data must be JSON: {exc}") from None
    return orjson.dumps(doc) if b"\n" in data or b"\r" in data else data
