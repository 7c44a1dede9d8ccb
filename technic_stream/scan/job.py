"""One scan, start to finish: resolve_universe → load_data → compute → rank → finalize.

The universe is cut into even chunks of at most ``scan_chunk_symbols``. Each chunk is loaded
(``history``: the symbols' bars from the MongoDB archive, a few at a time; ``snapshot``:
the engine's latest values from Redis, or the archive where they cannot answer the rule),
computed off the event loop (the batch kernels and the compiled rule over the chunk), and
*checkpointed*: its matches go to MongoDB ``scan_chunks`` and its counts to the Redis hash
``scan:{id}:chunks`` (field = chunk index). A redelivered request (the worker died) skips
checkpointed chunks; a finished scan is never recomputed (its ``scans`` document says so).

**Sharding.** A history scan of at least ``scan_shard_min_chunks`` chunks is also offered
to the group: one ``ScanTask`` per chunk on ``scan.tasks`` (key ``scan_id:chunk``). Every
worker computes chunks it can *claim* (``scan:{id}:claim:{n}``, one Lua call that also
refuses a checkpointed chunk, a cancelled or a finished scan): the coordinator — the worker
that took the request — walks the chunks from the front, helpers from the back, so they
rarely meet. A claim is held as long as its worker's liveness key (``scan:worker:{id}``,
refreshed every third of ``scan_worker_ttl_s``) lives; the claims of a dead worker are
taken over by whoever asks next. The coordinator reports progress from the checkpoint hash,
takes over what nobody finishes, then ranks and finalizes.

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
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
    ScanTask,
    encode,
)
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.redis.resp import Script, execute, hmget_table
from technic_stream.rules import RuleError, RuleSet, compile_rules
from technic_stream.scan.eta import Eta
from technic_stream.storage.bars import BarArchive
from technic_stream.storage.scans import request_doc, store_symbols
from technic_stream.topics import topic_name

__all__ = ["ScanContext", "ScanInterrupted", "ScanJob"]

log = logging.getLogger(__name__)

CHUNKS_COMPUTED = Counter(
    "technic_scan_chunks_computed", "Scan chunks computed (not taken from a checkpoint)"
)
TASKS_PUBLISHED = Counter("technic_scan_tasks_published", "Chunk tasks offered to the group")

FINAL = ("done", "failed", "cancelled")
#: matches a partial result message carries (every one is kept in ``scan_chunks`` and ranked)
PARTIAL_MATCHES = 1_000
#: a claim outlives any chunk; a dead worker's claims are freed by its liveness key instead
CLAIM_TTL_S = 3_600


@dataclass
class ScanContext:
    settings: Settings
    redis: aioredis.Redis
    db: AsyncDatabase[Any]
    producer: Producer
    publisher: ChannelPublisher
    worker_id: str = "local"
    #: chunks this process computed, per scan (coordinator and helper runs alike)
    computed: Tally[str] = field(default_factory=Tally)
    #: chunk computations at once in this process; waiters are served first come first
    #: served, so concurrent scans take turns chunk by chunk
    compute_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    @property
    def archive(self) -> BarArchive:
        return BarArchive(self.db)

    def key(self, scan_id: str, suffix: str) -> str:
        return f"{self.settings.redis_prefix}scan:{scan_id}:{suffix}"

    @property
    def worker_prefix(self) -> str:
        return f"{self.settings.redis_prefix}scan:worker:"


class ScanInterrupted(Exception):
    """The process is stopping: the scan stopped after a checkpoint, not finished; the
    request stays uncommitted and its next owner resumes it."""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Latest:
    """The engine's values for symbols of a chunk: ``table`` row k is ``symbols[k]``'s
    ``ts`` and the rule's columns."""

    symbols: list[str]
    table: np.ndarray

    @classmethod
    def empty(cls, columns: int) -> _Latest:
        return cls([], np.empty((0, 1 + columns)))


@dataclass
class _Loaded:
    latest: _Latest
    series: dict[str, dict[str, np.ndarray]]
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True, slots=True)
class _ChunkStats:
    """What a checkpointed chunk counted (stored as ``"scanned matches hits misses"``)."""

    scanned: int
    matches: int
    hits: int
    misses: int

    def pack(self) -> str:
        return f"{self.scanned} {self.matches} {self.hits} {self.misses}"

    @classmethod
    def unpack(cls, raw: bytes | str) -> _ChunkStats:
        text = raw.decode() if isinstance(raw, bytes) else raw
        a, b, c, d = (int(x) for x in text.split())
        return cls(a, b, c, d)


