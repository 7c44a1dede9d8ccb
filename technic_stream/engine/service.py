"""The indicator engine process: ``md.bars`` → per-partition books → Redis, channels, alerts.

Per fetched batch, under one lock (rule changes and rebalances wait for it):

1. decode the records straight into columns (bad ones to the DLQ with the reason);
2. per partition and timeframe, one :meth:`Book.apply`: every segment's kernel once over
   the batch, then the bars, lags and rule inputs recorded per bar in one numba pass;
3. evaluate every live rule of the timeframe over every bar at once, pick the
   candidates by mode, and ask the alert gate (cooldown, expiry, throttle, ``once``) in
   one pipeline; a firing goes to ``alerts.fired`` (key: owner) and to the channel
   ``alerts.{owner}``, both under the deterministic alert id;
4. build each touched symbol's latest values — ``ind:{tf}:{symbol}`` hashes and the
   channels ``ind.{tf}.{symbol}`` / ``bars.{tf}.{symbol}`` (several bars of one symbol
   in one batch are conflated to the latest, as quotes are) — and snapshot the
   partitions due a checkpoint (time or bar count);
5. hand the writes to a task and return it: the gate's calls in one Redis pipeline,
   the firings to Kafka at once, the values in a second pipeline while the broker acks
   them, then the checkpoints. The
   consumer fetches the next batch meanwhile and commits this one when its task is
   done; a batch's writes start only after the batch before's, so Redis and Kafka see
   them in order, and anything else that needs the engine's lock (rule changes,
   rebalances) waits for the writes in flight first.

Rules come from the compacted ``alerts.rules`` topic, read in full by every process
before it joins the group and followed afterwards. A rule that needs indicators a book
lacks makes the book add them, warmed from each symbol's recent bars, before the rule
is armed. On assignment a partition's checkpoint is restored and the partition read from
the offset it covers; partitions that stay with this process over a rebalance keep their
state in memory (their checkpoint is only compared, not reloaded).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram

from technic_stream.app.ops import OpsServer
from technic_stream.app.retry import REDIS_ERRORS, Retrier
from technic_stream.app.runtime import keep_freed_memory, settle_gc
from technic_stream.app.service import consumer_ready, run_consumer
from technic_stream.config import Settings
from technic_stream.engine.alerts import AlertTemplate, joined_alert_ids
from technic_stream.engine.book import Applied, Book
from technic_stream.engine.partition import PartitionState
from technic_stream.engine.rules import ACTIVE, LiveRule, LiveRules, TimeframeRules, hits
from technic_stream.errors import ConfigError, MessageDecodeError
from technic_stream.indicators.registry import IndicatorError, parse_indicators
from technic_stream.indicators.state import StateVersionError
from technic_stream.kafka import Batch, BatchConsumer, DeadLetterQueue, Producer, TopicPartition
from technic_stream.kafka.blocks import chain_of
from technic_stream.kafka.follower import TopicFollower
from technic_stream.marketdata.decode import BarRows, decode_bar_records, warm_decoder
from technic_stream.messages import AlertRule, decode
from technic_stream.redis import redis_client
from technic_stream.redis.alert_gate import AlertGate, Candidates, Decision, GateRule
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.redis.checkpoint import CheckpointStore
from technic_stream.redis.interest import ChannelInterest, revision
from technic_stream.redis.resp import Command, InlineHset, execute
from technic_stream.topics import group_name, topic_name

__all__ = ["ENGINE_GROUP", "EngineService", "engine_service"]

log = logging.getLogger(__name__)

ENGINE_GROUP = "engine"  # under the topic prefix: technic.engine

BARS = Counter("technic_engine_bars", "Bars by outcome", ["tf", "outcome"])
BATCH_SECONDS = Histogram(
    "technic_engine_batch_seconds",
    "Decode, compute, evaluate and write one batch (commit excluded)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
STAGE_SECONDS = Counter(
    "technic_engine_stage_seconds",
    "Time spent per batch stage: decode, compute (kernels, rules), alerts (gate, produce), "
    "write (Redis values and channels), flush (broker acks), checkpoint",
    ["stage"],
)
RECORD_AGE = Histogram(
    "technic_engine_record_age_seconds",
    "From a batch's oldest record's producer timestamp to its outputs being written, "
    "per partition and batch (end-to-end freshness)",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
)
LAG = Gauge("technic_engine_lag", "Records not yet processed, per partition", ["partition"])
RULE_EVALS = Counter("technic_engine_rule_evaluations", "Rule evaluations (rules x bars)")
ALERTS = Counter("technic_engine_alerts", "Alert candidates by gate outcome", ["outcome"])
RULES = Gauge("technic_engine_rules", "Live rules known, by status", ["status"])
CHECKPOINTS = Histogram(
    "technic_engine_checkpoint_seconds", "Time to snapshot and store one partition"
)
CHECKPOINT_BYTES = Gauge("technic_engine_checkpoint_bytes", "Size of the last checkpoint")
CHECKPOINT_AGE = Gauge(
    "technic_engine_checkpoint_age_seconds", "Age of the oldest partition checkpoint"
)
RESTORE_SECONDS = Histogram("technic_engine_restore_seconds", "Time to restore one partition")
WARMUP_BARS = Counter("technic_engine_warmup_bars", "Bars replayed to warm new indicators")
WARMUP_SECONDS = Gauge(
    "technic_engine_kernel_warmup_seconds",
    "How long the start's kernel warm-up took (compiled, or loaded from numba's cache)",
)
SYMBOLS = Gauge("technic_engine_symbols", "Symbol-timeframe books held by this process")

_FIELDS = ("open", "high", "low", "close", "volume")
_INTEREST_REFRESH_S = 1.0
_STAGES = ("decode", "compute", "alerts", "encode", "write", "flush", "checkpoint")


def _lap(since: float) -> float:
    return time.perf_counter() - since


def _wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Touched:
    """Rows of one book written by a batch (their latest values go out once)."""

    book: Book
    rows: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _RuleAlerts:
    """One rule's candidates of a batch, from every partition, in order: what the gate
    decides in one call, and what acting on its verdicts needs."""

    rule: LiveRule
    per_bar: bool  # once_per_bar(_close): marked in the partition when it fires
    cands: Candidates
    #: the partition of candidates start:stop (one span per partition the batch holds)
    spans: list[tuple[PartitionState, int, int]] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # its place among the batch's candidates
    data: list[bytes] = field(default_factory=list)  # each alert's JSON (in ``cands`` framed)

    def part_of(self, j: int) -> PartitionState:
        for part, start, stop in self.spans:
            if start <= j < stop:
                return part
        raise IndexError(j)


@dataclass(slots=True)
class _Job:
    """One partition's bars of one timeframe in a batch: applied to its book and its
    rules evaluated by :meth:`compute` — numba all the way, which releases the GIL, so
    the partitions of a batch are computed on two threads at once."""

    tp: TopicPartition
    part: PartitionState
    tf: str
    bars: BarRows
    book: Book
    compiled: TimeframeRules | None
    rows: np.ndarray
    inputs: tuple[np.ndarray, np.ndarray] | None
    res: Applied | None = None
    hits: tuple[np.ndarray, np.ndarray] = (np.empty(0, dtype=np.int64),) * 2

    def compute(self) -> _Job:
        b = self.bars
        self.res = self.book.apply(self.rows, b.ts, b.open, b.high, b.low, b.close, b.volume,
                                   self.inputs)  # fmt: skip
        if self.compiled is not None:
            self.hits = hits(self.compiled, self.res.values, self.res.status)
        return self


_PER_BAR = frozenset(("once_per_bar", "once_per_bar_close"))


@dataclass
class _Writes:
    """What one batch's computation leaves to write (see ``EngineService._write``)."""

    batch: Batch
    alerts: list[_RuleAlerts]  # one gate call each, the first of ``commands``
    commands: list[Any]
    snapshots: list[_Snapshot]
    stages: dict[str, float]
    started: float


