"""The REST API under ``/v1`` (JSON; errors as ``application/problem+json``, RFC 9457).

Every route but ``/v1/openapi.json`` and ``/v1/auth/token`` needs a bearer token (or an
``X-API-Key`` header) and counts against the caller's token bucket. The OpenAPI 3.1
document is built from the same pydantic models that validate the bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, cast

import numpy as np
import orjson
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    create_model,
)
from pymongo.errors import DuplicateKeyError

from technic_stream.app.retry import MONGO_ERRORS, REDIS_ERRORS
from technic_stream.errors import KafkaTransportError
from technic_stream.gateway import metrics as m
from technic_stream.gateway.auth import AuthError, Principal
from technic_stream.messages import (
    TIMEFRAME_MS,
    AlertRule,
    Ident,
    ScanControl,
    ScanRequest,
    Timeframe,
    encode,
)
from technic_stream.redis.resp import KeyedCommand
from technic_stream.rules import RuleError, parse_rule
from technic_stream.storage.scans import request_doc, store_symbols
from technic_stream.topics import topic_name

if TYPE_CHECKING:
    from technic_stream.gateway.app import Gateway

__all__ = ["add_routes", "openapi", "problem_middleware"]

_T = TypeVar("_T")

PROBLEM = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- bodies ------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenBody(_Body):
    api_key: Annotated[str, StringConstraints(min_length=1, max_length=200)]


def _body_of(
    message: type[BaseModel], name: str, server_side: tuple[str, ...], **extra: Any
) -> type[_Body]:
    """A request body with ``message``'s fields except those the gateway fills in: taken
    from the message model itself, so the two can never drift apart."""
    fields: dict[str, Any] = {
        n: (f.annotation, f)
        for n, f in message.model_fields.items()
        if n not in ("type", "v", *server_side)
    }
    return create_model(name, __base__=_Body, __doc__=f"A {message.__name__} as a client "
                        "writes it.", **fields, **extra)  # fmt: skip


RuleBody: type[_Body] = _body_of(AlertRule, "RuleBody", ("rule_id", "owner", "ts"))
NewRuleBody = cast(  # (mypy 2 types a create_model with a variable base as its own class)
    "type[_Body]", create_model("NewRuleBody", __base__=RuleBody, rule_id=(Ident | None, None))
)


ScanBody: type[_Body] = _body_of(
    ScanRequest, "ScanBody", ("scan_id", "owner", "ts"), scan_id=(Ident | None, None)
)


class DeviceBody(_Body):
    platform: Literal["apns", "fcm"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=4_096)]
    app: Annotated[str, StringConstraints(max_length=200)] | None = None


class WebhookBody(_Body):
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]{1,2040}$")]
    secret: Annotated[str, StringConstraints(min_length=16, max_length=200)] | None = None


# -- problems ----------------------------------------------------------------------------


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {"type": "about:blank", "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return web.Response(
            body=orjson.dumps(body), status=self.status, content_type=PROBLEM, headers=self.headers
        )


def _validation_problem(exc: ValidationError) -> Problem:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "reason": e["msg"]}
        for e in exc.errors(include_url=False)[:20]
    ]
    return Problem(422, "Invalid body", errors[0]["field"] + ": " + errors[0]["reason"],
                   errors=errors)  # fmt: skip


#: the request-time histogram of each (route, status) seen (routes are the app's own)
_TIMERS: dict[tuple[str, int], Any] = {}

#: a server behind the gateway is away: 503, retry shortly
_AWAY: tuple[type[BaseException], ...] = (*REDIS_ERRORS, *MONGO_ERRORS, KafkaTransportError)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except Problem as p:
        status = p.status
        return p.response()
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        text = exc.text or ""
        problem = Problem(exc.status, exc.reason, "" if text.startswith(f"{exc.status}:") else text)
        if exc.status == 405:
            problem.headers["Allow"] = exc.headers.get("Allow", "")
        return problem.response()
    except _AWAY as exc:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            raise
        status = 503
        what = f"a backing server is away ({type(exc).__name__}); retry shortly"
        away = Problem(503, "Service Unavailable", what)
        away.headers["Retry-After"] = "1"
        return away.response()
    except Exception:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            raise  # the socket speaks WebSocket now: no HTTP response may follow
        request.app.logger.exception("request failed", extra={"route": name})
        return Problem(500, "Internal Server Error").response()
    finally:
        if name != "/v1/ws":
            timer = _TIMERS.get((name, status))
            if timer is None:  # (labels() validates and locks on every call)
                timer = _TIMERS[(name, status)] = m.REQUESTS.labels(name, str(status))
            timer.observe(time.perf_counter() - started)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _body(request: web.Request, model: type[_Body]) -> Any:
    if request.content_type != "application/json":
        raise Problem(415, "Unsupported Media Type", "send application/json")
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Bad Request", f"body is not JSON: {exc}") from None
    try:
        return model.model_validate(data, strict=False)
    except ValidationError as exc:
        raise _validation_problem(exc) from None


def _gw(request: web.Request) -> Gateway:
    return request.app[_gateway_key()]


@functools.cache
def _gateway_key() -> web.AppKey[Gateway]:
    from technic_stream.gateway.app import GATEWAY  # (app imports this module)

    return GATEWAY


async def _principal(request: web.Request) -> Principal:
    """The caller (bearer token or X-API-Key), charged one token of its rate limit."""
    who = await _identify(request)
    await _rate_limited(_gw(request), who.key_id)
    return who


async def _identify(request: web.Request) -> Principal:
    """The caller (bearer token or X-API-Key), not yet charged: 401 if none."""
    gw = _gw(request)
    auth = request.headers.get("Authorization", "")
    key = request.headers.get("X-API-Key")
    try:
        if auth.lower().startswith("bearer "):
            return gw.tokens.check(auth[7:].strip())
        if key:
            return await gw.keys.check(key)
        raise AuthError("send Authorization: Bearer <token> or X-API-Key")
    except AuthError as exc:
        p = Problem(401, "Unauthorized", exc.reason)
        p.headers["WWW-Authenticate"] = 'Bearer realm="technic-stream"'
        raise p from None


async def _charged(gw: Gateway, who: Principal, read: Awaitable[_T]) -> _T:
    """``read`` (it changes nothing) made while the caller's rate-limit decision is
    taken, so neither waits for the other: a Redis read goes in the decision's write, a
    MongoDB read's round trip overlaps it. A refused caller gets its 429 and the read
    is dropped."""
    pending = asyncio.ensure_future(read)
    try:
        await _rate_limited(gw, who.key_id)
    except BaseException:
        pending.cancel()
        # (a read that failed first is not awaited: its error is taken, not logged)
        pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise
    return await pending


async def _rate_limited(gw: Gateway, key_id: str) -> None:
    """Take one request from the key's REST budget, or answer 429 with Retry-After."""
    decision = await gw.rest_limit.take(key_id)
    if not decision.allowed:
        p = Problem(429, "Too Many Requests", "rate limit of this key",
                    retry_after_s=decision.retry_after_s)  # fmt: skip
        p.headers["Retry-After"] = str(max(1, round(decision.retry_after_s + 0.5)))
        raise p


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_rule(expr: str, field: str) -> None:
    try:
        parse_rule(expr)
    except RuleError as exc:
        raise Problem(
            422, "Invalid rule", f"{field}: column {exc.col}: {exc.reason}",
            errors=[{"field": field, "column": exc.col, "reason": exc.reason}],
        ) from None  # fmt: skip


