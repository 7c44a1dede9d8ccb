"""Helpers for integration tests: reading a whole topic, collecting handlers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from technic_stream.app.ops import OpsServer
from technic_stream.config import Settings
from technic_stream.kafka import Batch, BatchConsumer, DeadLetterQueue, Producer
from technic_stream.local.service import ServiceChild
from technic_stream.messages import Bar, decode

T = TypeVar("T")


async def read_topic(settings: Settings, topic: str, *, expect: int, wait_s: float = 15.0):
    """Every record of ``topic`` from the beginning, waiting until ``expect`` have arrived."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while len(records) < expect and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


class BarCollector:
    """A BatchHandler that decodes bars, routes bad ones to the DLQ and records the rest.

    ``crash_on_batch=n`` raises inside the n-th batch (1-based) before it is done,
    the way a process dies mid-batch. ``stop_after=n`` stops the consumer once n
    records (good or bad) have been handled.
    """

    def __init__(
        self,
        settings: Settings,
        producer: Producer,
        *,
        crash_on_batch: int | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.dlq = DeadLetterQueue(producer, f"{settings.topic_prefix}dlq")
        self.crash_on_batch = crash_on_batch
        self.stop_after = stop_after
        self.consumer: BatchConsumer | None = None
        self.batches = 0
        self.handled: list[tuple[int, int]] = []  # (partition, offset), good or bad
        self.bars: list[Bar] = []
        self.assigned: list[set[TopicPartition]] = []
        self.revoked: list[set[TopicPartition]] = []

    def _decode(self, value: bytes | None) -> Bar:
        return decode(value, Bar, max_bytes=self.settings.max_message_bytes)  # type: ignore[arg-type]

    async def on_batch(self, batch: Batch) -> None:
        self.batches += 1
        if self.crash_on_batch == self.batches:
            raise RuntimeError("simulated crash mid-batch")
        for tp, records in batch.items():
            good = await self.dlq.decode_batch(records, self._decode)
            self.bars.extend(bar for _, bar in good)
            self.handled.extend((tp.partition, r.offset) for r in records)
        await self.producer.flush()
        if self.stop_after is not None and len(self.handled) >= self.stop_after:
            assert self.consumer is not None
            self.consumer.stop()

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.assigned.append(partitions)

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        await self.producer.flush()
        self.revoked.append(partitions)


@contextlib.asynccontextmanager
async def running_service(main: Any, settings: Settings) -> AsyncIterator[Any]:
    """``main(settings, stop, ops, started=...)`` in this process, yielding the handler it
    reports through ``started``; stopped (and awaited) on exit."""
    stop = asyncio.Event()
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(main(settings, stop, OpsServer(), started=got.set_result))
    done, _ = await asyncio.wait({got, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if got not in done:
        if task in done:
            task.result()  # the service failed before it started: say why
        raise TimeoutError(f"{getattr(main, '__name__', main)} did not start within 30 s")
    try:
        yield got.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def run_cli(*args: str, env: dict[str, str], within: float = 90) -> tuple[int, str, str]:
    """``technic-stream ARGS`` as a subprocess with only ``env``'s TECHNIC_ settings (none
    inherited); its exit code, stdout and stderr."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TECHNIC_")}
    full.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "technic_stream", *args, env=full,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), within)
    return proc.returncode or 0, out.decode(), err.decode()


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str, within: float = 30
) -> T:
    """``probe()`` until ``ok`` holds of its answer (which is returned)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not ok(got := await probe()):
        assert loop.time() < deadline, f"timed out waiting for {what}; last: {got!r}"[:2_000]
        await asyncio.sleep(0.1)
    return got


async def until_ready(child: ServiceChild, within: float = 60) -> None:
    """Until the service child's /readyz answers 200 (failing at once if it exits)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await child.ready():
        assert child.proc is not None and child.proc.returncode is None, child.log_tail()
        assert loop.time() < deadline, f"{child.service} not ready:\n{child.log_tail()}"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def service_children(settings: Settings, tmp: Path, *names: str, **env: str
                           ) -> AsyncIterator[dict[str, ServiceChild]]:  # fmt: skip
    """``technic-stream NAME`` for each name, as processes, ready; stopped on exit."""
    children = {n: ServiceChild(settings, n, tmp / f"{n}.log", **env) for n in names}
    for child in children.values():
        await child.start()
    try:
        for child in children.values():
            await until_ready(child, 90)
        yield children
    finally:
        for child in children.values():
            if child.proc is not None and child.proc.returncode is None:
                child.signal(signal.SIGTERM)
        for child in children.values():
            if child.proc is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):
                        await child.wait()
