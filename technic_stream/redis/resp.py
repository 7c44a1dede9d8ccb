"""Pipelines packed by hand, for the engine's per-batch writes.

redis-py packs every argument through its ``Encoder`` (about 2 µs an argument in the
asyncio client), which made writing a batch's values to Redis cost far more than
computing them. Here a batch of commands is packed into one RESP buffer with a few
``bytes`` joins, sent on one pooled connection and the replies read back in order. Lua
scripts go as ``EVALSHA``; a ``NOSCRIPT`` reply (the server restarted, or its script
cache was flushed) loads the script and reruns just those commands — safe, since a
command refused with ``NOSCRIPT`` did nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["Arg", "Script", "execute", "pack", "pack_args"]

Arg = bytes | str | int | float


def _b(a: Arg) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, bool):
        raise TypeError("booleans are not Redis arguments")
    if isinstance(a, int):
        return str(a).encode()
    if isinstance(a, float):
        return repr(a).encode()
    raise TypeError(f"not a Redis argument: {type(a).__name__}")


def pack_args(args: Iterable[Arg]) -> list[bytes]:
    """Each argument as a RESP bulk string (to splice into :func:`pack` commands)."""
    out = []
    for a in args:
        v = a if type(a) is bytes else _b(a)
        out.append(b"$%d\r\n%b\r\n" % (len(v), v))
    return out


def pack(commands: Iterable[Sequence[Arg] | tuple[int, bytes]]) -> bytes:
    """RESP for ``commands``: each a sequence of arguments, or ``(argc, prepacked)`` — a
    command whose arguments were already packed (see :func:`pack_args`)."""
    out: list[bytes] = []
    for cmd in commands:
        if len(cmd) == 2 and type(cmd[0]) is int and type(cmd[1]) is bytes:
            out.append(b"*%d\r\n" % cmd[0])
            out.append(cmd[1])
            continue
        out.append(b"*%d\r\n" % len(cmd))
        out.extend(pack_args(cmd))
    return b"".join(out)


class Script:
    """A Lua script called by SHA1 inside packed pipelines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def call(self, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


async def execute(
    redis: aioredis.Redis,
    commands: Sequence[Sequence[Arg] | tuple[int, bytes]],
    *,
    scripts: Sequence[Script] = (),
) -> list[Any]:
    """Send ``commands`` in one write and return their replies in order.

    A reply that is an error raises it (after every reply is read, so the connection
    stays in step); ``NOSCRIPT`` for one of ``scripts`` is handled (see the module).
    """
    if not commands:
        return []
    replies = await _roundtrip(redis, pack(commands), len(commands))
    missing = [i for i, r in enumerate(replies) if _noscript(r)]
    if missing and scripts:
        for script in scripts:
            await redis.script_load(script.source)
        again = await _roundtrip(redis, pack([commands[i] for i in missing]), len(missing))
        for i, r in zip(missing, again, strict=True):
            replies[i] = r
    for r in replies:
        if isinstance(r, ResponseError):
            raise r
    return replies


async def _roundtrip(redis: aioredis.Redis, payload: bytes, n: int) -> list[Any]:
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(payload)
        replies: list[Any] = []
        for _ in range(n):
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        await conn.disconnect()  # mid-reply: the connection is out of step
        raise
    finally:
        await pool.release(conn)


def _noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)