def _clean(doc: dict[str, Any], id_name: str) -> dict[str, Any]:
    out = {id_name: doc["_id"]}
    for k, v in doc.items():
        if k != "_id":
            out[k] = int(v.timestamp() * 1000) if isinstance(v, datetime) else v
    return out


# -- auth --------------------------------------------------------------------------------


async def token(request: web.Request) -> web.Response:
    gw = _gw(request)
    header = request.headers.get("X-API-Key")
    api_key = header or (await _body(request, TokenBody)).api_key
    try:
        who = await gw.keys.check(api_key)
    except AuthError as exc:
        raise Problem(401, "Unauthorized", exc.reason) from None
    await _rate_limited(gw, who.key_id)
    tok, exp = gw.tokens.issue(who)
    return _json({"token": tok, "token_type": "Bearer", "expires_at": exp, "owner": who.owner})


async def me(request: web.Request) -> web.Response:
    who = await _principal(request)
    return _json({"owner": who.owner, "scopes": sorted(who.scopes), "key_id": who.key_id})


# -- market ------------------------------------------------------------------------------


_TF_VALUES = Timeframe.__args__  # type: ignore[attr-defined]


def _tf(value: str) -> str:
    if value not in _TF_VALUES:
        raise Problem(400, "Bad Request", f"unknown timeframe {value[:20]!r}; one of "
                      + ", ".join(_TF_VALUES))  # fmt: skip
    return value


