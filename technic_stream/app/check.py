"""What ``up`` does for a newcomer through the public API: example alert rules for the demo
user, and ``up --check``, which proves the system works end to end.

Everything goes through the gateway, as a client would: REST for state, the WebSocket for
the live alert. ``--check`` passes once a bar has reached Redis (``GET /v1/indicators``),
a scan has completed (``POST /v1/scans`` → status ``done``) and an alert has fired and
arrived on the owner's channel (``alerts.{owner}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
import orjson

__all__ = ["EXAMPLE_RULES", "CheckStep", "add_example_rules", "check_end_to_end"]

log = logging.getLogger(__name__)

#: The demo user's example alerts (ids fixed: ``up`` replaces them, never duplicates).
EXAMPLE_RULES: list[dict[str, Any]] = [
    {"rule_id": "demo-rsi-oversold", "name": "RSI oversold", "expr": "rsi(14) < 30",
     "tf": "1m", "mode": "once_per_bar_close", "cooldown_s": 600},
    {"rule_id": "demo-golden-cross", "name": "Golden cross",
     "expr": "sma(50) crosses above sma(200)", "tf": "1d", "mode": "once_per_bar_close"},
    {"rule_id": "demo-volume-spike", "name": "Volume spike",
     "expr": "volume > 3 * avg_volume(20)", "tf": "1m", "mode": "once_per_bar_close",
     "cooldown_s": 300},
]  # fmt: skip


@dataclass
class CheckStep:
    name: str
    ok: bool
    detail: str


class _Client:
    """The gateway's REST API with one API key (a token bought with it)."""

    def __init__(self, http: aiohttp.ClientSession, key: str) -> None:
        self.http = http
        self.key = key
        self.token = ""

    async def sign_in(self) -> str:
        async with self.http.post("/v1/auth/token", json={"api_key": self.key}) as r:
            body = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"token: HTTP {r.status}: {body}")
        self.token = body["token"]
        return str(body["owner"])

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None) if r.status != 204 else None


async def _until(probe: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    """``probe()`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            got = await probe()
            if got:
                return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {within:.0f} s")
        await asyncio.sleep(0.25)


async def wait_for_gateway(base_url: str, within: float = 60) -> None:
    async with aiohttp.ClientSession(base_url) as http:

        async def up() -> bool:
            async with http.get("/v1/openapi.json") as r:
                return r.status == 200

        await _until(up, within, "the gateway answering")


async def add_example_rules(base_url: str, key: str) -> int:
    """PUT the example rules for the key's owner; how many were written."""
    async with aiohttp.ClientSession(base_url) as http:
        client = _Client(http, key)
        await client.sign_in()
        done = 0
        for rule in EXAMPLE_RULES:
            body = {k: v for k, v in rule.items() if k != "rule_id"}
            status, answer = await client.call("PUT", f"/v1/rules/{rule['rule_id']}", body)
            if status in (200, 201):
                done += 1
            else:
                what = {"rule_id": rule["rule_id"], "status": status, "answer": answer}
                log.warning("example rule refused", extra=what)
        return done


async def check_end_to_end(
    base_url: str, key: str, out: TextIO, *, within: float = 90, bar_symbol: str = "AAPL"
) -> list[CheckStep]:
    """The three steps of ``up --check``, each given ``within`` seconds; printed as they
    finish, returned in order."""
    steps: list[CheckStep] = []

    def report(step: CheckStep) -> None:
        steps.append(step)
        mark = "ok  " if step.ok else "FAIL"
        print(f"  check {mark} {step.name}: {step.detail}", file=out, flush=True)

    async with aiohttp.ClientSession(base_url) as http:
        client = _Client(http, key)
        owner = await client.sign_in()

        # 1. a bar has flowed through the engine into Redis
        async def values() -> Any:
            status, body = await client.call("GET", f"/v1/indicators/1d/{bar_symbol}")
            return body if status == 200 and body["values"].get("close") else None

        try:
            got = await _until(values, within, f"values of {bar_symbol} 1d in Redis")
            close = got["values"]["close"]
            report(CheckStep("bar → engine → Redis", True, f"{bar_symbol} 1d close {close}"))
        except TimeoutError as exc:
            report(CheckStep("bar → engine → Redis", False, f"no {exc}"))

        # 2. a scan completes
        scan_id = f"check-{uuid.uuid4().hex[:12]}"
        scan = {"scan_id": scan_id, "rule": "close > 0 rank by close desc", "universe": "all",
                "tf": "1d", "mode": "snapshot", "limit": 10}  # fmt: skip
        started = time.monotonic()
        status, body = await client.call("POST", "/v1/scans", scan)
        if status != 202:
            report(CheckStep("scan", False, f"POST /v1/scans answered {status}: {body}"))
        else:

            async def finished() -> Any:
                status, doc = await client.call("GET", f"/v1/scans/{scan_id}")
                final = status == 200 and doc.get("status") in ("done", "failed", "cancelled")
                return doc if final else None

            try:
                doc = await _until(finished, within, f"scan {scan_id} finished")
                ok = doc["status"] == "done" and doc.get("symbols_scanned", 0) > 0
                report(CheckStep("scan", ok, f"{doc['status']} in "
                                 f"{time.monotonic() - started:.2f} s: {doc.get('total_matches')} "
                                 f"matches of {doc.get('symbols_scanned')} symbols"))  # fmt: skip
            except TimeoutError as exc:
                report(CheckStep("scan", False, f"not {exc}"))

        # 3. an alert fires and reaches the owner's channel through the gateway
        report(await _alert_step(http, client, owner, within))
    return steps


async def _alert_step(
    http: aiohttp.ClientSession, client: _Client, owner: str, within: float
) -> CheckStep:
    name = "alert → gateway WebSocket"
    rule_id = f"check-{uuid.uuid4().hex[:12]}"
    try:
        async with http.ws_connect(f"/v1/ws?token={client.token}", heartbeat=10) as ws:
            await ws.send_str(orjson.dumps({"id": 1, "cmd": "subscribe",
                                            "channel": f"alerts.{owner}"}).decode())  # fmt: skip
            rule = {"name": "up --check", "expr": "close > 0", "tf": "1m", "mode": "once",
                    "channels": ["ws"]}  # fmt: skip
            status, body = await client.call("PUT", f"/v1/rules/{rule_id}", rule)
            if status not in (200, 201):
                return CheckStep(name, False, f"PUT /v1/rules answered {status}: {body}")
            started = time.monotonic()
            deadline = started + within
            while time.monotonic() < deadline:
                try:
                    msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return CheckStep(name, False, f"the socket closed: {msg.type.name} {msg.data}")
                for line in msg.data.split("\n"):
                    frame = orjson.loads(line)
                    data = frame.get("data") or {}
                    if frame.get("type") == "pub" and data.get("rule_id") == rule_id:
                        return CheckStep(name, True, f"{data['symbol']} {data['tf']} after "
                                         f"{time.monotonic() - started:.2f} s")  # fmt: skip
            return CheckStep(name, False, f"no alert of rule {rule_id} within {within:.0f} s")
    except (aiohttp.ClientError, OSError) as exc:
        return CheckStep(name, False, f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await client.call("DELETE", f"/v1/rules/{rule_id}")
