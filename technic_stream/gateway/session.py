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


Sender = Callable[[bytes], Awaitable[None]]
Closer = Callable[[int, str], Awaitable[Any]]


class Client:
    def __init__(
        self,
        who: Principal,
        send: Sender,
        close: Closer,
        *,
        queue_max: int,
        coalesce_max: int,
        on_unsubscribed: Callable[[Subscription], None],
    ) -> None:
        self.who = who
        self._send = send
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
        # a writer task exists only while there is something to write (an idle connection
        # holds no task: memory per connection is what the issue bounds)
        self._writer: asyncio.Task[None] | None = None

    # -- queueing --------------------------------------------------------------------------

    def push(self, sub: Subscription, frame: bytes) -> None:
        if self.killed is not None:
            return
        if sub.policy == "conflate":
            if sub.pending is None:
                self._queue.append(sub)
                if self._writer is None:
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
        if self._writer is None:
            self._kick()

    def reply(self, doc: dict[str, Any]) -> None:
        """A control frame (replies, notices): queued in order, never dropped."""
        if self.killed is None:
            self._queue.append((None, orjson.dumps(doc)))
            if self._writer is None:
                self._kick()

    def reply_frames(self, frames: list[bytes]) -> None:
        if self.killed is None:
            self._queue.extend((None, f) for f in frames)
            if self._writer is None:
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
        if self._writer is None:
            self._kick()

    # -- writing ---------------------------------------------------------------------------

    def _kick(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        """Drain the queue (several messages per frame), then end; or close if killed."""
        queue = self._queue
        try:
            m.QUEUE_DEPTH.observe(len(queue))
            while queue and self.killed is None:
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
                    await self._send(b"\n".join(batch))
                    m.WRITES.inc()
                    m.DELIVERIES.inc(delivered)
            if self.killed is not None:
                await self._close(*self.killed)
        except (ConnectionError, RuntimeError):
            pass  # the socket went away; the handler notices and cleans up
        finally:
            self._writer = None

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