async def symbols(request: web.Request) -> web.Response:
    from technic_stream.storage.bars import BarArchive

    await _principal(request)
    tf = _tf(request.query.get("tf", "1d"))
    names = await BarArchive(_gw(request).db).symbols(tf)
    return _json({"tf": tf, "symbols": names, "count": len(names)})


async def universes(request: web.Request) -> web.Response:
    from technic_stream.storage.bars import BarArchive

    await _principal(request)
    names = await BarArchive(_gw(request).db).symbols("1d")
    return _json({"universes": [{"name": "all", "tf": "1d", "symbols": len(names)}]})


async def indicators(request: web.Request) -> web.Response:
    who = await _identify(request)
    gw = _gw(request)
    tf = _tf(request.match_info["tf"])
    symbol = request.match_info["symbol"]
    # (the most frequent request of all: its read goes in one write with its own
    # rate-limit decision and the others of this loop turn)
    key = f"{gw.settings.redis_prefix}ind:{tf}:{symbol}"
    flat = await _charged(gw, who, gw.pipe(_HGETALL(key)))
    if not flat:
        raise Problem(404, "Not Found", f"no values for {symbol[:40]} on {tf}")
    values: dict[str, float | None] = {}
    pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
    for k, v in pairs:  # (a map in RESP3, a flat list in RESP2)
        f = float(v)
        values[k.decode()] = f if math.isfinite(f) else None
    return _json({"symbol": symbol, "tf": tf, "values": values})


_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._/:^=-]{0,31}$")
#: what the chart draws: overlays on the candles, and the lower panes
CHART_INDICATORS = "sma(20), sma(50), ema(21), bb(20,2), rsi(14), macd(12,26,9)"


def _symbol(value: str) -> str:
    if not _SYMBOL_RE.match(value):
        raise Problem(
            400, "Bad Request", f"bad symbol {value[:40]!r}: 1-32 of A-Z 0-9 . _ / : ^ = -"
        )
    return value


def _int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(400, "Bad Request", f"{name} must be an integer, got {raw[:20]!r}") from None
    if not lo <= value <= hi:
        raise Problem(400, "Bad Request", f"{name} must be in {lo}..{hi}, got {value}")
    return value


async def bars(request: web.Request) -> web.Response:
    """A symbol's last ``limit`` archived bars and the chart's indicators over them,
    computed by the same batch kernels as the scans (the values the engine streams)."""
    from technic_stream.indicators.plan import parse_indicators
    from technic_stream.indicators.series import batch_outputs
    from technic_stream.storage.bars import BarArchive

    await _principal(request)
    gw = _gw(request)
    tf = _tf(request.match_info["tf"])
    symbol = _symbol(request.match_info["symbol"])
    limit = _int_query(request, "limit", 500, 1, 5_000)
    archive = BarArchive(gw.db)
    end = await archive.last_ts(symbol, tf)
    if end is None:
        raise Problem(404, "Not Found", f"no archived {tf} bars for {symbol}")
    warm = 300  # bars before the first one shown, so the slow indicators are settled
    span = TIMEFRAME_MS[tf] * (limit + warm) * 2  # (weekends, holidays and gaps)
    data = await archive.read(symbol, tf, end - span, end)
    n = len(data["ts"])
    values: dict[str, np.ndarray] = {}
    specs = parse_indicators(CHART_INDICATORS)
    outputs = await asyncio.to_thread(lambda: [
        batch_outputs(spec, data["ts"], data["open"], data["high"], data["low"],
                      data["close"], data["volume"]) for spec in specs
    ])  # fmt: skip
    for out in outputs:
        values.update(out)
    lo = max(0, n - limit)
    cols = {c: data[c][lo:] for c in ("open", "high", "low", "close", "volume")}
    return _json({
        "symbol": symbol, "tf": tf, "ts": data["ts"][lo:].tolist(),
        **{c: a.tolist() for c, a in cols.items()},
        "indicators": {k: _finite_list(v[lo:]) for k, v in values.items()},
    })  # fmt: skip


