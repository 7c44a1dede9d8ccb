"""The local stack: start what is not configured, use what is.

``LocalStack(settings)`` starts a tansu broker, Redis and an nx-27017 server on
free loopback ports unless ``TECHNIC_KAFKA_BOOTSTRAP``, ``TECHNIC_REDIS_URL`` or
``TECHNIC_MONGO_URL`` name servers to use instead. ``stack.settings`` is the
settings with every address filled in. Everything started is stopped by
``close()`` (idempotent), on context exit, and at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from technic_stream.config import Settings
from technic_stream.errors import LocalServiceError
from technic_stream.local.process import ServerProcess, free_port
from technic_stream.local.servers import (
    kafka_answers,
    mongo_answers,
    mongo_server,
    redis_answers,
    redis_server,
    tansu_broker,
)

__all__ = ["LocalStack", "ServiceEndpoint"]

log = logging.getLogger(__name__)

_START_ATTEMPTS = 3  # a free port can be taken between choosing and binding


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    name: str
    address: str
    started_here: bool
    pid: int | None = None


class LocalStack:
    """The broker, Redis and MongoDB-protocol server the project runs against."""

    def __init__(self, settings: Settings, *, workdir: Path | None = None) -> None:
        self._base = settings
        self._own_workdir = workdir is None
        self._workdir = workdir
        self._processes: list[ServerProcess] = []
        self.endpoints: list[ServiceEndpoint] = []
        self.settings = settings
        self._closed = False

    # Lifecycle ---------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> Settings:
        """Start what is needed and wait until all three answer; return the filled settings."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="technic-local-"))
        atexit.register(self.close)
        started = time.monotonic()
        try:
            kafka = self._kafka()
            redis = self._redis()
            mongo = self._mongo()
        except BaseException:
            self.close()
            raise
        self.settings = self._base.model_copy(
            update={"kafka_bootstrap": kafka, "redis_url": redis, "mongo_url": mongo}
        )
        log.info(
            "local stack ready",
            extra={
                "seconds": round(time.monotonic() - started, 2),
                "endpoints": [f"{e.name}={e.address}" for e in self.endpoints],
            },
        )
        return self.settings

    def close(self) -> None:
        """Stop every process this stack started, newest first. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self._processes):
            proc.stop()
        self._processes.clear()
        atexit.unregister(self.close)
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    # The three services ------------------------------------------------------

    def _launch(
        self, make: Callable[[int, Path], ServerProcess], name: str
    ) -> tuple[ServerProcess, int]:
        assert self._workdir is not None
        last: LocalServiceError | None = None
        for _ in range(_START_ATTEMPTS):
            port = free_port()
            proc = make(port, self._workdir)
            try:
                proc.start()
            except LocalServiceError as exc:
                last = exc
                continue
            self._processes.append(proc)
            self.endpoints.append(ServiceEndpoint(name, f"127.0.0.1:{port}", True, proc.pid))
            return proc, port
        assert last is not None
        raise last

    def _kafka(self) -> str:
        configured = self._base.kafka_bootstrap
        if configured:
            first = configured.split(",")[0].strip()
            host, _, port_text = first.rpartition(":")
            _check("kafka", lambda: kafka_answers(host, int(port_text)), configured)
            self.endpoints.append(ServiceEndpoint("kafka", configured, False))
            return configured
        _, port = self._launch(tansu_broker, "kafka")
        return f"127.0.0.1:{port}"

    def _redis(self) -> str:
        configured = self._base.redis_url
        if configured:
            parts = urlsplit(configured)
            if parts.scheme in ("redis", "rediss") and parts.hostname and not parts.password:
                host, port = parts.hostname, parts.port or 6379
                _check("redis", lambda: redis_answers(host, port), _redact(configured))
            self.endpoints.append(ServiceEndpoint("redis", _redact(configured), False))
            return configured
        _, port = self._launch(redis_server, "redis")
        return f"redis://127.0.0.1:{port}/0"

    def _mongo(self) -> str:
        configured = self._base.mongo_url
        if configured:
            _check("mongo", lambda: mongo_answers(configured), _redact(configured))
            self.endpoints.append(ServiceEndpoint("mongo", _redact(configured), False))
            return configured
        _, port = self._launch(mongo_server, "mongo")
        return f"mongodb://127.0.0.1:{port}/"


def _check(name: str, probe: Callable[[], bool], address: str) -> None:
    try:
        ok = probe()
    except Exception as exc:
        raise LocalServiceError(
            name, f"configured server {address} does not answer: {exc}"
        ) from exc
    if not ok:
        raise LocalServiceError(name, f"configured server {address} gave an unexpected reply")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
