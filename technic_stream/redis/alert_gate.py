"""The alert gate: one atomic decision per alert id, shared by every engine process.

A rule that holds on a bar is a *candidate*; whether it fires depends on state that
spans partitions and processes — the rule fired already (``once``), its cooldown per
symbol, its expiry, and its throttle (at most ``throttle_max`` firings in
``throttle_window_s``; one more pauses the rule until it is edited). A Lua script
decides, records the decision under the alert id and returns it. Asked again about the
same alert id — a replay after a crash — it returns the recorded decision, so the replay
produces exactly the alerts the first run did, whatever the clock says now.

Keys (prefix ``technic:``):

* ``rule:{rule_id}`` — hash: ``version`` (the rule's ts; a newer version re-arms the
  rule), ``status`` (active, fired, paused, expired), ``reason``, ``fired`` (count),
  ``last_fired_ms``, ``last_alert``. The gateway and dashboard read rule status here.
* ``rule:{rule_id}:fires`` — list of the latest firing times (newest first, at most
  ``throttle_max``), the throttle's sliding window.
* ``rule:{rule_id}:last`` — hash symbol → last firing time (cooldown; rules with one).
* ``rule:{rule_id}:decided:{n}`` — hash alert id → the decision, ``1`` or ``0``, of
  the decisions made in the ``n``-th span of ``decision_ttl_s`` (Redis's clock); a
  lookup reads span ``n`` and ``n - 1``, and a span's hash expires at the end of the span
  after it, so a decision is kept at least ``decision_ttl_s`` (at most twice that). One
  hash field per decision, not a key with its own expiry: a key each, read and written
  by a command each, cost Redis ~10 µs a candidate more.

Times are the Redis server's clock (``TIME``), one clock for every process.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from technic_stream.redis.channels import APPEND_LUA, ChannelPublisher
from technic_stream.redis.resp import Arg, Script, execute, pack_args

__all__ = ["AlertGate", "Candidates", "Decision", "GateRequest", "GateRule", "GateVerdict"]

# One rule's candidates, in order. KEYS: rule, fires, last, the owner channel's meta and
# hist ('' and '': no channel), and the base of the decision hashes (``decided``; the
# script appends the span); ARGV: version, mode,
# cooldown ms, expires ms (0: never), throttle max, throttle window ms, decision ttl, then
# the channel's name, maxlen, ttl and new epoch, then per candidate (symbol, alert id,
# data). A firing is appended to the channel in the same atomic step as its decision, so
# a replay that finds the decision knows the alert is in the channel already. Returns
# {verdicts, status, reason, changed_at}: verdicts one char per candidate ('1' fire,
# '0' not, 'R'/'r' the recorded decision of a replay), changed_at the 1-based index of
# the candidate whose decision changed the rule's status (0: none).
_GATE = (
    APPEND_LUA
    + """