class _Found:
    """Matches of one chunk: (symbol, ts, score, values)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float | None, dict[str, float | None]]] = []
        self.scanned = 0


class ScanJob:
    """One scan's run. As *coordinator* (:meth:`run`) it owns the scan: universe,
    progress, ranking, the final result. As *helper* (:meth:`help`) it computes the chunks
    of tasks it was given that it can claim, and nothing else."""

    def __init__(
        self,
        ctx: ScanContext,
        req: ScanRequest,
        cancelled: Callable[[], bool],
        stopping: Callable[[], bool] = lambda: False,
        *,
        helper: bool = False,
    ) -> None:
        self.ctx = ctx
        self.req = req
        self.cancelled = cancelled
        self.stopping = stopping
        self.helper = helper
        s = ctx.settings
        self.chunk_size = (
            s.scan_snapshot_chunk_symbols if req.mode == "snapshot" else s.scan_chunk_symbols
        )
        self._gen: int | None = None
        # a snapshot scan takes milliseconds: its chunks are kept in memory, not
        # checkpointed (a redelivered unfinished snapshot simply runs again)
        self._memory: list[list[dict[str, Any]]] | None = [] if req.mode == "snapshot" else None
        self._last_stored = 0.0
        self._symbols_stored: asyncio.Task[None] | None = None
        # symbol → row of the values read while resolving a snapshot's universe
        self._prefetched: tuple[dict[str, int], np.ndarray] | None = None
        self._min_gap = 1.0 / s.scan_progress_hz
        self._last_progress = 0.0
        self._stage = "queued"
        self._sizes: dict[int, int] = {}
        self._stats: dict[int, _ChunkStats] = {}  # checkpointed chunks, by anyone
        self._held: set[int] = set()  # chunks this run has claimed and not finished
        self._claimant = f"{ctx.worker_id}/{uuid.uuid4().hex[:8]}"
        self._halted = False  # a claim was refused because the scan is cancelled or over
        self.total = 0
        self.current: str | None = None
        self._started = time.monotonic()
        self.eta = Eta()
        self.recomputed_chunks = 0  # chunks computed by this run (not from a checkpoint)
        self._chunks_key = ctx.key(req.scan_id, "chunks")
        self._tops_key = ctx.key(req.scan_id, "tops")
        self.channel = f"scan.{req.scan_id}"

    # -- counts (from the checkpoints, so they hold whoever computed a chunk) --------------

    @property
    def done(self) -> int:
        return sum(self._sizes.get(i, 0) for i in self._stats)

    @property
    def matches(self) -> int:
        return sum(c.matches for c in self._stats.values())

    @property
    def cache_hits(self) -> int:
        return sum(c.hits for c in self._stats.values())

    @property
    def cache_misses(self) -> int:
        return sum(c.misses for c in self._stats.values())

    async def _refresh(self) -> None:
        if self._memory is not None:
            return
        raw = await self.ctx.redis.hgetall(self._chunks_key)
        self._stats = {int(k): _ChunkStats.unpack(v) for k, v in raw.items()}

    # -- the run ---------------------------------------------------------------------------

    async def run(self, *, checked: bool = False) -> str:
        """Run (or resume) the scan; its final status. ``checked``: the caller has just
        found that the scan has not finished (:meth:`finished_status`)."""
        req, db = self.req, self.ctx.db
        if not checked and (finished := await self.finished_status()) is not None:
            log.info("scan already finished; not recomputed",
                     extra={"scan_id": req.scan_id, "status": finished})  # fmt: skip
            return finished
        self._last_stored = time.monotonic()  # (the next progress need not write it again)
        try:
            rules = compile_rules([req.rule])
        except RuleError as exc:
            await self._store_request("running")
            return await self._fail(f"invalid rule: column {exc.col}: {exc.reason}")
        # the request is stored while the universe resolves (both are round trips)
        _, (symbols, unknown) = await asyncio.gather(
            self._store_request("running"), self._resolve(rules)
        )
        if symbols is None:
            return await self._fail(f"unknown universe {req.universe!r}")
        self.total = len(symbols)
        chunks = dict(enumerate(split_even(symbols, self.chunk_size)))
        self._sizes = {n: len(c) for n, c in chunks.items()}
        await self._refresh()
        todo = [i for i in chunks if i not in self._stats]
        sharded = (self._memory is None
                   and len(todo) >= self.ctx.settings.scan_shard_min_chunks)  # fmt: skip
        ticker, ticked = None, asyncio.Event()
        if sharded:
            await self._offer(chunks, todo)
            ticker = asyncio.create_task(self._tick(ticked))
        try:
            await self._pass(rules, chunks, todo)
            # chunks other workers hold: wait for them, take over those whose worker died
            while not self._halted and not self.cancelled() and self._rest(chunks):
                if self.stopping():
                    raise ScanInterrupted(req.scan_id)
                await asyncio.sleep(self._min_gap)
                await self._refresh()
                await self._pass(rules, chunks, self._rest(chunks))
        finally:
            if ticker is not None:  # stopped, not cancelled: a tick finishes what it sends
                ticked.set()
                await ticker
        await self._refresh()
        status = "cancelled" if self._halted or self.cancelled() else "done"
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
        await self._symbols_written()
        await db["scans"].update_one(
            {"_id": req.scan_id},
            {"$set": {"status": status, "total_matches": total_matches,
                      "symbols_scanned": scanned, "unknown_symbols": unknown[:10_000],
                      "top": [m.model_dump(mode="json") for m in top],
                      "finished_at": datetime.now(UTC),
                      "seconds": round(time.monotonic() - self._started, 3)}},
        )  # fmt: skip
        await self._finished()
        return status

    async def help(self, chunks: Mapping[int, list[str]]) -> None:
        """Compute the chunks (of tasks) this worker can claim, last first."""
        try:
            rules = compile_rules([self.req.rule])
        except RuleError:
            return  # the coordinator fails the scan with the rule error
        self._sizes = {i: len(c) for i, c in chunks.items()}
        await self._pass(rules, chunks, sorted(chunks, reverse=True))

    async def finished_status(self) -> str | None:
        """The status of a scan that finished already (a redelivered request), else None."""
        doc = await self.ctx.db["scans"].find_one({"_id": self.req.scan_id}, {"status": 1})
        status = None if doc is None else doc.get("status")
        return str(status) if status in FINAL else None

    async def queued(self, position: int) -> None:
        """Waiting for a slot: say where in the queue."""
        await self._store_request("queued")
        await self._progress("queued", force=True, queue_position=position)

    def _rest(self, chunks: Mapping[int, list[str]]) -> list[int]:
        return [i for i in chunks if i not in self._stats]

    async def _store_request(self, status: str) -> None:
        req = self.req
        doc, symbols = request_doc(req)
        await self.ctx.db["scans"].update_one(
            {"_id": req.scan_id},
            {"$set": {"owner": req.owner, "status": status, "request": doc},
             "$setOnInsert": {"submitted_at": datetime.now(UTC)}},
            upsert=True,
        )  # fmt: skip
        if symbols is not None and self._symbols_stored is None:
            # a long list: stored beside the scan while it runs (awaited before it ends)
            self._symbols_stored = asyncio.create_task(
                store_symbols(self.ctx.db, req.scan_id, symbols)
            )

    async def _symbols_written(self) -> None:
        if self._symbols_stored is not None:
            await self._symbols_stored

    async def _finished(self) -> None:
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.ctx.key(self.req.scan_id, "final"), 1, ex=86_400)
            pipe.expire(self._chunks_key, 86_400)
            pipe.expire(self._tops_key, 86_400)
            await pipe.execute()

    async def _fail(self, error: str) -> str:
        req = self.req
        res = ScanResult(scan_id=req.scan_id, owner=req.owner, status="failed", error=error,
                         ts=_now_ms())  # fmt: skip
        await self._emit_result(res)
        await self._progress("failed", force=True)
        await self._symbols_written()
        await self.ctx.db["scans"].update_one(
            {"_id": req.scan_id},
            {"$set": {"status": "failed", "error": error, "finished_at": datetime.now(UTC)}},
        )
        await self._finished()
        return "failed"

    # -- sharding --------------------------------------------------------------------------

    async def _offer(self, chunks: Mapping[int, list[str]], todo: Sequence[int]) -> None:
        """One task per chunk not checkpointed yet, for any worker of the group (sent
        again on a resumed run: a task for a chunk done meanwhile is refused by its claim)."""
        req = self.req
        base = req.model_copy(update={"symbols": None}) if req.symbols is not None else req
        topic = topic_name(self.ctx.settings.topic_prefix, "scan.tasks")
        ts = _now_ms()
        for i in todo:
            task = ScanTask(scan_id=req.scan_id, chunk=i, chunks=len(chunks), symbols=chunks[i],
                            request=base, ts=ts)  # fmt: skip
            await self.ctx.producer.send(topic, encode(task), key=f"{req.scan_id}:{i}".encode())
        TASKS_PUBLISHED.inc(len(todo))

    async def _tick(self, stop: asyncio.Event) -> None:
        """Progress of a sharded scan, from the checkpoints of every worker, until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._min_gap)
                return
            try:
                await self._refresh()
                await self._progress("compute")
            except Exception as exc:  # a missed tick is not worth a failed scan
                log.warning("scan progress tick failed",
                            extra={"scan_id": self.req.scan_id, "error": str(exc)})  # fmt: skip

    async def _claim(self, i: int) -> int:
        """1 claimed, 0 done or held by a live worker, -1 the scan is cancelled or over."""
        if self._memory is not None:
            return 1
        ctx, sid = self.ctx, self.req.scan_id
        keys = [self._chunks_key, ctx.key(sid, f"claim:{i}"), ctx.key(sid, "cancel"),
                ctx.key(sid, "final")]  # fmt: skip
        args: list[int | str] = [i, self._claimant, CLAIM_TTL_S, ctx.worker_prefix]
        (got,) = await execute(ctx.redis, [_CLAIM.call(keys, args)], scripts=(_CLAIM,))
        if got == 1:
            self._held.add(i)
        elif got < 0:
            self._halted = True
        return int(got)

    async def _release(self) -> None:
        if not self._held or self._memory is not None:
            return
        ctx, sid = self.ctx, self.req.scan_id
        cmds = [_RELEASE.call([ctx.key(sid, f"claim:{i}")], [self._claimant]) for i in self._held]
        self._held.clear()
        with contextlib.suppress(Exception):  # unreleased, a claim lapses with this worker
            await execute(ctx.redis, cmds, scripts=(_RELEASE,))

    async def _pass(
        self, rules: RuleSet, chunks: Mapping[int, list[str]], order: Sequence[int]
    ) -> None:
        """Claim, load and compute ``order``'s chunks in turn; the next claimed chunk loads
        while this one computes (the kernels run in a thread). Returns when every chunk
        was computed or refused, or the scan was cancelled."""
        candidates = iter(order)
        loading: asyncio.Task[_Loaded] | None = None
        try:
            i, loading = await self._next(rules, chunks, candidates)
            while i is not None and loading is not None:
                data = await loading
                loading = None
                j, loading = await self._next(rules, chunks, candidates)
                t0 = time.monotonic()
                found = await self._compute_chunk(rules, chunks[i], data)
                await self._checkpoint(rules, i, found, data)
                await self._partial(i, found)
                now = time.monotonic()
                self.eta.busy(now - t0, len(chunks[i]))
                self.eta.observe(now, self.done)
                i = j
        finally:
            if loading is not None:
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loading
            await self._release()

    async def _next(
        self, rules: RuleSet, chunks: Mapping[int, list[str]], candidates: Iterator[int]
    ) -> tuple[int | None, asyncio.Task[_Loaded] | None]:
        for i in candidates:
            if self.stopping():
                raise ScanInterrupted(self.req.scan_id)
            if self.cancelled() or self._halted:
                return None, None
            got = await self._claim(i)
            if got < 0:
                return None, None
            if got:
                return i, asyncio.create_task(self._load(rules, chunks[i]))
        return None, None

    # -- stages ----------------------------------------------------------------------------

    async def _resolve(self, rules: RuleSet) -> tuple[list[str] | None, list[str]]:
        await self._progress("resolve_universe", force=True)
        return await self._universe(rules)

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
        exists but lacks a field, 0 no hash (:func:`hmget_table`)."""
        prefix, tf = self.ctx.settings.redis_prefix, self.req.tf
        keys = [f"{prefix}ind:{tf}:{s}" for s in symbols]
        return await hmget_table(self.ctx.redis, keys, fields)

    async def _with_values(self, symbols: list[str], rules: RuleSet) -> set[str]:
        """Symbols the engine has values for; the values the rule needs are kept for the
        chunks (one read for both)."""
        direct = not any(i.lag for i in rules.inputs) and bool(rules.columns)
        table, status = await self._hash_table(symbols, ["ts", *rules.columns] if direct
                                               else ["ts"])  # fmt: skip
        flags = status.tolist()
        if direct:
            rows = {s: k for k, (s, f) in enumerate(zip(symbols, flags, strict=True)) if f == 2}
            self._prefetched = (rows, table)
        return {s for s, f in zip(symbols, flags, strict=True) if f}

    async def _load(self, rules: RuleSet, chunk: list[str]) -> _Loaded:
        self.current = chunk[0]
        await self._progress("load_data")
        if self.req.mode == "snapshot":
            latest = await self._latest_values(rules, chunk)
            have = set(latest.symbols)
            missing = [s for s in chunk if s not in have]
        else:
            latest, missing = _Latest.empty(len(rules.columns)), list(chunk)
        series, hits, misses = await self._series(missing)
        return _Loaded(latest, series, hits, misses)

    async def _compute_chunk(self, rules: RuleSet, chunk: list[str], data: _Loaded) -> _Found:
        self.eta.start(time.monotonic(), self.done)
        await self._progress("compute")
        async with self.ctx.compute_slots:
            found = await asyncio.to_thread(self._compute, rules, chunk, data.latest,
                                            data.series)  # fmt: skip
        self.current = chunk[-1]
        self.recomputed_chunks += 1
        self.ctx.computed[self.req.scan_id] += 1
        CHUNKS_COMPUTED.inc()
        return found

    async def _latest_values(self, rules: RuleSet, chunk: list[str]) -> _Latest:
        """The engine's current values where they answer the rule (inputs at lag 0); no
        hash, or not every column: the archive answers for those symbols."""
        if any(i.lag for i in rules.inputs) or not rules.columns:
            return _Latest.empty(len(rules.columns))
        if self._prefetched is not None:
            index, table = self._prefetched
        else:
            table, status = await self._hash_table(chunk, ["ts", *rules.columns])
            index = {s: k for k, (s, f) in enumerate(zip(chunk, status.tolist(), strict=True))
                     if f == 2}  # fmt: skip
        syms = [s for s in chunk if s in index]
        rows = np.fromiter((index[s] for s in syms), dtype=np.intp, count=len(syms))
        return _Latest(syms, table[rows])

    async def _series(
        self, symbols: list[str]
    ) -> tuple[dict[str, dict[str, np.ndarray]], int, int]:
        """The symbols' bars up to ``end``: from the Redis cache (key: timeframe, the
        archive's generation for it, end, symbol), else the archive (then cached); and
        the cache hits and misses."""
        if not symbols:
            return {}, 0, 0
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
        # one query for the chunk: the archive's per-query cost dominates small reads
        loaded = await archive.read_many(missing, self.req.tf, None, end) if missing else {}
        out.update(loaded)
        if loaded and s.scan_cache_ttl_s:
            by_sym = dict(zip(symbols, keys, strict=True))
            async with redis.pipeline(transaction=False) as pipe:
                for sym, bars in loaded.items():
                    pipe.set(by_sym[sym], _pack(bars), ex=s.scan_cache_ttl_s)
                await pipe.execute()
        return out, len(symbols) - len(missing), len(missing)

    def _compute(
        self,
        rules: RuleSet,
        chunk: list[str],
        latest: _Latest,
        series: dict[str, dict[str, np.ndarray]],
    ) -> _Found:
        found = _Found()
        names = rules.columns
        if latest.symbols:
            table = latest.table  # (symbols, ts + columns)
            res = rules.evaluate_latest(np.ascontiguousarray(table[:, 1:].T))
            hit = np.flatnonzero(res.match(0))
            score = res.score(0)
            hit_scores = [None] * len(hit) if score is None else _nums(score[hit])
            ts = table[hit, 0].astype(np.int64).tolist()
            rows = np.where(np.isfinite(table[hit, 1:]), table[hit, 1:], np.nan).tolist()
            for j, t, sc, vals in zip(hit.tolist(), ts, hit_scores, rows, strict=True):
                found.rows.append((latest.symbols[j], t, sc,
                                   {n: (x if x == x else None)
                                    for n, x in zip(names, vals, strict=True)}))  # fmt: skip
        start = self.req.start or 0
        snapshot = self.req.mode == "snapshot"
        for s in chunk:
            bars = series.get(s)
            if bars is None or len(bars["ts"]) == 0:
                continue
            cols = rules.series_columns(bars)
            res = rules.evaluate_series(cols, n=len(bars["ts"]))
            match = res.match(0)
            if snapshot:
                idx = np.array([len(match) - 1]) if match[-1] else np.empty(0, np.intp)
            else:
                idx = np.flatnonzero(match & (bars["ts"] >= start))
            if not len(idx):
                continue
            score = res.score(0)
            # the matches' values, all columns at once (not an array per match)
            matched = np.stack([cols[c][idx] for c in names], axis=1) if names else None
            scores = [None] * len(idx) if score is None else _nums(score[idx])
            for k, (b, sc) in enumerate(zip(idx.tolist(), scores, strict=True)):
                vals = {} if matched is None else _values(names, matched[k])
                found.rows.append((s, int(bars["ts"][b]), sc, vals))
        found.scanned = len(chunk)
        return found

    async def _checkpoint(self, rules: RuleSet, i: int, found: _Found, data: _Loaded) -> None:
        rows = [{"symbol": s, "ts": ts, "score": sc, "values": v} for s, ts, sc, v in found.rows]
        rows.sort(key=_rank_key(rules))
        stats = _ChunkStats(found.scanned, len(rows), data.hits, data.misses)
        if self._memory is not None:
            self._memory.append(rows[: self.req.limit])
            self._stats[i] = stats
            return
        doc = {"_id": f"{self.req.scan_id}:{i}", "scan_id": self.req.scan_id, "chunk": i,
               "scanned": found.scanned, "matches": rows}  # fmt: skip
        await self.ctx.db["scan_chunks"].replace_one({"_id": doc["_id"]}, doc, upsert=True)
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            # the chunk's best (all the ranking needs) first, then its counts: a chunk
            # counted done always has its best stored
            pipe.hset(self._tops_key, str(i), orjson.dumps(rows[: self.req.limit]))
            pipe.hset(self._chunks_key, str(i), stats.pack())
            pipe.delete(self.ctx.key(self.req.scan_id, f"claim:{i}"))
            await pipe.execute()
        self._held.discard(i)
        self._stats[i] = stats
        await self._progress("compute")

    async def _ranked(self, rules: RuleSet) -> tuple[list[ScanMatch], int, int]:
        """The top ``limit`` of the best ``limit`` of every chunk (each chunk ranks its own
        matches when it is checkpointed); the totals from the checkpoint counts."""
        if self._memory is not None:
            rows = [r for top in self._memory for r in top]
        else:
            tops = await self.ctx.redis.hvals(self._tops_key)
            rows = [r for top in tops for r in orjson.loads(top)]
        rows.sort(key=_rank_key(rules))
        top = [ScanMatch(**r) for r in rows[: self.req.limit]]
        stats = self._stats.values()
        return top, sum(c.matches for c in stats), sum(c.scanned for c in stats)

    # -- events ----------------------------------------------------------------------------

    async def _partial(self, i: int, found: _Found) -> None:
        """A chunk's matches as a ``partial`` ScanResult. Written as JSON straight from
        the rows (they hold checked values already: a pydantic model per match cost more
        than computing a snapshot chunk); a message too large goes the model's way."""
        req = self.req
        body = {
            "type": "scan_result", "v": 1, "scan_id": req.scan_id, "owner": req.owner,
            "status": "partial", "chunk": i,
            "matches": [{"symbol": s, "ts": ts, "score": sc, "values": v}
                        for s, ts, sc, v in found.rows[:PARTIAL_MATCHES]],
            "total_matches": len(found.rows), "symbols_scanned": found.scanned,
            "unknown_symbols": [], "error": None, "ts": _now_ms(),
        }  # fmt: skip
        data = orjson.dumps(body)
        if len(data) > self._message_limit:
            await self._emit_result(ScanResult.model_validate(body))
            return
        await self._send_result(data, final=False)

    @property
    def _message_limit(self) -> int:
        return int(self.ctx.settings.max_message_bytes * 0.9)

    async def _emit_result(self, res: ScanResult) -> None:
        data = encode(res)
        limit = self._message_limit
        if len(data) > limit:  # first without the per-match values, then fewer matches
            slim = [m.model_copy(update={"values": {}}) for m in res.matches]
            res = res.model_copy(update={"matches": slim})
            data = encode(res)
            while len(data) > limit and res.matches:
                res = res.model_copy(update={"matches": res.matches[: len(res.matches) // 2]})
                data = encode(res)
        await self._send_result(data, final=res.status != "partial")

    async def _send_result(self, data: bytes, *, final: bool) -> None:
        topic = topic_name(self.ctx.settings.topic_prefix, "scan.results")
        await self.ctx.producer.send(topic, data, key=self.req.scan_id.encode())
        if final:
            await self.ctx.producer.flush()  # the final result (and all before it) acked
        await self.ctx.publisher.publish_many([(self.channel, data, None)], validate=False)

    async def _progress(
        self, stage: str, *, force: bool = False, queue_position: int | None = None
    ) -> None:
        if self.helper:
            return  # the coordinator reports, from every worker's checkpoints
        now = time.monotonic()
        changed = stage != self._stage
        if not (force or changed) and now - self._last_progress < self._min_gap:
            return
        self._stage = stage
        self._last_progress = now
        self.eta.total = self.total
        self.eta.observe(now, self.done)
        rate, eta = self.eta.estimate(now)
        finished = stage in FINAL
        percent = 100.0 if stage == "done" else (
            min(100.0, 100.0 * self.done / self.total) if self.total else 0.0)  # fmt: skip
        msg = ScanProgress(
            scan_id=self.req.scan_id, owner=self.req.owner, stage=stage,
            done=self.done, total=self.total, percent=round(percent, 3),
            rate=round(rate, 3) if math.isfinite(rate) else 0.0,
            eta_ms=0 if finished else eta, current_symbol=self.current,
            cache_hits=self.cache_hits, cache_misses=self.cache_misses,
            matches=self.matches, queue_position=queue_position, ts=_now_ms(),
        )  # fmt: skip
        data = encode(msg)
        topic = topic_name(self.ctx.settings.topic_prefix, "scan.progress")
        await self.ctx.producer.send(topic, data, key=self.req.scan_id.encode())
        await self.ctx.publisher.publish_many([(self.channel, data, None)], validate=False)
        if finished or now - self._last_stored >= 1.0:  # the document: at most once a second
            self._last_stored = now
            update: dict[str, Any] = {"progress": orjson.loads(data)}
            if not finished:
                update["status"] = "queued" if stage == "queued" else "running"
            await self.ctx.db["scans"].update_one({"_id": self.req.scan_id}, {"$set": update})


_COLS = ("open", "high", "low", "close", "volume")

#: KEYS: chunks hash, claim, cancel flag, final flag; ARGV: chunk, claimant
#: (``{worker id}/{run}``: two runs in one worker are two claimants), claim TTL, worker
#: liveness key prefix. The holder's liveness key is derived from the claim's value (a
#: single-instance Redis, as DESIGN.md has it; not cluster-safe by design).
_CLAIM = Script("""
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then
  return -1
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2]
    and redis.call('EXISTS', ARGV[4] .. string.match(holder, '^[^/]*')) == 1 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1
""")

_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")


def split_even(symbols: list[str], most: int) -> list[list[str]]:
    """``symbols`` in as few chunks of at most ``most`` as will do, their sizes differing
    by one at most: 5,001 symbols by 500 are eleven chunks of 454-455, not ten of 500 and
    one of 1 (a chunk's fixed costs — a query, a checkpoint — would make that one take as
    long as a full one, and the ETA, which counts symbols, would not expect it)."""
    if not symbols:
        return []
    k = -(-len(symbols) // most)
    base, extra = divmod(len(symbols), k)
    out, lo = [], 0
    for n in range(k):
        hi = lo + base + (n < extra)
        out.append(symbols[lo:hi])
        lo = hi
    return out


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


def _rank_key(rules: RuleSet) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Order of matches: by the rank expression (missing scores last), then symbol and
    time; by symbol and time without one."""
    rule = rules.rules[0]
    if rule.rank_by is None:
        return lambda r: (r["symbol"], r["ts"])
    sign = -1.0 if rule.descending else 1.0
    return lambda r: (r["score"] is None, sign * (r["score"] if r["score"] is not None else 0.0),
                      r["symbol"], r["ts"])  # fmt: skip


def _nums(arr: np.ndarray) -> list[float | None]:
    return [x if math.isfinite(x) else None for x in arr.astype(np.float64).tolist()]


def _values(names: list[str], col: np.ndarray) -> dict[str, float | None]:
    return {n: (float(x) if math.isfinite(x) else None)
            for n, x in zip(names, col.tolist(), strict=True)}  # fmt: skip
