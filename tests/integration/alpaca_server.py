"""A local server that speaks Alpaca's market data v2 WebSocket protocol.

It greets, checks ``auth`` (402 on bad credentials, 406 to refuse a connection as over
the limit), answers ``subscribe`` with a ``subscription`` message and streams a
recorded-format session (arrays of ``t``/``b``/``u``/``d`` messages). It can drop the
connection at given points (a clean close or a torn TCP connection) and, like the real
service around a reconnect, send the last few messages again on the next connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from technic_stream.marketdata.synth import SynthConfig, SyntheticMarket, split_into_trades


def rfc3339(ms: int, nanos: int = 0) -> str:
    moment = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{ms % 1000:03d}{nanos:06d}Z"


def recorded_session(symbols: int = 6, minutes: int = 3, seed: int = 9) -> list[dict[str, Any]]:
    """A session in Alpaca's message format: trades, then each minute's bars, updated
    bars for late prints, and the daily bars at the end."""
    market = SyntheticMarket(SynthConfig(symbols=symbols, seed=seed))
    out: list[dict[str, Any]] = []
    trade_id = 5_000_000
    for _ in range(minutes):
        cols = market.step()
        t = split_into_trades(cols, market.tf_ms, market.rng)
        for i, ts, p, s in zip(t.index, t.ts, t.price, t.size, strict=True):
            trade_id += 1
            out.append({"T": "t", "S": market.symbols[i], "i": trade_id, "x": "V",
                        "p": float(p), "s": int(s), "t": rfc3339(int(ts), 123_456),
                        "c": ["@"], "z": "C"})  # fmt: skip
        for j, i in enumerate(cols.index.tolist()):
            bar = {"T": "b", "S": market.symbols[i], "o": float(cols.open[j]),
                   "h": float(cols.high[j]), "l": float(cols.low[j]), "c": float(cols.close[j]),
                   "v": int(cols.volume[j]), "t": rfc3339(int(cols.ts)), "n": 10,
                   "vw": float(cols.close[j])}  # fmt: skip
            out.append(bar)
            if j % 3 == 0:  # a late print changed this bar: the updated version
                out.append({**bar, "T": "u", "v": bar["v"] + 100, "n": 11})
    out.append({"T": "b", "S": "BAD", "o": 1, "h": 0.5, "l": 1, "c": 1, "v": 1,
                "t": rfc3339(int(cols.ts))})  # fmt: skip  # high below low: malformed
    return out


@dataclass
class AlpacaServer:
    messages: list[dict[str, Any]]
    key: str = "PKTEST"
    secret: str = "s3cret"
    frame: int = 7  # messages per frame
    drops: list[tuple[int, str]] = field(default_factory=list)  # (position, "close"|"abort")
    overlap: int = 5  # messages sent again after a reconnect
    refuse_next: int | None = None  # error code for the next connection (e.g. 406)
    position: int = 0
    connections: int = 0
    auth_failures: int = 0
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/{feed}", self._ws)
        return app

    async def _send(self, ws: web.WebSocketResponse, items: list[dict[str, Any]]) -> None:
        await ws.send_str(orjson.dumps(items).decode())

    async def _next(self, ws: web.WebSocketResponse) -> dict[str, Any] | None:
        msg = await asyncio.wait_for(ws.receive(), 10)
        if msg.type != WSMsgType.TEXT and msg.type != WSMsgType.BINARY:
            return None
        return orjson.loads(msg.data)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await self._send(ws, [{"T": "success", "msg": "connected"}])
        if self.refuse_next is not None:
            code, self.refuse_next = self.refuse_next, None
            await self._send(ws, [{"T": "error", "code": code, "msg": "connection limit exceeded"}])
            await ws.close()
            return ws
        auth = await self._next(ws)
        if not auth or auth.get("action") != "auth":
            await self._send(ws, [{"T": "error", "code": 401, "msg": "not authenticated"}])
            await ws.close()
            return ws
        if auth.get("key") != self.key or auth.get("secret") != self.secret:
            self.auth_failures += 1
            await self._send(ws, [{"T": "error", "code": 402, "msg": "auth failed"}])
            await ws.close()
            return ws
        await self._send(ws, [{"T": "success", "msg": "authenticated"}])
        sub = await self._next(ws)
        if not sub or sub.get("action") != "subscribe":
            await self._send(ws, [{"T": "error", "code": 400, "msg": "invalid syntax"}])
            await ws.close()
            return ws
        self.subscriptions.append(sub)
        await self._send(ws, [{"T": "subscription", "trades": sub.get("trades", []),
                               "quotes": [], "bars": sub.get("bars", []),
                               "updatedBars": sub.get("updatedBars", []),
                               "dailyBars": sub.get("dailyBars", [])}])  # fmt: skip
        start = max(0, self.position - self.overlap) if self.connections > 1 else 0
        pos = start
        while pos < len(self.messages):
            if self.drops and pos >= self.drops[0][0]:
                _, how = self.drops.pop(0)
                self.position = pos
                if how == "abort":
                    assert request.transport is not None
                    request.transport.abort()  # torn connection, no close frame
                else:
                    await ws.close(code=1011, message=b"going away")
                return ws
            chunk = self.messages[pos : pos + self.frame]
            await self._send(ws, chunk)
            pos += len(chunk)
            self.position = pos
            await asyncio.sleep(0)
        self.done.set()
        await ws.receive()  # hold the connection open until the client leaves
        return ws
