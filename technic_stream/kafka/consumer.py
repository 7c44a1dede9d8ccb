"""A batch consumer over aiokafka with commit-after-processing.

The loop is: fetch a batch (``getmany``) → hand it to the handler, which
returns only when the batch's outputs are durably written (producer acked,
Redis written) → commit the next offset of every partition in the batch.
A crash between processing and commit replays only that batch (at-least-once);
outputs carry deterministic ids so downstream drops the duplicates.

A handler may return from ``on_batch`` before the batch is durable, handing back an
awaitable that completes when it is (its writes in flight): the consumer then fetches
and hands over the next batch while those writes travel, and commits the batch once its
awaitable is done — before it settles the next one, so commits stay in order. At most
``in_flight`` such batches are pending (one unless the consumer is made with more: the
engine's writes of one batch span a broker ack and a commit, which a second batch's
computation hides); a rebalance, a stop or a close waits for them (and commits them)
before the handler is told to let partitions go.

Rebalances run concurrently with processing in aiokafka, so the revoke hook
waits for the batch in flight (and its commit) before it lets partitions go.

A consumer that has had no record for ``kafka_idle_after_s`` polls the broker slower
(``kafka_idle_fetch_max_wait_ms`` instead of ``kafka_fetch_max_wait_ms``) until one
comes: the local broker answers an empty fetch only when its wait is up, so every
consumer of an idle system asked it a hundred times a second — together half a core of
the broker and a quarter of the services' own. The first record after a quiet spell
waits up to the idle wait; while records flow, fetches wait the short one. A consumer
whose first record's latency matters more (``idle_fetch=False``) always polls fast; one
whose records are history (the archiver: ``fetch_wait_ms``) always waits that long — a
fetch returns as soon as the broker has records, so while records flow the wait costs no
throughput, and while they trickle (a scan's results under load) every short empty
fetch cost the local broker and the client ~7 % of a core together.

A consumer made with ``blocks=True`` gets each partition's records as a
:class:`~technic_stream.kafka.blocks.RecordChain` — a sequence of records framed in one
numba call per fetch instead of two Python objects per record (see that module) — where
the fetch allows it, and as a list of ``ConsumerRecord`` where it does not. Its
``max_records`` bounds the records per partition block (the batch's share of the
assigned partitions), and so, within a block or so per partition, the batch.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import Counter, Gauge, Histogram

from technic_stream.config import Settings
from technic_stream.errors import KafkaTransportError
from technic_stream.kafka.blocks import FetchBlocks, RecordBlock, RecordChain, install
from technic_stream.lifecycle import AsyncResource

__all__ = ["Batch", "BatchConsumer", "BatchHandler", "TopicPartition"]

log = logging.getLogger(__name__)

CONSUMED = Counter("technic_kafka_consumed", "Records consumed", ["topic"])
DUPLICATES = Counter(
    "technic_kafka_redelivered_dropped", "Fetched records before the position (dropped)", ["topic"]
)
REREAD = Counter(
    "technic_kafka_reread", "Fetches answered after a gap, read again from the position", ["topic"]
)
COMMITS = Counter("technic_kafka_commits", "Offset commits", ["group", "outcome"])
FETCH_WAIT = Gauge(
    "technic_kafka_fetch_wait_ms", "Longest wait of a fetch at the broker, now", ["group"]
)
BATCH_SECONDS = Histogram(
    "technic_kafka_batch_seconds",
    "Time to process one fetched batch, commit included",
    ["group"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

#: One fetched batch: records per partition, in offset order (a list, or a RecordChain).
Batch = dict[TopicPartition, Sequence[Any]]


class BatchHandler(Protocol):
    """What a consumer process implements.

    ``on_batch`` returns None once the batch's outputs are durable (the consumer
    commits right after), or an awaitable that completes when they are (see the
    module). ``on_revoked`` must flush and checkpoint what the process holds for those
    partitions; ``on_assigned`` restores it.
    """

    async def on_batch(self, batch: Batch) -> Awaitable[None] | None: ...
    async def on_assigned(self, partitions: set[TopicPartition]) -> None: ...
    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: BatchConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self._owner._on_assigned(set(assigned))


class BatchConsumer(AsyncResource):
    """A consumer-group member over ``topics`` that feeds batches to a handler."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        group_id: str,
        handler: BatchHandler,
        *,
        bootstrap: str | None = None,
        auto_offset_reset: str = "earliest",
        max_records: int | None = None,
        idle_fetch: bool = True,
        fetch_wait_ms: int | None = None,
        blocks: bool = False,
        in_flight: int = 1,
    ) -> None:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        self._settings = settings
        self._bootstrap = bootstrap or settings.kafka_bootstrap
        if not self._bootstrap:
            raise KafkaTransportError("connect", "no bootstrap servers configured")
        self.topics = tuple(topics)
        self.group_id = group_id
        self._handler = handler
        self._auto_offset_reset = auto_offset_reset
        self._max_records = max_records or settings.kafka_fetch_max_records
        # blocks of records per partition (None: records); sized on each assignment
        self._blocks = FetchBlocks(self._max_records) if blocks and install() else None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()  # one of: a batch in flight, or a rebalance hook
        self._stopping = asyncio.Event()
        self._state = _State.NEW
        self.committed: dict[TopicPartition, int] = {}
        # next offset to hand on per partition: a fetch may return a whole stored record
        # batch that starts before the position asked for (the local broker does), and
        # those records were handled already
        self._next: dict[TopicPartition, int] = {}
        self._reread: dict[TopicPartition, int] = {}  # position a gap made us re-read from
        # batches handed over whose outputs are still being written, oldest first:
        # (done, offsets, batch), at most ``in_flight`` of them
        self._pending: deque[tuple[asyncio.Future[None], dict[TopicPartition, int], Batch]] = (
            deque()
        )
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._in_flight = in_flight
        self.duplicates_dropped = 0
        self.records_processed = 0
        self._idle_fetch = idle_fetch
        self._fixed_wait = fetch_wait_ms
        self._idle = False
        self._last_record = time.monotonic()

    async def start(self) -> None:
        if self._state is not _State.NEW:
            raise RuntimeError(f"consumer cannot start from state {self._state.value}")
        s = self._settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=s.kafka_client_id,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self._auto_offset_reset,
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
            rebalance_timeout_ms=s.kafka_session_timeout_ms,
            max_poll_interval_ms=s.kafka_max_poll_interval_ms,
            max_partition_fetch_bytes=max(1_048_576, s.max_message_bytes + 4096),
            request_timeout_ms=s.kafka_request_timeout_ms,
            fetch_max_wait_ms=self._fixed_wait or s.kafka_fetch_max_wait_ms,
            **({} if self._blocks is None else {"value_deserializer": self._blocks}),
        )
        self._consumer.subscribe(list(self.topics), listener=_Listener(self))
        FETCH_WAIT.labels(self.group_id).set(self._fixed_wait or s.kafka_fetch_max_wait_ms)
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            raise KafkaTransportError("consumer start", str(exc)) from exc
        self._state = _State.RUNNING

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer else set()

    def stop(self) -> None:
        """Ask :meth:`run` to finish its batch, commit and return. Safe from signal handlers."""
        self._stopping.set()

    async def run(self) -> None:
        """Fetch, process and commit until :meth:`stop` is called."""
        if self._state is not _State.RUNNING or self._consumer is None:
            raise RuntimeError("consumer is not running")
        consumer = self._consumer
        s = self._settings
        while not self._stopping.is_set():
            fetch = asyncio.ensure_future(
                consumer.getmany(timeout_ms=s.kafka_fetch_timeout_ms, max_records=self._max_records)
            )
            stop_wait = asyncio.ensure_future(self._stopping.wait())
            while True:
                waits: set[asyncio.Future[Any]] = {fetch, stop_wait}
                if self._pending:
                    waits.add(self._pending[0][0])
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if fetch in done or stop_wait in done:
                    break
                async with self._lock:  # the oldest pending batch is written: commit it
                    await self._settle_written()  # now, not when the next batch comes
            stop_wait.cancel()
            if fetch not in done:
                # Stop requested while waiting for data: nothing fetched is lost
                # (uncommitted offsets are fetched again by whoever owns them next).
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
                break
            batch: Batch = fetch.result()
            self._pace(bool(batch))
            if batch:
                await self._process(batch)
        async with self._lock:
            await self._settle()

    @property
    def fetch_wait_ms(self) -> int | None:
        """The wait the client asks the broker for in its fetches now (None: not running)."""
        fetcher = getattr(self._consumer, "_fetcher", None)
        wait = getattr(fetcher, "_fetch_max_wait_ms", None)
        return None if wait is None else int(wait)

    def _pace(self, got_records: bool) -> None:
        """Poll slower after a quiet spell, fast again once records come (see the module)."""
        if not self._idle_fetch or self._fixed_wait is not None:
            return
        s = self._settings
        now = time.monotonic()
        if got_records:
            self._last_record = now
            if self._idle:
                self._idle = False
                self._set_fetch_wait(s.kafka_fetch_max_wait_ms)
        elif not self._idle and now - self._last_record >= s.kafka_idle_after_s:
            self._idle = True
            self._set_fetch_wait(s.kafka_idle_fetch_max_wait_ms)

    def _set_fetch_wait(self, ms: int) -> None:
        # aiokafka reads the wait from its fetcher each time it builds a fetch request;
        # it has no public setter (an aiokafka without the attribute keeps its wait)
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
            fetcher._fetch_max_wait_ms = ms
            FETCH_WAIT.labels(self.group_id).set(ms)

    async def _process(self, batch: Batch) -> None:
        assert self._consumer is not None
        started = time.perf_counter()
        async with self._lock:
            owned = self._consumer.assignment()
            batch = {tp: self._fresh(tp, recs) for tp, recs in batch.items() if tp in owned}
            batch = {tp: recs for tp, recs in batch.items() if recs}
            if not batch:
                return
            done = await self._handler.on_batch(batch)
            offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items()}
            self._next.update(offsets)
            if done is None:
                await self._settle()  # the batches before (their commits come first)
                await self._committed(offsets, batch)
            else:
                self._pending.append((asyncio.ensure_future(done), offsets, batch))
                await self._settle_written()
                await self._settle(keep=self._in_flight)
        BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)

    async def _settle(self, keep: int = 0) -> None:
        """Wait for the oldest pending batches' outputs and commit them, in order, until
        ``keep`` are left (under ``_lock``)."""
        while len(self._pending) > keep:
            done, offsets, batch = self._pending.popleft()
            await done
            await self._committed(offsets, batch)

    async def _settle_written(self) -> None:
        """Commit the oldest pending batches whose outputs are written already."""
        while self._pending and self._pending[0][0].done():
            await self._settle(keep=len(self._pending) - 1)

    async def _committed(self, offsets: dict[TopicPartition, int], batch: Batch) -> None:
        await self._commit(offsets)
        for tp, recs in batch.items():
            CONSUMED.labels(tp.topic).inc(len(recs))
            self.records_processed += len(recs)

    def _fresh(self, tp: TopicPartition, records: Sequence[Any]) -> Sequence[Any]:
        """The records at or after our position in ``tp``.

        Two things the fetch path can hand us: records *before* the position (the local
        broker answers a fetch with whole stored batches, which may start earlier) are
        dropped; records *after a gap* (a fetch sent before a seek, answered from the old
        position) make us seek back and read the partition again from the position — once
        per position, so a real gap in the log (compaction, transaction markers) is then
        accepted.
        """
        if records and isinstance(records[0], RecordBlock):
            records = RecordChain(records)
        start = self._next.get(tp)
        if start is None or not records:
            return records
        first = records[0].offset
        if first > start and self._reread.get(tp) != start:
            assert self._consumer is not None
            self._consumer.seek(tp, start)
            self._reread[tp] = start
            REREAD.labels(tp.topic).inc()
            log.info(
                "records after a gap; reading again from the position",
                extra={"partition": str(tp), "position": start, "first": first},
            )
            return []
        if first >= start:
            return records
        if isinstance(records, RecordChain):
            fresh: Sequence[Any] = records.since(start)
        else:
            fresh = [r for r in records if r.offset >= start]
        log.debug(
            "dropped records below the position",
            extra={"partition": str(tp), "position": start, "first": first,
                   "last": records[-1].offset, "dropped": len(records) - len(fresh)},
        )  # fmt: skip
        DUPLICATES.labels(tp.topic).inc(len(records) - len(fresh))
        self.duplicates_dropped += len(records) - len(fresh)
        return fresh

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (we lost the partitions): the new owner replays
            # from the last commit. Our outputs were idempotent, so nothing breaks.
            COMMITS.labels(self.group_id, "rejected").inc()
            log.warning("commit rejected after rebalance", extra={"error": str(exc)})
            return
        COMMITS.labels(self.group_id, "ok").inc()
        self.committed.update(offsets)

    async def _on_revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:  # waits for the batch in flight and its commit
            await self._settle()
            log.info(
                "partitions revoked",
                extra={"group": self.group_id, "partitions": _fmt(partitions)},
            )
            await self._handler.on_revoked(partitions)

    async def _on_assigned(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            self._next.clear()
            if self._blocks is not None:  # a batch's records shared by its partitions
                owned = len(self._consumer.assignment()) if self._consumer else 0
                self._blocks.block_records = max(1, self._max_records // max(1, owned))
            log.info(
                "partitions assigned",
                extra={"group": self.group_id, "partitions": _fmt(partitions)},
            )
            await self._handler.on_assigned(partitions)
            assert self._consumer is not None
            for tp in partitions - self._next.keys():  # not positioned by the handler
                try:
                    committed = await self._consumer.committed(tp)
                except KafkaError:
                    committed = None
                if committed is not None:
                    self._next[tp] = int(committed)

    def lag(self, partition: TopicPartition, next_offset: int) -> int | None:
        """Records after ``next_offset`` in the partition, by the last fetch's high watermark."""
        if self._consumer is None:
            return None
        high = self._consumer.highwater(partition)
        return None if high is None else max(0, int(high) - next_offset)

    async def seek_to_beginning(self, partition: TopicPartition) -> None:
        """Read a partition from its earliest record (a stateful consumer without state)."""
        assert self._consumer is not None
        await self._consumer.seek_to_beginning(partition)
        self._next[partition] = 0  # whatever comes first is fresh

    async def seek(self, partition: TopicPartition, offset: int) -> None:
        """Position a partition (for restoring a checkpoint in ``on_assigned``)."""
        assert self._consumer is not None
        self._consumer.seek(partition, offset)
        self._next[partition] = offset

    async def aclose(self) -> None:
        """Leave the group and close. Idempotent. Call after :meth:`run` returned."""
        if self._state is _State.CLOSED:
            return
        was_running = self._state is _State.RUNNING
        self._state = _State.CLOSED
        self._stopping.set()
        if self._consumer is not None:
            if was_running:
                async with self._lock:
                    await self._settle()
                    await self._handler.on_revoked(self.assignment())
            await self._consumer.stop()
            self._consumer = None


def _fmt(partitions: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