@dataclass
class _Snapshot:
    """A partition's state as of a batch, to store once that batch's outputs are."""

    tp: TopicPartition
    part: PartitionState
    offset: int
    blob: bytes
    taken: float


@dataclass
class EngineService:
    """Batch handler of the engine group."""

    settings: Settings
    producer: Producer
    redis: aioredis.Redis
    parts: dict[TopicPartition, PartitionState] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: False: a throwaway handler (the warm-up's) that leaves the process's metrics alone
    counted: bool = True

    def __post_init__(self) -> None:
        s = self.settings
        try:
            self.base = parse_indicators(s.engine_indicators)
        except IndicatorError as exc:
            raise ConfigError(
                f"TECHNIC_ENGINE_INDICATORS: {exc}", [f"TECHNIC_ENGINE_INDICATORS: {exc}"]
            ) from exc
        self.bars_topic = topic_name(s.topic_prefix, "md.bars")
        self.rules_topic = topic_name(s.topic_prefix, "alerts.rules")
        self.alerts_topic = topic_name(s.topic_prefix, "alerts.fired")
        self.dlq = DeadLetterQueue(self.producer, topic_name(s.topic_prefix, "dlq"))
        self.group = group_name(s.topic_prefix, ENGINE_GROUP)
        self.store = CheckpointStore(self.redis, s.redis_prefix, self.group)
        self.publisher = ChannelPublisher(
            self.redis, s.redis_prefix,
            history_size=s.channel_history_size, history_ttl_s=s.channel_history_ttl_s,
        )  # fmt: skip
        self.gate = AlertGate(self.redis, s.redis_prefix, publisher=self.publisher)
        self.interest = ChannelInterest(self.redis, s.redis_prefix)
        self._wanted: set[str] | None = None  # None: every channel (channel_publish=all)
        self._wanted_at = -1e9
        self._wanted_rev = 0  # the interest revision ``_wanted`` was read at
        self._scripts = (*self.gate.scripts, *self.publisher.scripts)
        self.rules = LiveRules()
        self.consumer: BatchConsumer | None = None
        self.lock = asyncio.Lock()
        self.parked: dict[TopicPartition, PartitionState] = {}
        # counters for tests and benchmarks
        self.bars_applied = 0
        self.alerts_sent = 0
        self.restored_from: dict[TopicPartition, int] = {}
        self._hsets: dict[tuple[str, ...], InlineHset] = {}
        self._templates: dict[tuple[Any, ...], AlertTemplate] = {}
        self._candidates_seen = 0  # (in the batch being computed: orders its alerts)
        self._inflight: asyncio.Task[None] | None = None  # the last batch's writes
        self._alerts_out: asyncio.Future[None] | None = None  # ... and its alerts step
        self._gate_out: asyncio.Future[None] | None = None  # ... and its gate call
        # Redis away: a batch's writes wait for it (idempotent: the hashes are set again,
        # the gate answers a replayed alert id with its recorded decision)
        self.redis_writes = Retrier("Redis", REDIS_ERRORS, stop=self.stop)
        self._pool = (
            ThreadPoolExecutor(s.engine_compute_threads, thread_name_prefix="engine-compute")
            if s.engine_compute_threads > 1 else None
        )  # fmt: skip

    def close(self) -> None:
        """Let the compute threads go (once the consumer has stopped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def redis_ready(self) -> None:
        """Readiness: Redis answers and the writes go through."""
        await self.redis_writes.ready()
        await asyncio.wait_for(self.redis.ping(), 2.0)

    def _new_part(self) -> PartitionState:
        """An empty partition: its first checkpoint is due an interval (or the bar count)
        after it was taken on, like any other's — not at its first batch, which had
        stored every partition's state at once while the first batches were read."""
        return PartitionState(
            self.base, self.settings.engine_history_bars, saved_at=time.monotonic()
        )

    # Batches ----------------------------------------------------------------------

    async def on_batch(self, batch: Batch) -> asyncio.Task[None]:
        """Decode, compute and evaluate ``batch`` and build its writes; returns the task
        that writes them (after the previous batch's), which the consumer awaits before
        it commits — so this batch's work overlaps the previous batch's round trips."""
        async with self.lock:
            started = time.perf_counter()
            stages = dict.fromkeys(_STAGES, 0.0)
            now = _wall_ms()
            expired = self.rules.expire(now)
            if expired:  # (rare) status events go after the writes before them
                await self._drain()
            for rule in expired:
                await self._status_changed(rule)
            parts = list(batch.items())
            touched, alerts, bad = self.compute(parts, now, stages)
            for record, reason in bad:
                await self.dlq.route(record, MessageDecodeError(reason))
            for tp, records in parts:
                part = self.parts[tp]
                part.next_offset = records[-1].offset + 1
                part.bars_since_save += len(records)
                if self.consumer is not None:
                    lag = self.consumer.lag(tp, part.next_offset)
                    if lag is not None:
                        LAG.labels(str(tp.partition)).set(lag)
            t = time.perf_counter()
            gate_calls = [self.gate.call(a.cands) for a in alerts.values()]
            stages["alerts"] += _lap(t)
            t = time.perf_counter()
            await self._refresh_interest()
            values = self._value_commands(touched)
            stages["encode"] += _lap(t)
            t = time.perf_counter()
            snapshots = await self._snapshots_due()
            stages["checkpoint"] += _lap(t)
            writes = _Writes(batch, list(alerts.values()), [*gate_calls, *values], snapshots,
                             stages, started)  # fmt: skip
            loop = asyncio.get_running_loop()
            gate_out, alerts_out = loop.create_future(), loop.create_future()
            self._inflight = asyncio.create_task(
                self._write(writes, self._inflight, (self._gate_out, gate_out),
                            (self._alerts_out, alerts_out)),
                name="engine-writes",
            )  # fmt: skip
            self._gate_out, self._alerts_out = gate_out, alerts_out
            SYMBOLS.set(sum(p.symbols for p in self.parts.values()))
            return self._inflight

    def compute(
        self,
        parts: list[tuple[TopicPartition, Sequence[Any]]],
        now: int,
        stages: dict[str, float],
    ) -> tuple[dict[tuple[int, str], _Touched], dict[str, _RuleAlerts], list[tuple[Any, str]]]:
        """Steps 1-3 for a batch's partitions: their records decoded, applied to their
        books and their rules' candidates gathered — numba and no I/O. The touched books,
        the candidates by rule and the records that did not decode, with the reason."""
        touched: dict[tuple[int, str], _Touched] = {}
        alerts: dict[str, _RuleAlerts] = {}
        self._candidates_seen = 0
        # every partition's records decoded in one call: a call's fixed cost was most
        # of the decoding of the small batches that low latency brings
        t = time.perf_counter()
        chain = chain_of([records for _tp, records in parts])
        decoded, bad = decode_bar_records(
            chain if chain is not None else [r for _tp, records in parts for r in records],
            max_bytes=self.settings.max_message_bytes,
        )
        ends = np.cumsum([len(records) for _tp, records in parts])
        cuts = np.searchsorted(decoded.record, ends).tolist()
        stages["decode"] += _lap(t)
        t = time.perf_counter()
        jobs: list[_Job] = []
        for i, (tp, _records) in enumerate(parts):
            part = self.parts.get(tp)
            if part is None:  # assigned without on_assigned (should not happen)
                part = self.parts[tp] = self._new_part()
            rows = decoded.between(cuts[i - 1] if i else 0, cuts[i])
            tfs = sorted(set(rows.tf.tolist()))
            for tf in tfs:
                sub = rows if len(tfs) == 1 else rows.take(np.flatnonzero(rows.tf == tf))
                jobs.append(self._job(tp, part, tf, sub))
        if len(jobs) > 1 and self._pool is not None:  # (the kernels release the GIL)
            done = list(self._pool.map(_Job.compute, jobs))
        else:
            done = [job.compute() for job in jobs]
        for job in done:
            self._applied(job, touched, now, alerts)
        stages["compute"] += _lap(t)
        return touched, alerts, bad

    async def _write(
        self,
        w: _Writes,
        before: asyncio.Task[None] | None,
        gate: tuple[asyncio.Future[None] | None, asyncio.Future[None]],
        alerts: tuple[asyncio.Future[None] | None, asyncio.Future[None]],
    ) -> None:
        """One batch's round trips: the gate's decisions (and its channel appends) in
        one Redis pipeline once the batch before has had its own (``gate``: the batch
        before's step and this one's); the firings to Kafka together, after the batch
        before has sent its own (``alerts``, likewise); beside them, as soon as the batch before
        is written whole, the hashes and the value channels in another pipeline; then the
        broker's acks and the due checkpoints. (One pipeline for both made every alert
        wait for all of the batch's hashes; waiting for the batch before's hashes made
        every alert wait for the last batch's; sending the hashes only after the gate had
        answered left the loop idle for their round trip; sending a gate call only after
        the batch before had sent its firings kept Redis idle while the engine built
        them.) Decisions, firings and hashes each keep the batches' order; the gate's
        keys are not the hashes', so one may pass the other."""
        stages = w.stages
        gate_calls, values = w.commands[: len(w.alerts)], w.commands[len(w.alerts) :]
        written = asyncio.ensure_future(self._write_values(values, before, stages))
        step = gate
        try:
            replies: list[Any] = []
            if gate[0] is not None:
                await gate[0]
            if gate_calls:
                t = time.perf_counter()
                replies = await self.redis_writes(
                    lambda: execute(self.redis, gate_calls, scripts=self._scripts)
                )
                stages["alerts"] += _lap(t)
            gate[1].set_result(None)
            step = alerts
            if alerts[0] is not None:
                await alerts[0]
            if gate_calls:
                t = time.perf_counter()
                await self._fired(w.alerts, replies)
                stages["alerts"] += _lap(t)
            alerts[1].set_result(None)
        except BaseException as exc:
            written.cancel()
            await asyncio.gather(written, return_exceptions=True)
            for out in {step[1], alerts[1]}:  # this step's, and the firings' (not sent)
                if isinstance(exc, asyncio.CancelledError):
                    out.cancel()
                else:
                    out.set_exception(exc)
                    out.exception()  # the next batch re-raises it; nobody else must
            raise
        await written
        t = time.perf_counter()
        await self.producer.flush()
        stages["flush"] += _lap(t)
        done_ms = _wall_ms()
        for records in w.batch.values():
            RECORD_AGE.observe(max(0, done_ms - records[0].timestamp) / 1000)
        BATCH_SECONDS.observe(_lap(w.started))
        t = time.perf_counter()
        for snap in w.snapshots:
            await self._store(snap)
        stages["checkpoint"] += _lap(t)
        for stage, seconds in stages.items():
            STAGE_SECONDS.labels(stage).inc(seconds)

    async def _write_values(
        self, values: list[Any], before: asyncio.Task[None] | None, stages: dict[str, float]
    ) -> None:
        """The hashes and value channels of a batch, once the batch before is written."""
        if before is not None:
            await before
        t = time.perf_counter()
        replies = await self.redis_writes(
            lambda: execute(self.redis, values, scripts=self._scripts)
        )
        if self._wanted is not None and replies:
            self._saw_revision(replies[-1])
        stages["write"] += _lap(t)

    async def _drain(self) -> None:
        """Wait for the writes in flight (before anything that must follow them)."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight
            self._gate_out = self._alerts_out = None

    def _job(self, tp: TopicPartition, part: PartitionState, tf: str, bars: BarRows) -> _Job:
        """What applying ``bars`` to the partition's book takes (its rows registered and
        the book shaped to the rules, here in order)."""
        book = part.book(tf, self.rules)
        compiled = self.rules.for_tf(tf)
        if bars.names is not None and bars.code is not None:
            rows = book.rows_coded(bars.names, bars.code)
        else:
            rows = book.rows(bars.symbol, len(bars))
        inputs = None
        if compiled is not None:
            inputs = book.inputs_for(compiled.columns, compiled.lags)
        return _Job(tp, part, tf, bars, book, compiled, rows, inputs)

    def _applied(
        self,
        job: _Job,
        touched: dict[tuple[int, str], _Touched],
        now: int,
        alerts: dict[str, _RuleAlerts],
    ) -> None:
        """Account for an applied job and gather its rules' candidates (in order)."""
        res, tf, n = job.res, job.tf, len(job.bars)
        assert res is not None
        self.bars_applied += n
        if self.counted:
            BARS.labels(tf, "applied").inc(res.applied)
            if res.corrected:
                BARS.labels(tf, "corrected").inc(res.corrected)
            if res.skipped:
                BARS.labels(tf, "stale").inc(res.skipped)
        t = touched.setdefault((job.tp.partition, tf), _Touched(job.book))
        t.rows.update(np.unique(job.rows[res.status != 2]).tolist())
        if job.compiled is None:
            return
        if self.counted:
            RULE_EVALS.inc(n * len(job.compiled.rules))
        at, ks = job.hits
        if at.shape[0]:
            self._candidates(job.part, job.compiled, job.bars, res, at, ks, now, alerts)

    def _candidates(
        self,
        part: PartitionState,
        compiled: TimeframeRules,
        bars: BarRows,
        res: Applied,
        at: np.ndarray,
        ks: np.ndarray,
        now: int,
        alerts: dict[str, _RuleAlerts],
    ) -> None:
        """Add the candidates (rule ``ks[j]`` holding on bar ``at[j]``) that their rule's
        symbol list and the once-per-bar marks let through to their rule's gate call,
        each with the alert it fires as JSON (the gate appends it to the owner's channel
        in the same step as its decision). One rule's candidates are taken together:
        their fields in one gather each, their ids and alerts by
        :mod:`technic_stream.engine.alerts` (a Python step per field and alert was most
        of the alerts' cost)."""
        rules = compiled.rules
        base = self._candidates_seen  # the batch's candidates before these
        self._candidates_seen += len(at)
        for k in np.unique(ks).tolist():
            rule = rules[k]
            m = rule.message
            js = np.flatnonzero(ks == k)
            bar = at[js]
            syms, ts = bars.symbol[bar].tolist(), bars.ts[bar].tolist()
            per_bar = m.mode in _PER_BAR
            if rule.symbols is not None or per_bar:
                allowed, marks = rule.symbols, part.fired.get(m.rule_id) if per_bar else None
                keep = [
                    i for i, (sym, t) in enumerate(zip(syms, ts, strict=True))
                    if (allowed is None or sym in allowed)
                    and (marks is None or marks.get(sym) != t)
                ]  # fmt: skip
                if len(keep) < len(syms):
                    if not keep:
                        continue
                    js, bar = js[keep], bar[keep]
                    syms, ts = [syms[i] for i in keep], [ts[i] for i in keep]
            names, rows = compiled.reported(rule)
            seqs = res.seq[bar].tolist() if m.mode == "every_time" else None
            ids = joined_alert_ids(m.rule_id, m.tf, syms, ts, seqs)
            close = bars.close[bar]
            texts = None
            if m.message:
                texts = [
                    _render(m, sym, t, c)
                    for sym, t, c in zip(syms, ts, close.tolist(), strict=True)
                ]
            framed, data = self._template(m, names).render(
                ids, syms, ts, now, close, res.values[np.ix_(rows, bar)].T, texts
            )
            g = alerts.get(m.rule_id)
            if g is None:
                g = alerts[m.rule_id] = _RuleAlerts(rule, per_bar, Candidates(GateRule(
                    m.rule_id, m.ts, m.mode, m.cooldown_s, m.expires_at, m.throttle_max,
                    m.throttle_window_s, f"alerts.{m.owner}",
                ), [], [], []))  # fmt: skip
            c = g.cands
            c.framed.append(framed)
            c.n_framed += len(data)
            g.data += data
            g.spans.append((part, len(g.symbols), len(g.symbols) + len(syms)))
            g.symbols += syms
            g.ts += ts
            g.order += (js + base).tolist()

    def _template(self, m: AlertRule, names: tuple[str, ...]) -> AlertTemplate:
        key = (m.rule_id, m.owner, m.tf, names)
        tpl = self._templates.get(key)
        if tpl is None:
            if len(self._templates) >= 10_000:
                self._templates.clear()
            tpl = self._templates[key] = AlertTemplate(m.rule_id, m.owner, m.tf, names)
        return tpl

    async def _fired(self, alerts: list[_RuleAlerts], replies: list[Any]) -> None:
        """Act on the gate's decisions: status changes, and each firing to
        ``alerts.fired`` in the order the batch found the candidates (a replayed firing
        goes again, under the same id — it is in the channel already — unless this
        process sent it: a once-per-bar firing it has marked). A rule's firings are
        marked and gathered a span at a time; candidate by candidate only when the gate
        answers a once-per-bar rule with a replay."""
        order: list[int] = []
        out: list[tuple[bytes, bytes]] = []
        sent = replayed = suppressed = 0
        for g, reply in zip(alerts, replies, strict=True):
            d = Decision.of(reply)
            rule, m = g.rule, g.rule.message
            flags, n = d.flags, len(g.order)
            if len(flags) != n:
                raise RuntimeError(f"the gate decided {len(flags)} of {n} alerts")
            if d.changed_at or (d.status != ACTIVE and rule.status == ACTIVE):
                self.rules.set_status(m.rule_id, d.status, d.reason)
                await self._status_changed(rule)
            marked = g.per_bar and "R" in flags
            chosen: list[int] | None
            if marked:  # (rare) replays of a once-per-bar rule: one by one
                chosen = self._replays(g, flags)
            elif flags.count("1") + flags.count("R") == n:  # (the usual: every one fires)
                chosen = None
            else:
                chosen = [j for j, f in enumerate(flags) if f == "1" or f == "R"]
            if chosen is None:
                sent += n
                replayed += flags.count("R")
            else:
                sent += len(chosen)
                replayed += sum(1 for j in chosen if flags[j] == "R")
                suppressed += n - len(chosen)
            if g.per_bar and not marked:  # the marks, a partition's span at a time
                for part, start, stop in g.spans:
                    js = range(start, stop) if chosen is None else [
                        j for j in chosen if start <= j < stop
                    ]  # fmt: skip
                    if js:
                        marks = part.fired.setdefault(m.rule_id, {})
                        marks.update((g.symbols[j], g.ts[j]) for j in js)
            data = g.data
            owner = m.owner.encode()
            if chosen is None:
                order += g.order
                out += [(owner, v) for v in data]
            else:
                order += [g.order[j] for j in chosen]
                out += [(owner, data[j]) for j in chosen]
        if len(alerts) > 1:  # the rules' firings interleaved back into the batch's order
            out = [out[i] for i in np.argsort(np.array(order), kind="stable").tolist()]
        await self.producer.send_many(self.alerts_topic, out)
        for outcome, count in (("fired", sent - replayed), ("replayed", replayed),
                               ("suppressed", suppressed)):  # fmt: skip
            if count:
                ALERTS.labels(outcome).inc(count)
        self.alerts_sent += len(out)

    @staticmethod
    def _replays(g: _RuleAlerts, flags: str) -> list[int]:
        """The candidates of a once-per-bar rule to send, one by one in order (a replay
        of a firing already marked — a correction of a bar whose firing the batch before
        sent, computed while that batch's decisions were on their way — is not sent
        again; a firing marks its bar as it goes)."""
        rule_id = g.rule.rule_id
        chosen = []
        for j, f in enumerate(flags):
            if f != "1" and f != "R":
                continue
            part = g.part_of(j)
            sym, ts = g.symbols[j], g.ts[j]
            if f == "R" and part.already_fired(rule_id, sym, ts):
                continue
            part.mark_fired(rule_id, sym, ts)
            chosen.append(j)
        return chosen

    async def _status_changed(self, rule: LiveRule) -> None:
        m = rule.message
        log.info(
            "rule status changed",
            extra={"rule_id": m.rule_id, "status": rule.status, "reason": rule.reason},
        )
        status, reason = rule.status, rule.reason
        if status in ("expired",):  # (both writes idempotent: retried while Redis is away)
            await self.redis_writes(lambda: self.gate.set_status(m.rule_id, status, reason))
        event = orjson.dumps(
            {"type": "rule_status", "rule_id": m.rule_id, "owner": m.owner,
             "status": status, "reason": reason, "ts": _wall_ms()}
        )  # fmt: skip
        await self.redis_writes(lambda: self.publisher.publish_many(
            [(f"alerts.{m.owner}", event, f"status:{m.rule_id}:{m.ts}:{status}")]
        ))  # fmt: skip
        self._count_rules()

    def _count_rules(self) -> None:
        counts: dict[str, int] = {}
        for r in self.rules.rules.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        for status in ("active", "fired", "paused", "expired", "error"):
            RULES.labels(status).set(counts.get(status, 0))

    def _value_commands(self, touched: dict[tuple[int, str], _Touched]) -> list[Any]:
        """Latest values of every touched symbol: the hashes, then its two channels where
        anyone wants them (see :mod:`technic_stream.redis.interest`)."""
        prefix = self.settings.redis_prefix
        wanted = self._wanted
        hsets: list[Command] = []
        items: list[tuple[str, bytes, str | None]] = []
        for (_p, tf), t in touched.items():
            if not t.rows:
                continue
            rows = np.fromiter(sorted(t.rows), dtype=np.int64, count=len(t.rows))
            book = t.book
            names = book.output_names
            hset = self._hset(names)
            latest_arr = book.latest(rows)
            last_arr = book.last_bar(rows)
            syms = [book.names[r] for r in rows.tolist()]
            hsets.extend(hset.many(
                [f"{prefix}ind:{tf}:{sym}" for sym in syms], last_arr[:, 0].astype(np.int64),
                np.hstack((last_arr[:, 1:], latest_arr)),
            ))  # fmt: skip
            if wanted is not None and not wanted:
                continue  # no channel of this process's symbols is wanted
            latest = latest_arr.tolist()
            last = last_arr.tolist()
            for sym, vals, bar in zip(syms, latest, last, strict=True):
                ts = int(bar[0])
                ind_ch, bar_ch = f"ind.{tf}.{sym}", f"bars.{tf}.{sym}"
                if wanted is None or ind_ch in wanted:
                    values_by_name = dict(zip(names, vals, strict=True))
                    ind = {"symbol": sym, "tf": tf, "ts": ts, "values": values_by_name}
                    items.append((ind_ch, orjson.dumps(ind), None))
                if wanted is None or bar_ch in wanted:
                    ohlcv = dict(zip(_FIELDS, bar[1:], strict=True))
                    bar_msg = {"symbol": sym, "tf": tf, "ts": ts, **ohlcv}
                    items.append((bar_ch, orjson.dumps(bar_msg), None))
        out = [*hsets, *self.publisher.commands(items, validate=False)]
        if wanted is not None:  # last: did anyone want a new channel? (see _saw_revision)
            out.append(self.interest.revision_command())
        return out

    async def _refresh_interest(self) -> None:
        """The market channels anyone wants: re-read once a second (lapsed interest), and
        at the next batch after a write saw the set gain a member (a new subscriber).
        Redis away, it waits for Redis like the writes do (with batches in flight, the
        next batch's computation reaches it while the writes before are retrying)."""
        if self.settings.channel_publish == "all":
            return
        now = time.monotonic()
        if now - self._wanted_at >= _INTEREST_REFRESH_S:
            self._wanted, self._wanted_rev = await self.redis_writes(self.interest.wanted_at)
            self._wanted_at = now

    def _saw_revision(self, reply: Any) -> None:
        if revision(reply) != self._wanted_rev:
            self._wanted_at = -1e9

    def _hset(self, names: list[str]) -> InlineHset:
        """The hash writer for a book's outputs (one per output set)."""
        key = tuple(names)
        hset = self._hsets.get(key)
        if hset is None:
            hset = self._hsets[key] = InlineHset(["ts", *_FIELDS, *names])
        return hset

    # Rules ------------------------------------------------------------------------

    async def on_rule_records(self, records: list[Any]) -> None:
        """Apply ``alerts.rules`` records (upserts and tombstones) in order: the books are
        fitted to the new rules (new indicators warmed) once for the records, then every
        version is armed in the gate, in order, in one round trip."""
        async with self.lock:
            await self._drain()  # the batch before sees the rules it was computed with
            changed: set[str] = set()
            arms: list[tuple[str, int, str, str]] = []  # (rule id, version, status, reason)
            for record in records:
                rule_id = record.key.decode("utf-8", "replace") if record.key else None
                if record.value is None:
                    if rule_id is not None:
                        old = self.rules.delete(rule_id)
                        if old is not None:
                            changed.add(old.message.tf)
                            for part in self.parts.values():
                                part.forget_rule(rule_id)
                    continue
                try:
                    msg = decode(record.value, AlertRule, max_bytes=self.settings.max_message_bytes)
                except MessageDecodeError as exc:
                    await self._dlq_once(record, exc)
                    continue
                old = self.rules.rules.get(msg.rule_id)
                rule = self.rules.upsert(msg)
                changed.add(msg.tf)
                if old is not None:
                    changed.add(old.message.tf)
                if rule.status == "error":
                    log.warning("alert rule rejected",
                                extra={"rule_id": msg.rule_id, "reason": rule.reason})  # fmt: skip
                    arms.append((msg.rule_id, msg.ts, "error", rule.reason))
                    await self._dlq_once(record, MessageDecodeError(rule.reason))
                    continue
                arms.append((msg.rule_id, msg.ts, ACTIVE, ""))
            replayed = self._fit(changed)  # warm what the rules need before they are armed
            for (rule_id, version, asked, _), (status, reason) in zip(
                arms, await self.gate.arm_many(arms), strict=True
            ):
                if asked == "error":
                    continue
                self.rules.set_status(rule_id, status, reason)
                log.info(
                    "alert rule loaded",
                    extra={"rule_id": rule_id, "version": version, "status": status,
                           "warmup_bars": replayed},
                )  # fmt: skip
            self._count_rules()

    def _fit(self, tfs: set[str]) -> int:
        replayed = 0
        for part in self.parts.values():
            for tf, book in part.books.items():
                if tf in tfs:
                    replayed += part.fit(book, self.rules)
        if self.counted:
            WARMUP_BARS.inc(replayed)
        return replayed

    async def _dlq_once(self, record: Any, exc: Exception) -> None:
        """Every engine reads the whole rules topic; only the first routes a bad record."""
        key = f"{self.settings.redis_prefix}dlq:{record.topic}:{record.partition}:{record.offset}"
        if await self.redis.set(key, 1, nx=True, ex=30 * 86_400):
            await self.dlq.route(record, exc)
            await self.producer.flush()

    # Checkpoints ------------------------------------------------------------------

    async def _snapshots_due(self) -> list[_Snapshot]:
        """Snapshots of the partitions due a checkpoint (time or bar count), taken now —
        as of this batch — and stored by its writes, after its outputs. The batch
        before's writes are waited for first: they record which once-per-bar alerts went
        out, and the snapshot must hold that."""
        s = self.settings
        now = time.monotonic()
        due = [(tp, part) for tp, part in self.parts.items()
               if part.next_offset != part.saved_offset and (
                   now - part.saved_at >= s.engine_checkpoint_interval_s
                   or part.bars_since_save >= s.engine_checkpoint_bars)]  # fmt: skip
        if due:
            await self._drain()
        out = [snap for tp, part in due if (snap := self._snapshot(tp, part)) is not None]
        ages = [now - p.saved_at for p in self.parts.values() if p.saved_at]
        CHECKPOINT_AGE.set(max(ages, default=0.0))
        return out

    def _snapshot(self, tp: TopicPartition, part: PartitionState) -> _Snapshot | None:
        if part.next_offset is None or part.next_offset == part.saved_offset:
            return None
        started = time.perf_counter()
        snap = _Snapshot(tp, part, part.next_offset, part.to_bytes(), started)
        part.saved_at = time.monotonic()  # (not due again while this one is written)
        part.bars_since_save = 0
        return snap

    async def _store(self, snap: _Snapshot) -> None:
        tp = snap.tp
        size = await self.redis_writes(
            lambda: self.store.save_blob(tp.topic, tp.partition, snap.offset, snap.blob)
        )
        CHECKPOINTS.observe(time.perf_counter() - snap.taken)
        CHECKPOINT_BYTES.set(size)
        snap.part.saved_offset = max(snap.offset, snap.part.saved_offset or 0)

    async def _save(self, tp: TopicPartition, part: PartitionState) -> None:
        """Checkpoint ``part`` now (its batches' writes done: callers drain first)."""
        snap = self._snapshot(tp, part)
        if snap is not None:
            await self._store(snap)

    async def checkpoint_all(self) -> None:
        async with self.lock:
            await self._drain()
            await self.producer.flush()
            for tp, part in self.parts.items():
                await self._save(tp, part)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        async with self.lock:
            await self._drain()
            for tp in partitions:
                started = time.perf_counter()
                stored = await self.store.offset(tp.topic, tp.partition)
                kept = self.parked.pop(tp, None)
                if (
                    kept is not None
                    and kept.saved_offset is not None
                    and stored == kept.saved_offset
                ):
                    # (saved on revoke, and nobody has checkpointed the partition since)
                    part = kept  # ours all along: no reload
                    how = "kept"
                else:
                    part, how = await self._restore(tp)
                self.parts[tp] = part
                if self.consumer is not None:
                    # the state covers records before saved_offset; with no state, every
                    # record counts (a committed offset alone would skip bars the state needs)
                    if part.saved_offset is not None:
                        await self.consumer.seek(tp, part.saved_offset)
                    else:
                        await self.consumer.seek_to_beginning(tp)
                    self.restored_from[tp] = part.saved_offset or 0
                RESTORE_SECONDS.observe(time.perf_counter() - started)
                log.info(
                    "engine partition assigned",
                    extra={"partition": tp.partition, "state": how,
                           "offset": part.saved_offset, "symbols": part.symbols},
                )  # fmt: skip
            self.parked.clear()  # what was not given back belongs to others now

    async def _restore(self, tp: TopicPartition) -> tuple[PartitionState, str]:
        try:
            ckpt = await self.store.load_blob(tp.topic, tp.partition)
        except ValueError as exc:
            log.warning("engine checkpoint unreadable", extra={"error": str(exc)})
            return self._new_part(), "empty"
        if ckpt is None:
            return self._new_part(), "empty"
        try:
            part = PartitionState.from_bytes(
                ckpt.blob, self.base, self.settings.engine_history_bars, self.rules
            )
        except (StateVersionError, KeyError, ValueError) as exc:
            log.warning(
                "engine checkpoint unusable; rebuilding from the committed offset",
                extra={"partition": tp.partition, "error": str(exc)},
            )
            return self._new_part(), "empty"
        part.next_offset = part.saved_offset = ckpt.offset
        part.saved_at = time.monotonic()
        return part, "restored"

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        async with self.lock:
            await self._drain()
            await self.producer.flush()
            for tp in partitions:
                part = self.parts.pop(tp, None)
                if part is not None:
                    await self._save(tp, part)
                    self.parked[tp] = part


