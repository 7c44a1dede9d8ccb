"""A local webhook receiver that speaks the notifier's protocol as a customer's would:
checks every POST's signature and timestamp, keeps the event ids it has seen (the
receiver-side dedup the ``X-Technic-Event-Id`` header is for) and answers as scripted."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from technic_stream.notify.webhook import verify
from tests.integration.local_http import LocalHttpServer

Answer = int | tuple[int, dict[str, str]]


class WebhookReceiver(LocalHttpServer):
    def __init__(self, secret: str, answer: Callable[[int], Answer] = lambda n: 200) -> None:
        super().__init__()
        self.secret = secret
        self.answer = answer  # request number (1-based) → status, or (status, headers)
        self.requests = 0
        self.bad_signatures = 0
        self.accepted: list[tuple[str, dict[str, Any], float]] = []  # 2xx: id, body, when
        self.seen: dict[str, int] = {}  # event id → 2xx answers given for it
        self.attempts: dict[str, list[float]] = {}  # event id → every request's time

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def unique(self) -> list[str]:
        """Event ids accepted, first copies only, in arrival order."""
        out, seen = [], set()
        for eid, _, _ in self.accepted:
            if eid not in seen:
                seen.add(eid)
                out.append(eid)
        return out

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        eid = request.headers.get("X-Technic-Event-Id", "")
        ok = verify(self.secret, request.headers.get("X-Technic-Timestamp", ""), body,
                    request.headers.get("X-Technic-Signature", ""))  # fmt: skip
        if not ok:
            self.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        self.requests += 1
        self.attempts.setdefault(eid, []).append(time.monotonic())
        answer = self.answer(self.requests)
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        if 200 <= status < 300:
            self.accepted.append((eid, orjson.loads(body), time.time()))
            self.seen[eid] = self.seen.get(eid, 0) + 1
        return web.Response(status=status, headers=headers)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hook", self._hook)
