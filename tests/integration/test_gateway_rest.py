"""The REST API against a running gateway, the local broker, Redis and MongoDB server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp

from technic_stream.messages import AlertRule, ScanControl, ScanRequest, decode
from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client
from technic_stream.storage.scans import INLINE_SYMBOLS
from technic_stream.topics import topic_name
from tests.integration.gateway_helpers import new_key, running_gateway, ws_client
from tests.integration.helpers import read_topic, run_cli

PROBLEM = "application/problem+json"


async def _problem(resp: aiohttp.ClientResponse, status: int) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body = await resp.json(content_type=PROBLEM)
    assert body["status"] == status and body["title"]
    return body


async def test_api_keys_buy_tokens_and_both_authenticate(settings):
    key = await new_key(settings, "alice")
    async with running_gateway(settings) as gw, aiohttp.ClientSession(gw.http) as http:
        async with http.post("/v1/auth/token", json={"api_key": key}) as r:
            assert r.status == 200
            tok = await r.json()
        assert tok["token_type"] == "Bearer" and tok["owner"] == "alice"
        async with http.get("/v1/me", headers={"Authorization": f"Bearer {tok['token']}"}) as r:
            assert (await r.json())["owner"] == "alice"
        async with http.get("/v1/me", headers={"X-API-Key": key}) as r:
            assert (await r.json())["owner"] == "alice"
        async with ws_client(http, "/v1/ws", tok["token"]) as c:  # the same token on the socket
            assert (await c.subscribe("alerts.alice"))["type"] == "subscribed"
        wrong = key[:-3] + ("AAA" if not key.endswith("AAA") else "BBB")
        async with http.post("/v1/auth/token", json={"api_key": wrong}) as r:
            assert (await _problem(r, 401))["detail"] == "unknown API key"
        async with http.post("/v1/auth/token", json={"api_key": "nope"}) as r:
            assert (await _problem(r, 401))["detail"] == "malformed API key"
        async with http.get("/v1/me") as r:
            await _problem(r, 401)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_rules_are_checked_stored_published_and_deleted_with_a_tombstone(settings):
    topic = topic_name(settings.topic_prefix, "alerts.rules")
    async with running_gateway(settings) as gw, aiohttp.ClientSession(gw.http) as http:
        alice = {"Authorization": f"Bearer {gw.token('alice')}"}
        bob = {"Authorization": f"Bearer {gw.token('bob')}"}
        bad = {"expr": "rsi(14) < < 30", "tf": "1m"}
        async with http.post("/v1/rules", json=bad, headers=alice) as r:
            body = await _problem(r, 422)
        (err,) = body["errors"]
        assert err["field"] == "expr" and err["column"] == 11 and err["reason"]
        async with http.post("/v1/rules", json={"expr": "close > 1", "mode": "twice"},
                             headers=alice) as r:  # fmt: skip
            assert (await _problem(r, 422))["errors"][0]["field"] == "mode"
        good = {"rule_id": "r1", "expr": "rsi(14) < 30", "tf": "1m", "mode": "once"}
        async with http.post("/v1/rules", json=good, headers=alice) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        assert created["rule_id"] == "r1" and created["owner"] == "alice"
        assert created["state"]["status"] == "pending"  # no engine has armed it yet
        async with http.post("/v1/rules", json=good, headers=alice) as r:
            await _problem(r, 409)
        async with http.get("/v1/rules/r1", headers=bob) as r:
            await _problem(r, 404)  # someone else's rule does not exist for bob
        async with http.put("/v1/rules/r1", json={"expr": "close > 1"}, headers=bob) as r:
            await _problem(r, 404)
        async with http.delete("/v1/rules/r1", headers=bob) as r:
            await _problem(r, 404)  # nor delete it (no tombstone goes out: see the topic)
        async with http.put("/v1/rules/r1", json={"expr": "rsi(14) < 25", "tf": "1m"},
                            headers=alice) as r:  # fmt: skip
            assert r.status == 200 and (await r.json())["expr"] == "rsi(14) < 25"
        async with http.get("/v1/rules", headers=alice) as r:
            assert [x["rule_id"] for x in (await r.json())["rules"]] == ["r1"]
        async with http.delete("/v1/rules/r1", headers=alice) as r:
            assert r.status == 204
        async with http.get("/v1/rules/r1", headers=alice) as r:
            await _problem(r, 404)
    records = await read_topic(settings, topic, expect=3)
    assert [r.key for r in records] == [b"r1"] * 3
    first, second = (decode(r.value, AlertRule) for r in records[:2])
    assert (first.expr, first.owner, first.mode) == ("rsi(14) < 30", "alice", "once")
    assert second.expr == "rsi(14) < 25" and second.ts >= first.ts
    assert records[2].value is None  # the tombstone


async def test_put_creates_then_replaces_and_never_takes_another_owners_rule(settings):
    async with running_gateway(settings) as gw, aiohttp.ClientSession(gw.http) as http:
        alice = {"Authorization": f"Bearer {gw.token('alice')}"}
        bob = {"Authorization": f"Bearer {gw.token('bob')}"}
        rule = {"expr": "close > 1", "tf": "1m"}
        async with http.put("/v1/rules/p1", json=rule, headers=alice) as r:
            assert r.status == 201 and (await r.json())["owner"] == "alice"
        async with http.put("/v1/rules/p1", json={**rule, "cooldown_s": 60}, headers=alice) as r:
            assert r.status == 200 and (await r.json())["cooldown_s"] == 60
        async with http.put("/v1/rules/p1", json=rule, headers=bob) as r:
            await _problem(r, 404)
        async with http.get("/v1/rules/p1", headers=alice) as r:
            kept = await r.json()
        assert (kept["owner"], kept["cooldown_s"]) == ("alice", 60)  # bob changed nothing
        # each publish was awaited in its request: the producer keeps none of them (it
        # kept every future, never flushed, for the life of the gateway)
        assert gw.gw.producer.unflushed == 0
    records = await read_topic(settings, topic_name(settings.topic_prefix, "alerts.rules"),
                               expect=2)  # fmt: skip
    assert [decode(r.value, AlertRule).cooldown_s for r in records] == [0, 60]


async def test_scans_are_submitted_readable_by_their_owner_and_cancellable(settings):
    async with running_gateway(settings) as gw, aiohttp.ClientSession(gw.http) as http:
        alice = {"Authorization": f"Bearer {gw.token('alice')}"}
        bob_token = gw.token("bob")
        async with http.post("/v1/scans", json={"rule": "close >", "symbols": ["AAPL"]},
                             headers=alice) as r:  # fmt: skip
            assert (await _problem(r, 422))["errors"][0]["field"] == "rule"
        scan = {"rule": "rsi(14) < 30", "symbols": ["AAPL", "MSFT"], "tf": "1d", "limit": 5}
        async with http.post("/v1/scans", json=scan, headers=alice) as r:
            assert r.status == 202
            sub = await r.json()
        scan_id = sub["scan_id"]
        assert sub["channel"] == f"scan.{scan_id}"
        async with http.get(f"/v1/scans/{scan_id}", headers=alice) as r:
            got = await r.json()
        assert got["status"] == "queued" and got["request"]["symbols"] == ["AAPL", "MSFT"]
        async with http.get(f"/v1/scans/{scan_id}",
                            headers={"Authorization": f"Bearer {bob_token}"}) as r:  # fmt: skip
            await _problem(r, 404)
        async with ws_client(http, "/v1/ws", gw.token("alice")) as c:
            assert (await c.subscribe(f"scan.{scan_id}"))["type"] == "subscribed"
        async with ws_client(http, "/v1/ws", bob_token) as c:
            assert (await c.subscribe(f"scan.{scan_id}"))["code"] == 4403
        async with http.post(f"/v1/scans/{scan_id}/cancel", headers=alice) as r:
            assert r.status == 202
    (req,) = await read_topic(
        settings, topic_name(settings.topic_prefix, "scan.requests"), expect=1
    )
    request = decode(req.value, ScanRequest)
    assert (req.key, request.owner, request.rule) == (scan_id.encode(), "alice", "rsi(14) < 30")
    (ctl,) = await read_topic(settings, topic_name(settings.topic_prefix, "scan.control"), expect=1)
    assert decode(ctl.value, ScanControl).action == "cancel"


async def test_a_long_symbol_list_is_kept_beside_the_scan_document(settings):
    symbols = [f"S{i:05d}" for i in range(INLINE_SYMBOLS + 500)]
    async with running_gateway(settings) as gw, aiohttp.ClientSession(gw.http) as http:
        alice = {"Authorization": f"Bearer {gw.token('alice')}"}
        scan = {"rule": "close > 1", "symbols": symbols, "tf": "1d"}
        async with http.post("/v1/scans", json=scan, headers=alice) as r:
            assert r.status == 202, await r.text()
            scan_id = (await r.json())["scan_id"]
        async with http.get(f"/v1/scans/{scan_id}", headers=alice) as r:
            request = (await r.json())["request"]
    assert request["symbols"] == symbols[:INLINE_SYMBOLS]
    assert request["symbols_count"] == len(symbols)
    assert request["symbols_stored_in"] == "scan_symbols"
    mongo = mongo_client(settings)
    try:
        doc = await mongo[settings.mongo_db]["scan_symbols"].find_one({"_id": scan_id})
    finally:
        await mongo.close()
    assert doc is not None and doc["symbols"] == symbols
    (req,) = await read_topic(
        settings, topic_name(settings.topic_prefix, "scan.requests"), expect=1
    )
    assert decode(req.value, ScanRequest).symbols == symbols  # the workers get them all


async def test_indicators_symbols_devices_and_webhooks(settings):
    redis = redis_client(settings)
    await redis.hset(f"{settings.redis_prefix}ind:1m:AAPL",
                     mapping={"close": "187.25", "rsi_14": "nan"})  # fmt: skip
    await redis.aclose()
    async with running_gateway(settings) as gw, aiohttp.ClientSession(gw.http) as http:
        alice = {"Authorization": f"Bearer {gw.token('alice')}"}
        async with http.get("/v1/indicators/1m/AAPL", headers=alice) as r:
            assert await r.json() == {
                "symbol": "AAPL", "tf": "1m", "values": {"close": 187.25, "rsi_14": None}
            }  # fmt: skip
        async with http.get("/v1/indicators/1m/ZZZZ", headers=alice) as r:
            await _problem(r, 404)
        async with http.get("/v1/indicators/7m/AAPL", headers=alice) as r:
            await _problem(r, 400)
        async with http.get("/v1/symbols?tf=1d", headers=alice) as r:
            assert (await r.json())["count"] == 0
        device = {"platform": "apns", "token": "ab" * 32}
        async with http.post("/v1/devices", json=device, headers=alice) as r:
            assert r.status == 201
            dev = await r.json()
        async with http.get("/v1/devices", headers=alice) as r:
            assert [d["device_id"] for d in (await r.json())["devices"]] == [dev["device_id"]]
        async with http.post("/v1/webhooks", json={"url": "https://example.test/hook"},
                             headers=alice) as r:  # fmt: skip
            hook = await r.json()
        assert len(hook["secret"]) >= 32
        async with http.get("/v1/webhooks", headers=alice) as r:
            (listed,) = (await r.json())["webhooks"]
        assert listed["webhook_id"] == hook["webhook_id"] and "secret" not in listed
        async with http.post("/v1/webhooks", json={"url": "ftp://x"}, headers=alice) as r:
            await _problem(r, 422)
        async with http.delete(f"/v1/devices/{dev['device_id']}", headers=alice) as r:
            assert r.status == 204
        async with http.delete(f"/v1/devices/{dev['device_id']}", headers=alice) as r:
            await _problem(r, 404)
    mongo = mongo_client(settings)
    stored = await mongo[settings.mongo_db]["webhooks"].find_one({"_id": hook["webhook_id"]})
    await mongo.close()
    assert stored["secret"] == hook["secret"] and stored["owner"] == "alice"


async def test_bars_come_with_the_charts_indicators_equal_to_ta_lib(settings):
    import numpy as np
    import talib

    from technic_stream.storage.bars import BarArchive

    rng = np.random.default_rng(3)
    n = 700
    ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 86_400_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    high, low = close * 1.01, close * 0.99
    mongo = mongo_client(settings)
    try:
        await BarArchive(mongo[settings.mongo_db]).write(
            "1d", ["CHRT"] * n, ts, close, high, low, close, np.full(n, 1e6)
        )
    finally:
        await mongo.close()
    async with running_gateway(settings) as gw, aiohttp.ClientSession(gw.http) as http:
        alice = {"Authorization": f"Bearer {gw.token('alice')}"}
        async with http.get("/v1/bars/1d/CHRT?limit=120", headers=alice) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert body["ts"] == ts[-120:].tolist() and body["close"] == close[-120:].tolist()
        # over the 120 bars shown and the settled history before them: TA-Lib's values
        for name, ref in (("rsi_14", talib.RSI(close, 14)), ("sma_20", talib.SMA(close, 20)),
                          ("ema_21", talib.EMA(close, 21))):  # fmt: skip
            tail = ref[-120:]
            assert np.allclose(np.array(body["indicators"][name], dtype=float), tail,
                               rtol=1e-10, atol=1e-10), name  # fmt: skip
        upper = talib.BBANDS(close, 20, 2, 2)[0][-120:]
        assert np.allclose(body["indicators"]["bb_20_2.upper"], upper, rtol=1e-10)
        for bad, status in (("/v1/bars/1d/CHRT?limit=0", 400), ("/v1/bars/1d/CHRT?limit=x", 400),
                            ("/v1/bars/9d/CHRT", 400), ("/v1/bars/1d/bad%20sym", 400),
                            ("/v1/bars/1d/NOPE", 404)):  # fmt: skip
            async with http.get(bad, headers=alice) as r:
                await _problem(r, status)


async def test_alerts_are_listed_newest_first_to_their_owner_only(settings):
    mongo = mongo_client(settings)
    try:
        alerts = mongo[settings.mongo_db]["alerts"]
        for i, (owner, symbol) in enumerate([("alice", "AAPL"), ("bob", "AAPL"),
                                             ("alice", "MSFT"), ("alice", "AAPL")]):  # fmt: skip
            aid = f"{i:032x}"
            await alerts.insert_one({"_id": aid, "alert_id": aid, "owner": owner, "rule_id": "r1",
                                     "symbol": symbol, "tf": "1d", "ts": 1_000 * i,
                                     "fired_at": 10_000 + i, "close": 1.0})  # fmt: skip
    finally:
        await mongo.close()
    async with running_gateway(settings) as gw, aiohttp.ClientSession(gw.http) as http:
        alice = {"Authorization": f"Bearer {gw.token('alice')}"}
        async with http.get("/v1/alerts", headers=alice) as r:
            got = [a["alert_id"] for a in (await r.json())["alerts"]]
        assert got == [f"{3:032x}", f"{2:032x}", f"{0:032x}"]
        async with http.get("/v1/alerts?symbol=AAPL&tf=1d&limit=1", headers=alice) as r:
            assert [a["alert_id"] for a in (await r.json())["alerts"]] == [f"{3:032x}"]
        async with http.get("/v1/alerts?limit=5000", headers=alice) as r:
            await _problem(r, 400)


async def test_errors_are_problem_documents(settings):
    async with (
        running_gateway(settings, gateway_max_request_bytes=2048) as gw,
        aiohttp.ClientSession(gw.http) as http,
    ):
        alice = {"Authorization": f"Bearer {gw.token('alice')}"}
        async with http.get("/v1/nowhere", headers=alice) as r:
            await _problem(r, 404)
        async with http.patch("/v1/rules", headers=alice) as r:
            await _problem(r, 405)
            assert "POST" in r.headers["Allow"]
        async with http.post("/v1/rules", data="x" * 5000, headers={**alice,
                             "Content-Type": "application/json"}) as r:  # fmt: skip
            await _problem(r, 413)
        async with http.post("/v1/rules", data="expr=1", headers=alice) as r:
            await _problem(r, 415)
        as_json = {**alice, "Content-Type": "application/json"}
        async with http.post("/v1/rules", data="{nope", headers=as_json) as r:
            assert "not JSON" in (await _problem(r, 400))["detail"]
        async with http.get("/v1/openapi.json") as r:
            doc = await r.json()
        assert doc["openapi"].startswith("3.") and "/v1/rules/{rule_id}" in doc["paths"]


async def test_rest_rate_limit_holds_across_two_gateways(settings):
    limits = {"gateway_rest_rate": 0.01, "gateway_rest_burst": 5}
    async with (
        running_gateway(settings, **limits) as gw1,
        running_gateway(settings, **limits) as gw2,
        aiohttp.ClientSession() as http,
    ):
        alice = {"Authorization": f"Bearer {gw1.token('alice')}"}
        for url in [gw1.http] * 3 + [gw2.http] * 2:
            async with http.get(f"{url}/v1/me", headers=alice) as r:
                assert r.status == 200
        for url in (gw1.http, gw2.http):
            async with http.get(f"{url}/v1/me", headers=alice) as r:
                body = await _problem(r, 429)
                assert int(r.headers["Retry-After"]) >= 1 and body["retry_after_s"] > 1
        bob = {"Authorization": f"Bearer {gw1.token('bob')}"}  # another key: its own bucket
        async with http.get(f"{gw2.http}/v1/me", headers=bob) as r:
            assert r.status == 200


async def test_reads_share_the_rate_limit_round_trip_and_a_refused_one_gets_429(settings):
    redis = redis_client(settings)
    await redis.hset(f"{settings.redis_prefix}ind:1m:AAPL", mapping={"close": "187.25"})
    await redis.aclose()
    async with (
        running_gateway(settings, gateway_rest_rate=0.01, gateway_rest_burst=4) as run,
        aiohttp.ClientSession(run.http) as http,
    ):
        alice = {"Authorization": f"Bearer {run.token('alice')}"}
        pipe = run.gw.pipe
        writes, commands = pipe.writes, pipe.commands
        async with http.get("/v1/indicators/1m/AAPL", headers=alice) as r:
            assert (await r.json())["values"] == {"close": 187.25}
        # the read and the decision in one write to Redis, not one after the other
        assert (pipe.writes - writes, pipe.commands - commands) == (1, 2)
        async with http.put("/v1/rules/r1", json={"expr": "rsi(14) < 30"}, headers=alice) as r:
            assert r.status == 201
        async with http.get("/v1/rules/r1", headers=alice) as r:
            assert (await r.json())["rule_id"] == "r1"
        async with http.get("/v1/rules", headers=alice) as r:
            assert [x["rule_id"] for x in (await r.json())["rules"]] == ["r1"]
        # the burst is spent: a read is refused with 429, its answer dropped
        for path in ("/v1/indicators/1m/AAPL", "/v1/rules/r1", "/v1/rules"):
            async with http.get(path, headers=alice) as r:
                body = await _problem(r, 429)
                assert body["retry_after_s"] > 1 and "187.25" not in str(body)
        async with http.get("/v1/rules/r1") as r:  # no credentials: 401 before any read
            await _problem(r, 401)


async def test_schemathesis_finds_no_server_error_or_schema_violation(settings, tmp_path):
    """Contract test from the served OpenAPI document (schemathesis as a separate process)."""
    async with running_gateway(settings, gateway_rest_burst=1_000_000) as gw:
        env = dict(os.environ)
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"), "run",
            f"{gw.http}/v1/openapi.json",
            "--header", f"Authorization: Bearer {gw.token('alice')}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--phases", "examples,coverage,fuzzing", "--max-examples", "15",
            "--workers", "1", "--no-color", "--suppress-health-check", "all",
            "--generation-deterministic",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
            cwd=tmp_path,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    print(text[-3000:])
    assert proc.returncode == 0, text[-6000:]
    assert "passed" in text.lower()


async def _cli(settings, *args: str) -> tuple[int, str, str]:
    env = {"TECHNIC_MONGO_URL": settings.mongo_url, "TECHNIC_MONGO_DB": settings.mongo_db}
    return await run_cli("keys", *args, env=env, within=60)


async def test_keys_cli_creates_lists_and_revokes(settings):
    code, out, err = await _cli(settings, "create", "--owner", "carol", "--name", "laptop")
    assert code == 0, err
    key = out.strip()
    assert key.startswith("tsk_") and "not shown again" in err
    key_id = key.split("_")[1]
    code, out, _ = await _cli(settings, "list")
    assert code == 0 and key_id in out and "carol" in out and "active" in out
    assert key.split("_", 2)[2] not in out  # never the secret
    async with (
        running_gateway(settings) as gw,
        aiohttp.ClientSession(gw.http) as http,
        http.get("/v1/me", headers={"X-API-Key": key}) as r,
    ):
        assert (await r.json())["owner"] == "carol"
    code, _, _ = await _cli(settings, "revoke", key_id)
    assert code == 0
    code, out, _ = await _cli(settings, "list", "--owner", "carol")
    assert "revoked" in out
    async with (
        running_gateway(settings) as gw,
        aiohttp.ClientSession(gw.http) as http,
        http.post("/v1/auth/token", json={"api_key": key}) as r,
    ):
        assert (await _problem(r, 401))["detail"] == "API key revoked"
    code, _, err = await _cli(settings, "revoke", "000000000000")
    assert code == 1 and "no key" in err