def _render(rule: AlertRule, symbol: str, ts: int, close: float) -> str | None:
    """The rule's message with its placeholders filled (the notifier renders templates
    per channel; this is the plain text that goes with the alert)."""
    text = rule.message
    if not text:
        return None
    fields = {
        "symbol": symbol, "tf": rule.tf, "ts": str(ts), "rule": rule.name or rule.rule_id,
        "close": repr(close),
    }  # fmt: skip
    for k, v in fields.items():
        text = text.replace("{{" + k + "}}", v)
    return text[:2_000]


async def _warm_up(settings: Settings, ops: OpsServer, stop: asyncio.Event) -> bool:
    """The kernels compiled or loaded (:mod:`technic_stream.engine.warmup`) before the
    engine subscribes; readiness says so meanwhile. False: ``stop`` came first (the
    warm-up's thread is a daemon, so a stopping process does not wait for a compile). A
    warm-up that fails is logged and the engine goes on: its batches compile what they
    need, as they did before there was a warm-up."""
    from technic_stream.engine.warmup import WarmReport, warm_engine  # (it imports this module)

    async def warming() -> None:
        raise RuntimeError("compiling the engine's kernels (first start on this machine?)")

    ops.checks["engine"] = warming
    log.info("engine kernels warming: loaded from numba's cache, or compiled on a machine's "
             "first start (about a minute; the engine takes its partitions after)")  # fmt: skip
    result: concurrent.futures.Future[WarmReport] = concurrent.futures.Future()

    def run() -> None:
        try:
            result.set_result(warm_engine(settings))
        except BaseException as exc:  # (the loop logs it)
            result.set_exception(exc)

    threading.Thread(target=run, name="engine-warmup", daemon=True).start()
    done = asyncio.wrap_future(result)  # (which drops the answer once the loop is closed)
    stopping = asyncio.ensure_future(stop.wait())
    waiters: set[asyncio.Future[Any]] = {done, stopping}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not done.done():
        log.info("engine stopped while its kernels were warming")
        return False

    async def starting() -> None:
        raise RuntimeError("reading the alert rules, then joining the group")

    ops.checks["engine"] = starting
    exc = done.exception()
    if exc is not None:
        log.error("engine kernel warm-up failed; its first batches compile what they need",
                  exc_info=exc)  # fmt: skip
        return True
    report = done.result()
    WARMUP_SECONDS.set(report.seconds)
    log.info("engine kernels warm", extra={"seconds": report.seconds, "bars": report.bars,
                                           "alerts": report.alerts,
                                           "signatures": report.signatures})  # fmt: skip
    return True