local rule, fires, last, meta, hist = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local version, mode, cooldown = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local expires, tmax, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl, channel, maxlen, ch_ttl = tonumber(ARGV[7]), ARGV[8], ARGV[9], tonumber(ARGV[10])
local new_epoch = ARGV[11]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- the decisions recorded before: this span's hash and the one before, read in chunks
-- (unpack's limit); asked twice in one call, an id gets the call's own first decision
local n = (#ARGV - 11) / 3
local span = math.floor(tonumber(t[1]) / ttl)
local cur, prev = KEYS[6] .. ':' .. span, KEYS[6] .. ':' .. (span - 1)
local recorded, decided = {}, {}
local spans = {}
if redis.call('EXISTS', cur) == 1 then spans[#spans + 1] = cur end
if redis.call('EXISTS', prev) == 1 then spans[#spans + 1] = prev end
if #spans > 0 then
  local ids = {}
  for i = 1, n do ids[i] = ARGV[10 + 3 * i] end
  for j = 1, n, 4000 do
    local hi = math.min(j + 3999, n)
    for _, key in ipairs(spans) do
      local got = redis.call('HMGET', key, unpack(ids, j, hi))
      for m = 1, hi - j + 1 do
        if got[m] and not recorded[j + m - 1] then recorded[j + m - 1] = got[m] end
      end
    end
  end
end
local known = tonumber(redis.call('HGET', rule, 'version') or '-1')
if version > known then
  redis.call('HSET', rule, 'version', version, 'status', 'active', 'reason', '')
  redis.call('DEL', fires, last)
end
local st = redis.call('HMGET', rule, 'status', 'reason')
local status, reason = st[1] or 'active', st[2] or ''
-- firings inside the throttle window: the list holds the newest (at most tmax) firing
-- times, newest first, so binary-search for the first one outside the window
local lo, hi = 0, math.min(redis.call('LLEN', fires), tmax)
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if now - tonumber(redis.call('LINDEX', fires, mid)) < window then lo = mid + 1 else hi = mid end
end
local recent, ch, now_s = lo, nil, tostring(now)
local fired, last_alert, stamps, verdicts, changed_at = 0, '', {}, {}, 0
local writes, seen = {}, {}
for i = 1, n do
  local k = 9 + 3 * i
  local symbol, alert = ARGV[k], ARGV[k + 1]
  local prior = seen[alert] or recorded[i]
  if prior then
    verdicts[#verdicts + 1] = (prior == '1') and 'R' or 'r'
  else
    local fire = '0'  -- (strings throughout: a number costs a conversion each time)
    if status == 'active' then
      if expires > 0 and now >= expires then
        status, reason, changed_at = 'expired', 'expired', i
      else
        local cooled = true
        if cooldown > 0 then
          local prev = tonumber(redis.call('HGET', last, symbol) or '-1')
          cooled = not (prev >= 0 and now - prev < cooldown)
        end
        if cooled then
          if recent >= tmax then
            status, changed_at = 'paused', i
            reason = 'throttled: more than ' .. tmax .. ' firings in ' .. (window / 1000) .. ' s'
          else
            fire, recent, fired, last_alert = '1', recent + 1, fired + 1, alert
            stamps[#stamps + 1] = now_s
            if cooldown > 0 then
              redis.call('HSET', last, symbol, now_s)
            end
            if meta ~= '' then
              if not ch then
                ch = open_channel(meta, hist, new_epoch)
              end
              add(ch, channel, ARGV[k + 2])
            end
            if mode == 'once' then
              status, reason, changed_at = 'fired', 'fired once', i
            end
          end
        end
      end
    end
    seen[alert] = fire
    writes[#writes + 1] = alert
    writes[#writes + 1] = fire
    verdicts[#verdicts + 1] = fire
  end
end
if #writes > 0 then
  for j = 1, #writes, 4000 do
    redis.call('HSET', cur, unpack(writes, j, math.min(j + 3999, #writes)))
  end
  redis.call('EXPIREAT', cur, (span + 2) * ttl)
end
if fired > 0 then
  for j = 1, #stamps, 4000 do
    redis.call('LPUSH', fires, unpack(stamps, j, math.min(j + 3999, #stamps)))
  end
  redis.call('LTRIM', fires, 0, tmax - 1)
  redis.call('HINCRBY', rule, 'fired', fired)
  redis.call('HSET', rule, 'last_fired_ms', now, 'last_alert', last_alert)
end
if ch then
  close_channel(ch, ch_ttl, tostring(tonumber(t[1]) * 1000 - ch_ttl * 1000), maxlen)
end
if changed_at > 0 then
  redis.call('HSET', rule, 'status', status, 'reason', reason)
end
return {table.concat(verdicts), status, reason, changed_at}
"""
)

# A rule (re)loaded by an engine: a newer version re-arms it (status active, throttle and
# cooldowns cleared) or records the status given; an older or equal version changes
# nothing (engines replaying the rules topic on start must not re-arm a paused rule).
# Returns the rule's status and reason after.
_ARM = """
local rule, fires, last = KEYS[1], KEYS[2], KEYS[3]
local version, status, reason = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local known = tonumber(redis.call('HGET', rule, 'version') or '-1')
if version > known then
  redis.call('HSET', rule, 'version', version, 'status', status, 'reason', reason)
  redis.call('DEL', fires, last)
end
local st = redis.call('HMGET', rule, 'status', 'reason')
return {st[1] or status, st[2] or ''}
"""


class GateRule(NamedTuple):
    """What the gate needs of a rule: the same for each of its candidates."""

    rule_id: str
    version: int  # the rule's ts
    mode: str
    cooldown_s: int
    expires_at: int | None
    throttle_max: int
    throttle_window_s: int
    channel: str | None = None  # where a firing is appended (the owner's alerts channel)


class GateRequest(NamedTuple):
    """One candidate (see :meth:`AlertGate.decide`)."""

    rule: GateRule
    symbol: str
    alert_id: str
    data: bytes | None = None  # the alert as JSON, appended when it fires


class GateVerdict(NamedTuple):  # (a tuple: one is made per candidate)
    fire: bool
    status: str  # the rule's status after this decision
    reason: str
    changed: bool  # this decision changed the rule's status
    replayed: bool  # decided before (a replay): the recorded decision


_UNDECIDED = GateVerdict(False, "", "", False, False)


@dataclass(slots=True)
class Candidates:
    """One rule's candidates, in order, as columns: what the gate decides in one script
    call (the engine gathers a batch's candidates this way, without an object each)."""

    rule: GateRule
    symbols: list[bytes]
    alert_ids: list[bytes]
    data: list[bytes]  # each alert as JSON, appended when it fires
    #: more candidates after those, framed already: each its symbol, alert id and data as
    #: RESP bulk strings, end to end (:meth:`AlertTemplate.render
    #: <technic_stream.engine.alerts.AlertTemplate.render>`), ``n_framed`` in all
    framed: list[bytes] = field(default_factory=list)
    n_framed: int = 0

    def __len__(self) -> int:
        return len(self.alert_ids) + self.n_framed


class Decision(NamedTuple):
    """The gate's answer for one :class:`Candidates`."""

    flags: str  # per candidate: '1' fire, '0' not, 'R' / 'r' a replay's recorded decision
    status: str  # the rule's status after the call
    reason: str
    changed_at: int  # 1-based index of the candidate that changed the status; 0: none

    @staticmethod
    def of(reply: Sequence[Any]) -> Decision:
        flags, status, reason, changed_at = reply
        return Decision(_s(flags), _s(status), _s(reason), int(changed_at))


class AlertGate:
    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "technic:",
        *,
        decision_ttl_s: int = 604_800,
        publisher: ChannelPublisher | None = None,
    ) -> None:
        self._redis = redis
        self._publisher = publisher
        self._prefix = prefix
        self.decision_ttl_s = decision_ttl_s
        self._script = Script(_GATE)
        self.scripts = (self._script,)
        self._arm = Script(_ARM)

    def rule_key(self, rule_id: str) -> str:
        return f"{self._prefix}rule:{rule_id}"

    async def decide(self, requests: Sequence[GateRequest]) -> list[GateVerdict]:
        """Decide candidates: one atomic script call per rule, in order within a rule,
        all in one round trip."""
        if not requests:
            return []
        calls, groups = self.commands(requests)
        replies = await execute(self._redis, calls, scripts=self.scripts)
        return self.verdicts(len(requests), groups, replies)

    def commands(self, requests: Sequence[GateRequest]) -> tuple[list[bytes], list[list[int]]]:
        """The script calls deciding ``requests`` (to send with other commands in one
        :func:`~technic_stream.redis.resp.execute`), and the request indices per call."""
        by_rule: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_rule.setdefault(r.rule.rule_id, []).append(i)
        calls = []
        for idx in by_rule.values():
            calls.append(self.call(Candidates(
                requests[idx[0]].rule,
                [requests[i].symbol.encode() for i in idx],
                [requests[i].alert_id.encode() for i in idx],
                [requests[i].data or b"null" for i in idx],
            )))  # fmt: skip
        return calls, list(by_rule.values())

    def call(self, c: Candidates) -> bytes:
        """The packed script call (RESP) deciding ``c``: the rule's keys and arguments,
        then a decision key and three arguments per candidate, each candidate's in one
        format step (packing them as separate arguments had cost more than the rest of
        an alert's way through the engine)."""
        r = c.rule
        base = self.rule_key(r.rule_id)
        keys: list[Arg] = [base, f"{base}:fires", f"{base}:last"]
        args: list[Arg] = [
            r.version, r.mode, r.cooldown_s * 1000, r.expires_at or 0,
            r.throttle_max, r.throttle_window_s * 1000, self.decision_ttl_s,
        ]  # fmt: skip
        if r.channel is not None and self._publisher is not None:
            keys += self._publisher.keys(r.channel)[:2]
            args += [r.channel, *self._publisher.append_args()[:2], secrets.token_hex(6)]
        else:
            keys += ["", ""]
            args += ["", 0, 0, ""]
        keys.append(f"{base}:decided")
        n = len(c.alert_ids)
        if len(c.symbols) != n or len(c.data) != n:
            raise ValueError(f"{len(c.symbols)} symbols, {n} alert ids, {len(c.data)} data")
        return b"".join([
            b"*%d\r\n" % (3 + len(keys) + len(args) + 3 * (n + c.n_framed)),
            *pack_args(["EVALSHA", self._script.sha, len(keys), *keys]),
            *pack_args(args),
            *[b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(s), s, len(a), a, len(d), d)
              for s, a, d in zip(c.symbols, c.alert_ids, c.data, strict=True)],
            *c.framed,
        ])  # fmt: skip

    def verdicts(
        self, n: int, groups: Sequence[Sequence[int]], replies: Sequence[Any]
    ) -> list[GateVerdict]:
        out: list[GateVerdict] = [_UNDECIDED] * n
        for idx, reply in zip(groups, replies, strict=True):
            d = Decision.of(reply)
            for k, (i, f) in enumerate(zip(idx, d.flags, strict=True)):
                changed = k + 1 == d.changed_at
                out[i] = GateVerdict(f in "1R", d.status, d.reason, changed, f in "Rr")
        return out

    async def arm_many(self, rules: Sequence[tuple[str, int, str, str]]) -> list[tuple[str, str]]:
        """Register each (rule id, version, status, reason), in order, in one round trip:
        a newer version re-arms its rule, an older or equal one changes nothing. Returns
        the rule's (status, reason) after each."""
        calls = []
        for rule_id, version, status, reason in rules:
            base = self.rule_key(rule_id)
            keys: list[Arg] = [base, f"{base}:fires", f"{base}:last"]
            calls.append(self._arm.call(keys, [version, status, reason]))
        replies = await execute(self._redis, calls, scripts=(self._arm,))
        return [(_s(st), _s(rs)) for st, rs in replies]

    async def set_status(self, rule_id: str, status: str, reason: str) -> None:
        """Record a status the engine decided itself (expired)."""
        await self._redis.hset(self.rule_key(rule_id), mapping={"status": status, "reason": reason})

    async def status(self, rule_id: str) -> dict[str, str]:
        raw = await self._redis.hgetall(self.rule_key(rule_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def forget(self, rule_id: str) -> None:
        base = self.rule_key(rule_id)
        await self._redis.delete(base, f"{base}:fires", f"{base}:last")


def _s(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