def _finite_list(arr: np.ndarray) -> list[float | None]:
    return [x if math.isfinite(x) else None for x in arr.tolist()]


async def list_alerts(request: web.Request) -> web.Response:
    """Your latest fired alerts (newest first), from the archive; ``symbol`` and ``tf``
    narrow them (the chart's markers)."""
    who = await _principal(request)
    gw = _gw(request)
    query: dict[str, Any] = {"owner": who.owner}
    if "symbol" in request.query:
        query["symbol"] = _symbol(request.query["symbol"])
    if "tf" in request.query:
        query["tf"] = _tf(request.query["tf"])
    limit = _int_query(request, "limit", 100, 1, 1_000)
    cursor = gw.db["alerts"].find(query).sort("fired_at", -1).limit(limit)
    return _json({"alerts": [_clean(d, "alert_id") async for d in cursor]})


# -- alert rules -------------------------------------------------------------------------


def _rule_doc(rule: AlertRule) -> dict[str, Any]:
    doc = rule.model_dump(mode="json", exclude={"type", "v"})
    doc["_id"] = doc.pop("rule_id")
    return doc


async def _publish(gw: Gateway, topic: str, key: str, value: bytes | None) -> None:
    await gw.producer.send_and_wait(
        topic_name(gw.settings.topic_prefix, topic), value, key=key.encode()
    )


_HGETALL = KeyedCommand(["HGETALL"])
_RULE_STATE = KeyedCommand(["HMGET"], ["status", "reason", "fired", "last_fired_ms"])


async def _rule_status(gw: Gateway, rule_ids: list[str]) -> list[dict[str, Any]]:
    prefix = gw.settings.redis_prefix
    rows = await gw.pipe.many([_RULE_STATE(f"{prefix}rule:{rid}") for rid in rule_ids])
    out = []
    for status, reason, fired, last in rows:
        out.append(
            {
                "status": status.decode() if status else "pending",
                "reason": reason.decode() if reason else "",
                "fired": int(fired or 0),
                "last_fired_ms": int(last) if last else None,
            }
        )
    return out


