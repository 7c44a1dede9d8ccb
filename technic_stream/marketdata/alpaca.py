"""Feed adapter for Alpaca's market data v2 WebSocket stream → ``md.trades`` / ``md.bars``.

Protocol (``wss://stream.data.alpaca.markets/v2/{iex|sip}``): every server frame is a JSON
array of messages with a type ``T``. The server greets with
``{"T":"success","msg":"connected"}``; the client authenticates with
``{"action":"auth","key":…,"secret":…}`` (→ ``authenticated`` or an ``error`` with a
code: 402 auth failed, 406 connection limit exceeded, 409 insufficient subscription …)
and subscribes with ``{"action":"subscribe","trades":[…],"bars":[…],"updatedBars":[…],
"dailyBars":[…]}`` (→ ``{"T":"subscription",…}``). Data messages:

- ``t`` trade: ``S`` symbol, ``i`` trade id, ``p`` price, ``s`` size, ``t`` RFC-3339 time
  (nanoseconds) → a Trade (``trade_id`` = ``i``).
- ``b`` minute bar, ``u`` updated minute bar (late trades changed it: a correction),
  ``d`` daily bar: ``o h l c v``, ``t`` the bar's start → a Bar (``1m``/``1d``; the
  daily bar's ts is UTC midnight of its session date, as everywhere in our topics).

The stream has no replay: what is sent while disconnected is gone (fill gaps from the
archive or the vendor's REST history), and around a reconnect the server may send
messages again. The adapter reconnects with capped exponential backoff and jitter,
re-authenticates and re-subscribes, and drops exact repeats (a trade id seen before, a
bar identical to the version last sent for its symbol and ts), so Kafka receives each trade
once and each bar version once. Messages it cannot read go to the DLQ with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
from prometheus_client import Counter, Gauge

from technic_stream.app.ops import OpsServer
from technic_stream.config import Settings
from technic_stream.errors import MessageDecodeError, TechnicStreamError
from technic_stream.kafka import DeadLetterQueue, Producer
from technic_stream.messages import MAX_TS_MS
from technic_stream.topics import topic_name

__all__ = [
    "AlpacaConfig",
    "AlpacaFeed",
    "FeedError",
    "alpaca_service",
    "config_from_settings",
    "parse_rfc3339_ms",
]

log = logging.getLogger(__name__)

FEED_MESSAGES = Counter("technic_feed_messages", "Vendor messages by type", ["feed", "type"])
FEED_DUPLICATES = Counter("technic_feed_duplicates", "Repeated vendor messages dropped", ["feed"])
FEED_RECONNECTS = Counter("technic_feed_reconnects", "Reconnections to the vendor", ["feed"])
FEED_CONNECTED = Gauge("technic_feed_connected", "1 while subscribed to the vendor", ["feed"])

#: Errors after which retrying cannot help: stop and say why.
FATAL_CODES = {400: "invalid syntax", 401: "not authenticated", 402: "auth failed",
               405: "symbol limit exceeded", 409: "insufficient subscription"}  # fmt: skip
CONNECTION_LIMIT = 406
_NY = ZoneInfo("America/New_York")
_ENDED = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.ERROR,
)


class FeedError(TechnicStreamError):
    """The vendor refused us for a reason retrying will not fix (credentials, plan)."""


def parse_rfc3339_ms(text: str) -> int:
    """``2021-02-22T15:51:44.208123456Z`` → epoch ms (fraction truncated to ms)."""
    if not isinstance(text, str) or len(text) < 20:
        raise ValueError(f"not an RFC-3339 time: {text!r}")
    body, frac, zone = text, "", ""
    if text.endswith("Z"):
        body, zone = text[:-1], "+00:00"
    elif text[-6] in "+-":
        body, zone = text[:-6], text[-6:]
    else:
        raise ValueError(f"RFC-3339 time without a zone: {text!r}")
    if "." in body:
        body, frac = body.split(".", 1)
        if not frac.isdigit():
            raise ValueError(f"bad fraction in {text!r}")
    moment = datetime.fromisoformat(body + zone)
    return int(moment.timestamp()) * 1000 + int((frac + "000")[:3])


@dataclass(frozen=True, slots=True)
class AlpacaConfig:
    url: str = "wss://stream.data.alpaca.markets/v2/iex"
    key: str = ""
    secret: str = ""
    trades: tuple[str, ...] = ()
    bars: tuple[str, ...] = ("*",)
    updated_bars: bool = True
    daily_bars: bool = False
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    limit_backoff_s: float = 30.0  # after 406 "connection limit exceeded"
    stable_after_s: float = 30.0  # connected this long: the next drop starts backoff again
    connect_timeout_s: float = 10.0
    heartbeat_s: float = 20.0
    dedup_trades: int = 200_000  # trade ids (and bar versions) remembered to drop repeats

    def subscription(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"action": "subscribe", "trades": list(self.trades)}
        msg["bars"] = list(self.bars)
        if self.updated_bars:
            msg["updatedBars"] = list(self.bars)
        if self.daily_bars:
            msg["dailyBars"] = list(self.bars)
        return msg


@dataclass
class _Seen:
    trades: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)
    bars: OrderedDict[tuple[str, str, int], tuple[float, ...]] = field(default_factory=OrderedDict)


@dataclass
class _FeedRecord:
    """A vendor message dressed as a record for the DLQ."""

    value: bytes
    topic: str = "feed.alpaca"
    partition: int = -1
    offset: int = -1
    key: bytes | None = None


class AlpacaFeed:
    """Connects, subscribes and forwards until stopped; reconnects on its own."""

    name = "alpaca"

    def __init__(
        self,
        config: AlpacaConfig,
        producer: Producer,
        *,
        trades_topic: str,
        bars_topic: str,
        dlq: DeadLetterQueue,
    ) -> None:
        if not config.key or not config.secret:
            raise FeedError("Alpaca needs an API key and secret (TECHNIC_ALPACA_KEY/_SECRET)")
        self.config = config
        self.producer = producer
        self.trades_topic = trades_topic
        self.bars_topic = bars_topic
        self.dlq = dlq
        self.seen = _Seen()
        self.connections = 0
        self.sent_trades = 0
        self.sent_bars = 0
        self.duplicates = 0
        self.subscribed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until ``stop``; raises :class:`FeedError` on a fatal refusal."""
        delay = self.config.backoff_min_s
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self._session(http, stop)
                except FeedError:
                    raise
                except _RetryLater as exc:
                    delay = max(delay, exc.at_least_s)
                    log.warning("feed refused the connection", extra={"reason": str(exc)})
                except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                    log.warning("feed connection lost", extra={"error": repr(exc)})
                finally:
                    self.subscribed.clear()
                    FEED_CONNECTED.labels(self.name).set(0)
                if stop.is_set():
                    break
                if time.monotonic() - started >= self.config.stable_after_s:
                    delay = self.config.backoff_min_s
                FEED_RECONNECTS.labels(self.name).inc()
                wait = delay * (0.5 + random.random() / 2)
                log.info("feed reconnecting", extra={"in_s": round(wait, 2)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                delay = min(delay * 2, self.config.backoff_max_s)

    async def _session(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        cfg = self.config
        async with http.ws_connect(
            cfg.url, heartbeat=cfg.heartbeat_s, timeout=aiohttp.ClientWSTimeout(ws_close=5)
        ) as ws:
            self.connections += 1
            await self._expect(ws, "connected")
            await ws.send_bytes(
                orjson.dumps({"action": "auth", "key": cfg.key, "secret": cfg.secret})
            )
            await self._expect(ws, "authenticated")
            await ws.send_bytes(orjson.dumps(cfg.subscription()))
            await self._expect(ws, "subscription")
            self.subscribed.set()
            FEED_CONNECTED.labels(self.name).set(1)
            log.info("feed subscribed", extra={"url": cfg.url})
            stopping = asyncio.ensure_future(stop.wait())
            try:
                while True:
                    receive = asyncio.ensure_future(ws.receive())
                    done, _ = await asyncio.wait(
                        {receive, stopping}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if receive not in done:
                        receive.cancel()
                        return
                    msg = receive.result()
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        await self._frame(msg.data)
                        await self.producer.flush()  # acked before reading on
                    elif msg.type in _ENDED:
                        raise ConnectionError(f"feed closed the connection ({msg.type.name})")
            finally:
                stopping.cancel()

    async def _expect(self, ws: aiohttp.ClientWebSocketResponse, what: str) -> None:
        """Read control frames until ``what`` arrives; raise on the vendor's errors."""
        while True:
            msg = await asyncio.wait_for(ws.receive(), self.config.connect_timeout_s)
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise ConnectionError(f"connection ended while waiting for {what}")
            for item in orjson.loads(msg.data):
                kind = item.get("T")
                if kind == "error":
                    code = int(item.get("code", 0))
                    text = f"{code} {item.get('msg', '')}".strip()
                    if code in FATAL_CODES:
                        raise FeedError(f"Alpaca refused: {text}")
                    limit = self.config.limit_backoff_s if code == CONNECTION_LIMIT else 0.0
                    raise _RetryLater(text, limit)
                if kind == "subscription" and what == "subscription":
                    return
                if kind == "success" and item.get("msg") == what:
                    return

    async def _frame(self, data: str | bytes) -> None:
        try:
            items = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            await self._reject(data, f"invalid JSON: {exc}")
            return
        if not isinstance(items, list):
            await self._reject(data, "a frame must be a JSON array of messages")
            return
        for item in items:
            kind = item.get("T") if isinstance(item, dict) else None
            FEED_MESSAGES.labels(self.name, str(kind)[:8]).inc()
            try:
                if kind == "t":
                    await self._trade(item)
                elif kind in ("b", "u", "d"):
                    await self._bar(item, "1d" if kind == "d" else "1m")
                elif kind == "error":
                    log.warning("feed error message", extra={"message": item})
                # quotes, statuses, trade corrections/cancels: not in our contract
            except (KeyError, TypeError, ValueError) as exc:
                await self._reject(orjson.dumps(item), f"{kind} message: {exc!r}")

    async def _trade(self, m: dict[str, Any]) -> None:
        sym, tid = str(m["S"]), str(m["i"])
        key = (sym, tid)
        seen = self.seen.trades
        if key in seen:
            self.duplicates += 1
            FEED_DUPLICATES.labels(self.name).inc()
            return
        ts = parse_rfc3339_ms(m["t"])
        price, size = _number(m["p"]), _number(m["s"])
        if not (price > 0 and size > 0 and 0 <= ts <= MAX_TS_MS):
            raise ValueError(f"price {price}, size {size} or time {m['t']} out of range")
        body = {"type": "trade", "v": 1, "symbol": sym, "ts": ts, "price": price, "size": size,
                "trade_id": tid}  # fmt: skip
        await self.producer.send(self.trades_topic, orjson.dumps(body), key=sym.encode())
        seen[key] = None
        if len(seen) > self.config.dedup_trades:
            seen.popitem(last=False)
        self.sent_trades += 1

    async def _bar(self, m: dict[str, Any], tf: str) -> None:
        sym = str(m["S"])
        ts = parse_rfc3339_ms(m["t"])
        if tf == "1d":  # Alpaca stamps daily bars at local midnight: use the session date
            day = datetime.fromtimestamp(ts / 1000, _NY).date()
            ts = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        o, h, lo, c, v = (_number(m[k]) for k in ("o", "h", "l", "c", "v"))
        if not (0 < lo <= min(o, c) and max(o, c) <= h and v >= 0):
            raise ValueError(f"inconsistent bar o={o} h={h} l={lo} c={c} v={v}")
        values = (o, h, lo, c, v)
        key = (sym, tf, ts)
        if self.seen.bars.get(key) == values:
            self.duplicates += 1
            FEED_DUPLICATES.labels(self.name).inc()
            return
        body = {"type": "bar", "v": 1, "symbol": sym, "tf": tf, "ts": ts, "open": o, "high": h,
                "low": lo, "close": c, "volume": v}  # fmt: skip
        await self.producer.send(self.bars_topic, orjson.dumps(body), key=sym.encode())
        self.seen.bars[key] = values
        self.seen.bars.move_to_end(key)
        if len(self.seen.bars) > self.config.dedup_trades:
            self.seen.bars.popitem(last=False)
        self.sent_bars += 1

    async def _reject(self, data: str | bytes, reason: str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        await self.dlq.route(_FeedRecord(raw), MessageDecodeError(reason))


class _RetryLater(Exception):
    def __init__(self, reason: str, at_least_s: float) -> None:
        super().__init__(reason)
        self.at_least_s = at_least_s


def _number(x: object) -> float:
    if x.__class__ not in (int, float):
        raise TypeError(f"expected a number, got {x!r}")
    value = float(x)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not finite")
    return value


def _symbols(text: str) -> tuple[str, ...]:
    return tuple(s.strip().upper() for s in text.split(",") if s.strip())


def config_from_settings(settings: Settings) -> AlpacaConfig:
    key = settings.alpaca_key.get_secret_value() if settings.alpaca_key else ""
    secret = settings.alpaca_secret.get_secret_value() if settings.alpaca_secret else ""
    return AlpacaConfig(
        url=settings.alpaca_url,
        key=key,
        secret=secret,
        trades=_symbols(settings.alpaca_trades),
        bars=_symbols(settings.alpaca_bars),
    )


async def alpaca_service(settings: Settings, stop: asyncio.Event, ops: OpsServer) -> None:
    """The feed adapter process: runs until ``stop`` (or a fatal refusal)."""
    config = config_from_settings(settings)
    async with Producer(settings) as producer:
        feed = AlpacaFeed(
            config,
            producer,
            trades_topic=topic_name(settings.topic_prefix, "md.trades"),
            bars_topic=topic_name(settings.topic_prefix, "md.bars"),
            dlq=DeadLetterQueue(producer, topic_name(settings.topic_prefix, "dlq")),
        )

        async def subscribed() -> None:
            if not feed.subscribed.is_set():
                raise RuntimeError("not subscribed to the vendor feed (reconnecting)")

        ops.checks["feed"] = subscribed
        await feed.run(stop)
