"""The archiver: ``md.bars`` into MongoDB bar buckets, scan results and alerts into theirs.

Each fetched batch is decoded (bad records to the DLQ with the reason), written with
bulk writes — bars merged into their buckets (:class:`BarArchive`), scan results and
alerts upserted by their deterministic ids — and only then are the offsets committed.
A redelivered batch rewrites the same documents to the same values, so replays and
restarts leave no duplicates. When MongoDB is unreachable the batch is retried with
backoff (readiness reports it) until it succeeds or the process is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
from prometheus_client import Counter, Histogram
from pymongo import ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from technic_stream.app.ops import OpsServer
from technic_stream.app.retry import MONGO_ERRORS, Retrier
from technic_stream.app.service import consumer_ready, run_consumer
from technic_stream.config import Settings
from technic_stream.errors import MessageDecodeError
from technic_stream.kafka import Batch, BatchConsumer, DeadLetterQueue, Producer, TopicPartition
from technic_stream.marketdata.decode import BarRows, decode_bar_records
from technic_stream.marketdata.publish import Progress
from technic_stream.marketdata.replay import ReplayConfig, load_replay, report_problems
from technic_stream.messages import Alert, ScanResult, decode
from technic_stream.storage import mongo_client
from technic_stream.storage.bars import BarArchive
from technic_stream.topics import group_name, topic_name

__all__ = [
    "ARCHIVER_GROUP",
    "Archiver",
    "BackfillReport",
    "archiver_service",
    "run_backfill",
    "scan_result_id",
    "write_bar_rows",
]

log = logging.getLogger(__name__)

ARCHIVER_GROUP = "archiver"  # under the topic prefix: technic.archiver
ARCHIVED = Counter("technic_archiver_records", "Records archived", ["kind"])
BUCKET_WRITES = Counter("technic_archiver_bucket_writes", "Bar buckets inserted or replaced")
WRITE_SECONDS = Histogram(
    "technic_archiver_write_seconds",
    "Time to write one batch to MongoDB",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def scan_result_id(result: ScanResult) -> str:
    """Deterministic id: one document per chunk of a scan, and one for its final result."""
    part = f"chunk{result.chunk}" if result.status == "partial" else "final"
    return f"{result.scan_id}:{part}"


async def write_bar_rows(archive: BarArchive, rows: BarRows) -> int:
    """Write decoded bars to their buckets, one call per timeframe; return buckets written."""
    written = 0
    for tf in np.unique(rows.tf).tolist():
        idx = np.flatnonzero(rows.tf == tf) if len(rows) else np.empty(0, np.int64)
        stats = await archive.write(
            tf, rows.symbol[idx], rows.ts[idx], rows.open[idx], rows.high[idx],
            rows.low[idx], rows.close[idx], rows.volume[idx],
        )  # fmt: skip
        written += stats.written
    return written


@dataclass
class Archiver:
    """The batch handler of the archiver's consumer group."""

    settings: Settings
    db: AsyncDatabase[Any]
    producer: Producer
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    retry_max_s: float = 5.0

    def __post_init__(self) -> None:
        p = self.settings.topic_prefix
        self.bars_topic = topic_name(p, "md.bars")
        self.results_topic = topic_name(p, "scan.results")
        self.alerts_topic = topic_name(p, "alerts.fired")
        self.archive = BarArchive(self.db)
        self.dlq = DeadLetterQueue(self.producer, topic_name(p, "dlq"))
        self._retrying = Retrier(
            "MongoDB", MONGO_ERRORS, stop=self.stop, max_delay_s=self.retry_max_s,
            on_error=self.archive.forget,  # what it cached may be stale after a restart
        )  # fmt: skip
        self.bars = self.results = self.alerts = 0

    @property
    def topics(self) -> list[str]:
        return [self.bars_topic, self.results_topic, self.alerts_topic]

    async def ready(self) -> None:
        await self._retrying.ready()

    async def on_batch(self, batch: Batch) -> None:
        bars: list[Any] = []
        results: list[Any] = []
        alerts: list[Any] = []
        for tp, records in batch.items():
            if tp.topic == self.bars_topic:
                bars.extend(records)
            elif tp.topic == self.results_topic:
                results.extend(records)
            else:
                alerts.extend(records)
        started = time.perf_counter()
        if bars:
            rows, bad = decode_bar_records(bars, max_bytes=self.settings.max_message_bytes)
            for record, reason in bad:
                await self.dlq.route(record, MessageDecodeError(reason))
            written = await self._retrying(lambda: write_bar_rows(self.archive, rows))
            BUCKET_WRITES.inc(written)
            ARCHIVED.labels("bar").inc(len(rows))
            self.bars += len(rows)
        if results:
            good = await self.dlq.decode_batch(results, self._decoder(ScanResult))
            ops = [ReplaceOne({"_id": scan_result_id(r)}, _doc(r, scan_result_id(r)), upsert=True)
                   for _, r in good]  # fmt: skip
            await self._bulk("scan_results", ops)
            ARCHIVED.labels("scan_result").inc(len(ops))
            self.results += len(ops)
        if alerts:
            found = await self.dlq.decode_batch(alerts, self._decoder(Alert))
            ops = [ReplaceOne({"_id": a.alert_id}, _doc(a, a.alert_id), upsert=True)
                   for _, a in found]  # fmt: skip
            await self._bulk("alerts", ops)
            ARCHIVED.labels("alert").inc(len(ops))
            self.alerts += len(ops)
        WRITE_SECONDS.observe(time.perf_counter() - started)
        await self.producer.flush()  # DLQ records acknowledged before the commit

    def _decoder(self, model: type[Any]) -> Callable[[bytes | None], Any]:
        limit = self.settings.max_message_bytes
        return lambda value: decode(value, model, max_bytes=limit)  # type: ignore[arg-type]

    async def _bulk(self, collection: str, ops: list[Any]) -> None:
        if ops:
            await self._retrying(lambda: self.db[collection].bulk_write(ops, ordered=False))

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        return None

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self.archive.forget()  # another archiver may write these symbols now
        await self.producer.flush()


