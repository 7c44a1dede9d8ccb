"""Process plumbing shared by every service: the event loop and stop signals."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["install_stop_signals", "run"]

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
