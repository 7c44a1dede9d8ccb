"""``/v1/ws``: the WebSocket protocol (see the README's "WebSocket protocol" section).

Client frames are single JSON objects ``{"id": .., "cmd": .., ...}``; server frames hold
one or more JSON objects separated by ``\\n``. Errors that end the connection use close
codes; errors about one command are ``{"type": "error", "id", "code", "message"}``
replies and the connection stays open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError

from technic_stream.gateway import metrics as m
from technic_stream.gateway.access import POLICIES, AccessDenied
from technic_stream.gateway.auth import AuthError, Principal
from technic_stream.gateway.session import Client, Subscription, pub_frame

if TYPE_CHECKING:
    from technic_stream.gateway.app import Gateway

__all__ = ["CLOSE_CODES", "ERROR_CODES", "websocket_handler"]

log = logging.getLogger(__name__)

#: close codes (the connection ends)
CLOSE_CODES = {
    1001: "going away: the gateway is shutting down; reconnect",
    1009: "frame larger than the limit",
    4008: "slow consumer: the client fell too far behind; reconnect and recover",
    4400: "bad frame: not a JSON object, or binary",
    4401: "unauthorized: token missing, invalid or expired",
    4408: "idle timeout: no subscriptions and no command for too long",
    4429: "too many connections for this key",
}
#: error codes of ``error`` replies (the connection stays)
ERROR_CODES = {
    4400: "bad request: a field is missing or invalid",
    4403: "forbidden: not your channel",
    4404: "unknown channel",
    4405: "unknown command",
    4409: "already subscribed",
    4413: "too many subscriptions on this connection",
    4429: "rate limited (retry_after_s says when to retry)",
    4503: "temporarily unavailable (Redis pub/sub reconnecting); retry",
}

_COMMANDS = ("connect", "subscribe", "unsubscribe", "ping", "refresh")


class _Bad(Exception):
    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token")


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    from technic_stream.gateway.app import GATEWAY

    gw = request.app[GATEWAY]
    s = gw.settings
    ws = web.WebSocketResponse(
        heartbeat=s.gateway_ping_interval_s,
        max_msg_size=s.gateway_max_frame_bytes,
        compress=False,
    )
    await ws.prepare(request)
    authed = await _authenticate(gw, ws, _token_of(request))
    if authed is None:
        m.CONNECTS.labels("unauthorized").inc()
        return ws
    who, req_id = authed
    if gw.connections_of(who.key_id) >= s.gateway_max_connections_per_key:
        m.CONNECTS.labels("too_many").inc()
        await ws.close(code=4429, message=b"too many connections for this key")
        return ws
    hello = {"type": "connected", "owner": who.owner, "expires_at": who.expires_at}
    await ws.send_frame(orjson.dumps(_with_id(hello, req_id)), WSMsgType.TEXT)
    m.CONNECTS.labels("ok").inc()
    transport = request.transport
    if transport is None:  # the peer is already gone
        return ws
    session = _Session(gw, ws, who, transport)
    gw.connection_opened(who.key_id, session)
    try:
        await session.run()
    except Exception:  # a bug must not leave the socket half-open (or write HTTP into it)
        log.exception("websocket session failed", extra={"owner": who.owner})
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
    finally:
        gw.connection_closed(who.key_id, session)
        await session.client.aclose()
    return ws


async def _authenticate(
    gw: Gateway, ws: web.WebSocketResponse, token: str | None
) -> tuple[Principal, Any] | None:
    """From the upgrade request's token, or a first ``connect`` frame in time (its id)."""
    req_id: Any = None
    if token is None:
        try:
            msg = await ws.receive(timeout=gw.settings.gateway_connect_timeout_s)
        except TimeoutError:
            await ws.close(code=4401, message=b"no connect command in time")
            return None
        if msg.type != WSMsgType.TEXT:
            await ws.close(code=4401, message=b"expected a connect command")
            return None
        try:
            frame = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            await ws.close(code=4400, message=b"bad frame: not JSON")
            return None
        if not isinstance(frame, dict) or frame.get("cmd") != "connect":
            await ws.close(code=4401, message=b"the first command must be connect")
            return None
        req_id = frame.get("id")
        token = frame.get("token")
        if not isinstance(token, str):
            await ws.close(code=4401, message=b"connect needs a token")
            return None
    try:
        who = gw.tokens.check(token)
    except AuthError as exc:
        await ws.close(code=4401, message=exc.reason.encode()[:120])
        return None
    return who, req_id


