"""One scan, start to finish: resolve_universe → load_data → compute → rank → finalize.

The universe is cut into chunks of ``scan_chunk_symbols``. Each chunk is loaded
(``history``: the symbols' bars from the MongoDB archive, a few at a time; ``snapshot``:
the engine's latest values from Redis, or the archive where they cannot answer the rule),
computed off the event loop (the batch kernels and the compiled rule over the chunk), and
*checkpointed*: its matches go to MongoDB ``scan_chunks`` and its index to the Redis set
``scan:{id}:chunks``. A redelivered request (the worker died) skips checkpointed chunks;
a finished scan is never recomputed (its ``scans`` document says so).

Progress (``ScanProgress`` to ``scan.progress`` and the channel ``scan.{id}``) goes out at
most ``scan_progress_hz`` times a second and always on a stage change and at the end;
partial results (``ScanResult`` status ``partial``) as chunks finish; the final result
carries the ranked top ``limit`` and the totals. Cancel (``scan.control``) is checked
before every chunk: the scan stops within one chunk and keeps what it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter
from pymongo.asynchronous.database import AsyncDatabase

from technic_stream.config import Settings
from technic_stream.kafka import Producer
from technic_stream.messages import (
    ScanMatch,
    ScanProgress,
    ScanRequest,
    ScanResult,
    encode,
)
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.redis.resp import Script, execute
from technic_stream.rules import RuleError, RuleSet, compile_rules
from technic_stream.storage.bars import BarArchive
from technic_stream.topics import topic_name

__all__ = ["ScanContext", "ScanInterrupted", "ScanJob"]

log = logging.getLogger(__name__)

CHUNKS_COMPUTED = Counter(
    "technic_scan_chunks_computed", "Scan chunks computed (not taken from a checkpoint)"
)

FINAL = ("done", "failed", "cancelled")
#: matches a partial result message carries (every one is kept in ``scan_chunks`` and ranked)
PARTIAL_MATCHES = 1_000


@dataclass
class ScanContext:
    settings: Settings
    redis: aioredis.Redis
    db: AsyncDatabase[Any]
    producer: Producer
    publisher: ChannelPublisher

    @property
    def archive(self) -> BarArchive:
        return BarArchive(self.db)


class ScanInterrupted(Exception):
    """The process is stopping: the scan stopped after a checkpoint, not finished; the
    request stays uncommitted and its next owner resumes it."""


def _now_ms() -> int:
    return int(time.time() * 1000)


_Loaded = tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]


class _Found:
    """Matches of one chunk: (symbol, ts, score, values)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float | None, dict[str, float | None]]] = []
        self.scanned = 0


