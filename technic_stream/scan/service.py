"""The scan worker process: ``scan.requests`` → :class:`~technic_stream.scan.job.ScanJob`,
and ``scan.tasks`` → the chunks of other workers' sharded scans.

Requests are consumed in a consumer group (``{prefix}scanner``); a batch's scans run
concurrently, at most ``scan_concurrency`` at a time — the rest wait in a
:class:`~technic_stream.scan.queue.FairQueue` (fewest running per owner first) and are told
their queue position — and the batch is committed once they have all finished (or been
checkpointed and stopped for shutdown) — so a worker that dies mid-scan leaves its request
uncommitted, and the next owner of the partition resumes it from its checkpointed chunks.
Chunk tasks are consumed in a second group (``{prefix}scanner-tasks``): each worker
computes the tasks' chunks it can claim, and commits them once checkpointed. The worker's
liveness key (``scan:worker:{id}``) keeps its claims; when it dies they lapse.
``scan.control`` is read in full by every worker (a cancel may concern any running scan);
cancels are also kept in Redis (``scan:{id}:cancel``) so a scan cancelled before a worker
picked it up never starts.
Malformed requests go to the DLQ with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Iterable
from itertools import chain
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from technic_stream.app.ops import OpsServer
from technic_stream.app.retry import MONGO_ERRORS, REDIS_ERRORS, RETRIES
from technic_stream.app.runtime import settle_gc
from technic_stream.app.service import StopRequested, consumer_ready, run_consumer
from technic_stream.config import Settings
from technic_stream.errors import MessageDecodeError
from technic_stream.indicators.series import warm_batch_twins
from technic_stream.kafka import Batch, BatchConsumer, DeadLetterQueue, Producer, TopicPartition
from technic_stream.kafka.follower import TopicFollower
from technic_stream.messages import ScanControl, ScanRequest, ScanTask, decode
from technic_stream.redis import redis_client
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.scan.job import ScanContext, ScanInterrupted, ScanJob
from technic_stream.scan.queue import FairQueue
from technic_stream.storage import mongo_client
from technic_stream.topics import group_name, topic_name

__all__ = ["ScanWorker", "scanner_service"]

log = logging.getLogger(__name__)

M = TypeVar("M", ScanControl, ScanRequest, ScanTask)

SCANS = Counter("technic_scan_scans", "Scans finished, by status", ["status"])
RUNNING = Gauge("technic_scan_running", "Scans running in this process")
QUEUED = Gauge("technic_scan_queued", "Scans waiting for a slot in this process")
SECONDS = Histogram(
    "technic_scan_seconds", "Wall time of a scan run (resumed runs count their part)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)  # fmt: skip
CANCELS = Counter("technic_scan_cancels", "Cancel commands received")
TASKS = Counter("technic_scan_tasks", "Chunk tasks received from the group")


class ScanWorker:
    def __init__(self, settings: Settings, ctx: ScanContext, dlq: DeadLetterQueue) -> None:
        self.settings = settings
        self.ctx = ctx
        self.dlq = dlq
        self.cancelled: set[str] = set()
        self.queue = FairQueue(settings.scan_concurrency)
        self.stopping = False
        self.last_jobs: dict[str, ScanJob] = {}  # the latest job per scan id (tests, metrics)
        self.consumers: tuple[BatchConsumer, ...] = ()  # requests, tasks (once created)
        self.coordinating: set[str] = set()  # scans this worker runs as coordinator

    @property
    def computed(self) -> dict[str, int]:
        """Chunks this process computed per scan, as coordinator or helper."""
        return self.ctx.computed

    # -- control ---------------------------------------------------------------------------

    async def _decoded(self, records: Iterable[Any], model: type[M]) -> list[M]:
        """The records as ``model`` messages; the malformed ones to the DLQ with the reason."""
        out = []
        for r in records:
            try:
                out.append(decode(r.value, model, max_bytes=self.settings.max_message_bytes))
            except MessageDecodeError as exc:
                await self.dlq.route(r, exc)
        return out

    async def on_control(self, records: list[Any]) -> None:
        for ctl in await self._decoded(records, ScanControl):
            CANCELS.inc()
            self.cancelled.add(ctl.scan_id)
            await self.ctx.redis.set(self.ctx.key(ctl.scan_id, "cancel"), 1, ex=86_400)
            self.queue.release(ctl.scan_id)  # a waiting scan finishes as cancelled at once

    def is_cancelled(self, scan_id: str) -> bool:
        return scan_id in self.cancelled

    async def heartbeat(self) -> None:
        """Keep this worker's liveness key (its chunk claims hold while it lives)."""
        ttl = self.settings.scan_worker_ttl_s
        key = f"{self.ctx.worker_prefix}{self.ctx.worker_id}"
        while True:
            try:
                await self.ctx.redis.set(key, 1, px=int(ttl * 1000))
            except Exception as exc:  # Redis away: claims lapse, others take over; retry
                log.warning("scan worker heartbeat failed", extra={"error": str(exc)})
            await asyncio.sleep(ttl / 3)

    # -- requests --------------------------------------------------------------------------

    async def on_batch(self, batch: Batch) -> None:
        requests = await self._decoded(chain.from_iterable(batch.values()), ScanRequest)
        results = await asyncio.gather(*(self._run(req) for req in requests),
                                       return_exceptions=True)  # fmt: skip
        await self.ctx.producer.flush()
        for req, res in zip(requests, results, strict=True):
            if isinstance(res, BaseException):
                log.error("scan crashed", extra={"scan_id": req.scan_id}, exc_info=res)
                raise res
        if self.stopping:
            raise StopRequested

    async def _run(self, req: ScanRequest) -> None:
        job = ScanJob(self.ctx, req, lambda: self.is_cancelled(req.scan_id), lambda: self.stopping)
        self.last_jobs[req.scan_id] = job
        cancel, finished = await asyncio.gather(
            self.ctx.redis.exists(self.ctx.key(req.scan_id, "cancel")), job.finished_status()
        )
        if cancel:
            self.cancelled.add(req.scan_id)
        if finished is not None:
            log.info("scan already finished; not recomputed",
                     extra={"scan_id": req.scan_id, "status": finished})  # fmt: skip
            return
        QUEUED.inc()
        queued = True
        try:
            async with self.queue.slot(req.scan_id, req.owner, job.queued):
                QUEUED.dec()
                queued = False
                if self.stopping:
                    raise ScanInterrupted(req.scan_id)
                RUNNING.inc()
                self.coordinating.add(req.scan_id)
                try:
                    with SECONDS.time():
                        status, job = await self._through_outages(job)
                finally:
                    self.coordinating.discard(req.scan_id)
                    RUNNING.dec()
        except ScanInterrupted:
            log.info("scan interrupted by shutdown; its next owner resumes it",
                     extra={"scan_id": req.scan_id})  # fmt: skip
            return
        finally:
            if queued:
                QUEUED.dec()
        SCANS.labels(status).inc()
        log.info("scan finished", extra={"scan_id": req.scan_id, "status": status,
                                         "chunks_computed": job.recomputed_chunks})  # fmt: skip

    async def _through_outages(self, job: ScanJob) -> tuple[str, ScanJob]:
        """Run ``job``; when Redis or MongoDB goes away mid-scan, wait for it (capped
        backoff) and run the scan again, which resumes from its checkpointed chunks."""
        delay = 0.2
        req = job.req
        while True:
            try:
                return await job.run(checked=True), job
            except (*REDIS_ERRORS, *MONGO_ERRORS) as exc:
                if self.stopping:
                    raise ScanInterrupted(req.scan_id) from exc
                RETRIES.labels("scan").inc()
                what = {"scan_id": req.scan_id, "error": repr(exc)[:300]}
                log.warning("scan interrupted by a server outage; resuming when it is back",
                            extra=what)  # fmt: skip
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
                job = ScanJob(self.ctx, req, lambda: self.is_cancelled(req.scan_id),
                              lambda: self.stopping)  # fmt: skip
                self.last_jobs[req.scan_id] = job

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        return None

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        return None

    # -- chunk tasks of sharded scans ------------------------------------------------------

    def _helper(self, req: ScanRequest) -> ScanJob:
        return ScanJob(self.ctx, req, lambda: self.is_cancelled(req.scan_id),
                       lambda: self.stopping, helper=True)  # fmt: skip

    async def on_tasks(self, batch: Batch) -> None:
        by_scan: dict[str, tuple[ScanRequest, dict[int, list[str]]]] = {}
        for task in await self._decoded(chain.from_iterable(batch.values()), ScanTask):
            TASKS.inc()
            by_scan.setdefault(task.scan_id, (task.request, {}))[1][task.chunk] = task.symbols
        # a scan coordinated here needs no help from here: its coordinator computes every
        # chunk nobody else claims (two loads at once only contend for the archive)
        jobs = [self._helper(req).help(chunks) for sid, (req, chunks) in by_scan.items()
                if sid not in self.coordinating]  # fmt: skip
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await self.ctx.producer.flush()
        for res in results:
            if isinstance(res, ScanInterrupted):
                raise StopRequested  # the tasks left stay uncommitted for the group
            if isinstance(res, BaseException):
                raise res
        if self.stopping:
            raise StopRequested


