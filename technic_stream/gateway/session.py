"""One WebSocket client: its subscriptions, its bounded outgoing queue and its writer.

Messages for a client go into one queue (at most ``queue_max`` entries); one writer task
drains it, joining up to ``coalesce_max`` messages with ``\\n`` into one text frame. What
happens when the queue is full is each subscription's policy:

* ``disconnect`` — the client is closed with 4008 (slow consumer); it reconnects and
  recovers from history, so nothing is lost silently;
* ``drop_oldest`` — the oldest queued message of that subscription goes, and the client
  is sent ``{"type":"lagged","channel":..,"dropped":n}`` before its next messages;
* ``conflate`` — a subscription never holds more than one queued message: a newer one
  replaces it in place (latest value wins, as quotes want).

A subscription starts *recovering*: live messages are buffered while its history is
read, then merged by offset (no gap, no duplicate) — the Centrifugo model. Live, a
message whose offset is not the next one, or whose epoch changed, ends the subscription
with ``unsubscribed`` and ``resubscribe: true`` so the client recovers cleanly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from technic_stream.gateway import metrics as m
from technic_stream.gateway.access import Channel, Policy
from technic_stream.gateway.auth import Principal

__all__ = ["Client", "Subscription", "pub_frame"]

log = logging.getLogger(__name__)

RECOVERING, LIVE = 0, 1


def pub_frame(channel: str, offset: int, epoch: str, data: bytes) -> bytes:
    """The client frame of one channel message (the same shape the hub builds from Redis)."""
    return b'{"type":"pub","channel":%b,"offset":%d,"epoch":"%b","data":%b}' % (
        orjson.dumps(channel),
        offset,
        epoch.encode(),
        data,
    )


class Subscription:
    __slots__ = (
        "buffer", "channel", "client", "closed", "dropped", "epoch", "info", "offset",
        "pending", "policy", "state",
    )  # fmt: skip

    def __init__(self, client: Client, info: Channel, policy: Policy) -> None:
        self.client = client
        self.info = info
        self.channel = info.name
        self.policy = policy
        self.state = RECOVERING
        self.buffer: list[tuple[int, str, bytes]] = []
        self.epoch = ""
        self.offset = 0
        self.pending: bytes | None = None  # conflate: the one queued message
        self.dropped = 0
        self.closed = False

    def on_message(self, offset: int, epoch: str, frame: bytes) -> None:
        if self.closed:
            return
        if self.state == RECOVERING:
            if len(self.buffer) >= self.client.queue_max:
                self.client.end(self, "insufficient_state")
                return
            self.buffer.append((offset, epoch, frame))
            return
        self._live(offset, epoch, frame)

    def _live(self, offset: int, epoch: str, frame: bytes) -> None:
        if epoch != self.epoch:
            if self.epoch or offset != 1:
                self.client.end(self, "new_epoch")
                return
            self.epoch = epoch  # the channel's first message: its epoch starts now
        if offset <= self.offset:
            m.DROPS.labels("duplicate").inc()
        elif offset != self.offset + 1:
            self.client.end(self, "gap")
        else:
            self.offset = offset
            self.client.push(self, frame)

    def go_live(self, epoch: str, offset: int) -> None:
        """History is merged up to ``offset`` in ``epoch``: replay the buffer after it."""
        self.epoch, self.offset, self.state = epoch, offset, LIVE
        buffered, self.buffer = self.buffer, []
        for o, e, f in buffered:
            if self.closed:
                return
            if e == epoch and o <= offset:
                continue  # already in the history sent
            self._live(o, e, f)

    def on_lost(self, reason: str) -> None:
        self.client.end(self, reason)


Closer = Callable[[int, str], Awaitable[Any]]

#: a connection whose socket buffer holds more than this is written to only once it drains
HIGH_WATER = 256 * 1024
#: how often a backlogged connection's socket buffer is looked at
DRAIN_POLL_S = 0.005


class Tally:
    """Per-write counts kept as plain ints (a Prometheus ``inc`` takes a lock; a write
    happens per message at low rates); :meth:`publish` moves them to the counters."""

    writes = 0
    deliveries = 0

    @classmethod
    def publish(cls) -> None:
        writes, deliveries = cls.writes, cls.deliveries
        cls.writes = cls.deliveries = 0
        m.WRITES.inc(writes)
        m.DELIVERIES.inc(deliveries)


def text_frame_header(n: int) -> bytes:
    """The header of an unmasked, final WebSocket text frame of ``n`` bytes (RFC 6455)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65_536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


