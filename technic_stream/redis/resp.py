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

import asyncio
import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from technic_stream.kernels.inline import hset_lines

try:  # redis-py's hiredis parser (private): replies read in C, see _read_hiredis
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
except ImportError:  # pragma: no cover - another redis-py layout: read_response per reply
    NOT_ENOUGH_DATA = object()

    class _AsyncHiredisParser:  # type: ignore[no-redef]
        _reader: Any = None


__all__ = [
    "Arg", "AutoPipeline", "Command", "InlineHset", "KeyedCommand", "Script", "execute",
    "execute_each", "hmget_table", "pack", "pack_args",
]  # fmt: skip

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
        t = type(a)
        # (the two usual kinds first: _b's chain of isinstance checks cost ~3 µs an argument)
        v: bytes = a if t is bytes else a.encode() if t is str else _b(a)  # type: ignore[assignment,union-attr]
        out.append(b"$%d\r\n%b\r\n" % (len(v), v))
    return out


class KeyedCommand:
    """One command whose arguments are fixed but for its key, packed once:
    ``KeyedCommand(["HMGET"], ["status", "fired"])("rule:r1")`` is the RESP form of
    ``HMGET rule:r1 status fired``, built with one format instead of packing every
    argument again (the gateway sends a few of these per request)."""

    __slots__ = ("_head", "_tail")

    def __init__(self, head: Sequence[Arg], tail: Sequence[Arg] = ()) -> None:
        n = len(head) + 1 + len(tail)
        self._head = b"*%d\r\n" % n + b"".join(pack_args(head))
        self._tail = b"".join(pack_args(tail))

    def __call__(self, key: str | bytes) -> bytes:
        k = key.encode() if isinstance(key, str) else key
        return b"%b$%d\r\n%b\r\n%b" % (self._head, len(k), k, self._tail)


Command = Sequence[Arg] | bytes


def pack(commands: Iterable[Command]) -> bytes:
    """The wire form of ``commands``: each a sequence of arguments, or ``bytes`` — a
    whole command packed already (see :class:`InlineHset`)."""
    out: list[bytes] = []
    for cmd in commands:
        if type(cmd) is bytes:
            out.append(cmd)
            continue
        out.append(b"*%d\r\n" % len(cmd))
        out.extend(pack_args(cmd))
    return b"".join(out)


class InlineHset:
    """``HSET key f1 v1 f2 v2 ...`` for one fixed field set, in Redis's inline command
    form: space-separated words, which Redis takes anywhere a RESP command may stand.
    Keys and names with blanks or quotes, and lines over 60 KB, use the RESP form.
    Numbers are formatted by orjson in one call — the shortest text that reads back as
    the same float, as ``repr`` gives — which costs a fifth of formatting them one by
    one. Not-a-number is written ``nan``; callers send rows holding an infinity through
    :meth:`general` instead (orjson cannot tell it from NaN)."""

    def __init__(self, fields: Sequence[str]) -> None:
        if any(not f or _WS.search(f) for f in fields):
            raise ValueError("inline field names must be non-empty words")
        self.fields = list(fields)
        self._names = [f.encode() for f in fields]
        self._fmt = b"HSET %b " + b" ".join(f.encode() + b" %b" for f in fields) + b"\r\n"
        self._scratch: np.ndarray | None = None  # many()'s line buffer, reused

    def command(self, key: str, values: Sequence[float | int]) -> Command:
        if len(values) != len(self.fields):
            raise ValueError(f"{len(values)} values for {len(self.fields)} fields")
        if not key or _WS.search(key):  # not a word: the general form
            return self.general(key, values)
        words = orjson.dumps(values).replace(b"null", b"nan")[1:-1].split(b",")
        line = self._fmt % (key.encode(), *words)
        return line if len(line) <= _INLINE_MAX else self.general(key, values)

    def many(self, keys: Sequence[str], ts: np.ndarray, values: np.ndarray) -> list[Command]:
        """:meth:`command` for each row — ``ts[i]`` (an integer) then ``values[i]`` — with
        the lines assembled in one numba call over one orjson dump of ``values`` (half the
        cost a row of the one-row form); the same bytes, row for row."""
        n = len(keys)
        if values.shape != (n, len(self.fields) - 1) or len(ts) != n:
            raise ValueError(f"{n} keys, {len(ts)} ts and {values.shape} values for "
                             f"{len(self.fields)} fields")  # fmt: skip
        special = np.isinf(values).any(axis=1)
        for i, key in enumerate(keys):
            if not key or _WS.search(key):
                special[i] = True
        plain = np.flatnonzero(~special).tolist()
        out: list[Command] = [b""] * n
        made = hset_lines([keys[i].encode() for i in plain], self._names, ts[plain],
                          values[plain], self._scratch) if plain else None  # fmt: skip
        if made is None:
            special[plain] = True
        else:
            lines, at = made
            if lines.base is not self._scratch:  # grown: keep the larger one
                self._scratch = lines.base
            # each line copied out on its own: one bytes object of all of them first
            # cost ~3x as much (the page faults of a fresh buffer that size)
            blob = lines.data
            for i, a, b in zip(plain, at[:-1].tolist(), at[1:].tolist(), strict=True):
                if b - a <= _INLINE_MAX:
                    out[i] = blob[a:b].tobytes()
                else:
                    special[i] = True
        for i in np.flatnonzero(special).tolist():
            out[i] = self.general(keys[i], [int(ts[i]), *values[i].tolist()])
        return out

    def general(self, key: str, values: Sequence[float | int]) -> Command:
        """The same command as RESP arguments (numbers as ``repr``: ``inf`` stays inf)."""
        return ["HSET", key, *(x for pair in zip(self.fields, values, strict=True) for x in pair)]