class _Tasks:
    """The chunk-task consumer's handler (the worker's ``on_tasks``)."""

    def __init__(self, worker: ScanWorker) -> None:
        self.worker = worker

    async def on_batch(self, batch: Batch) -> None:
        await self.worker.on_tasks(batch)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        return None

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        return None


async def scanner_service(
    settings: Settings, stop: asyncio.Event, ops: OpsServer, *, started: Any = None
) -> None:
    redis = redis_client(settings)
    mongo = mongo_client(settings)
    p = settings.topic_prefix
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # the batch kernels compiled (or loaded from numba's cache) before the first scan,
    # not during it; the worker is ready only after
    await asyncio.to_thread(warm_batch_twins)
    try:
        async with Producer(settings) as producer:
            publisher = ChannelPublisher(
                redis, settings.redis_prefix, history_size=settings.channel_history_size,
                history_ttl_s=settings.channel_history_ttl_s,
            )  # fmt: skip
            ctx = ScanContext(
                settings, redis, mongo[settings.mongo_db], producer, publisher,
                worker_id=worker_id,
                compute_slots=asyncio.Semaphore(settings.scan_compute_slots),
            )  # fmt: skip
            worker = ScanWorker(settings, ctx, DeadLetterQueue(producer, topic_name(p, "dlq")))
            heartbeat = asyncio.create_task(worker.heartbeat())
            if started is not None:
                started(worker)
            async with TopicFollower(settings, topic_name(p, "scan.control")) as control:
                await control.catch_up(worker.on_control)
                follow_stop = asyncio.Event()
                follow = asyncio.create_task(control.follow(worker.on_control, follow_stop))
                # (scan requests always poll fast: a scan is picked up within the short
                # wait however long the system was quiet)
                consumer = BatchConsumer(
                    settings, [topic_name(p, "scan.requests")], group_name(p, "scanner"),
                    worker, max_records=settings.scan_queue_max, idle_fetch=False,
                )  # fmt: skip
                tasks = BatchConsumer(
                    settings, [topic_name(p, "scan.tasks")], group_name(p, "scanner-tasks"),
                    _Tasks(worker), max_records=64,
                )  # fmt: skip
                worker.consumers = (consumer, tasks)
                ops.checks["scanner"] = consumer_ready(consumer)
                ops.checks["scanner-tasks"] = consumer_ready(tasks)
                settle_gc()

                async def stopping() -> None:
                    await stop.wait()
                    worker.stopping = True  # running scans stop after their chunk

                flag = asyncio.create_task(stopping())
                try:
                    await asyncio.gather(run_consumer(consumer, stop), run_consumer(tasks, stop))
                finally:
                    flag.cancel()
                    follow_stop.set()
                    with contextlib.suppress(asyncio.CancelledError):
                        await follow
                    heartbeat.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await heartbeat
                    # gone: the claims this worker still holds are free at once
                    with contextlib.suppress(Exception):
                        await redis.delete(f"{ctx.worker_prefix}{worker_id}")
    finally:
        await redis.aclose()
        await mongo.close()