class _Session:
    def __init__(
        self,
        gw: Gateway,
        ws: web.WebSocketResponse,
        who: Principal,
        transport: asyncio.WriteTransport,
    ) -> None:
        self.gw = gw
        self.ws = ws
        self.who = who
        s = gw.settings
        self.client = Client(
            who,
            transport,
            self._close,
            queue_max=s.gateway_queue_max,
            coalesce_max=s.gateway_coalesce_max,
            on_unsubscribed=gw.unsubscribed,
        )
        self._expiry: asyncio.TimerHandle | None = None
        self._arm_expiry()

    async def _close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode()[:120])

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self.who.expires_at is not None:
            delay = max(0.0, self.who.expires_at - time.time())
            self._expiry = asyncio.get_running_loop().call_later(
                delay, self.client.kill, 4401, "token expired"
            )

    async def run(self) -> None:
        idle_s = self.gw.settings.gateway_idle_timeout_s
        last_command = time.monotonic()
        try:
            while not self.ws.closed and self.client.killed is None:
                timeout = max(0.05, last_command + idle_s - time.monotonic())
                try:
                    msg = await self.ws.receive(timeout=timeout)
                except TimeoutError:
                    if not self.client.subs and time.monotonic() - last_command >= idle_s:
                        self.client.kill(4408, "idle timeout")
                        await self.client.finished()
                        break
                    last_command = time.monotonic() if self.client.subs else last_command
                    continue
                if msg.type == WSMsgType.TEXT:
                    last_command = time.monotonic()
                    if not await self._command(msg.data):
                        break
                elif msg.type == WSMsgType.BINARY:
                    await self.ws.close(code=4400, message=b"binary frames are not accepted")
                    break
                else:  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp closed with 1009 for size)
                    break
        finally:
            if self._expiry is not None:
                self._expiry.cancel()

    async def _command(self, text: str) -> bool:
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            await self.ws.close(code=4400, message=f"bad frame: not JSON ({exc})".encode()[:120])
            return False
        if not isinstance(frame, dict):
            await self.ws.close(code=4400, message=b"bad frame: not a JSON object")
            return False
        req_id = frame.get("id")
        if req_id is not None and not (
            isinstance(req_id, int) or (isinstance(req_id, str) and len(req_id) <= 64)
        ):
            req_id = None
        cmd = frame.get("cmd")
        try:
            if cmd == "subscribe":
                await self._subscribe(frame, req_id)
            elif cmd == "unsubscribe":
                self._unsubscribe(frame, req_id)
            elif cmd == "ping":
                self.client.reply(_with_id({"type": "pong"}, req_id))
            elif cmd == "refresh":
                self._refresh(frame, req_id)
            elif cmd == "connect":
                raise _Bad(4400, "already connected")
            else:
                raise _Bad(
                    4405, f"unknown command {str(cmd)[:40]!r}; commands: {', '.join(_COMMANDS)}"
                )
        except _Bad as exc:
            err = {"type": "error", "code": exc.code, "message": exc.message, **exc.extra}
            self.client.reply(_with_id(err, req_id))
        return True

    async def _subscribe(self, frame: dict[str, Any], req_id: Any) -> None:
        gw, client = self.gw, self.client
        name = frame.get("channel")
        since = frame.get("since")
        policy = frame.get("policy")
        if since is not None and (
            not isinstance(since, dict)
            or not isinstance(since.get("offset"), int)
            or isinstance(since.get("offset"), bool)
            or since["offset"] < 0
            or not isinstance(since.get("epoch"), str)
        ):
            raise _Bad(4400, "since must be {offset: integer >= 0, epoch: string}")
        if policy is not None and policy not in POLICIES:
            raise _Bad(4400, f"policy must be one of {', '.join(POLICIES)}")
        try:
            info = await gw.access.check(self.who, name)
        except AccessDenied as exc:
            channel = name if isinstance(name, str) else None
            raise _Bad(exc.code, exc.reason, channel=channel) from None
        if info.name in client.subs:
            raise _Bad(4409, f"already subscribed to {info.name}", channel=info.name)
        if len(client.subs) >= gw.settings.gateway_max_subscriptions:
            raise _Bad(
                4413, f"at most {gw.settings.gateway_max_subscriptions} subscriptions",
                channel=info.name,
            )  # fmt: skip
        try:
            decision = await gw.subscribe_limit.take(self.who.key_id)
        except (RedisError, OSError) as exc:
            raise _Bad(4503, f"cannot check the rate limit now: {exc}") from None
        if not decision.allowed:
            raise _Bad(
                4429, "subscribe rate limit", channel=info.name,
                retry_after_s=decision.retry_after_s,
            )  # fmt: skip
        sub = Subscription(client, info, policy or info.default_policy)
        client.subs[info.name] = sub
        gw.subscribed(sub)
        try:
            await asyncio.gather(gw.hub.join(sub), gw.want(sub))
        except (ConnectionError, TimeoutError) as exc:
            client.drop(sub)
            raise _Bad(4503, f"cannot subscribe now: {exc}", channel=info.name) from None
        if sub.closed:
            return
        reply: dict[str, Any] = {"type": "subscribed", "channel": info.name, "policy": sub.policy}
        frames: list[bytes] = []
        try:
            if since is not None:
                hist = await gw.publisher.history(info.name, since["offset"], since["epoch"])
                epoch, offset = hist.epoch, hist.offset
                reply["recovered"] = hist.complete
                m.RECOVERIES.labels(str(hist.complete).lower()).inc()
                if hist.complete:
                    frames = [pub_frame(info.name, o, epoch, d) for o, d in hist.entries]
            else:
                epoch, offset = await gw.publisher.position(info.name)
        except (RedisError, OSError) as exc:
            client.drop(sub)
            raise _Bad(4503, f"cannot read the channel's position now: {exc}",
                       channel=info.name) from None  # fmt: skip
        if sub.closed:
            return
        reply.update(epoch=epoch, offset=offset)
        client.reply(_with_id(reply, req_id))
        client.reply_frames(frames)
        sub.go_live(epoch, offset)

    def _unsubscribe(self, frame: dict[str, Any], req_id: Any) -> None:
        name = frame.get("channel")
        if not isinstance(name, str):
            raise _Bad(4400, "channel must be a string")
        sub = self.client.subs.get(name)
        if sub is None:
            raise _Bad(4404, f"not subscribed to {name[:80]}", channel=name)
        self.client.drop(sub)
        self.client.reply(_with_id({"type": "unsubscribed", "channel": name}, req_id))

    def _refresh(self, frame: dict[str, Any], req_id: Any) -> None:
        token = frame.get("token")
        if not isinstance(token, str):
            raise _Bad(4400, "refresh needs a token")
        try:
            who = self.gw.tokens.check(token)
        except AuthError as exc:
            raise _Bad(4401, exc.reason) from None
        if who.owner != self.who.owner:
            raise _Bad(4403, "the new token is for another owner")
        self.who = who
        self.client.who = who
        self._arm_expiry()
        self.client.reply(_with_id({"type": "refreshed", "expires_at": who.expires_at}, req_id))

    async def going_away(self) -> None:
        self.client.kill(WSCloseCode.GOING_AWAY, "the gateway is shutting down")
        try:
            await asyncio.wait_for(self.client.finished(), 2.0)
        except TimeoutError:
            await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"shutting down")


def _with_id(doc: dict[str, Any], req_id: Any) -> dict[str, Any]:
    if req_id is not None:
        doc["id"] = req_id
    return doc