# Redis splits inline commands on blanks and honours quotes; it refuses lines over 64 KB
_WS = re.compile(r"[\s\"']")
_INLINE_MAX = 60_000


class Script:
    """A Lua script called by SHA1 inside packed pipelines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def call(self, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


async def execute(
    redis: aioredis.Redis,
    commands: Sequence[Command],
    *,
    scripts: Sequence[Script] = (),
) -> list[Any]:
    """Send ``commands`` in one write and return their replies in order.

    A reply that is an error raises it (after every reply is read, so the connection
    stays in step); ``NOSCRIPT`` for one of ``scripts`` is handled (see the module).
    """
    replies = await execute_each(redis, commands, scripts=scripts)
    for r in replies:
        if isinstance(r, ResponseError):
            raise r
    return replies


async def execute_each(
    redis: aioredis.Redis,
    commands: Sequence[Command],
    *,
    scripts: Sequence[Script] = (),
) -> list[Any]:
    """:func:`execute`, with an error reply returned in its command's place (a
    ``ResponseError``) instead of raised; a connection error still raises."""
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
    return replies


class AutoPipeline:
    """Commands asked for in one turn of the event loop, sent to Redis in one write.

    A server answering many small requests at once makes a round trip per request
    otherwise — on this project's VM ~200 µs of the client's CPU each, mostly the
    send, the wake-up and the receive. Each caller awaits its own reply (an error reply
    raises for that caller only; a connection error for every command of the write).
    Commands keep their order within a write; writes may overlap, so two commands
    whose order matters go in one :meth:`many`.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._queue: list[tuple[Command, Script | None, asyncio.Future[Any]]] = []
        self._flush: asyncio.Future[None] | None = None
        self.writes = 0  # (for tests and metrics: writes sent, commands queued)
        self.commands = 0

    async def __call__(self, command: Command, script: Script | None = None) -> Any:
        """``command``'s reply; ``script``: the one it calls (reloaded on ``NOSCRIPT``)."""
        return await self._enqueue(command, script)

    async def many(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands, adjacent and in order in one write."""
        return list(await asyncio.gather(*[self._enqueue(c, None) for c in commands]))

    def _enqueue(self, command: Command, script: Script | None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((command, script, fut))
        if self._flush is None:  # the first command of this turn: send them all next turn
            self._flush = asyncio.ensure_future(self._send())
        return fut

    async def _send(self) -> None:
        batch, self._queue, self._flush = self._queue, [], None
        self.writes += 1
        self.commands += len(batch)
        try:
            scripts = list({id(s): s for _, s, _ in batch if s is not None}.values())
            replies = await execute_each(self._redis, [c for c, _, _ in batch], scripts=scripts)
        except asyncio.CancelledError:
            for _, _, fut in batch:
                fut.cancel()
            raise
        except Exception as exc:  # the write failed: every command of it fails as it did
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, _, fut), reply in zip(batch, replies, strict=True):
            if fut.done():  # (a caller cancelled meanwhile)
                continue
            if isinstance(reply, ResponseError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)


async def hmget_table(
    redis: aioredis.Redis, keys: Sequence[str], fields: Sequence[str], *, per_trip: int = 10_000
) -> tuple[np.ndarray, np.ndarray]:
    """``fields`` of each hash in ``keys`` as a float table (keys by fields; a missing
    field is NaN) and a status per key: 2 every field present, 1 the hash lacks some,
    0 it lacks the first field or all of them (no hash). One pipelined ``HMGET`` per key,
    ``per_trip`` keys a round trip, packed from a shared suffix: 10,000 keys of four
    fields in ~55 ms here, where a Lua loop over the keys (one flat reply) took ~130 ms,
    ~70 of them the server's."""
    m = len(fields)
    if not fields:
        raise ValueError("hmget_table needs at least one field")
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (m + 2)
    tail = b"".join(pack_args(fields))
    tables: list[np.ndarray] = []
    states: list[np.ndarray] = []
    for lo in range(0, len(keys), per_trip):
        part = [k.encode() for k in keys[lo : lo + per_trip]]
        payload = b"".join([b"%b$%d\r\n%b\r\n%b" % (head, len(k), k, tail) for k in part])
        replies = await _roundtrip(redis, payload, len(part))
        for r in replies:
            if isinstance(r, Exception):
                raise r
        flat = [v for row in replies for v in row]
        if None in flat:  # (a C scan: the usual reply has every field)
            absent = np.fromiter((v is None for v in flat), dtype=np.bool_, count=len(flat))
        else:
            absent = np.zeros(len(flat), dtype=np.bool_)
        absent = absent.reshape(len(part), m)
        tables.append(_floats(flat).reshape(len(part), m))
        missing = absent.sum(axis=1)
        states.append(np.where(missing == 0, 2, np.where(absent[:, 0] | (missing == m), 0, 1)))
    if not tables:
        return np.empty((0, m)), np.empty(0, np.uint8)
    return np.concatenate(tables), np.concatenate(states).astype(np.uint8)


def _floats(values: list[bytes | None]) -> np.ndarray:
    """Hash values as float64, absent ones NaN: as one JSON array (orjson parses a
    number ten times faster than ``float(bytes)`` or NumPy's text parsing), else — an
    ``inf`` or a value that is no number — one by one."""
    try:
        text = b",".join([b"null" if v is None or v == b"nan" else v for v in values])
        return np.array(orjson.loads(b"[" + text + b"]"), dtype=np.float64)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return np.array([_float(v) for v in values], dtype=np.float64)


def _float(v: bytes | None) -> float:
    try:
        return float(v) if v is not None else math.nan
    except ValueError:
        return math.nan


async def _roundtrip(redis: aioredis.Redis, payload: bytes, n: int) -> list[Any]:
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(payload)
        parser = getattr(conn, "_parser", None)
        if isinstance(parser, _AsyncHiredisParser) and parser._reader is not None:
            async with asyncio.timeout(conn.socket_timeout):
                return await _read_hiredis(parser, n)
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


async def _read_hiredis(parser: _AsyncHiredisParser, n: int) -> list[Any]:
    """``n`` replies straight from the connection's hiredis reader: one C call per reply
    instead of a coroutine per reply (``read_response`` costs ~10 µs a reply, which a
    10,000-command pipeline feels). Errors come back as exception objects, as from the
    reader; a connection error raises. RESP2 only (no push messages on this path)."""
    reader = parser._reader
    assert reader is not None
    gets = reader.gets
    replies: list[Any] = []
    append = replies.append
    while len(replies) < n:
        reply = gets()
        if reply is NOT_ENOUGH_DATA:
            await parser.read_from_socket()
            continue
        if isinstance(reply, ConnectionError):
            raise reply
        append(reply)
    return replies


def _noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)