async def _rule_view(gw: Gateway, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    states = await _rule_status(gw, [d["_id"] for d in docs])
    return [{**_clean(d, "rule_id"), "state": st} for d, st in zip(docs, states, strict=True)]


async def _published_view(gw: Gateway, rule: AlertRule, doc: dict[str, Any]) -> dict[str, Any]:
    """Publish a stored rule to the engines and read its state meanwhile: its view once
    the broker has acknowledged it (the state read does not wait for the ack)."""
    _, (view,) = await asyncio.gather(
        _publish(gw, "alerts.rules", rule.rule_id, encode(rule)), _rule_view(gw, [doc])
    )
    return view


async def _own_rule(gw: Gateway, who: Principal, rule_id: str) -> dict[str, Any]:
    """The caller's rule (any owner's for an admin), read while its rate-limit decision
    is taken; 404 if it has none of that id."""
    doc = await _charged(gw, who, gw.rule_store.get(rule_id))
    if doc is None or not who.may_read(doc["owner"]):
        raise Problem(404, "Not Found", f"no rule {rule_id[:64]} of yours")
    return doc


def _rule_from(who: Principal, rule_id: str, body: Any) -> AlertRule:
    _check_rule(body.expr, "expr")
    try:
        return AlertRule(rule_id=rule_id, owner=who.owner, ts=_now_ms(), **body.model_dump())
    except ValidationError as exc:
        raise _validation_problem(exc) from None


async def list_rules(request: web.Request) -> web.Response:
    who = await _identify(request)
    gw = _gw(request)
    docs = await _charged(gw, who, gw.rule_store.of_owner(who.owner))
    return _json({"rules": await _rule_view(gw, docs)})


async def create_rule(request: web.Request) -> web.Response:
    who = await _principal(request)
    gw = _gw(request)
    body = await _body(request, NewRuleBody)
    rule_id = body.rule_id or f"r-{uuid.uuid4().hex[:16]}"
    rule = _rule_from(who, rule_id, RuleBody(**body.model_dump(exclude={"rule_id"})))
    doc = _rule_doc(rule)
    try:  # the id is the key: one round trip decides (no read-then-write race)
        await gw.rules.insert_one(doc)
    except DuplicateKeyError:
        raise Problem(409, "Conflict", f"rule {rule_id} exists; PUT replaces it") from None
    return _json(await _published_view(gw, rule, doc), status=201)


async def get_rule(request: web.Request) -> web.Response:
    who = await _identify(request)
    gw = _gw(request)
    doc = await _own_rule(gw, who, request.match_info["rule_id"])
    return _json((await _rule_view(gw, [doc]))[0])


async def put_rule(request: web.Request) -> web.Response:
    who = await _principal(request)
    gw = _gw(request)
    rule_id = request.match_info["rule_id"]
    body = await _body(request, RuleBody)
    rule = _rule_from(who, rule_id, body)
    doc = _rule_doc(rule)
    try:  # replaces the owner's rule or inserts it; another owner's id is a duplicate key
        replaced = await gw.rule_store.replace(doc)
    except DuplicateKeyError:
        raise Problem(404, "Not Found", f"no rule {rule_id[:64]} of yours") from None
    view = await _published_view(gw, rule, doc)
    return _json(view, status=200 if replaced else 201)


async def delete_rule(request: web.Request) -> web.Response:
    who = await _principal(request)
    gw = _gw(request)
    rule_id = request.match_info["rule_id"]
    rules = gw.rules
    # one round trip: the caller's rule (any owner's for an admin) is deleted, or none is
    query = {"_id": rule_id} if who.admin else {"_id": rule_id, "owner": who.owner}
    doc = await rules.find_one_and_delete(query)
    if doc is None:
        raise Problem(404, "Not Found", f"no rule {rule_id[:64]} of yours")
    try:
        await _publish(gw, "alerts.rules", rule_id, None)  # tombstone: engines drop the rule
    except Exception:
        # the engines still run the rule: put it back, so the store agrees with the topic
        # (a PUT of the same id meanwhile wins; its own publish follows it)
        with contextlib.suppress(DuplicateKeyError):
            await rules.insert_one(doc)
        raise
    return web.Response(status=204)


# -- scans -------------------------------------------------------------------------------


async def submit_scan(request: web.Request) -> web.Response:
    who = await _principal(request)
    gw = _gw(request)
    body = await _body(request, ScanBody)
    _check_rule(body.rule, "rule")
    scan_id = body.scan_id or f"s-{uuid.uuid4().hex[:16]}"
    try:
        req = ScanRequest(scan_id=scan_id, owner=who.owner, ts=_now_ms(),
                          **body.model_dump(exclude={"scan_id"}))  # fmt: skip
    except ValidationError as exc:
        raise _validation_problem(exc) from None
    now = datetime.now(UTC)
    stored, symbols = request_doc(req)
    doc = {"_id": scan_id, "owner": who.owner, "status": "queued", "submitted_at": now,
           "request": stored}  # fmt: skip
    try:
        await gw.scans.insert_one(doc)
    except DuplicateKeyError:
        raise Problem(409, "Conflict", f"scan {scan_id} exists") from None
    if symbols is not None:
        await store_symbols(gw.db, scan_id, symbols)
    await _publish(gw, "scan.requests", scan_id, encode(req))
    return _json({"scan_id": scan_id, "status": "queued", "channel": f"scan.{scan_id}"}, 202)


async def _own_scan(gw: Gateway, who: Principal, scan_id: str) -> dict[str, Any]:
    doc = await gw.scans.find_one({"_id": scan_id})
    if doc is None or not who.may_read(doc["owner"]):
        raise Problem(404, "Not Found", f"no scan {scan_id[:64]} of yours")
    return doc


async def list_scans(request: web.Request) -> web.Response:
    who = await _principal(request)
    gw = _gw(request)
    cursor = gw.scans.find({"owner": who.owner}).sort("submitted_at", -1).limit(100)
    return _json({"scans": [_clean(d, "scan_id") async for d in cursor]})


async def get_scan(request: web.Request) -> web.Response:
    who = await _principal(request)
    gw = _gw(request)
    doc = await _own_scan(gw, who, request.match_info["scan_id"])
    return _json(_clean(doc, "scan_id"))


async def cancel_scan(request: web.Request) -> web.Response:
    who = await _principal(request)
    gw = _gw(request)
    scan_id = request.match_info["scan_id"]
    doc = await _own_scan(gw, who, scan_id)
    if doc.get("status") in ("done", "failed", "cancelled"):
        raise Problem(409, "Conflict", f"scan {scan_id} is already {doc['status']}")
    ctl = ScanControl(scan_id=scan_id, owner=doc["owner"], action="cancel", ts=_now_ms())
    await _publish(gw, "scan.control", scan_id, encode(ctl))
    return _json({"scan_id": scan_id, "status": "cancelling"}, 202)


# -- delivery targets --------------------------------------------------------------------


async def list_devices(request: web.Request) -> web.Response:
    who = await _principal(request)
    cursor = _gw(request).db["devices"].find({"owner": who.owner}).sort("created_at", 1)
    return _json({"devices": [_clean(d, "device_id") async for d in cursor]})


async def add_device(request: web.Request) -> web.Response:
    who = await _principal(request)
    body: DeviceBody = await _body(request, DeviceBody)
    doc = {"_id": uuid.uuid4().hex, "owner": who.owner, **body.model_dump(), "active": True,
           "created_at": datetime.now(UTC)}  # fmt: skip
    await _gw(request).db["devices"].insert_one(doc)
    return _json(_clean(doc, "device_id"), 201)


async def _delete_own(request: web.Request, collection: str, id_name: str) -> web.Response:
    who = await _principal(request)
    query = {"_id": request.match_info[id_name], "owner": who.owner}
    res = await _gw(request).db[collection].delete_one(query)
    if res.deleted_count == 0:
        raise Problem(404, "Not Found", f"no such {collection[:-1]} of yours")
    return web.Response(status=204)


async def delete_device(request: web.Request) -> web.Response:
    return await _delete_own(request, "devices", "device_id")


async def list_webhooks(request: web.Request) -> web.Response:
    who = await _principal(request)
    cursor = _gw(request).db["webhooks"].find({"owner": who.owner}, {"secret": 0})
    return _json(
        {"webhooks": [_clean(d, "webhook_id") async for d in cursor.sort("created_at", 1)]}
    )


async def add_webhook(request: web.Request) -> web.Response:
    who = await _principal(request)
    body: WebhookBody = await _body(request, WebhookBody)
    secret = body.secret or secrets.token_urlsafe(32)
    doc = {"_id": uuid.uuid4().hex, "owner": who.owner, "url": body.url, "secret": secret,
           "active": True, "created_at": datetime.now(UTC)}  # fmt: skip
    await _gw(request).db["webhooks"].insert_one(doc)
    return _json(_clean(doc, "webhook_id"), 201)  # the secret is shown this once


async def delete_webhook(request: web.Request) -> web.Response:
    return await _delete_own(request, "webhooks", "webhook_id")


# -- routes and the OpenAPI document ----------------------------------------------------

ROUTES: list[tuple[str, str, Handler, str]] = [
    ("POST", "/v1/auth/token", token, "Exchange an API key for a short-lived token"),
    ("GET", "/v1/me", me, "Who the credentials belong to"),
    ("GET", "/v1/symbols", symbols, "Symbols with archived bars of a timeframe"),
    ("GET", "/v1/universes", universes, "Named universes"),
    ("GET", "/v1/indicators/{tf}/{symbol}", indicators, "Latest indicator values"),
    ("GET", "/v1/bars/{tf}/{symbol}", bars, "Recent archived bars with the chart's indicators"),
    ("GET", "/v1/alerts", list_alerts, "Your latest fired alerts"),
    ("GET", "/v1/rules", list_rules, "Your alert rules with their status"),
    ("POST", "/v1/rules", create_rule, "Create an alert rule"),
    ("GET", "/v1/rules/{rule_id}", get_rule, "One alert rule with its status"),
    ("PUT", "/v1/rules/{rule_id}", put_rule, "Create or replace an alert rule"),
    ("DELETE", "/v1/rules/{rule_id}", delete_rule, "Delete an alert rule"),
    ("GET", "/v1/scans", list_scans, "Your latest 100 scans"),
    ("POST", "/v1/scans", submit_scan, "Submit a scan"),
    ("GET", "/v1/scans/{scan_id}", get_scan, "A scan's status, progress and results"),
    ("POST", "/v1/scans/{scan_id}/cancel", cancel_scan, "Cancel a scan"),
    ("GET", "/v1/devices", list_devices, "Your push devices"),
    ("POST", "/v1/devices", add_device, "Register a push device"),
    ("DELETE", "/v1/devices/{device_id}", delete_device, "Remove a push device"),
    ("GET", "/v1/webhooks", list_webhooks, "Your webhooks (secrets not shown)"),
    ("POST", "/v1/webhooks", add_webhook, "Register a webhook (its secret is shown once)"),
    ("DELETE", "/v1/webhooks/{webhook_id}", delete_webhook, "Remove a webhook"),
]

_BODIES: dict[Any, type[_Body]] = {
    token: TokenBody,
    create_rule: NewRuleBody,
    put_rule: RuleBody,
    submit_scan: ScanBody,
    add_device: DeviceBody,
    add_webhook: WebhookBody,
}
_CREATED: dict[Any, int] = {create_rule: 201, put_rule: 200, submit_scan: 202, cancel_scan: 202,
            add_device: 201, add_webhook: 201, delete_rule: 204, delete_device: 204,
            delete_webhook: 204}  # fmt: skip


async def openapi_handler(request: web.Request) -> web.Response:
    return _json(openapi())


def openapi() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object"}},
                "retry_after_s": {"type": "number"},
            },
        }
    }
    problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    paths: dict[str, Any] = {}
    for method, path, handler, summary in ROUTES:
        op: dict[str, Any] = {"summary": summary, "operationId": handler.__name__}
        params = [
            {"name": p, "in": "path", "required": True,
             "schema": {"type": "string", "enum": list(_TF_VALUES)} if p == "tf" else
             {"type": "string", "minLength": 1, "maxLength": 64}}
            for p in _path_params(path)
        ]  # fmt: skip
        if handler is symbols:
            params.append({"name": "tf", "in": "query", "required": False,
                           "schema": {"type": "string", "enum": list(_TF_VALUES)}})  # fmt: skip
        if params:
            op["parameters"] = params
        model = _BODIES.get(handler)
        if model is not None:
            name = model.__name__
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for sub, sub_schema in schema.pop("$defs", {}).items():
                schemas[sub] = sub_schema
            schemas[name] = schema
            ref = {"$ref": f"#/components/schemas/{name}"}
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
        ok = _CREATED.get(handler, 200)
        body = {"application/json": {"schema": {"type": "object"}}}
        responses: dict[str, Any] = {}
        responses[str(ok)] = {"description": "success"}
        if ok != 204:
            responses[str(ok)]["content"] = body
        if handler is put_rule:
            responses["201"] = {"description": "created", "content": body}
        for code, what in (("400", "bad request"), ("401", "no or bad credentials"),
                           ("404", "not found"), ("409", "conflict"), ("413", "body too large"),
                           ("415", "not JSON"), ("422", "invalid body"),
                           ("429", "rate limited")):  # fmt: skip
            responses[code] = {"description": what, "content": problem}
        op["responses"] = responses
        if handler is not token:
            op["security"] = [{"bearer": []}, {"apiKey": []}]
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "technic-stream gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def add_routes(app: web.Application) -> None:
    for method, path, handler, _ in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get("/v1/openapi.json", openapi_handler)
