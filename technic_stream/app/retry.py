"""Riding out an outage of Redis or MongoDB: retry an idempotent write until the server is
back, and say so in readiness, logs and metrics.

A consumer that cannot write a batch's outputs must not commit it and must not die (its
partitions would only move to another process with the same problem): it waits, with
capped exponential backoff and jitter, while Kafka keeps its group membership alive in
the background. The batch behind waits for this one (at most one batch is pending), so
nothing piles up. On ``stop`` it gives up and leaves the batch uncommitted for the next
owner.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter
from pymongo.errors import ConnectionFailure
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from technic_stream.app.service import StopRequested

__all__ = ["MONGO_ERRORS", "REDIS_ERRORS", "Retrier"]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: errors that mean "the server is away", not "the request is wrong" (Redis' LOADING
#: reply while it reads its append-only file back is a ConnectionError too)
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError
)  # fmt: skip
MONGO_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailure,)

RETRIES = Counter("technic_write_retries", "Writes retried while a server was away", ["server"])


class Retrier:
    """``await retrier(write)``: ``write()`` until it succeeds (only ``errors`` retried)."""

    def __init__(
        self,
        server: str,
        errors: tuple[type[BaseException], ...],
        *,
        stop: asyncio.Event | None = None,
        max_delay_s: float = 5.0,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.server = server
        self.errors = errors
        self.stop = stop
        self.max_delay_s = max_delay_s
        self.on_error = on_error
        self.error: str | None = None  # the last error while the server is away

    async def __call__(self, write: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        while True:
            try:
                result = await write()
            except self.errors as exc:
                first = self.error is None
                self.error = f"{type(exc).__name__}: {exc}"[:300]
                if self.stop is not None and self.stop.is_set():
                    raise StopRequested(self.error) from exc
                RETRIES.labels(self.server).inc()
                if first:
                    log.warning(f"{self.server} write failed; retrying until it is back",
                                extra={"error": self.error})  # fmt: skip
                if self.on_error is not None:
                    self.on_error()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_delay_s)
                continue
            if self.error is not None:
                log.warning(f"{self.server} writes work again", extra={"was": self.error})
                self.error = None
            return result

    async def ready(self) -> None:
        """Readiness: red while writes are failing."""
        if self.error is not None:
            raise RuntimeError(f"{self.server} writes failing: {self.error}")
