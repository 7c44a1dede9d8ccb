"""A batching, acknowledged producer over aiokafka."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from technic_stream.config import Settings
from technic_stream.errors import KafkaTransportError
from technic_stream.kafka.batches import framed_batches
from technic_stream.lifecycle import AsyncResource

__all__ = ["Headers", "Producer"]

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]

_KEY_HASHES = 65_536  # keys whose partitioner hash is remembered


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Producer(AsyncResource):
    """Sends bytes to topics with batching (``linger``) and acks from settings.

    :meth:`send` enqueues and returns a future that resolves when the broker has
    acknowledged the record; :meth:`flush` waits for every record sent so far
    and raises if any failed. Callers commit their input offsets only after
    :meth:`flush` returns (commit-after-flush).
    """

    def __init__(self, settings: Settings, *, bootstrap: str | None = None) -> None:
        self._settings = settings
        self._bootstrap = bootstrap or settings.kafka_bootstrap
        if not self._bootstrap:
            raise KafkaTransportError("connect", "no bootstrap servers configured")
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[object]] = []
        self._state = _State.NEW
        # murmur2 is a Python loop over the key's bytes; keys repeat (owners, symbols)
        self._key_hash: dict[bytes, int] = {}

    async def start(self) -> None:
        if self._state is not _State.NEW:
            raise RuntimeError(f"producer cannot start from state {self._state.value}")
        s = self._settings
        acks: int | str = "all" if s.kafka_acks == "all" else int(s.kafka_acks)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=s.kafka_client_id,
            acks=acks,
            linger_ms=s.kafka_linger_ms,
            max_batch_size=s.kafka_max_batch_bytes,
            max_request_size=max(s.max_message_bytes + 4096, s.kafka_max_batch_bytes),
            request_timeout_ms=s.kafka_request_timeout_ms,
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise KafkaTransportError("producer start", str(exc)) from exc
        self._state = _State.OPEN

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        for_flush: bool = True,
    ) -> asyncio.Future[object]:
        """Enqueue one record; waits only when the client's buffer is full. The next
        :meth:`flush` waits for its ack (and forgets it) — unless ``for_flush`` is False:
        the caller awaits the future itself, and the producer keeps nothing of it (a
        caller that never flushes, such as the gateway, kept every future it sent)."""
        if self._state is not _State.OPEN or self._producer is None:
            raise RuntimeError("producer is not open")
        try:
            fut = await self._producer.send(
                topic,
                value=value,
                key=key,
                headers=list(headers) if headers else None,
                partition=partition,
            )
        except KafkaError as exc:
            raise KafkaTransportError("send", str(exc), topic=topic) from exc
        if for_flush:
            self._pending.append(fut)
        return fut

    @property
    def unflushed(self) -> int:
        """Records (or batches) sent whose ack the next :meth:`flush` will wait for."""
        return len(self._pending)

    async def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> int:
        """Enqueue (key, value) records in one batch per partition — the partition Kafka's
        default partitioner picks for the key, as :meth:`send` would — without a future per
        record (for many small records, such as a batch's alerts). The batches are framed
        here (:func:`~technic_stream.kafka.batches.framed_batches`) and closed, so they go
        out without lingering. Returns batches sent."""
        if self._state is not _State.OPEN or self._producer is None:
            raise RuntimeError("producer is not open")
        if not records:
            return 0
        parts = sorted(await self._producer.partitions_for(topic))
        keys, values = zip(*records, strict=True)
        hashes = self._key_hash
        part_of: dict[bytes, int] = {}
        for key in set(keys):  # (keys repeat: owners, symbols)
            h = hashes.get(key)
            if h is None:
                if len(hashes) >= _KEY_HASHES:
                    hashes.clear()
                h = hashes[key] = murmur2(key) & 0x7FFFFFFF
            part_of[key] = parts[h % len(parts)]
        groups: dict[int, tuple[Sequence[bytes], Sequence[bytes]]]
        if len(set(part_of.values())) == 1:  # (the usual: one owner's alerts, say)
            groups = {next(iter(part_of.values())): (keys, values)}
        else:
            by: dict[int, tuple[list[bytes], list[bytes]]] = {}
            for key, value in records:
                g = by.setdefault(part_of[key], ([], []))
                g[0].append(key)
                g[1].append(value)
            groups = dict(by)
        sent = 0
        try:
            for p, (ks, vs) in groups.items():
                for batch in framed_batches(ks, vs, self._settings.kafka_max_batch_bytes):
                    self._pending.append(await self._producer.send_batch(batch, topic, partition=p))
                    sent += 1
        except KafkaError as exc:
            raise KafkaTransportError("send", str(exc), topic=topic) from exc
        return sent

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        fut = await self.send(topic, value, key=key, headers=headers, for_flush=False)
        try:
            await fut
        except KafkaError as exc:
            raise KafkaTransportError("send", str(exc), topic=topic) from exc

    async def flush(self) -> int:
        """Wait until every record sent so far is acknowledged; return how many."""
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        if self._producer is not None:
            await self._producer.flush()
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise KafkaTransportError(
                "flush", f"{len(failed)} of {len(pending)} records failed: {failed[0]!r}"
            )
        return len(pending)

    async def partitions_for(self, topic: str) -> set[int]:
        if self._producer is None:
            raise RuntimeError("producer is not open")
        return set(await self._producer.partitions_for(topic))

    async def aclose(self) -> None:
        """Flush what is pending (best effort) and close. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._producer is None:
            return
        try:
            await self._producer.flush()
        except KafkaError:
            log.warning("producer flush on close failed", exc_info=True)
        finally:
            await self._producer.stop()
            self._producer = None
