"""The gateway process: shared state, the aiohttp application, start and orderly stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiohttp import web
from pymongo import AsyncMongoClient

from technic_stream.config import Settings
from technic_stream.gateway import metrics as m
from technic_stream.gateway.access import ChannelAccess
from technic_stream.gateway.auth import ApiKeys, Tokens
from technic_stream.gateway.hub import Hub
from technic_stream.gateway.ratelimit import RateLimiter
from technic_stream.gateway.session import Subscription, Tally
from technic_stream.kafka import Producer
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.redis.interest import ChannelInterest
from technic_stream.redis.resp import AutoPipeline
from technic_stream.storage.indexes import ensure_owner_indexes
from technic_stream.storage.rules import RuleStore

if TYPE_CHECKING:
    from technic_stream.gateway.ws import _Session

__all__ = ["GATEWAY", "Gateway"]

log = logging.getLogger(__name__)

#: market channels are kept wanted this long past each refresh while subscribed
INTEREST_S = 60.0
INTEREST_EVERY_S = 20.0


class Gateway:
    """Everything the handlers share. ``async with Gateway(...)`` opens and closes it."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        mongo: AsyncMongoClient[Any],
        producer: Producer,
    ) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.redis = redis
        self.mongo = mongo
        self.db = mongo[settings.mongo_db]
        # the collections of the frequent requests (each db[name] builds a new object)
        self.rules = self.db["alert_rules"]
        self.scans = self.db["scans"]
        # rule reads and replaces of concurrent requests go to MongoDB together
        self.rule_store = RuleStore(self.rules)
        self.producer = producer
        prefix = settings.redis_prefix
        self.publisher = ChannelPublisher(
            redis,
            prefix,
            history_size=settings.channel_history_size,
            history_ttl_s=settings.channel_history_ttl_s,
        )
        self.interest = ChannelInterest(redis, prefix)
        self.hub = Hub(
            settings.redis_url,
            redis,
            prefix,
            silence_s=settings.gateway_pubsub_silence_s,
            timeout_s=settings.redis_timeout_s,
        )
        self.tokens = Tokens(settings)
        self.keys = ApiKeys(self.db)
        self.access = ChannelAccess(self.scan_owner)
        # the Redis work of one loop turn's requests (rate-limit decisions, indicator and
        # rule-state reads) goes to Redis in one write
        self.pipe = AutoPipeline(redis)
        self.rest_limit = RateLimiter(
            redis,
            prefix,
            "rest",
            rate=settings.gateway_rest_rate,
            burst=settings.gateway_rest_burst,
            pipeline=self.pipe,
        )
        self.subscribe_limit = RateLimiter(
            redis,
            prefix,
            "subscribe",
            rate=settings.gateway_subscribe_rate,
            burst=settings.gateway_subscribe_burst,
            pipeline=self.pipe,
        )
        self._per_key: Counter[str] = Counter()
        self._sessions: set[_Session] = set()
        self._scan_owners: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.hub.start()
        self._tasks.append(asyncio.create_task(self._ensure_indexes(), name="gw-indexes"))
        self._tasks.append(asyncio.create_task(self._keep_interest(), name="gw-interest"))
        self._tasks.append(asyncio.create_task(self._publish_tallies(), name="gw-tallies"))

    async def aclose(self) -> None:
        """Close every client with GOING_AWAY (after what is queued for it), then the hub."""
        sessions = list(self._sessions)
        if sessions:
            await asyncio.gather(*(s.going_away() for s in sessions), return_exceptions=True)
        Tally.publish()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.hub.aclose()

    # -- connections and subscriptions -----------------------------------------------------

    def connections_of(self, key_id: str) -> int:
        return self._per_key[key_id]

    def connection_opened(self, key_id: str, session: _Session) -> None:
        self._per_key[key_id] += 1
        self._sessions.add(session)
        m.CONNECTIONS.set(len(self._sessions))

    def connection_closed(self, key_id: str, session: _Session) -> None:
        self._per_key[key_id] -= 1
        if self._per_key[key_id] <= 0:
            del self._per_key[key_id]
        self._sessions.discard(session)
        m.CONNECTIONS.set(len(self._sessions))

    def subscribed(self, sub: Subscription) -> None:
        m.SUBSCRIPTIONS.inc()

    async def want(self, sub: Subscription) -> None:
        """Record that a market channel is wanted (the engine publishes only those), before
        the client is told it is subscribed: so the next bar after that reaches it."""
        if not sub.info.market:
            return
        try:
            await self.interest.keep([sub.channel], INTEREST_S)
        except Exception as exc:  # Redis down: the renewal loop records it later
            log.warning("could not record channel interest",
                        extra={"channel": sub.channel, "error": repr(exc)})  # fmt: skip

    def unsubscribed(self, sub: Subscription) -> None:
        m.SUBSCRIPTIONS.dec()
        self.hub.leave(sub)
        if sub.info.market:
            # a client that comes back within the history's age still recovers gaplessly
            self._spawn(self.interest.keep([sub.channel], self.settings.channel_history_ttl_s))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background write failed", extra={"error": repr(task.exception())})

    async def _ensure_indexes(self) -> None:
        """The per-owner indexes (see :mod:`technic_stream.storage.indexes`), retried
        while MongoDB is away: requests are served meanwhile, only slower."""
        delay = 0.5
        while True:
            try:
                names = await ensure_owner_indexes(self.db)
            except Exception as exc:
                log.warning("could not create the owner indexes; retrying",
                            extra={"error": repr(exc), "retry_in_s": delay})  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            log.info("owner indexes in place", extra={"indexes": names})
            return

    async def _publish_tallies(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            Tally.publish()

    async def _keep_interest(self) -> None:
        while True:
            await asyncio.sleep(INTEREST_EVERY_S)
            market = [c for c in self.hub.active_channels() if c.startswith(("ind.", "bars."))]
            try:
                await self.interest.keep(market, INTEREST_S)
            except Exception as exc:  # Redis down: readiness shows it; try again later
                log.warning("could not renew channel interest", extra={"error": repr(exc)})

    async def scan_owner(self, scan_id: str) -> str | None:
        owner = self._scan_owners.get(scan_id)
        if owner is None:
            doc = await self.scans.find_one({"_id": scan_id}, {"owner": 1})
            if doc is None:
                return None
            owner = str(doc["owner"])
            if len(self._scan_owners) > 100_000:
                self._scan_owners.clear()
            self._scan_owners[scan_id] = owner
        return owner

    async def ready(self) -> None:
        await self.hub.check()

    def application(self) -> web.Application:
        from technic_stream.gateway.rest import add_routes, problem_middleware
        from technic_stream.gateway.ws import websocket_handler

        app = web.Application(
            client_max_size=self.settings.gateway_max_request_bytes,
            middlewares=[problem_middleware],
        )
        app[GATEWAY] = self
        app.router.add_get("/v1/ws", websocket_handler)
        add_routes(app)
        app.router.add_get("/", _dashboard)
        app.router.add_static("/static/", STATIC)
        return app


#: the dashboard's files (``vendor/``: the charting library, fetched by ``make install``)
STATIC = Path(__file__).parent / "static"


async def _dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


GATEWAY = web.AppKey("gateway", Gateway)
