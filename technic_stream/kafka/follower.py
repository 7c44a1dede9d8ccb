"""Reading a whole (compacted) topic in every process: catch up, then follow.

Some topics are configuration every member needs in full, not a stream to share out:
``alerts.rules`` holds every live rule, and each engine process must know all of them
whatever partitions of ``md.bars`` it owns. A :class:`TopicFollower` reads every
partition of such a topic from the beginning without a consumer group (nothing is
committed; each start reads the topic again, which compaction keeps short),
:meth:`catch_up` returns once it has read up to the end offsets it saw on start, and
:meth:`follow` hands on whatever arrives later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from technic_stream.config import Settings
from technic_stream.errors import KafkaTransportError
from technic_stream.lifecycle import AsyncResource

__all__ = ["RecordsHandler", "TopicFollower"]

log = logging.getLogger(__name__)

RecordsHandler = Callable[[list[Any]], Awaitable[None]]


class TopicFollower(AsyncResource):
    def __init__(self, settings: Settings, topic: str, *, fetch_timeout_ms: int = 200) -> None:
        if not settings.kafka_bootstrap:
            raise KafkaTransportError("connect", "no bootstrap servers configured")
        self._settings = settings
        self.topic = topic
        self._timeout_ms = fetch_timeout_ms
        self._consumer: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []
        self.records_read = 0

    async def start(self) -> None:
        s = self._settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            client_id=f"{s.kafka_client_id}-follower",
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=s.kafka_request_timeout_ms,
            max_partition_fetch_bytes=max(1_048_576, s.max_message_bytes + 4096),
        )
        try:
            await consumer.start()
            parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                await consumer.topics()  # refresh metadata
                parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                raise KafkaTransportError("follow", f"topic {self.topic!r} does not exist")
            self.partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(self.partitions)
            await consumer.seek_to_beginning(*self.partitions)
        except KafkaError as exc:
            await consumer.stop()
            raise KafkaTransportError("follow", str(exc)) from exc
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def _read(self, handle: RecordsHandler) -> int:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=self._timeout_ms, max_records=10_000)
        n = 0
        for tp in sorted(batch, key=lambda t: t.partition):
            records = batch[tp]
            if records:
                await handle(records)
                n += len(records)
        self.records_read += n
        return n

    async def catch_up(self, handle: RecordsHandler) -> int:
        """Read everything up to the end offsets as of now; return the records read."""
        assert self._consumer is not None, "start() first"
        consumer = self._consumer
        end = await consumer.end_offsets(self.partitions)
        total = 0
        while True:
            behind = [tp for tp in self.partitions if await self._position(tp) < end[tp]]
            if not behind:
                return total
            total += await self._read(handle)

    async def _position(self, tp: TopicPartition) -> int:
        assert self._consumer is not None
        return int(await self._consumer.position(tp))

    async def follow(self, handle: RecordsHandler, stop: asyncio.Event) -> None:
        """Hand on new records until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self._read(handle)
            except KafkaError as exc:  # transient: the client reconnects by itself
                log.warning("follower fetch failed", extra={"topic": self.topic, "error": str(exc)})
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
