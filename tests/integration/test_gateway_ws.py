"""The WebSocket protocol against a running gateway, the local Redis and MongoDB server."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson

from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client
from tests.integration.gateway_helpers import (
    WsClient,
    channel_publisher,
    running_gateway,
    ws_client,
)


def _data(i: int, pad: int = 0) -> bytes:
    doc: dict[str, object] = {"i": i}
    if pad:
        doc["pad"] = "x" * pad
    return orjson.dumps(doc)


async def _pubs(client, n: int, channel: str, within: float = 10.0) -> list[dict]:
    out: list[dict] = []
    while len(out) < n:
        msg = await client.recv(within)
        if msg["type"] == "pub" and msg["channel"] == channel:
            out.append(msg)
    return out


async def test_recovery_returns_exactly_the_missed_messages(settings):
    ch = "alerts.alice"
    async with (
        running_gateway(settings) as gw,
        channel_publisher(settings) as pub,
        aiohttp.ClientSession() as http,
    ):
        token = gw.token("alice")
        async with ws_client(http, gw.ws_url, token) as c:
            sub = await c.subscribe(ch)
            assert sub["type"] == "subscribed" and sub["offset"] == 0, sub
            for i in range(1, 6):
                await pub.publish(ch, _data(i))
            got = await _pubs(c, 5, ch)
            assert [m["offset"] for m in got] == [1, 2, 3, 4, 5]
            assert [m["data"]["i"] for m in got] == [1, 2, 3, 4, 5]
            epoch = got[-1]["epoch"]
        # offline: 6..12 published
        for i in range(6, 13):
            await pub.publish(ch, _data(i))

        # back, while 13..40 keep coming during the subscribe: the merge must be exact
        async def more() -> None:
            for i in range(13, 41):
                await pub.publish(ch, _data(i))
                await asyncio.sleep(0.002)

        async with ws_client(http, gw.ws_url, token) as c:
            publishing = asyncio.create_task(more())
            sub = await c.subscribe(ch, since={"offset": 5, "epoch": epoch})
            assert sub["recovered"] is True and sub["epoch"] == epoch, sub
            await publishing
            got = await _pubs(c, 35, ch)
            assert [m["offset"] for m in got] == list(range(6, 41))
            assert [m["data"]["i"] for m in got] == list(range(6, 41))
            await c.send({"cmd": "ping"})
            assert (await c.recv())["type"] == "pong"  # and nothing else (no duplicate) came


async def test_expired_history_answers_recovered_false_with_the_current_position(settings):
    ch = "ind.1m.AAPL"
    async with (
        running_gateway(settings, channel_history_size=3) as gw,
        channel_publisher(settings, history_size=3) as pub,
        aiohttp.ClientSession() as http,
    ):
        token = gw.token("alice")
        async with ws_client(http, gw.ws_url, token) as c:
            await c.subscribe(ch)
            await pub.publish(ch, _data(1))
            (first,) = await _pubs(c, 1, ch)
        for i in range(2, 12):  # 10 more; the history keeps 3
            await pub.publish(ch, _data(i))
        async with ws_client(http, gw.ws_url, token) as c:
            sub = await c.subscribe(ch, since={"offset": 1, "epoch": first["epoch"]})
            assert sub["recovered"] is False and sub["offset"] == 11, sub
            await pub.publish(ch, _data(12))
            (live,) = await _pubs(c, 1, ch)
            assert live["offset"] == 12 and live["data"] == {"i": 12}
            # an unknown epoch cannot be recovered either
            await c.send({"cmd": "unsubscribe", "channel": ch})
            await c.until(lambda m: m["type"] == "unsubscribed")
            sub = await c.subscribe(ch, since={"offset": 12, "epoch": "not-the-epoch"})
            assert sub["recovered"] is False and sub["offset"] == 12, sub
        # within the history: recovered
        async with ws_client(http, gw.ws_url, token) as c:
            sub = await c.subscribe(ch, since={"offset": 10, "epoch": first["epoch"]})
            assert sub["recovered"] is True, sub
            got = await _pubs(c, 2, ch)
            assert [m["offset"] for m in got] == [11, 12]


async def test_a_lost_pubsub_connection_ends_subscriptions_and_they_recover(settings):
    ch = "alerts.alice"
    async with (
        running_gateway(settings) as gw,
        channel_publisher(settings) as pub,
        aiohttp.ClientSession() as http,
        ws_client(http, gw.ws_url, gw.token("alice")) as c,
    ):
        await c.subscribe(ch)
        await pub.publish(ch, _data(1))
        (m1,) = await _pubs(c, 1, ch)
        redis = redis_client(settings)
        try:
            killed = await redis.client_kill_filter(_type="pubsub")
        finally:
            await redis.aclose()
        assert killed >= 1
        notice = await c.until(lambda m: m["type"] == "unsubscribed")
        assert notice == {
            "type": "unsubscribed", "channel": ch, "reason": "insufficient_state",
            "resubscribe": True, "offset": 1, "epoch": m1["epoch"],
        }  # fmt: skip
        await pub.publish(ch, _data(2))  # published while nobody listened
        for _ in range(100):  # the hub reconnects within moments
            sub = await c.subscribe(ch, since={"offset": 1, "epoch": m1["epoch"]})
            if sub["type"] == "subscribed":
                break
            assert sub["code"] == 4503, sub
            await asyncio.sleep(0.05)
        assert sub["recovered"] is True, sub
        (m2,) = await _pubs(c, 1, ch)
        assert m2["offset"] == 2 and m2["data"] == {"i": 2}


async def test_a_slow_client_is_disconnected_while_a_fast_one_gets_every_message(settings):
    ch = "alerts.alice"
    n, pad = 300, 60_000  # ~18 MB: more than the socket buffers between them hold
    async with (
        running_gateway(settings, gateway_queue_max=16) as gw,
        channel_publisher(settings) as pub,
        aiohttp.ClientSession() as http,
    ):
        token = gw.token("alice")
        async with (
            ws_client(http, gw.ws_url, token) as fast,
            ws_client(http, gw.ws_url, token) as slow,
        ):
            await fast.subscribe(ch)
            await slow.subscribe(ch)  # then never reads while the messages flow

            async def publish() -> None:
                for i in range(1, n + 1):
                    await pub.publish(ch, _data(i, pad))

            publishing = asyncio.create_task(publish())
            got = await _pubs(fast, n, ch, within=30)
            await publishing
            assert [m["offset"] for m in got] == list(range(1, n + 1))
            assert all(m["data"]["i"] == m["offset"] for m in got)
            assert await slow.closed() == 4008


async def test_drop_oldest_sends_lagged_and_conflate_keeps_the_latest(settings):
    n, pad = 300, 60_000
    async with (
        running_gateway(settings, gateway_queue_max=16) as gw,
        channel_publisher(settings) as pub,
        aiohttp.ClientSession() as http,
        ws_client(http, gw.ws_url, gw.token("alice")) as slow,
    ):
        await slow.subscribe("alerts.alice", policy="drop_oldest")
        await slow.subscribe("ind.1m.MSFT")  # market channels conflate by default
        for i in range(1, n + 1):
            await pub.publish("alerts.alice", _data(i, pad))
            await pub.publish("ind.1m.MSFT", _data(i, pad))
        await asyncio.sleep(0.5)  # the gateway queues what it cannot write
        seen: dict[str, list[int]] = {"alerts.alice": [], "ind.1m.MSFT": []}
        lagged = 0
        while seen["alerts.alice"][-1:] != [n] or seen["ind.1m.MSFT"][-1:] != [n]:
            msg = await slow.recv()
            if msg["type"] == "lagged":
                assert msg["channel"] == "alerts.alice" and msg["dropped"] > 0
                lagged += msg["dropped"]
            elif msg["type"] == "pub":
                seen[msg["channel"]].append(msg["offset"])
        for offsets in seen.values():
            assert offsets == sorted(set(offsets))  # in order, no duplicates
            assert len(offsets) < n  # the slow client really lost some
        assert lagged == n - len(seen["alerts.alice"])


async def test_no_client_reads_another_owners_channels(settings):
    mongo = mongo_client(settings)
    db = mongo[settings.mongo_db]
    await db["scans"].insert_many([{"_id": "scan-a", "owner": "alice"},
                                   {"_id": "scan-b", "owner": "bob"}])  # fmt: skip
    await mongo.close()
    async with running_gateway(settings) as gw, aiohttp.ClientSession() as http:
        async with ws_client(http, gw.ws_url, gw.token("alice")) as c:
            for channel in ("alerts.alice", "scan.scan-a", "bars.1d.AAPL", "ind.1m.AAPL"):
                assert (await c.subscribe(channel))["type"] == "subscribed", channel
            for channel in ("alerts.bob", "scan.scan-b", "scan.no-such-scan"):
                err = await c.subscribe(channel)
                assert (err["type"], err["code"]) == ("error", 4403), err
            for channel in ("alerts.", "ind.7m.AAPL", "bars.1d.aapl", "foo.bar", "scan.a b"):
                err = await c.subscribe(channel)
                assert (err["type"], err["code"]) == ("error", 4404), err
        async with ws_client(http, gw.ws_url, gw.token("root", admin=True)) as admin:
            for channel in ("alerts.bob", "scan.scan-b"):
                assert (await admin.subscribe(channel))["type"] == "subscribed", channel
        async with http.ws_connect(gw.ws_url) as ws:  # no token: connect must come first
            await ws.send_str('{"cmd": "subscribe", "channel": "alerts.bob"}')
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401


async def test_bad_frames_unknown_commands_and_tokens_get_the_documented_codes(settings):
    async with (
        running_gateway(settings, gateway_max_frame_bytes=1024, gateway_connect_timeout_s=0.5)
        as gw,
        aiohttp.ClientSession() as http,
    ):  # fmt: skip
        token = gw.token("alice")
        cases = [
            ("not json", lambda ws: ws.send_str("{nope"), 4400),
            ("array", lambda ws: ws.send_str("[1, 2]"), 4400),
            ("binary", lambda ws: ws.send_bytes(b"\x00\x01"), 4400),
            ("oversize", lambda ws: ws.send_str('{"cmd":"ping","x":"' + "y" * 2000 + '"}'), 1009),
        ]
        for name, act, code in cases:
            async with ws_client(http, gw.ws_url, token) as c:
                await act(c.ws)
                assert await c.closed() == code, name
        async with ws_client(http, gw.ws_url, token) as c:
            await c.send({"cmd": "frobnicate"})
            err = await c.recv()
            assert (err["type"], err["code"]) == ("error", 4405) and "frobnicate" in err["message"]
            err = await c.subscribe("alerts.alice", since={"offset": "x"})
            assert (err["type"], err["code"]) == ("error", 4400), err
            err = await c.subscribe("alerts.alice", policy="sometimes")
            assert (err["type"], err["code"]) == ("error", 4400), err
            await c.send({"cmd": "ping"})
            assert (await c.recv())["type"] == "pong"  # still connected after the errors
        for bad in (gw.token("alice", ttl_s=-60), "not.a.token", token[:-4] + "AAAA"):
            async with http.ws_connect(gw.ws_url, headers={"Authorization": f"Bearer {bad}"}) as ws:
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401, bad
        async with http.ws_connect(gw.ws_url) as ws:  # the connect command, then a token
            await ws.send_str(orjson.dumps({"id": 1, "cmd": "connect", "token": token}).decode())
            hello = orjson.loads((await ws.receive()).data)
            assert hello["type"] == "connected" and hello["owner"] == "alice" and hello["id"] == 1
        async with http.ws_connect(gw.ws_url) as ws:  # says nothing
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401
        short = gw.token("alice", ttl_s=1)  # expires while connected
        async with ws_client(http, gw.ws_url, short) as c:
            await c.subscribe("alerts.alice")
            assert await c.closed(within=10) == 4401


async def test_connection_and_subscription_limits(settings):
    async with (
        running_gateway(settings, gateway_max_connections_per_key=2, gateway_max_subscriptions=2)
        as gw,
        aiohttp.ClientSession() as http,
    ):  # fmt: skip
        token = gw.token("alice")
        async with ws_client(http, gw.ws_url, token) as c1, ws_client(http, gw.ws_url, token):
            async with http.ws_connect(
                gw.ws_url, headers={"Authorization": f"Bearer {token}"}
            ) as ws:
                await ws.receive()
                assert ws.close_code == 4429
            await c1.subscribe("ind.1m.A")
            await c1.subscribe("ind.1m.B")
            err = await c1.subscribe("ind.1m.C")
            assert (err["type"], err["code"]) == ("error", 4413), err
            err = await c1.subscribe("ind.1m.A")
            assert (err["type"], err["code"]) == ("error", 4409), err


async def test_subscribe_rate_limit_holds_across_two_gateways(settings):
    limits = {"gateway_subscribe_rate": 0.01, "gateway_subscribe_burst": 5}
    async with (
        running_gateway(settings, **limits) as gw1,
        running_gateway(settings, **limits) as gw2,
        aiohttp.ClientSession() as http,
    ):
        token = gw1.token("alice")  # the same secret: either gateway accepts it
        async with ws_client(http, gw1.ws_url, token) as a, ws_client(http, gw2.ws_url, token) as b:
            for i in range(3):
                assert (await a.subscribe(f"ind.1m.A{i}"))["type"] == "subscribed"
            for i in range(2):
                assert (await b.subscribe(f"ind.1m.B{i}"))["type"] == "subscribed"
            err = await b.subscribe("ind.1m.B9")
            assert (err["type"], err["code"]) == ("error", 4429), err
            assert err["retry_after_s"] > 1
            err = await a.subscribe("ind.1m.A9")
            assert (err["type"], err["code"]) == ("error", 4429), err


async def test_market_subscriptions_register_interest_for_the_engine(settings):
    from technic_stream.redis.interest import ChannelInterest

    redis = redis_client(settings)
    interest = ChannelInterest(redis, settings.redis_prefix)
    try:
        async with running_gateway(settings) as gw, aiohttp.ClientSession() as http:
            async with ws_client(http, gw.ws_url, gw.token("alice")) as c:
                await c.subscribe("ind.1m.AAPL")
                await c.subscribe("alerts.alice")
                for _ in range(50):
                    if "ind.1m.AAPL" in await interest.wanted():
                        break
                    await asyncio.sleep(0.02)
                assert await interest.wanted() == {"ind.1m.AAPL"}
                score = await redis.zscore(interest.key, "ind.1m.AAPL")
            await asyncio.sleep(0.1)
            # after the last unsubscribe it stays wanted for the history's age
            later = await redis.zscore(interest.key, "ind.1m.AAPL")
            assert later - score > (settings.channel_history_ttl_s - 120) * 1000
    finally:
        await redis.aclose()


async def test_shutdown_closes_clients_with_going_away_and_readiness_follows_pubsub(settings):
    async with aiohttp.ClientSession() as http:
        async with running_gateway(settings) as gw, channel_publisher(settings) as pub:
            await gw.gw.ready()
            redis = redis_client(settings)
            try:
                await redis.client_kill_filter(_type="pubsub")
            finally:
                await redis.aclose()
            # every loop iteration: the reconnect takes several (connect, subscribe reply)
            states: list[bool] = []
            async with asyncio.timeout(5):
                while not (False in states and states[-1]):
                    try:
                        await gw.gw.ready()
                        states.append(True)
                    except ConnectionError:
                        states.append(False)
                    await asyncio.sleep(0)
            # red while reconnecting, then green again
            ws = await http.ws_connect(
                gw.ws_url, headers={"Authorization": f"Bearer {gw.token('a')}"}
            )
            c = WsClient(ws)
            assert (await c.recv())["type"] == "connected"
            await c.subscribe("alerts.a")
            await pub.publish("alerts.a", _data(1))
            assert (await _pubs(c, 1, "alerts.a"))[0]["offset"] == 1
        # the gateway has stopped: its clients were closed with 1001 GOING_AWAY
        assert await c.closed() == 1001
        await ws.close()


async def test_a_burst_of_clients_on_one_channel_all_subscribe_and_receive(settings):
    """200 clients subscribing at once (more than the Redis pool's connections) all get
    their reply and the next message; none sees a broken frame."""
    n = 200
    async with (
        running_gateway(settings, gateway_max_connections_per_key=1_000,
                        gateway_subscribe_burst=1_000) as gw,
        channel_publisher(settings) as pub,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):  # fmt: skip
        token = gw.token("alice")
        async with contextlib.AsyncExitStack() as stack:
            clients = await asyncio.gather(
                *(stack.enter_async_context(ws_client(http, gw.ws_url, token)) for _ in range(n))
            )
            replies = await asyncio.gather(*(c.subscribe("ind.1m.BURST") for c in clients))
            assert [r["type"] for r in replies] == ["subscribed"] * n
            await pub.publish("ind.1m.BURST", _data(1))
            got = await asyncio.gather(*(_pubs(c, 1, "ind.1m.BURST") for c in clients))
            assert all(g[0]["data"] == {"i": 1} for g in got)


async def test_a_gap_or_new_epoch_on_the_live_stream_forces_a_resubscribe(settings):
    """Messages that bypass the publisher (a skipped offset, another epoch) are not passed
    on as if nothing happened: the subscription ends with resubscribe: true."""
    ch = "alerts.alice"
    async with (
        running_gateway(settings, gateway_idle_timeout_s=0.5) as gw,
        channel_publisher(settings) as pub,
        aiohttp.ClientSession() as http,
    ):
        redis = redis_client(settings)
        try:
            async with ws_client(http, gw.ws_url, gw.token("alice")) as c:
                await c.subscribe(ch)
                first = await pub.publish(ch, _data(1))
                await _pubs(c, 1, ch)
                raw = pub.pubsub_channel(ch)
                env = b'{"channel":"%s","offset":%d,"epoch":"%s","data":{"i":9}}'
                await redis.publish(raw, env % (ch.encode(), 3, first.epoch.encode()))
                notice = await c.until(lambda m: m["type"] == "unsubscribed")
                assert (notice["reason"], notice["offset"]) == ("gap", 1), notice
                sub = await c.subscribe(ch, since={"offset": 1, "epoch": first.epoch})
                assert sub["recovered"] is True
                await redis.publish(raw, env % (ch.encode(), 2, b"another-epoch"))
                notice = await c.until(lambda m: m["type"] == "unsubscribed")
                assert notice["reason"] == "new_epoch" and notice["resubscribe"] is True
                # no subscriptions left and nothing said for longer than the idle timeout
                assert await c.closed(within=5) == 4408
        finally:
            await redis.aclose()
