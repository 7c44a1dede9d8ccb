"""Dead-letter routing: bad input is kept, explained, and never stops a consumer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter

from technic_stream.errors import MessageDecodeError
from technic_stream.kafka.producer import Producer

__all__ = [
    "DLQ_HEADERS",
    "DeadLetterQueue",
    "KafkaRecord",
    "dlq_headers",
]

log = logging.getLogger(__name__)

DLQ_MESSAGES = Counter(
    "technic_dlq_messages",
    "Messages routed to the dead-letter topic",
    ["source_topic", "error_class"],
)

#: Header names on every DLQ record.
DLQ_HEADERS = (
    "source-topic",
    "source-partition",
    "source-offset",
    "error-class",
    "error-reason",
    "dlq-ts",
)

_MAX_REASON = 1_000
T = TypeVar("T")


class KafkaRecord(Protocol):
    """What we read from an aiokafka ``ConsumerRecord``."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def dlq_headers(record: KafkaRecord, error: BaseException) -> list[tuple[str, bytes]]:
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    return [
        ("source-topic", record.topic.encode()),
        ("source-partition", str(record.partition).encode()),
        ("source-offset", str(record.offset).encode()),
        ("error-class", type(error).__name__.encode()),
        ("error-reason", reason[:_MAX_REASON].encode("utf-8", "replace")),
        ("dlq-ts", str(int(time.time() * 1000)).encode()),
    ]


class DeadLetterQueue:
    """Sends records that failed decoding or validation to the DLQ topic.

    Records keep their original key and bytes; the headers say where they came
    from and why they were rejected. :meth:`route` returns an ack future: the
    consumer awaits it (via :meth:`Producer.flush`) before committing.
    """

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def route(self, record: KafkaRecord, error: BaseException) -> asyncio.Future[object]:
        DLQ_MESSAGES.labels(record.topic, type(error).__name__).inc()
        log.warning(
            "message sent to DLQ",
            extra={
                "source_topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error_class": type(error).__name__,
                "reason": getattr(error, "reason", str(error)),
            },
        )
        return await self._producer.send(
            self.topic, record.value, key=record.key, headers=dlq_headers(record, error)
        )

    async def decode_batch(
        self,
        records: Iterable[KafkaRecord],
        decode: Callable[[bytes | None], T],
    ) -> list[tuple[Any, T]]:
        """Decode each record; route failures to the DLQ; return ``(record, message)`` pairs.

        ``decode`` raises :class:`MessageDecodeError` for bad input. Any other
        exception is a bug and propagates (fail fast).
        """
        good: list[tuple[Any, T]] = []
        for record in records:
            try:
                good.append((record, decode(record.value)))
            except MessageDecodeError as exc:
                exc.topic, exc.partition, exc.offset = record.topic, record.partition, record.offset
                await self.route(record, exc)
        return good
