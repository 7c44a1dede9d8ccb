"""The operations side port: ``/healthz``, ``/readyz`` and Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from technic_stream.lifecycle import AsyncResource

__all__ = ["OpsServer", "ReadinessCheck"]

log = logging.getLogger(__name__)

#: A named async check: returns normally when ready, raises (any error) when not.
ReadinessCheck = Callable[[], Awaitable[object]]


class OpsServer(AsyncResource):
    """Liveness, readiness and metrics for one process on a small HTTP port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        checks: dict[str, ReadinessCheck] | None = None,
        check_timeout_s: float = 2.0,
    ) -> None:
        self._host = host
        self._port = port
        self.checks: dict[str, ReadinessCheck] = dict(checks or {})
        self._timeout = check_timeout_s
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _run_check(self, name: str, check: ReadinessCheck) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(check(), self._timeout)
        except Exception as exc:
            return name, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return name, None

    async def _readyz(self, _request: web.Request) -> web.Response:
        if not self.checks:  # still starting: nothing has said what ready means yet
            body = {"status": "not ready", "checks": {"starting": "no checks registered yet"}}
            return web.json_response(body, status=503)
        results = await asyncio.gather(*(self._run_check(n, c) for n, c in self.checks.items()))
        failed = {name: err for name, err in results if err is not None}
        body = {
            "status": "ready" if not failed else "not ready",
            "checks": {name: (err or "ok") for name, err in results},
        }
        return web.json_response(body, status=200 if not failed else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        # ``?name[]=a&name[]=b``: only those samples, as prometheus_client's own handler
        # allows (a frequent poller of one counter need not render the whole registry)
        names = request.query.getall("name[]", [])
        registry = REGISTRY.restricted_registry(names) if names else REGISTRY
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
