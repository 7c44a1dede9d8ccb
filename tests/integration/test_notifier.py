"""The notifier against the local broker, Redis, the MongoDB-protocol server and local
webhook receivers that check signatures: once per alert and target, in order, retried
with backoff, refusals to the DLQ, floods limited with a notice, and a kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from technic_stream.config import Settings
from technic_stream.kafka import Producer
from technic_stream.local.service import ServiceChild
from technic_stream.messages import Alert, alert_id, encode
from technic_stream.notify.service import Notifier, notifier_service
from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client
from technic_stream.topics import topic_name
from tests.integration.apns_server import KEY_ID as APNS_KEY_ID
from tests.integration.apns_server import TEAM_ID as APNS_TEAM_ID
from tests.integration.apns_server import TOPIC as APNS_TOPIC
from tests.integration.apns_server import ApnsServer
from tests.integration.fcm_server import FcmServer
from tests.integration.fcm_server import _error as fcm_error
from tests.integration.helpers import read_topic, running_service, until_ready
from tests.integration.webhook_receiver import WebhookReceiver

SECRET = "s3cret-s3cret-s3cret"
FAST = {"notifier_retry_base_s": 0.05, "notifier_retry_max_s": 0.4}


def running_notifier(settings: Settings) -> contextlib.AbstractAsyncContextManager[Notifier]:
    return running_service(notifier_service, settings)


async def add_webhook(settings: Settings, owner: str, url: str, hook_id: str) -> str:
    mongo = mongo_client(settings)
    try:
        await mongo[settings.mongo_db]["webhooks"].insert_one({
            "_id": hook_id, "owner": owner, "url": url, "secret": SECRET, "active": True,
            "created_at": datetime.now(UTC),
        })  # fmt: skip
    finally:
        await mongo.close()
    return hook_id


async def add_rule(settings: Settings, rule_id: str, owner: str, channels: list[str]) -> None:
    mongo = mongo_client(settings)
    try:
        await mongo[settings.mongo_db]["alert_rules"].insert_one(
            {"_id": rule_id, "owner": owner, "expr": "close > 1", "channels": channels}
        )
    finally:
        await mongo.close()


def alert(owner: str, rule_id: str, i: int, symbol: str = "AAPL") -> Alert:
    ts = 1_700_000_000_000 + i * 60_000
    return Alert(alert_id=alert_id(rule_id, symbol, "1m", ts), rule_id=rule_id, owner=owner,
                 symbol=symbol, tf="1m", ts=ts, fired_at=int(time.time() * 1000),
                 close=100.0 + i, message=f"{symbol} bar {i}")  # fmt: skip


async def fire(settings: Settings, alerts: list[Alert], extra: list[bytes] = ()) -> None:
    topic = topic_name(settings.topic_prefix, "alerts.fired")
    async with Producer(settings) as producer:
        for raw in extra:
            await producer.send(topic, raw, key=b"alice")
        for a in alerts:
            await producer.send(topic, encode(a), key=a.owner.encode())
        await producer.flush()


async def until(cond, what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_alerts_reach_each_webhook_signed_once_in_order(settings):
    async with WebhookReceiver(SECRET) as a1, WebhookReceiver(SECRET) as a2, \
            WebhookReceiver(SECRET) as b1:  # fmt: skip
        await add_webhook(settings, "alice", a1.url, "a1")
        await add_webhook(settings, "alice", a2.url, "a2")
        await add_webhook(settings, "bob", b1.url, "b1")
        await add_rule(settings, "r-hook", "alice", ["ws", "webhook"])
        await add_rule(settings, "r-ws", "alice", ["ws"])  # not for webhooks
        alice = [alert("alice", "r-hook", i) for i in range(6)]
        bob = [alert("bob", "r-unknown", i) for i in range(3)]  # no stored rule: every target
        quiet = [alert("alice", "r-ws", 0)]
        async with running_notifier(settings):
            await fire(settings, [*alice, *quiet, *bob], extra=[b"{not json"])
            await until(lambda: len(a1.accepted) == 6 and len(a2.accepted) == 6
                        and len(b1.accepted) == 3, "every delivery")  # fmt: skip
            # the same alerts again (a redelivered batch): the ledger sends nothing twice
            await fire(settings, [*alice, *bob])
            await asyncio.sleep(1.0)
    for rx, alerts in ((a1, alice), (a2, alice), (b1, bob)):
        hook = "a1" if rx is a1 else "a2" if rx is a2 else "b1"
        assert rx.unique == [f"{x.alert_id}:{hook}" for x in alerts]  # in order, once
        assert len(rx.accepted) == len(alerts) and rx.bad_signatures == 0
        first = rx.accepted[0][1]
        assert (
            first["type"] == "alert_delivery" and first["alert"]["alert_id"] == alerts[0].alert_id
        )
        assert first["text"] == alerts[0].message
    (bad,) = await read_topic(settings, topic_name(settings.topic_prefix, "dlq"), expect=1)
    assert bad.value == b"{not json"


async def test_a_receiver_down_for_a_while_gets_everything_in_order_once_back(settings):
    settings = settings.model_copy(update=FAST)
    rx = WebhookReceiver(SECRET)  # not listening yet: connections are refused
    await add_webhook(settings, "alice", rx.url, "down")
    alerts = [alert("alice", "r1", i) for i in range(20)]
    redis = redis_client(settings)
    try:
        async with running_notifier(settings):
            await fire(settings, alerts)
            queue = f"{settings.redis_prefix}notify:q:down"
            deadline = time.monotonic() + 30
            while await redis.llen(queue) < 20:  # all waiting, in order, nothing lost
                assert time.monotonic() < deadline, "deliveries did not queue"
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a few retries fail meanwhile
            async with rx:
                await until(lambda: len(rx.unique) == 20, "the backlog", within=30)
                # (the last 2xx reaches the receiver just before the notifier records it)
                deadline = time.monotonic() + 10
                while await redis.llen(queue) or await redis.zscore(
                    f"{settings.redis_prefix}notify:due", "down"
                ) is not None:  # fmt: skip
                    assert time.monotonic() < deadline, "the queue was not emptied"
                    await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    assert rx.unique == [f"{a.alert_id}:down" for a in alerts]
    assert len(rx.accepted) == 20


async def test_refusals_are_final_errors_retried_and_retry_after_honoured(settings):
    settings = settings.model_copy(update=FAST)
    refuse = WebhookReceiver(SECRET, lambda n: 400)
    # 500, 429 (Retry-After: 1), then 200: one delivery, three attempts
    flaky = WebhookReceiver(SECRET, lambda n: {1: 500, 2: (429, {"Retry-After": "1"})}.get(n, 200))
    async with refuse, flaky:
        await add_webhook(settings, "alice", refuse.url, "refuse")
        await add_webhook(settings, "bob", flaky.url, "flaky")
        one, two = alert("alice", "r1", 0), alert("bob", "r2", 0)
        async with running_notifier(settings):
            await fire(settings, [one, two])
            await until(lambda: len(flaky.accepted) == 1 and refuse.requests == 1, "answers")
            await asyncio.sleep(0.5)
    assert refuse.requests == 1  # a 400 is not retried
    times = flaky.attempts[f"{two.alert_id}:flaky"]
    assert len(times) == 3 and times[2] - times[1] >= 0.95  # waited for Retry-After
    (dead,) = await read_topic(settings, topic_name(settings.topic_prefix, "dlq"), expect=1)
    headers = dict(dead.headers)
    assert dead.key == f"{one.alert_id}:refuse".encode()
    assert headers["error-class"] == b"DeliveryFailed" and b"400" in headers["error-reason"]
    record = orjson.loads(dead.value)
    assert [h[1] for h in record["history"]] == ["400"] and record["n"] == 1


async def test_a_flooding_owner_is_held_to_the_rate_with_one_notice(settings):
    settings = settings.model_copy(update={"notifier_owner_rate": 5})
    async with WebhookReceiver(SECRET) as rx:
        await add_webhook(settings, "alice", rx.url, "w")
        alerts = [alert("alice", "r1", i) for i in range(12)]
        async with running_notifier(settings):
            await fire(settings, alerts)
            await until(lambda: len(rx.accepted) == 6, "five alerts and a notice")
            await asyncio.sleep(0.5)
    kinds = [body["type"] for _, body, _ in rx.accepted]
    if time.gmtime(rx.accepted[0][2]).tm_min != time.gmtime(rx.accepted[-1][2]).tm_min:
        return  # the minute turned mid-test: a second window opened; nothing to judge
    assert kinds == ["alert_delivery"] * 5 + ["notice"]
    assert "More than 5 alerts this minute" in rx.accepted[-1][1]["text"]
    redis = redis_client(settings)
    try:
        limited = [await redis.get(f"{settings.redis_prefix}notify:d:{a.alert_id}:w")
                   for a in alerts[5:]]  # fmt: skip
    finally:
        await redis.aclose()
    assert limited == [b"limited"] * 7


async def test_kill_9_mid_burst_every_alert_reaches_every_target_once(settings, tmp_path: Path):
    n = 1_000
    async with WebhookReceiver(SECRET) as r1, WebhookReceiver(SECRET) as r2:
        await add_webhook(settings, "alice", r1.url, "k1")
        await add_webhook(settings, "bob", r2.url, "k2")
        alerts = [alert(owner, "burst", i, symbol=f"S{i % 50}")
                  for i in range(n // 2) for owner in ("alice", "bob")]  # fmt: skip
        child = ServiceChild(settings, "notifier", tmp_path / "n1.log")
        await child.start()
        await until_ready(child)
        await fire(settings, alerts)
        await until(lambda: len(r1.accepted) + len(r2.accepted) >= 300, "the burst to start")
        child.signal(signal.SIGKILL)
        await child.wait()
        before = len(r1.accepted) + len(r2.accepted)
        assert before < n, "the burst was over before the kill: nothing was tested"
        again = ServiceChild(settings, "notifier", tmp_path / "n2.log")
        await again.start()
        try:
            await until(lambda: len(r1.unique) + len(r2.unique) == n, "every alert",
                        within=90)  # fmt: skip
        finally:
            again.signal(signal.SIGTERM)
            await asyncio.wait_for(again.wait(), 60)
    for rx, owner, hook in ((r1, "alice", "k1"), (r2, "bob", "k2")):
        want = [f"{a.alert_id}:{hook}" for a in alerts if a.owner == owner]
        assert rx.unique == want  # every one, in order
        # a second copy only for what was in flight at the kill (the receiver's 2xx not
        # recorded yet), one delivery per target at a time; the event id lets it drop it
        assert len(rx.accepted) - len(rx.unique) <= 1
    assert r1.bad_signatures == r2.bad_signatures == 0


async def test_fcm_pushes_with_oauth_and_unregistered_devices_are_deactivated(settings, tmp_path):
    def answer(token: str, n: int):
        if token == "gone":
            return fcm_error(404, "NOT_FOUND", "UNREGISTERED")
        if token == "busy" and n == 1:
            resp = fcm_error(503, "UNAVAILABLE")
            resp.headers["Retry-After"] = "1"
            return resp
        if token == "bad":
            return fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        return None

    async with FcmServer(answer) as fcm:
        key = tmp_path / "service-account.json"
        key.write_bytes(orjson.dumps(fcm.credentials))
        settings = settings.model_copy(update={
            **FAST, "notifier_fcm_credentials": str(key), "notifier_fcm_url": fcm.url,
        })  # fmt: skip
        mongo = mongo_client(settings)
        devices = mongo[settings.mongo_db]["devices"]
        for dev_id, owner, platform, token in (
            ("d-good", "alice", "fcm", "good"), ("d-gone", "alice", "fcm", "gone"),
            ("d-busy", "bob", "fcm", "busy"), ("d-bad", "carol", "fcm", "bad"),
            ("d-ios", "alice", "apns", "ios"),
        ):  # fmt: skip
            await devices.insert_one({"_id": dev_id, "owner": owner, "platform": platform,
                                      "token": token, "active": True})  # fmt: skip
        await add_rule(settings, "r-push", "alice", ["push"])
        first = [alert("alice", "r-push", i) for i in range(3)]
        busy, bad = alert("bob", "r-b", 0), alert("carol", "r-c", 0)
        try:
            async with running_notifier(settings):
                await fire(settings, [*first, busy, bad])
                await until(lambda: len(fcm.messages) == 4, "the pushes")
                await asyncio.sleep(0.5)
                # later alerts skip the deactivated device
                await fire(settings, [alert("alice", "r-push", 10)])
                await until(lambda: len(fcm.messages) == 5, "the next push")
                await asyncio.sleep(0.5)
            gone = await devices.find_one({"_id": "d-gone"})
            good = await devices.find_one({"_id": "d-good"})
        finally:
            await mongo.close()
    got = [(m["token"], m["data"]["alert_id"]) for m in fcm.messages]
    assert got[:3] == [("good", a.alert_id) for a in first]
    assert ("busy", busy.alert_id) in got and got[-1][0] == "good"
    assert fcm.attempts["busy"] == 2 and fcm.attempts["bad"] == 1  # 503 retried, 400 final
    assert fcm.attempts["gone"] == 3  # each of the first batch's alerts, then deactivated
    assert not gone["active"] and "UNREGISTERED" in gone["deactivated_reason"]
    assert good["active"]
    assert "ios" not in fcm.attempts  # APNs: not wired, not sent through FCM
    msg = fcm.messages[0]
    assert msg["notification"] == {"title": "AAPL: r-push", "body": first[0].message}
    assert fcm.token_requests == 1 and fcm.unauthorized == 0  # one OAuth token, cached


async def test_apns_over_http2_with_a_provider_token_and_gone_tokens_deactivated(
    settings, tmp_path
):
    def answer(token: str, n: int):
        return {"ios-bad": (400, "BadDeviceToken"), "ios-gone": (410, "Unregistered"),
                "ios-busy": (429, "TooManyRequests") if n == 1 else None,
                "ios-exp": (403, "ExpiredProviderToken") if n == 1 else None,
                "ios-503": (503, "ServiceUnavailable") if n == 1 else None,
                "ios-huge": (413, "PayloadTooLarge")}.get(token)  # fmt: skip

    async with ApnsServer(answer) as apns:
        key = tmp_path / "AuthKey.p8"
        key.write_text(apns.key_pem)
        settings = settings.model_copy(update={
            **FAST, "notifier_apns_key": str(key), "notifier_apns_key_id": APNS_KEY_ID,
            "notifier_apns_team_id": APNS_TEAM_ID, "notifier_apns_topic": APNS_TOPIC,
            "notifier_apns_url": apns.url,
        })  # fmt: skip
        mongo = mongo_client(settings)
        devices = mongo[settings.mongo_db]["devices"]
        tokens = ["ios-good", "ios-bad", "ios-gone", "ios-busy", "ios-exp", "ios-huge", "ios-503"]
        for i, token in enumerate(tokens):
            await devices.insert_one({"_id": f"d{i}", "owner": f"u{i}", "platform": "apns",
                                      "token": token, "active": True})  # fmt: skip
        alerts = [alert(f"u{i}", "r-ios", 0) for i in range(len(tokens))]
        try:
            async with running_notifier(settings):
                await fire(settings, alerts)
                await until(lambda: len(apns.accepted) == 4, "good, busy, exp and 503 pushes")
                await asyncio.sleep(0.5)
            states = {d["token"]: d async for d in devices.find({})}
        finally:
            await mongo.close()
    delivered = {t: body for t, body, _ in apns.accepted}
    assert sorted(delivered) == ["ios-503", "ios-busy", "ios-exp", "ios-good"]
    assert apns.attempts["ios-busy"] == apns.attempts["ios-exp"] == apns.attempts["ios-503"] == 2
    assert apns.attempts["ios-huge"] == 1  # other 4xx: final
    body = delivered["ios-good"]
    assert body["aps"]["alert"] == {"title": "AAPL: r-ios", "body": alerts[0].message}
    assert body["alert_id"] == alerts[0].alert_id and body["event_id"].endswith(":d0")
    assert not states["ios-bad"]["active"] and not states["ios-gone"]["active"]
    assert "Unregistered" in states["ios-gone"]["deactivated_reason"]
    assert states["ios-good"]["active"] and states["ios-huge"]["active"]
    assert apns.refused_auth == 0
    headers = apns.accepted[0][2]
    assert headers["apns-push-type"] == "alert" and headers["apns-topic"] == APNS_TOPIC


async def test_a_digest_sends_one_message_per_bar_with_all_its_alerts(settings):
    settings = settings.model_copy(update={**FAST, "notifier_digest_s": 0.5})
    bar_ts = 1_700_000_000_000

    def on_bar(i: int, symbol: str, ts: int) -> Alert:
        return Alert(alert_id=alert_id(f"r{i}", symbol, "1m", ts), rule_id=f"r{i}",
                     owner="alice", symbol=symbol, tf="1m", ts=ts, fired_at=int(time.time() * 1000),
                     close=10.0 + i, message=f"{symbol} r{i}")  # fmt: skip

    first = [on_bar(i, s, bar_ts) for i, s in enumerate(["AAPL", "MSFT", "IBM", "FB"])]
    other = on_bar(9, "GOOG", bar_ts + 60_000)
    async with WebhookReceiver(SECRET) as rx:
        await add_webhook(settings, "alice", rx.url, "dg")
        async with running_notifier(settings):
            await fire(settings, [*first[:2], other, *first[2:]])
            await until(lambda: len(rx.accepted) == 2, "two digests")
            await fire(settings, first)  # redelivered: already in a digest
            await asyncio.sleep(1.5)
            late = on_bar(5, "NFLX", bar_ts)  # the bar's digest went out: a digest of its own
            await fire(settings, [late])
            await until(lambda: len(rx.accepted) == 3, "the late alert's digest")
            await asyncio.sleep(0.5)
    bodies = [body for _, body, _ in rx.accepted]
    assert all(b["type"] == "alert_digest" for b in bodies)
    by_ts = {}
    for b in bodies:
        by_ts.setdefault(b["ts"], []).append([a["alert_id"] for a in b["alerts"]])
    assert by_ts[bar_ts] == [[a.alert_id for a in first], [late.alert_id]]
    assert by_ts[bar_ts + 60_000] == [[other.alert_id]]
    assert (
        next(b["text"] for b in bodies if len(b["alerts"]) == 4)
        == "AAPL r0; MSFT r1; IBM r2; FB r3"
    )
    assert len(rx.unique) == 3
