"""A minimal Redis pub/sub connection that hands every push to a callback, synchronously.

Why not redis-py's ``PubSub``: it reads one message per awaited call (a few coroutine
hops and a parse per message) and, on a dropped connection, reconnects and resubscribes
silently — so messages published meanwhile vanish without anyone knowing. A gateway must
know: every subscriber has to be told that its stream has a hole. Here bytes arrive in an
``asyncio.Protocol``, every complete RESP2 push in them is parsed in one pass and given to
``on_push(kind, channel, data)`` at once (the caller fans out without awaiting), and a
lost connection is reported once to ``on_lost`` and never repaired behind its back.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlparse

__all__ = ["PubSubConnection", "parse_pushes"]

OnPush = Callable[[bytes, bytes, bytes], None]
OnLost = Callable[[BaseException | None], None]


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def parse_pushes(buf: bytes | bytearray, pos: int = 0) -> tuple[list[list[bytes]], int]:
    """Complete flat RESP2 replies in ``buf`` from ``pos``: (replies as lists of bytes,
    position after the last complete one). Integers come back as their digits; a simple
    string or error as a one-element list (errors keep their ``-``)."""
    out: list[list[bytes]] = []
    n = len(buf)
    while pos < n:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            break
        head = buf[pos]
        if head == 0x2A:  # '*' array of bulk strings / integers
            count = int(buf[pos + 1 : end])
            p = end + 2
            items: list[bytes] = []
            complete = True
            for _ in range(count):
                e = buf.find(b"\r\n", p)
                if e < 0:
                    complete = False
                    break
                kind = buf[p]
                if kind == 0x24:  # '$' bulk string
                    size = int(buf[p + 1 : e])
                    if size < 0:
                        items.append(b"")
                        p = e + 2
                        continue
                    start = e + 2
                    if start + size + 2 > n:
                        complete = False
                        break
                    items.append(bytes(buf[start : start + size]))
                    p = start + size + 2
                else:  # ':' integer or '+' simple string inside the array
                    items.append(bytes(buf[p + 1 : e]))
                    p = e + 2
            if not complete:
                break
            out.append(items)
            pos = p
        else:  # '+OK', '-ERR ...', ':n'
            out.append([bytes(buf[pos if head == 0x2D else pos + 1 : end])])
            pos = end + 2
    return out, pos


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PubSubConnection) -> None:
        self._owner = owner
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._buf:
            self._buf += data
            replies, pos = parse_pushes(self._buf)
            del self._buf[:pos]
        else:
            replies, pos = parse_pushes(data)
            if pos < len(data):
                self._buf += data[pos:]
        for reply in replies:
            self._owner._reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(exc)


class PubSubConnection:
    """One subscriber connection. Not reusable: after a loss, make a new one."""

    def __init__(self, url: str, on_push: OnPush, on_lost: OnLost, *, timeout_s: float = 5.0):
        self._url = url
        self._on_push = on_push
        self._on_lost = on_lost
        self._timeout = timeout_s
        self._transport: asyncio.Transport | None = None
        self._auth: asyncio.Future[list[bytes]] | None = None
        self.closed = False

    async def connect(self) -> None:
        u = urlparse(self._url)
        loop = asyncio.get_running_loop()
        factory = lambda: _Protocol(self)  # noqa: E731
        if u.scheme == "unix":
            conn = loop.create_unix_connection(factory, u.path)
        else:
            ctx = ssl.create_default_context() if u.scheme == "rediss" else None
            conn = loop.create_connection(
                factory, u.hostname or "127.0.0.1", u.port or 6379, ssl=ctx
            )
        transport, _ = await asyncio.wait_for(conn, self._timeout)
        self._transport = transport
        if u.password:
            self._auth = loop.create_future()
            user = unquote(u.username or "default").encode()
            self._write(_command(b"AUTH", user, unquote(u.password).encode()))
            reply = await asyncio.wait_for(self._auth, self._timeout)
            if reply[0].startswith(b"-"):
                self.close()
                raise ConnectionError(f"redis AUTH failed: {reply[0][1:].decode(errors='replace')}")

    def _write(self, data: bytes) -> None:
        if self._transport is None or self.closed:
            raise ConnectionError("pub/sub connection is closed")
        self._transport.write(data)

    def subscribe(self, channels: Iterable[bytes]) -> None:
        chans = list(channels)
        if chans:
            self._write(_command(b"SUBSCRIBE", *chans))

    def unsubscribe(self, channels: Iterable[bytes]) -> None:
        chans = list(channels)
        if chans:
            self._write(_command(b"UNSUBSCRIBE", *chans))

    def ping(self) -> None:
        self._write(_command(b"PING"))

    def _reply(self, reply: list[bytes]) -> None:
        if self._auth is not None and not self._auth.done():
            self._auth.set_result(reply)
            return
        if len(reply) >= 3:
            self._on_push(reply[0], reply[1], reply[2])
        elif reply and reply[0].startswith(b"-"):
            self._on_push(b"error", b"", reply[0])
        elif reply:
            self._on_push(reply[0], b"", reply[1] if len(reply) > 1 else b"")

    def _lost(self, exc: BaseException | None) -> None:
        was_closed = self.closed
        self.closed = True
        if self._auth is not None and not self._auth.done():
            self._auth.set_exception(ConnectionError("connection lost during AUTH"))
        if not was_closed:
            self._on_lost(exc)

    def close(self) -> None:
        """Close without reporting a loss."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()