class Client:
    """Writes synchronously to the socket while its buffer is below :data:`HIGH_WATER`
    (once per event-loop pass, however many messages arrived in it); a task waits for
    the buffer to drain only for a client that fell behind."""

    def __init__(
        self,
        who: Principal,
        transport: asyncio.WriteTransport,
        close: Closer,
        *,
        queue_max: int,
        coalesce_max: int,
        on_unsubscribed: Callable[[Subscription], None],
    ) -> None:
        self.who = who
        self._transport = transport
        self._close = close
        self.queue_max = queue_max
        self._coalesce = coalesce_max
        self._queue: collections.deque[tuple[Subscription | None, bytes] | Subscription] = (
            collections.deque()
        )
        self.subs: dict[str, Subscription] = {}
        self._lagged: dict[str, int] = {}
        self._on_unsubscribed = on_unsubscribed
        self.killed: tuple[int, str] | None = None
        self._scheduled = False  # a flush is due at the end of this event-loop pass
        # a task exists only for a backlogged or closing connection (an idle connection
        # holds none: memory per connection is what the issue bounds)
        self._writer: asyncio.Task[None] | None = None

    # -- queueing --------------------------------------------------------------------------

    def push(self, sub: Subscription, frame: bytes) -> None:
        if self.killed is not None:
            return
        if sub.policy == "conflate":
            if sub.pending is None:
                self._queue.append(sub)
                if not self._scheduled:
                    self._kick()
            else:
                m.DROPS.labels("conflated").inc()
            sub.pending = frame
            return
        if len(self._queue) >= self.queue_max:
            if sub.policy == "disconnect":
                m.SLOW_DISCONNECTS.inc()
                m.DROPS.labels("slow_disconnect").inc()
                self.kill(4008, f"slow consumer: more than {self.queue_max} messages queued")
                return
            sub.dropped += 1
            self._lagged[sub.channel] = self._lagged.get(sub.channel, 0) + 1
            m.DROPS.labels("drop_oldest").inc()
            for i, item in enumerate(self._queue):
                if type(item) is tuple and item[0] is sub:
                    del self._queue[i]
                    break
            else:
                return  # nothing of this channel queued: the new message is the one dropped
        self._queue.append((sub, frame))
        if not self._scheduled:
            self._kick()

    def reply(self, doc: dict[str, Any]) -> None:
        """A control frame (replies, notices): queued in order, never dropped."""
        if self.killed is None:
            self._queue.append((None, orjson.dumps(doc)))
            if not self._scheduled:
                self._kick()

    def reply_frames(self, frames: list[bytes]) -> None:
        if self.killed is None:
            self._queue.extend((None, f) for f in frames)
            if not self._scheduled:
                self._kick()

    def end(self, sub: Subscription, reason: str) -> None:
        """Stop ``sub`` because its stream cannot continue gaplessly; the client resubscribes."""
        if sub.closed:
            return
        m.GAPS.labels(reason).inc()
        self.drop(sub)
        self.reply(
            {
                "type": "unsubscribed",
                "channel": sub.channel,
                "reason": reason,
                "resubscribe": True,
                "offset": sub.offset,
                "epoch": sub.epoch,
            }
        )

    def drop(self, sub: Subscription) -> None:
        if sub.closed:
            return
        sub.closed = True
        sub.pending = None
        if self.subs.get(sub.channel) is sub:
            del self.subs[sub.channel]
        self._on_unsubscribed(sub)

    def kill(self, code: int, reason: str) -> None:
        """Close the connection (from a synchronous fan-out path)."""
        if self.killed is not None:
            return
        self.killed = (code, reason)
        self._queue.clear()
        if self._writer is None:  # now, so that finished() waits for the close
            self._writer = asyncio.get_running_loop().create_task(self._backlog())

    # -- writing ---------------------------------------------------------------------------

    def _kick(self) -> None:
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._writer is not None:
            return  # backlogged or closing: that task writes
        if self.killed is not None or not self._write_some():
            self._writer = asyncio.get_running_loop().create_task(self._backlog())

    def _write_some(self) -> bool:
        """Write queued messages while the socket takes them; True when all are written."""
        queue, transport = self._queue, self._transport
        if transport.is_closing():
            queue.clear()
            return True
        depth = len(queue)
        if depth:
            m.QUEUE_DEPTH.observe(depth)
        while queue:
            if transport.get_write_buffer_size() > HIGH_WATER:
                return False
            batch: list[bytes] = []
            if self._lagged:
                lagged, self._lagged = self._lagged, {}
                batch += [
                    orjson.dumps({"type": "lagged", "channel": ch, "dropped": n})
                    for ch, n in lagged.items()
                ]
            delivered = 0
            while queue and len(batch) < self._coalesce:
                item = queue.popleft()
                if type(item) is tuple:
                    sub, frame = item
                    if sub is not None:
                        if sub.closed:
                            continue
                        delivered += 1
                    batch.append(frame)
                else:
                    sub = item  # type: ignore[assignment]
                    assert sub is not None
                    latest = sub.pending
                    sub.pending = None
                    if sub.closed or latest is None:
                        continue
                    delivered += 1
                    batch.append(latest)
            if batch:
                payload = batch[0] if len(batch) == 1 else b"\n".join(batch)
                transport.writelines((text_frame_header(len(payload)), payload))
                Tally.writes += 1
                Tally.deliveries += delivered
        return True

    async def _backlog(self) -> None:
        """For a client that fell behind (or is being closed): wait for the socket to
        drain, write, repeat; then close if killed."""
        try:
            while self.killed is None:
                while self._transport.get_write_buffer_size() > HIGH_WATER // 2:
                    if self._transport.is_closing():
                        return
                    await asyncio.sleep(DRAIN_POLL_S)
                if self._write_some():
                    break
            if self.killed is not None:
                await self._close(*self.killed)
        except (ConnectionError, RuntimeError):
            pass  # the socket went away; the handler notices and cleans up
        finally:
            self._writer = None
            if self._queue and self.killed is None and not self._scheduled:
                self._kick()

    async def finished(self) -> None:
        """Wait for the writer in progress (after :meth:`kill`: until the socket closed)."""
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(writer)

    async def aclose(self) -> None:
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        for sub in list(self.subs.values()):
            self.drop(sub)

    def flushed(self) -> bool:
        return not self._queue
