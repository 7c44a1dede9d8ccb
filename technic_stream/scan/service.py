"""The scan worker process: ``scan.requests`` → :class:`~technic_stream.scan.job.ScanJob`.

Requests are consumed in a consumer group (``{prefix}scanner``); a batch's scans run
concurrently, at most ``scan_concurrency`` at a time, and the batch is committed once
they have all finished (or been checkpointed and stopped for shutdown) — so a worker that
dies mid-scan leaves its request uncommitted, and the next owner of the partition resumes
it from its checkpointed chunks. ``scan.control`` is read in full by every worker (a
cancel may concern any running scan); cancels are also kept in Redis
(``scan:{id}:cancel``) so a scan cancelled before a worker picked it up never starts.
Malformed requests go to the DLQ with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from technic_stream.app.ops import OpsServer
from technic_stream.app.service import StopRequested, consumer_ready, run_consumer
from technic_stream.config import Settings
from technic_stream.errors import MessageDecodeError
from technic_stream.kafka import Batch, BatchConsumer, DeadLetterQueue, Producer, TopicPartition
from technic_stream.kafka.follower import TopicFollower
from technic_stream.messages import ScanControl, ScanRequest, decode
from technic_stream.redis import redis_client
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.scan.job import ScanContext, ScanInterrupted, ScanJob
from technic_stream.storage import mongo_client
from technic_stream.topics import group_name, topic_name

__all__ = ["ScanWorker", "scanner_service"]

log = logging.getLogger(__name__)

SCANS = Counter("technic_scan_scans", "Scans finished, by status", ["status"])
RUNNING = Gauge("technic_scan_running", "Scans running in this process")
SECONDS = Histogram(
    "technic_scan_seconds", "Wall time of a scan run (resumed runs count their part)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)  # fmt: skip
CANCELS = Counter("technic_scan_cancels", "Cancel commands received")


class ScanWorker:
    def __init__(self, settings: Settings, ctx: ScanContext, dlq: DeadLetterQueue) -> None:
        self.settings = settings
        self.ctx = ctx
        self.dlq = dlq
        self.cancelled: set[str] = set()
        self._sem = asyncio.Semaphore(settings.scan_concurrency)
        self.stopping = False
        self.last_jobs: dict[str, ScanJob] = {}  # the latest job per scan id (tests, metrics)

    # -- control ---------------------------------------------------------------------------

    async def on_control(self, records: list[Any]) -> None:
        for r in records:
            try:
                ctl = decode(r.value, ScanControl, max_bytes=self.settings.max_message_bytes)
            except MessageDecodeError as exc:
                await self.dlq.route(r, exc)
                continue
            CANCELS.inc()
            self.cancelled.add(ctl.scan_id)
            await self.ctx.redis.set(
                f"{self.settings.redis_prefix}scan:{ctl.scan_id}:cancel", 1, ex=86_400
            )

    def is_cancelled(self, scan_id: str) -> bool:
        return scan_id in self.cancelled

    # -- requests --------------------------------------------------------------------------

    async def on_batch(self, batch: Batch) -> None:
        requests: list[ScanRequest] = []
        for records in batch.values():
            for r in records:
                try:
                    requests.append(
                        decode(r.value, ScanRequest, max_bytes=self.settings.max_message_bytes)
                    )
                except MessageDecodeError as exc:
                    await self.dlq.route(r, exc)
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
        key = f"{self.settings.redis_prefix}scan:{req.scan_id}:cancel"
        if await self.ctx.redis.exists(key):
            self.cancelled.add(req.scan_id)
        async with self._sem:
            job = ScanJob(
                self.ctx, req, lambda: self.is_cancelled(req.scan_id), lambda: self.stopping
            )
            self.last_jobs[req.scan_id] = job
            RUNNING.inc()
            try:
                with SECONDS.time():
                    status = await job.run()
            except ScanInterrupted:
                log.info("scan interrupted by shutdown; its next owner resumes it",
                         extra={"scan_id": req.scan_id})  # fmt: skip
                return
            finally:
                RUNNING.dec()
            SCANS.labels(status).inc()
            log.info("scan finished", extra={"scan_id": req.scan_id, "status": status,
                                             "chunks_computed": job.recomputed_chunks})  # fmt: skip

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
    try:
        async with Producer(settings) as producer:
            publisher = ChannelPublisher(
                redis, settings.redis_prefix, history_size=settings.channel_history_size,
                history_ttl_s=settings.channel_history_ttl_s,
            )  # fmt: skip
            ctx = ScanContext(settings, redis, mongo[settings.mongo_db], producer, publisher)
            worker = ScanWorker(settings, ctx, DeadLetterQueue(producer, topic_name(p, "dlq")))
            if started is not None:
                started(worker)
            async with TopicFollower(settings, topic_name(p, "scan.control")) as control:
                await control.catch_up(worker.on_control)
                follow_stop = asyncio.Event()
                follow = asyncio.create_task(control.follow(worker.on_control, follow_stop))
                consumer = BatchConsumer(
                    settings, [topic_name(p, "scan.requests")], group_name(p, "scanner"),
                    worker, max_records=settings.scan_concurrency * 4,
                )  # fmt: skip
                ops.checks["scanner"] = consumer_ready(consumer)

                async def stopping() -> None:
                    await stop.wait()
                    worker.stopping = True  # running scans stop after their chunk

                flag = asyncio.create_task(stopping())
                try:
                    await run_consumer(consumer, stop)
                finally:
                    flag.cancel()
                    follow_stop.set()
                    with contextlib.suppress(asyncio.CancelledError):
                        await follow
    finally:
        await redis.aclose()
        await mongo.close()
