"""A gateway running in the test's event loop on a free port, and a WebSocket client."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from technic_stream.app.ops import OpsServer
from technic_stream.config import Settings
from technic_stream.gateway.app import Gateway
from technic_stream.gateway.auth import ApiKeys, Principal
from technic_stream.gateway.service import gateway_service
from technic_stream.redis import redis_client
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.storage import mongo_client

SECRET = SecretStr("test-secret-of-the-gateway-tests-0123456789")


@dataclass
class RunningGateway:
    gw: Gateway
    port: int
    ops: OpsServer

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def token(self, owner: str, *, admin: bool = False, ttl_s: int | None = None) -> str:
        scopes = frozenset({"admin"}) if admin else frozenset()
        return self.gw.tokens.issue(Principal(owner, scopes, f"k-{owner}", None), ttl_s=ttl_s)[0]


def gateway_settings(settings: Settings, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"gateway_port": 0, "gateway_jwt_secret": SECRET}
    base.update(overrides)
    return settings.model_copy(update=base)


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings, **overrides: Any) -> AsyncIterator[RunningGateway]:
    s = gateway_settings(settings, **overrides)
    stop = asyncio.Event()
    ops = OpsServer()
    got: asyncio.Future[tuple[Gateway, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        gateway_service(s, stop, ops, started=lambda gw, port: got.set_result((gw, port)))
    )
    done, _ = await asyncio.wait({task, got}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if got not in done:
        stop.set()
        if task in done:
            task.result()
        raise TimeoutError("gateway did not start")
    gw, port = got.result()
    try:
        yield RunningGateway(gw, port, ops)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@contextlib.asynccontextmanager
async def channel_publisher(settings: Settings, **kw: Any) -> AsyncIterator[ChannelPublisher]:
    redis = redis_client(settings)
    try:
        yield ChannelPublisher(
            redis,
            settings.redis_prefix,
            history_size=kw.get("history_size", settings.channel_history_size),
            history_ttl_s=kw.get("history_ttl_s", settings.channel_history_ttl_s),
        )
    finally:
        await redis.aclose()


async def new_key(settings: Settings, owner: str, **kw: Any) -> str:
    mongo = mongo_client(settings)
    try:
        return (await ApiKeys(mongo[settings.mongo_db]).create(owner, **kw)).key
    finally:
        await mongo.close()


class WsClient:
    """Reads server frames (one or more JSON messages split by newlines) one message at a time."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inbox: deque[dict[str, Any]] = deque()
        self.frames = 0
        self._id = 0

    async def send(self, doc: dict[str, Any]) -> int:
        self._id += 1
        doc.setdefault("id", self._id)
        await self.ws.send_str(orjson.dumps(doc).decode())
        return int(doc["id"])

    async def recv(self, within: float = 10.0) -> dict[str, Any]:
        while not self.inbox:
            msg = await self.ws.receive(timeout=within)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"closed: {msg.type.name} {self.ws.close_code} {msg.extra}")
            self.frames += 1
            for line in msg.data.split("\n"):
                self.inbox.append(orjson.loads(line))
        return self.inbox.popleft()

    async def until(
        self, pred: Callable[[dict[str, Any]], bool], within: float = 10.0
    ) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                msg = await self.recv(within)
                if pred(msg):
                    return msg

    async def subscribe(self, channel: str, **kw: Any) -> dict[str, Any]:
        rid = await self.send({"cmd": "subscribe", "channel": channel, **kw})
        return await self.until(lambda m: m.get("id") == rid)

    async def closed(self, within: float = 10.0) -> int | None:
        """Read until the server closes; the close code."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    return int(msg.data)  # the server's code (close_code may be 1006 if
                    # the server was gone before our close reply)
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return self.ws.close_code


@contextlib.asynccontextmanager
async def ws_client(
    session: aiohttp.ClientSession, url: str, token: str | None = None, **kw: Any
) -> AsyncIterator[WsClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.ws_connect(url, headers=headers, max_msg_size=0, **kw) as ws:
        client = WsClient(ws)
        if token:
            hello = await client.recv()
            assert hello["type"] == "connected", hello
        yield client