def _doc(message: Any, doc_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = message.model_dump(mode="json")
    doc["_id"] = doc_id
    return doc


async def archiver_service(settings: Settings, stop: asyncio.Event, ops: OpsServer) -> None:
    """The archiver process: runs until ``stop``."""
    mongo = mongo_client(settings)
    try:
        async with Producer(settings) as producer:
            db = mongo[settings.mongo_db]
            handler = Archiver(settings, db, producer, stop)
            try:
                await handler.archive.ensure_indexes()
            except PyMongoError as exc:  # not fatal: writes retry until MongoDB is back
                log.warning("could not create bar indexes yet", extra={"error": str(exc)})
            group = group_name(settings.topic_prefix, ARCHIVER_GROUP)
            # (history: tens of ms more before a record is archived cost nothing)
            consumer = BatchConsumer(
                settings, handler.topics, group, handler,
                fetch_wait_ms=settings.kafka_idle_fetch_max_wait_ms,
            )  # fmt: skip
            ops.checks["archiver"] = consumer_ready(consumer)
            ops.checks["archiver-mongo"] = handler.ready
            await run_consumer(consumer, stop)
    finally:
        await mongo.close()


@dataclass(frozen=True, slots=True)
class BackfillReport:
    rows_read: int
    bars: int
    skipped: int
    buckets_written: int
    seconds: float
    tf: str
    symbols: int


async def run_backfill(
    settings: Settings,
    config: ReplayConfig,
    *,
    chunk_rows: int = 50_000,
    progress: TextIO | None = sys.stderr,
) -> BackfillReport:
    """Load a bar file (or the sample) straight into the archive, as replay would send it."""
    data = load_replay(config)
    bars = data.bars
    if progress is not None:
        report_problems(data.problems, bars.path, progress)
    started = time.monotonic()
    mongo = mongo_client(settings)
    written = 0
    try:
        archive = BarArchive(mongo[settings.mongo_db])
        await archive.ensure_indexes()
        bar = Progress(len(bars), "bars", out=progress) if progress is not None else None
        for lo in range(0, len(bars), chunk_rows):
            hi = min(lo + chunk_rows, len(bars))
            stats = await archive.write(
                data.tf, bars.symbol[lo:hi], bars.ts[lo:hi], bars.open[lo:hi],
                bars.high[lo:hi], bars.low[lo:hi], bars.close[lo:hi], bars.volume[lo:hi],
            )  # fmt: skip
            written += stats.written
            if bar is not None:
                bar.update(hi - lo)
        if bar is not None:
            bar.close()
    finally:
        await mongo.close()
    return BackfillReport(
        rows_read=bars.rows_read,
        bars=len(bars),
        skipped=len(data.problems),
        buckets_written=written,
        seconds=time.monotonic() - started,
        tf=data.tf,
        symbols=len(set(bars.symbol.tolist())),
    )
