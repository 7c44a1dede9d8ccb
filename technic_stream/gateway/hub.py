"""Fan-out: one Redis pub/sub subscription per channel per process, shared by every client.

The hub holds one :class:`~technic_stream.redis.pubsub.PubSubConnection`. A channel is
subscribed in Redis when its first local subscriber joins and unsubscribed when the last
leaves (reference counting). Each message is parsed once (offset, epoch), turned into the
client frame once, and handed to every subscriber synchronously — subscribers only append
to their connection's bounded queue, so fan-out never waits on a socket.

If the pub/sub connection is lost, messages may have been missed: every subscription is
ended with ``insufficient_state`` (clients resubscribe with their last offset and recover
from history), and the hub reconnects with backoff. Readiness checks that pub/sub is
alive: the hub publishes a heartbeat on its own channel and expects it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from technic_stream.gateway import metrics as m
from technic_stream.redis.pubsub import PubSubConnection

__all__ = ["Hub", "Subscriber"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0


class Subscriber(Protocol):
    channel: str

    def on_message(self, offset: int, epoch: str, frame: bytes) -> None: ...

    def on_lost(self, reason: str) -> None: ...


class _Channel:
    __slots__ = ("name", "ready", "subs")

    def __init__(self, name: str, ready: asyncio.Future[None]) -> None:
        self.name = name
        self.subs: set[Subscriber] = set()
        self.ready = ready


class Hub:
    def __init__(
        self,
        url: str,
        redis: aioredis.Redis,
        prefix: str = "technic:",
        *,
        silence_s: float = 15.0,
        timeout_s: float = 5.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._redis = redis
        self._prefix = prefix
        self._silence_s = silence_s
        self._timeout = timeout_s
        self._conn: PubSubConnection | None = None
        self._channels: dict[bytes, _Channel] = {}
        self._node = f"{prefix}gw:{secrets.token_hex(6)}".encode()
        self._node_ready: asyncio.Future[None] | None = None
        self._last_heard = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._connected = asyncio.Event()
        self._on_change = on_change

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self._connect()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="hub-heartbeat"),
        ]

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        conn = PubSubConnection(self._url, self._on_push, self._on_lost, timeout_s=self._timeout)
        await conn.connect()
        self._conn = conn
        self._node_ready = loop.create_future()
        conn.subscribe([self._node])
        await asyncio.wait_for(asyncio.shield(self._node_ready), self._timeout)
        self._last_heard = time.monotonic()
        self._connected.set()

    async def aclose(self) -> None:
        self._closing = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._conn is not None:
            self._conn.close()

    def pubsub_name(self, channel: str) -> bytes:
        return f"{self._prefix}ch:{{{channel}}}".encode()

    # -- subscribers -----------------------------------------------------------------------

    @property
    def channels(self) -> int:
        return len(self._channels)

    async def join(self, sub: Subscriber) -> None:
        """Add ``sub``; returns once Redis confirmed the channel's subscription, so every
        message published from now on reaches ``sub.on_message``."""
        if not self._connected.is_set():
            raise ConnectionError("Redis pub/sub is reconnecting")
        key = self.pubsub_name(sub.channel)
        chan = self._channels.get(key)
        if chan is None:
            chan = _Channel(sub.channel, asyncio.get_running_loop().create_future())
            self._channels[key] = chan
            assert self._conn is not None
            self._conn.subscribe([key])
            m.CHANNELS.set(len(self._channels))
        chan.subs.add(sub)
        try:
            await asyncio.wait_for(asyncio.shield(chan.ready), self._timeout)
        except BaseException:
            self.leave(sub)
            raise

    def leave(self, sub: Subscriber) -> None:
        key = self.pubsub_name(sub.channel)
        chan = self._channels.get(key)
        if chan is None or sub not in chan.subs:
            return
        chan.subs.discard(sub)
        if not chan.subs:
            del self._channels[key]
            m.CHANNELS.set(len(self._channels))
            if self._conn is not None and not self._conn.closed:
                self._conn.unsubscribe([key])
            if not chan.ready.done():
                chan.ready.cancel()

    def active_channels(self) -> list[str]:
        return [c.name for c in self._channels.values()]

    # -- pushes ----------------------------------------------------------------------------

    def _on_push(self, kind: bytes, channel: bytes, data: bytes) -> None:
        self._last_heard = time.monotonic()
        if kind == b"message":
            chan = self._channels.get(channel)
            if chan is None:
                return  # our node heartbeat, or a channel just left
            m.MESSAGES_IN.inc()
            try:
                head = orjson.loads(data)
                offset, epoch = int(head["offset"]), str(head["epoch"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("unreadable channel message", extra={"channel": chan.name})
                m.DROPS.labels("unreadable").inc()
                return
            frame = b'{"type":"pub",' + data[1:]
            for sub in tuple(chan.subs):
                sub.on_message(offset, epoch, frame)
        elif kind == b"subscribe":
            if channel == self._node:
                if self._node_ready is not None and not self._node_ready.done():
                    self._node_ready.set_result(None)
                return
            chan = self._channels.get(channel)
            if chan is not None and not chan.ready.done():
                chan.ready.set_result(None)
        elif kind == b"error":
            log.error("redis pub/sub error", extra={"error": data.decode(errors="replace")})

    def _on_lost(self, exc: BaseException | None) -> None:
        self._connected.clear()
        if self._closing:
            return
        log.warning(
            "redis pub/sub connection lost; every subscription must recover",
            extra={"error": repr(exc) if exc else "closed by server"},
        )
        channels, self._channels = self._channels, {}
        m.CHANNELS.set(0)
        for chan in channels.values():
            if not chan.ready.done():
                chan.ready.set_exception(ConnectionError("Redis pub/sub connection lost"))
                chan.ready.exception()  # retrieved: nobody may be waiting
            for sub in tuple(chan.subs):
                sub.on_lost("insufficient_state")
        self._tasks.append(asyncio.create_task(self._reconnect(), name="hub-reconnect"))
        if self._on_change is not None:
            self._on_change()

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                await self._connect()
                m.PUBSUB_RECONNECTS.inc()
                log.info("redis pub/sub reconnected")
                return
            except (OSError, ConnectionError, TimeoutError) as exc:
                log.warning("redis pub/sub reconnect failed", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if self._connected.is_set():
                with contextlib.suppress(Exception):
                    await self._redis.publish(self._node, b"")

    # -- readiness -------------------------------------------------------------------------

    async def check(self) -> None:
        """Readiness: connected, and pub/sub heard from within the silence threshold."""
        if not self._connected.is_set():
            raise ConnectionError("Redis pub/sub is reconnecting")
        silent = time.monotonic() - self._last_heard
        if silent > self._silence_s:
            raise TimeoutError(f"Redis pub/sub silent for {silent:.0f}s")

    def stats(self) -> dict[str, Any]:
        return {"channels": len(self._channels), "connected": self._connected.is_set()}