class ScanJob:
    def __init__(
        self,
        ctx: ScanContext,
        req: ScanRequest,
        cancelled: Callable[[], bool],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ctx = ctx
        self.req = req
        self.cancelled = cancelled
        self.stopping = stopping
        s = ctx.settings
        self.chunk_size = (
            s.scan_snapshot_chunk_symbols if req.mode == "snapshot" else s.scan_chunk_symbols
        )
        self.cache_hits = 0
        self.cache_misses = 0
        self._gen: int | None = None
        # a snapshot scan takes milliseconds: its chunks are kept in memory, not
        # checkpointed (a redelivered unfinished snapshot simply runs again)
        self._memory: list[dict[str, Any]] | None = [] if req.mode == "snapshot" else None
        self._last_stored = 0.0
        self._prefetched: dict[str, np.ndarray] | None = None
        self._min_gap = 1.0 / s.scan_progress_hz
        self._last_progress = 0.0
        self._stage = "queued"
        self.done = 0
        self.total = 0
        self.matches = 0
        self.current: str | None = None
        self._started = time.monotonic()
        self._compute_started: float | None = None
        self._done_at_compute_start = 0
        self.recomputed_chunks = 0  # chunks computed by this run (not from a checkpoint)
        prefix = s.redis_prefix
        self._chunks_key = f"{prefix}scan:{req.scan_id}:chunks"
        self.channel = f"scan.{req.scan_id}"

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> str:
        """Run (or resume) the scan; its final status."""
        req, db = self.req, self.ctx.db
        doc = await db["scans"].find_one({"_id": req.scan_id}, {"status": 1})
        if doc is not None and doc.get("status") in FINAL:
            log.info("scan already finished; not recomputed",
                     extra={"scan_id": req.scan_id, "status": doc["status"]})  # fmt: skip
            return str(doc["status"])
        await db["scans"].update_one(
            {"_id": req.scan_id},
            {"$set": {"owner": req.owner, "status": "running",
                      "request": req.model_dump(mode="json", exclude={"type", "v"})},
             "$setOnInsert": {"submitted_at": datetime.now(UTC)}},
            upsert=True,
        )  # fmt: skip
        try:
            rules = compile_rules([req.rule])
        except RuleError as exc:
            return await self._fail(f"invalid rule: column {exc.col}: {exc.reason}")
        await self._progress("resolve_universe", force=True)
        symbols, unknown = await self._universe(rules)
        if symbols is None:
            return await self._fail(f"unknown universe {req.universe!r}")
        self.total = len(symbols)
        chunks = [symbols[i : i + self.chunk_size] for i in range(0, len(symbols), self.chunk_size)]
        done_chunks = {int(x) for x in await self.ctx.redis.smembers(self._chunks_key)}
        for i in done_chunks:
            if i < len(chunks):
                self.done += len(chunks[i])
        self.matches = await self._stored_match_count()
        status = "done"
        todo = [i for i in range(len(chunks)) if i not in done_chunks]
        # the next chunk's data loads while this one computes (the kernels run in a thread)
        loading: asyncio.Task[_Loaded] | None = None
        try:
            for n, i in enumerate(todo):
                if self.stopping():
                    raise ScanInterrupted(req.scan_id)
                if self.cancelled():
                    status = "cancelled"
                    break
                data = await (loading or self._load(rules, chunks[i]))
                loading = None
                if n + 1 < len(todo):
                    loading = asyncio.create_task(self._load(rules, chunks[todo[n + 1]]))
                found = await self._compute_chunk(rules, chunks[i], data)
                await self._checkpoint(i, found)
                self.recomputed_chunks += 1
                CHUNKS_COMPUTED.inc()
                await self._partial(i, found)
        finally:
            if loading is not None:
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loading
        await self._progress("rank", force=True)
        top, total_matches, scanned = await self._ranked(rules)
        await self._progress("finalize", force=True)
        final = ScanResult(
            scan_id=req.scan_id, owner=req.owner, status=status,
            matches=top, total_matches=total_matches, symbols_scanned=scanned,
            unknown_symbols=unknown[:10_000], ts=_now_ms(),
        )  # fmt: skip
        await self._emit_result(final)
        await self._progress(status, force=True)  # stored before the status says finished
        await db["scans"].update_one(
            {"_id": req.scan_id},
            {"$set": {"status": status, "total_matches": total_matches,
                      "symbols_scanned": scanned, "unknown_symbols": unknown[:10_000],
                      "top": [m.model_dump(mode="json") for m in top],
                      "finished_at": datetime.now(UTC),
                      "seconds": round(time.monotonic() - self._started, 3)}},
        )  # fmt: skip
        await self.ctx.redis.expire(self._chunks_key, 86_400)
        return status

    async def _fail(self, error: str) -> str:
        req = self.req
        res = ScanResult(scan_id=req.scan_id, owner=req.owner, status="failed", error=error,
                         ts=_now_ms())  # fmt: skip
        await self._emit_result(res)
        await self._progress("failed", force=True)
        await self.ctx.db["scans"].update_one(
            {"_id": req.scan_id},
            {"$set": {"status": "failed", "error": error, "finished_at": datetime.now(UTC)}},
        )
        return "failed"

    # -- stages ----------------------------------------------------------------------------

    async def _universe(self, rules: RuleSet) -> tuple[list[str] | None, list[str]]:
        req = self.req
        if req.symbols is not None:
            wanted = list(dict.fromkeys(req.symbols))
            known = await self._with_values(wanted, rules) if req.mode == "snapshot" else set()
            rest = [s for s in wanted if s not in known]
            if rest:
                known |= await self._archived(rest)
            return [s for s in wanted if s in known], [s for s in wanted if s not in known]
        known = set(await self.ctx.archive.symbols(req.tf))
        if req.universe in (None, "all"):
            return sorted(known), []
        doc = await self.ctx.db["watchlists"].find_one(
            {"_id": req.universe, "owner": {"$in": [req.owner, None]}}
        )
        if doc is None:
            return None, []
        wanted = list(dict.fromkeys(doc.get("symbols") or []))
        return [s for s in wanted if s in known], [s for s in wanted if s not in known]

    async def _archived(self, symbols: list[str]) -> set[str]:
        found = await self.ctx.archive.collection.distinct(
            "symbol", {"tf": self.req.tf, "symbol": {"$in": symbols}}
        )
        return set(found)

    async def _hash_table(
        self, symbols: list[str], fields: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``fields`` of each symbol's ``ind:{tf}:{symbol}`` hash as a float table
        (symbols by fields) and a status per symbol: 2 every field present, 1 the hash
        exists but lacks a field, 0 no hash. Thousands of keys per round trip, as one flat
        reply converted in one NumPy pass (a reply per key would cost more than the scan)."""
        prefix, tf = self.ctx.settings.redis_prefix, self.req.tf
        tables, states = [], []
        for lo in range(0, len(symbols), _HMGET_KEYS):
            keys = [f"{prefix}ind:{tf}:{s}" for s in symbols[lo : lo + _HMGET_KEYS]]
            (reply,) = await execute(self.ctx.redis, [_HMGET_MANY.call(keys, fields)],
                                     scripts=(_HMGET_MANY,))  # fmt: skip
            flat, status = reply
            table = np.array(flat, dtype=np.bytes_).astype(np.float64)
            tables.append(table.reshape(len(keys), len(fields)))
            states.append(np.frombuffer(status, dtype=np.uint8) - ord("0"))
        if not tables:
            return np.empty((0, len(fields))), np.empty(0, np.uint8)
        return np.concatenate(tables), np.concatenate(states)

    async def _with_values(self, symbols: list[str], rules: RuleSet) -> set[str]:
        """Symbols the engine has values for; the values the rule needs are kept for the
        chunks (one read for both)."""
        direct = not any(i.lag for i in rules.inputs) and bool(rules.columns)
        table, status = await self._hash_table(symbols, ["ts", *rules.columns] if direct
                                               else ["ts"])  # fmt: skip
        if direct:
            self._prefetched = {s: table[k] for k, s in enumerate(symbols) if status[k] == 2}
        return {s for k, s in enumerate(symbols) if status[k]}

    async def _load(self, rules: RuleSet, chunk: list[str]) -> _Loaded:
        self.current = chunk[0]
        await self._progress("load_data")
        if self.req.mode == "snapshot":
            latest = await self._latest_values(rules, chunk)
            missing = [s for s in chunk if s not in latest]
        else:
            latest, missing = {}, list(chunk)
        return latest, await self._series(missing)

    async def _compute_chunk(self, rules: RuleSet, chunk: list[str], data: _Loaded) -> _Found:
        if self._compute_started is None:
            self._compute_started = time.monotonic()
            self._done_at_compute_start = self.done
        await self._progress("compute")
        found = await asyncio.to_thread(self._compute, rules, chunk, *data)
        self.done += len(chunk)
        self.matches += len(found.rows)
        self.current = chunk[-1]
        await self._progress("compute")
        return found

    async def _latest_values(self, rules: RuleSet, chunk: list[str]) -> dict[str, np.ndarray]:
        """The engine's current values where they answer the rule (inputs at lag 0)."""
        if any(i.lag for i in rules.inputs) or not rules.columns:
            return {}
        if self._prefetched is not None:
            return {s: self._prefetched[s] for s in chunk if s in self._prefetched}
        table, status = await self._hash_table(chunk, ["ts", *rules.columns])
        # no hash, or not every column: the archive answers for those
        return {s: table[k] for k, s in enumerate(chunk) if status[k] == 2}

    async def _series(self, symbols: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """The symbols' bars up to ``end``: from the Redis cache (key: timeframe, the
        archive's generation for it, end, symbol), else the archive (then cached)."""
        if not symbols:
            return {}
        archive, redis, s = self.ctx.archive, self.ctx.redis, self.ctx.settings
        if self._gen is None:
            self._gen = await archive.generation(self.req.tf)
        end = self.req.end
        keys = [f"{s.redis_prefix}scan:bars:{self.req.tf}:g{self._gen}:{end or 'now'}:{sym}"
                for sym in symbols]  # fmt: skip
        out: dict[str, dict[str, np.ndarray]] = {}
        cached = await redis.mget(keys) if s.scan_cache_ttl_s else [None] * len(keys)
        missing = []
        for sym, blob in zip(symbols, cached, strict=True):
            if blob is None:
                missing.append(sym)
            else:
                out[sym] = _unpack(blob if isinstance(blob, bytes) else blob.encode())
        self.cache_hits += len(symbols) - len(missing)
        self.cache_misses += len(missing)
        # one query for the chunk: the archive's per-query cost dominates small reads
        loaded = await archive.read_many(missing, self.req.tf, None, end) if missing else {}
        out.update(loaded)
        if loaded and s.scan_cache_ttl_s:
            by_sym = dict(zip(symbols, keys, strict=True))
            async with redis.pipeline(transaction=False) as pipe:
                for sym, bars in loaded.items():
                    pipe.set(by_sym[sym], _pack(bars), ex=s.scan_cache_ttl_s)
                await pipe.execute()
        return out

    def _compute(
        self,
        rules: RuleSet,
        chunk: list[str],
        latest: dict[str, np.ndarray],
        series: dict[str, dict[str, np.ndarray]],
    ) -> _Found:
        found = _Found()
        names = rules.columns
        if latest:
            syms = [s for s in chunk if s in latest]
            table = np.stack([latest[s] for s in syms], axis=1)  # (1 + columns, symbols)
            res = rules.evaluate_latest(table[1:])
            hit = np.flatnonzero(res.match(0))
            score = res.score(0)
            for j in hit.tolist():
                found.rows.append((syms[j], int(table[0, j]), _num(score, j),
                                   _values(names, table[1:, j])))  # fmt: skip
        start = self.req.start
        for s in chunk:
            bars = series.get(s)
            if bars is None or len(bars["ts"]) == 0:
                continue
            cols = rules.series_columns(bars)
            res = rules.evaluate_series(cols, n=len(bars["ts"]))
            match = res.match(0)
            if self.req.mode == "snapshot":
                idx = [len(match) - 1] if match[-1] else []
            else:
                in_range = bars["ts"] >= (start or 0)
                idx = np.flatnonzero(match & in_range).tolist()
            score = res.score(0)
            for b in idx:
                vals = _values(names, np.array([cols[c][b] for c in names]))
                found.rows.append((s, int(bars["ts"][b]), _num(score, b), vals))
        found.scanned = len(chunk)
        return found

    async def _checkpoint(self, i: int, found: _Found) -> None:
        if self._memory is not None:
            self._memory.append({"scanned": found.scanned, "matches": [
                {"symbol": s, "ts": ts, "score": sc, "values": v} for s, ts, sc, v in found.rows
            ]})  # fmt: skip
            return
        doc = {
            "_id": f"{self.req.scan_id}:{i}", "scan_id": self.req.scan_id, "chunk": i,
            "scanned": found.scanned,
            "matches": [{"symbol": s, "ts": ts, "score": sc, "values": v}
                        for s, ts, sc, v in found.rows],
        }  # fmt: skip
        await self.ctx.db["scan_chunks"].replace_one({"_id": doc["_id"]}, doc, upsert=True)
        await self.ctx.redis.sadd(self._chunks_key, i)

    async def _stored_match_count(self) -> int:
        if self._memory is not None:
            return 0
        total = 0
        async for d in self.ctx.db["scan_chunks"].find({"scan_id": self.req.scan_id}):
            total += len(d["matches"])
        return total

    async def _ranked(self, rules: RuleSet) -> tuple[list[ScanMatch], int, int]:
        rows: list[dict[str, Any]] = []
        scanned = 0
        if self._memory is not None:
            chunks: Any = self._memory
        else:
            chunks = [
                d async for d in self.ctx.db["scan_chunks"].find({"scan_id": self.req.scan_id})
            ]
        for d in chunks:
            rows.extend(d["matches"])
            scanned += int(d.get("scanned", 0))
        rule = rules.rules[0]
        if rule.rank_by is not None:
            sign = -1.0 if rule.descending else 1.0
            rows.sort(key=lambda r: (r["score"] is None,
                                     sign * (r["score"] if r["score"] is not None else 0.0),
                                     r["symbol"], r["ts"]))  # fmt: skip
        else:
            rows.sort(key=lambda r: (r["symbol"], r["ts"]))
        top = [ScanMatch(**r) for r in rows[: self.req.limit]]
        return top, len(rows), scanned

    # -- events ----------------------------------------------------------------------------

    async def _partial(self, i: int, found: _Found) -> None:
        matches = [ScanMatch(symbol=s, ts=ts, score=sc, values=v) for s, ts, sc, v in found.rows]
        res = ScanResult(
            scan_id=self.req.scan_id, owner=self.req.owner, status="partial", chunk=i,
            matches=matches[:PARTIAL_MATCHES], total_matches=len(matches),
            symbols_scanned=found.scanned, ts=_now_ms(),
        )  # fmt: skip
        await self._emit_result(res)

    async def _emit_result(self, res: ScanResult) -> None:
        data = encode(res)
        limit = int(self.ctx.settings.max_message_bytes * 0.9)
        if len(data) > limit:  # first without the per-match values, then fewer matches
            slim = [m.model_copy(update={"values": {}}) for m in res.matches]
            res = res.model_copy(update={"matches": slim})
            data = encode(res)
            while len(data) > limit and res.matches:
                res = res.model_copy(update={"matches": res.matches[: len(res.matches) // 2]})
                data = encode(res)
        topic = topic_name(self.ctx.settings.topic_prefix, "scan.results")
        await self.ctx.producer.send(topic, data, key=self.req.scan_id.encode())
        if res.status != "partial":
            await self.ctx.producer.flush()  # the final result (and all before it) acked
        await self.ctx.publisher.publish_many([(self.channel, data, None)], validate=False)

    async def _progress(self, stage: str, *, force: bool = False) -> None:
        now = time.monotonic()
        changed = stage != self._stage
        if not (force or changed) and now - self._last_progress < self._min_gap:
            return
        self._stage = stage
        self._last_progress = now
        rate, eta = 0.0, None
        if self._compute_started is not None:
            elapsed = now - self._compute_started
            worked = self.done - self._done_at_compute_start
            if elapsed > 0 and worked > 0:
                rate = worked / elapsed
                eta = int((self.total - self.done) / rate * 1000)
        finished = stage in FINAL
        percent = 100.0 if stage == "done" else (
            min(100.0, 100.0 * self.done / self.total) if self.total else 0.0)  # fmt: skip
        msg = ScanProgress(
            scan_id=self.req.scan_id, owner=self.req.owner, stage=stage,
            done=self.done, total=self.total, percent=round(percent, 3),
            rate=round(rate, 3) if math.isfinite(rate) else 0.0,
            eta_ms=0 if finished else eta, current_symbol=self.current,
            cache_hits=self.cache_hits, cache_misses=self.cache_misses,
            matches=self.matches, ts=_now_ms(),
        )  # fmt: skip
        data = encode(msg)
        topic = topic_name(self.ctx.settings.topic_prefix, "scan.progress")
        await self.ctx.producer.send(topic, data, key=self.req.scan_id.encode())
        await self.ctx.publisher.publish_many([(self.channel, data, None)], validate=False)
        if finished or now - self._last_stored >= 1.0:  # the document: at most once a second
            self._last_stored = now
            update: dict[str, Any] = {"progress": orjson.loads(data)}
            if not finished:
                update["status"] = "running"
            await self.ctx.db["scans"].update_one({"_id": self.req.scan_id}, {"$set": update})


_COLS = ("open", "high", "low", "close", "volume")

_HMGET_KEYS = 5_000
_HMGET_MANY = Script("""
local flat, status, n = {}, {}, #ARGV
for i, key in ipairs(KEYS) do
  local row = redis.call('HMGET', key, unpack(ARGV))
  local missing = 0
  for j = 1, n do
    local v = row[j]
    if not v then
      missing = missing + 1
      v = 'nan'
    end
    flat[#flat + 1] = v
  end
  if missing == 0 then
    status[i] = '2'
  elseif missing == n or not row[1] then
    status[i] = '0'
  else
    status[i] = '1'
  end
end
return {flat, table.concat(status)}
""")


def _pack(bars: dict[str, np.ndarray]) -> bytes:
    """n, ts (int64) and the five float64 columns, raw: the fastest form to load again."""
    n = len(bars["ts"])
    cols = np.stack([bars[c] for c in _COLS]) if n else np.empty((5, 0))
    return np.int64(n).tobytes() + bars["ts"].astype(np.int64).tobytes() + cols.tobytes()


def _unpack(blob: bytes) -> dict[str, np.ndarray]:
    n = int(np.frombuffer(blob, np.int64, 1)[0])
    ts = np.frombuffer(blob, np.int64, n, 8)
    cols = np.frombuffer(blob, np.float64, 5 * n, 8 + 8 * n).reshape(5, n)
    return {"ts": ts, **{c: cols[i] for i, c in enumerate(_COLS)}}


def _num(arr: np.ndarray | None, j: int) -> float | None:
    if arr is None:
        return None
    x = float(arr[j])
    return x if math.isfinite(x) else None


def _values(names: list[str], col: np.ndarray) -> dict[str, float | None]:
    return {n: (float(x) if math.isfinite(x) else None)
            for n, x in zip(names, col.tolist(), strict=True)}  # fmt: skip
