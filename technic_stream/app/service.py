"""Running a consumer process: clients, consumer group, readiness, orderly stop.

A service is a coroutine ``main(settings, stop, ops)``: it opens what it needs, adds
its readiness checks to ``ops`` and runs until ``stop`` is set, then stops fetching,
finishes the batch in flight, commits and closes. ``technic-stream up`` runs several in
one process on one ops port; :func:`run_standalone` runs one as its own process (the
``consumers/`` entry points and CLI commands), with its own ops port and signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from technic_stream.app.ops import OpsServer
from technic_stream.app.runtime import install_stop_signals
from technic_stream.config import Settings
from technic_stream.kafka import BatchConsumer

__all__ = ["ServiceMain", "StopRequested", "consumer_ready", "run_consumer", "run_standalone"]

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """Raised by a handler that gives up a batch because the process is stopping.

    The batch stays uncommitted, so whoever owns the partition next processes it.
    """


ServiceMain = Callable[[Settings, asyncio.Event, OpsServer], Coroutine[Any, Any, None]]


def consumer_ready(consumer: BatchConsumer) -> Callable[[], Coroutine[Any, Any, None]]:
    """A readiness check: the consumer has joined its group and holds partitions."""

    async def check() -> None:
        if not consumer.assignment():
            raise RuntimeError(f"{consumer.group_id}: no partitions assigned (yet)")

    return check


async def run_consumer(consumer: BatchConsumer, stop: asyncio.Event) -> None:
    """Run ``consumer`` until ``stop``; then let it finish its batch, commit and leave."""
    await consumer.start()
    runner = asyncio.create_task(consumer.run(), name=f"consume-{consumer.group_id}")
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        consumer.stop()
        try:
            await runner  # re-raises a crash of the handler
        except StopRequested:
            log.warning(
                "stopped with a batch unfinished; it stays uncommitted",
                extra={"group": consumer.group_id},
            )
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
        if not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await consumer.aclose()


async def run_standalone(settings: Settings, name: str, main: ServiceMain) -> int:
    """One service as a process: ops port (``/healthz /readyz /metrics``) and signals."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    async with OpsServer(settings.ops_host, settings.ops_port) as ops:
        print(f"{name}: ops on {ops.url} (/healthz /readyz /metrics)", flush=True)
        await main(settings, stop, ops)
    return 0
