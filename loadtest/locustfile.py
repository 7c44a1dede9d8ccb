"""Locust users for the gateway: REST traders and WebSocket subscribers.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080   # TECHNIC_LOADTEST_KEY=tsk_…

``loadtest/run.py`` starts the whole system, runs this headless for a bounded time and
prints a summary. Users:

- ``RestUser``: reads indicators, who-am-I and the rule list (the non-scan endpoints the
  p99 target is about), creates, reads, edits and deletes alert rules, and now and then
  submits a snapshot scan and polls its progress until it is done.
- ``WsUser``: one WebSocket per user subscribed to a few market channels and the owner's
  alert channel; counts the deliveries and reports each alert's delivery latency (now
  minus the alert's ``fired_at``) as a request named ``ws alert delivery``.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

import websocket  # websocket-client: blocking, which gevent makes cooperative
from locust import FastHttpUser, User, between, constant_throughput, events, task

KEY = os.environ.get("TECHNIC_LOADTEST_KEY", "")
SYMBOLS = os.environ.get("TECHNIC_LOADTEST_SYMBOLS", "AAPL,MSFT,IBM,GOOG,FB").split(",")
#: "mixed" (reads, rule CRUD, scans) or "read" (the hot read path: indicators and me)
MIX = os.environ.get("TECHNIC_LOADTEST_MIX", "mixed")
SCAN_EVERY = float(os.environ.get("TECHNIC_LOADTEST_SCAN_EVERY", "20"))  # scan tasks per scan


def _token(client) -> tuple[str, str]:
    with client.post("/v1/auth/token", json={"api_key": KEY}, name="/v1/auth/token",
                     catch_response=True) as r:  # fmt: skip
        if r.status_code != 200:
            r.failure(f"token: {r.status_code} {r.text[:200]}")
            raise RuntimeError("no token: set TECHNIC_LOADTEST_KEY to an API key")
        body = r.json()
        return body["token"], body["owner"]


class RestUser(FastHttpUser):
    # an open-ish load: each user runs this many tasks a second (the offered rate), so
    # latency is measured at a known load instead of growing with the queue
    wait_time = constant_throughput(float(os.environ.get("TECHNIC_LOADTEST_TASK_RATE", "10")))

    def on_start(self) -> None:
        token, self.owner = _token(self.client)
        self.h = {"Authorization": f"Bearer {token}"}
        self.rules: list[str] = []

    @task(10)
    def indicators(self) -> None:
        sym = random.choice(SYMBOLS)
        self.client.get(f"/v1/indicators/1d/{sym}", headers=self.h,
                        name="/v1/indicators/{tf}/{symbol}")  # fmt: skip

    @task(3)
    def me(self) -> None:
        self.client.get("/v1/me", headers=self.h)

    @task(2)
    def list_rules(self) -> None:
        if MIX == "read":
            return self.indicators()
        self.client.get("/v1/rules", headers=self.h)

    @task(2)
    def rule_crud(self) -> None:
        if MIX == "read":
            return self.indicators()
        rid = f"lt-{uuid.uuid4().hex[:12]}"
        body = {"expr": "rsi(14) < 30 and close > sma(50)", "tf": "1d", "mode": "once_per_bar",
                "symbols": [random.choice(SYMBOLS)], "channels": ["ws"]}  # fmt: skip
        self.client.put(f"/v1/rules/{rid}", json=body, headers=self.h, name="/v1/rules/{id} PUT")
        self.client.get(f"/v1/rules/{rid}", headers=self.h, name="/v1/rules/{id} GET")
        body["cooldown_s"] = 60
        self.client.put(f"/v1/rules/{rid}", json=body, headers=self.h, name="/v1/rules/{id} PUT")
        self.client.delete(f"/v1/rules/{rid}", headers=self.h, name="/v1/rules/{id} DELETE")

    @task(1)
    def scan(self) -> None:
        if MIX == "read":
            return self.indicators()
        if random.random() * SCAN_EVERY > 1.0:
            return
        sid = f"lt-{uuid.uuid4().hex[:14]}"
        body = {"scan_id": sid, "rule": "rsi(14) < 50 rank by volume desc", "universe": "all",
                "tf": "1d", "mode": "snapshot", "limit": 20}  # fmt: skip
        started = time.perf_counter()
        with self.client.post("/v1/scans", json=body, headers=self.h, name="/v1/scans POST",
                              catch_response=True) as r:  # fmt: skip
            if r.status_code != 202:
                r.failure(f"{r.status_code} {r.text[:200]}")
                return
        status = "queued"
        deadline = time.monotonic() + 60
        while status not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.05)
            r = self.client.get(f"/v1/scans/{sid}", headers=self.h, name="/v1/scans/{id} GET")
            if r.status_code == 200:
                status = r.json().get("status", status)
        events.request.fire(
            request_type="SCAN", name="scan end to end",
            response_time=(time.perf_counter() - started) * 1000, response_length=0,
            exception=None if status == "done" else RuntimeError(f"scan {sid} {status}"),
            context={},
        )  # fmt: skip


class WsUser(User):
    """One WebSocket: market channels and the owner's alerts."""

    wait_time = between(0.5, 1.0)
    fixed_count = int(os.environ.get("TECHNIC_LOADTEST_WS_USERS", "0"))  # the rest: RestUser

    def on_start(self) -> None:
        import requests

        r = requests.post(f"{self.host}/v1/auth/token", json={"api_key": KEY}, timeout=10)
        body = r.json()
        url = self.host.replace("http", "ws", 1) + f"/v1/ws?token={body['token']}"
        started = time.perf_counter()
        self.ws = websocket.create_connection(url, timeout=10)
        self.ws.settimeout(0.2)
        events.request.fire(request_type="WS", name="ws connect",
                            response_time=(time.perf_counter() - started) * 1000,
                            response_length=0, exception=None, context={})  # fmt: skip
        channels = [f"alerts.{body['owner']}"] + [f"ind.1d.{s}" for s in SYMBOLS[:3]]
        for i, ch in enumerate(channels):
            self.ws.send(json.dumps({"id": i + 1, "cmd": "subscribe", "channel": ch}))
        self.deliveries = 0

    def on_stop(self) -> None:
        self.ws.close()

    @task
    def read(self) -> None:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                frame = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketConnectionClosedException as exc:
                events.request.fire(request_type="WS", name="ws closed", response_time=0,
                                    response_length=0, exception=exc, context={})  # fmt: skip
                raise
            for line in frame.split("\n"):
                msg = json.loads(line)
                if msg.get("type") == "error":
                    events.request.fire(request_type="WS", name="ws error", response_time=0,
                                        response_length=0, exception=RuntimeError(line[:200]),
                                        context={})  # fmt: skip
                if msg.get("type") != "pub":
                    continue
                self.deliveries += 1
                data = msg.get("data") or {}
                if data.get("type") == "alert":
                    latency = time.time() * 1000 - data["fired_at"]
                    events.request.fire(request_type="WS", name="ws alert delivery",
                                        response_time=max(0.0, latency), response_length=len(line),
                                        exception=None, context={})  # fmt: skip
                else:
                    events.request.fire(request_type="WS", name="ws market delivery",
                                        response_time=0, response_length=len(line),
                                        exception=None, context={})  # fmt: skip
