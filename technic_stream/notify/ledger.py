"""The notifier's Redis state: a ledger of delivery outcomes, and a queue per target.

Keys (prefix ``technic:``):

* ``notify:d:{event_id}`` — a delivery's outcome: ``sent``, ``failed``, ``limited`` or
  ``queued`` (waiting in its target's queue), kept ``notifier_ledger_ttl_s``. A
  redelivered alert skips every delivery recorded here; a delivery without an entry (its
  notifier died mid-attempt) is attempted again under the same event id.
* ``notify:q:{target_id}`` — list of deliveries waiting for one target, oldest first: a
  target that failed gets everything after that failure through its queue, in order.
* ``notify:due`` — sorted set: target id → when its queue's head may be tried again
  (epoch ms). The queue and this time are the target's circuit breaker: while a queue
  exists, new deliveries join it instead of being attempted; at the due time one
  attempt is made (half open), and a success drains the queue.
* ``notify:lock:{target_id}`` — the process sending to a target (direct or from its
  queue), so one target sees one sender and its deliveries stay in order.
* ``notify:rate:{owner}:{minute}`` — set of the event ids admitted for an owner in a
  minute (at most ``notifier_owner_rate``).
* ``notify:dg:{owner}|{tf}|{ts}`` — with ``notifier_digest_s``: the alerts of one bar of
  an owner's, waiting to go out together; ``notify:dg:due`` — when each digest is due.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from technic_stream.redis.resp import Script, execute

__all__ = ["Ledger"]

# KEYS: ledger entry, queue, due set; ARGV: record, target, due ms, ledger ttl.
# Joins the queue unless the delivery has an outcome already; 1 joined, 0 skipped.
_ENQUEUE = Script("""
local state = redis.call('GET', KEYS[1])
if state then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], 'queued', 'EX', ARGV[4])
redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[2])
return 1
""")

# KEYS: queue, ledger entry, due set; ARGV: event id, outcome, ledger ttl, target.
# The queue's head is done: pop it (if it is that event), record the outcome; forget the
# target's due time when its queue is empty. Returns what is left in the queue.
_FINISH = Script("""
local head = redis.call('LINDEX', KEYS[1], 0)
if head and cjson.decode(head)['eid'] == ARGV[1] then
  redis.call('LPOP', KEYS[1])
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('ZREM', KEYS[3], ARGV[4]) end
return left
""")

# KEYS: queue, due set; ARGV: event id, record (attempts and history updated), due ms,
# target. The head failed again: keep it, with its history, until ``due``.
_RESCHEDULE = Script("""
local head = redis.call('LINDEX', KEYS[1], 0)
if head and cjson.decode(head)['eid'] == ARGV[1] then
  redis.call('LSET', KEYS[1], 0, ARGV[2])
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
""")

# KEYS: the owner's set for the minute; ARGV: limit, ttl, event ids. One char per id.
_ADMIT = Script("""
local out = {}
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    out[#out + 1] = '1'
  elseif redis.call('SCARD', KEYS[1]) < tonumber(ARGV[1]) then
    redis.call('SADD', KEYS[1], ARGV[i])
    out[#out + 1] = '1'
  else
    out[#out + 1] = '0'
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return table.concat(out)
""")

# KEYS: the bar's digest list, the digest due set, the alert's ledger entry; ARGV: alert
# JSON, digest member, due ms, ttl. Adds the alert to its bar's digest once.
_DIGEST_ADD = Script("""
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[2])
redis.call('SET', KEYS[3], 'digested', 'EX', ARGV[4])
return 1
""")

# KEYS: the digest list, the due set; ARGV: items sent, member, next due ms. Drops the
# sent items; a digest that grew meanwhile stays due for its new items.
_DIGEST_DONE = Script("""
redis.call('LTRIM', KEYS[1], tonumber(ARGV[1]), -1)
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
end
return 1
""")

# KEYS: queue, due set; ARGV: target. An empty queue's target is no longer due.
_IDLE = Script("""
if redis.call('LLEN', KEYS[1]) == 0 then return redis.call('ZREM', KEYS[2], ARGV[1]) end
return 0
""")

_UNLOCK = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

#: A sender's hold on a target lapses this long after its last attempt (a notifier that
#: dies holding one delays that target this long, no more).
LOCK_MS = 15_000
FINAL = frozenset({"sent", "failed", "limited", "queued"})


class Ledger:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self.redis = redis
        self.p = f"{prefix}notify:"
        self.ttl_s = ttl_s
        self.token = secrets.token_hex(8)  # this process, as lock holder
        self.due_key = f"{self.p}due"
        self._scripts = (_ENQUEUE, _FINISH, _RESCHEDULE, _UNLOCK, _ADMIT, _DIGEST_ADD,
                         _DIGEST_DONE, _IDLE)  # fmt: skip
        self._pending: list[tuple[list[Any], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def _d(self, event_id: str) -> str:
        return f"{self.p}d:{event_id}"

    def _q(self, target: str) -> str:
        return f"{self.p}q:{target}"

    async def outcomes(self, event_ids: Sequence[str]) -> list[str | None]:
        if not event_ids:
            return []
        raw = await self.redis.mget([self._d(e) for e in event_ids])
        return [None if v is None else _text(v) for v in raw]

    async def claim(self, targets: Sequence[str]) -> dict[str, bool]:
        """Per target: True when this process now holds it and its queue is empty (send
        directly), False when it must queue (someone else sends, or a backlog waits).
        Targets held but not free are released again."""
        if not targets:
            return {}
        cmds: list[Any] = []
        for t in targets:
            cmds.append(["SET", f"{self.p}lock:{t}", self.token, "NX", "PX", LOCK_MS])
            cmds.append(["LLEN", self._q(t)])
        replies = await execute(self.redis, cmds)
        free: dict[str, bool] = {}
        for i, t in enumerate(targets):
            held, backlog = replies[2 * i] is not None, int(replies[2 * i + 1])
            free[t] = held and backlog == 0
            if held and backlog:
                await self.unlock(t)
        return free

    async def lock(self, target: str) -> bool:
        return bool(await self.redis.set(f"{self.p}lock:{target}", self.token, nx=True, px=LOCK_MS))

    async def refresh(self, target: str) -> None:
        await self.redis.pexpire(f"{self.p}lock:{target}", LOCK_MS)

    async def unlock(self, *targets: str) -> None:
        if targets:
            await execute(
                self.redis, [_UNLOCK.call([f"{self.p}lock:{t}"], [self.token]) for t in targets],
                scripts=self._scripts,
            )  # fmt: skip

    async def record(self, event_id: str, outcome: str, *, holding: str | None = None) -> None:
        """Record a delivery's outcome (and renew the hold on target ``holding``). Returns
        once it is written. Records made at about the same time — by the senders of
        other targets — share one round trip (see :meth:`_flush`)."""
        cmds: list[Any] = [["SET", self._d(event_id), outcome, "EX", self.ttl_s]]
        if holding is not None:
            cmds.append(["PEXPIRE", f"{self.p}lock:{holding}", LOCK_MS])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((cmds, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        """Write every record queued so far in one pipeline, then those queued meanwhile."""
        while self._pending:
            await asyncio.sleep(0)  # let the other senders of this moment add theirs
            batch, self._pending = self._pending, []
            try:
                await execute(self.redis, [c for cmds, _ in batch for c in cmds])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def enqueue(self, target: str, records: Sequence[dict[str, Any]], due_ms: int) -> int:
        """Append deliveries to ``target``'s queue (in order); how many joined."""
        cmds = [
            _ENQUEUE.call([self._d(r["eid"]), self._q(target), self.due_key],
                          [orjson.dumps(r), target, due_ms, self.ttl_s])
            for r in records
        ]  # fmt: skip
        replies = await execute(self.redis, cmds, scripts=self._scripts)
        return sum(int(r) for r in replies)

    async def head(self, target: str) -> dict[str, Any] | None:
        raw = await self.redis.lindex(self._q(target), 0)
        return None if raw is None else orjson.loads(raw)

    async def finish(self, target: str, event_id: str, outcome: str) -> int:
        keys = [self._q(target), self._d(event_id), self.due_key]
        (left,) = await execute(
            self.redis, [_FINISH.call(keys, [event_id, outcome, self.ttl_s, target])],
            scripts=self._scripts,
        )  # fmt: skip
        return int(left)

    async def idle(self, target: str) -> None:
        """Forget ``target``'s due time if its queue is empty (atomically: a delivery
        queued meanwhile keeps it due)."""
        await execute(self.redis, [_IDLE.call([self._q(target), self.due_key], [target])],
                      scripts=self._scripts)  # fmt: skip

    async def reschedule(self, target: str, record: dict[str, Any], due_ms: int) -> None:
        keys = [self._q(target), self.due_key]
        await execute(
            self.redis,
            [_RESCHEDULE.call(keys, [record["eid"], orjson.dumps(record), due_ms, target])],
            scripts=self._scripts,
        )

    # -- digests: an owner's alerts of one bar, sent together ----------------------------

    async def digest_add(self, member: str, alert_id: str, alert: bytes, due_ms: int) -> int:
        """Add an alert to the digest ``member`` (``{owner}|{tf}|{ts}``); 0 if it was in
        one already (a redelivered alert)."""
        keys = [f"{self.p}dg:{member}", f"{self.p}dg:due", self._d(f"{alert_id}:digest")]
        (added,) = await execute(
            self.redis, [_DIGEST_ADD.call(keys, [alert, member, due_ms, self.ttl_s])],
            scripts=self._scripts,
        )  # fmt: skip
        return int(added)

    async def digests_due(self, now_ms: int, limit: int = 64) -> list[str]:
        raw = await self.redis.zrangebyscore(f"{self.p}dg:due", "-inf", now_ms, start=0,
                                             num=limit)  # fmt: skip
        return [_text(m) for m in raw]

    async def digest_items(self, member: str) -> list[bytes]:
        raw = await self.redis.lrange(f"{self.p}dg:{member}", 0, -1)
        return [v if isinstance(v, bytes) else str(v).encode() for v in raw]

    async def digest_done(self, member: str, sent: int, next_due_ms: int) -> None:
        keys = [f"{self.p}dg:{member}", f"{self.p}dg:due"]
        await execute(self.redis, [_DIGEST_DONE.call(keys, [sent, member, next_due_ms])],
                      scripts=self._scripts)  # fmt: skip

    async def due(self, now_ms: int, limit: int = 64) -> list[str]:
        raw = await self.redis.zrangebyscore(self.due_key, "-inf", now_ms, start=0, num=limit)
        return [_text(t) for t in raw]

    async def backlog(self) -> int:
        return int(await self.redis.zcard(self.due_key))

    async def admit(
        self, minute: int, limit: int, per_owner: dict[str, list[str]]
    ) -> dict[str, str]:
        """Which event ids fit each owner's ``limit`` for ``minute``: per owner a string of
        '1' (admitted) and '0', in order. A delivery admitted once is admitted again (a
        redelivered batch does not count twice). One round trip for every owner."""
        owners = [o for o, ids in per_owner.items() if ids]
        cmds = [_ADMIT.call([f"{self.p}rate:{o}:{minute}"], [limit, 120, *per_owner[o]])
                for o in owners]  # fmt: skip
        replies = await execute(self.redis, cmds, scripts=self._scripts)
        return {o: _text(r) for o, r in zip(owners, replies, strict=True)}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
