"""One technic-stream service as a child process (tests, benchmarks, scale-out runs).

``ServiceChild(settings, "engine", log_path)`` runs ``python -m technic_stream engine``
with the given settings passed on as ``TECHNIC_*`` variables and its own ops port, so the
caller can read its ``/metrics`` and ``/readyz`` while it runs, signal it (SIGTERM to
drain, SIGKILL to crash it) and wait for its exit code.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

import aiohttp

from technic_stream.config import ENV_PREFIX, Settings
from technic_stream.local.process import die_with_parent, free_port

__all__ = ["ServiceChild"]

#: settings a child inherits from the caller's (everything that names shared resources)
PASSED_ON = (
    "kafka_bootstrap", "redis_url", "mongo_url", "topic_prefix", "redis_prefix", "mongo_db",
    "partitions", "kafka_session_timeout_ms", "kafka_heartbeat_interval_ms",
    "kafka_fetch_timeout_ms", "kafka_linger_ms", "log_level",
)  # fmt: skip


class ServiceChild:
    """``python -m technic_stream <service>`` with the caller's settings and ``extra`` env."""

    def __init__(self, settings: Settings, service: str, log_path: Path, **extra: str) -> None:
        self.service = service
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        for f in PASSED_ON:
            value = getattr(settings, f)
            if value is not None:
                env[f"{ENV_PREFIX}{f.upper()}"] = str(value)
        env.update({f"{ENV_PREFIX}OPS_HOST": "127.0.0.1", f"{ENV_PREFIX}OPS_PORT": str(self.port)})
        env.update(extra)
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "technic_stream", self.service,
            env=self.env, stdout=self._log, stderr=self._log,
            preexec_fn=die_with_parent,  # (no orphan if the caller dies)
        )  # fmt: skip

    async def _get(self, path: str) -> tuple[int, str] | None:
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"http://127.0.0.1:{self.port}{path}", timeout=aiohttp.ClientTimeout(total=2)
                ) as r,
            ):
                return r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def metric(self, name: str) -> float:
        """Sum of a metric's samples (0 while the process is not serving yet)."""
        got = await self._get("/metrics")
        if got is None:
            return 0.0
        return _sample_sum(got[1], name)

    async def metrics(self, *names: str) -> dict[str, float]:
        """The sums of several samples from one scrape of just those (0 while the process
        is not serving yet): cheap enough to poll often."""
        got = await self._get("/metrics?" + urlencode([("name[]", n) for n in names]))
        return {n: 0.0 if got is None else _sample_sum(got[1], n) for n in names}

    async def ready(self) -> bool:
        got = await self._get("/readyz")
        return got is not None and got[0] == 200

    async def consumed(self) -> int:
        return int(await self.metric("technic_kafka_consumed_total"))

    def signal(self, sig: int) -> None:
        assert self.proc is not None, "not started"
        self.proc.send_signal(sig)

    async def wait(self) -> int:
        """The exit code (bound the wait with ``asyncio.timeout`` where it matters)."""
        assert self.proc is not None, "not started"
        code = await self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    async def close(self) -> None:
        """Kill it if it still runs (a caller's cleanup when a check failed midway)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.wait()

    def log_tail(self, chars: int = 3_000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _sample_sum(text: str, name: str) -> float:
    pattern = rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$"
    return sum(float(m) for m in re.findall(pattern, text, re.M))
