"""Process plumbing shared by every service: the event loop and stop signals."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["install_stop_signals", "run", "settle_gc"]

T = TypeVar("T")


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT only set ``stop``; shutdown is the caller's orderly job."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def settle_gc() -> None:
    """Call once a service has started: everything allocated so far (modules, the app,
    clients) leaves the collector's view (``gc.freeze``), and young-generation collections
    run less often. A full collection over a busy process's objects otherwise pauses it
    for tens of milliseconds — in the gateway's benchmark it was the p99 latency
    (108 ms → 34 ms at 50k deliveries/s). Reference counting still frees almost
    everything at once; cycles are collected, just less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1_000)