async def engine_service(
    settings: Settings,
    stop: asyncio.Event,
    ops: OpsServer,
    *,
    started: Callable[[EngineService], None] | None = None,
) -> None:
    """The engine process: runs until ``stop``. ``started`` sees the handler (tests)."""
    if settings.engine_warmup:
        if not await _warm_up(settings, ops, stop):
            return
    else:
        await asyncio.to_thread(warm_decoder)
    redis = redis_client(settings)
    kept = keep_freed_memory(settings.engine_malloc_keep_mb)
    log.info("allocator", extra={"keeps_freed_mb": settings.engine_malloc_keep_mb if kept else 0})
    try:
        async with Producer(settings) as producer:
            handler = EngineService(settings, producer, redis, stop=stop)
            if started is not None:
                started(handler)
            async with TopicFollower(settings, handler.rules_topic) as follower:
                loaded = await follower.catch_up(handler.on_rule_records)
                log.info(
                    "alert rules loaded",
                    extra={"records": loaded, "rules": len(handler.rules.rules)},
                )
                consumer = BatchConsumer(
                    settings, [handler.bars_topic], handler.group, handler,
                    max_records=settings.engine_batch_max, blocks=True, in_flight=2,
                )  # fmt: skip
                handler.consumer = consumer
                ops.checks["engine"] = consumer_ready(consumer)
                ops.checks["engine-redis"] = handler.redis_ready
                settle_gc()
                follow_stop = asyncio.Event()
                follow = asyncio.create_task(
                    follower.follow(handler.on_rule_records, follow_stop), name="engine-rules"
                )
                try:
                    await run_consumer(consumer, stop)
                finally:
                    follow_stop.set()
                    with contextlib.suppress(asyncio.CancelledError):
                        await follow
                    handler.close()
    finally:
        await redis.aclose()
