"""The Alpaca feed adapter against a local server speaking the v2 stream protocol."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from technic_stream.kafka import DeadLetterQueue, Producer
from technic_stream.local import free_port
from technic_stream.marketdata.alpaca import AlpacaConfig, AlpacaFeed, FeedError, parse_rfc3339_ms
from technic_stream.messages import Bar, Trade, decode
from technic_stream.topics import topic_name
from tests.integration.alpaca_server import AlpacaServer, recorded_session
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.timeout(120)


async def _serve(server: AlpacaServer) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(server.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"ws://127.0.0.1:{port}/v2/iex"


def _feed(settings, producer, url, **kw) -> AlpacaFeed:
    p = settings.topic_prefix
    config = AlpacaConfig(url=url, key="PKTEST", secret=kw.pop("secret", "s3cret"),
                          trades=("*",), backoff_min_s=0.05, backoff_max_s=0.2,
                          limit_backoff_s=0.3, **kw)  # fmt: skip
    return AlpacaFeed(config, producer, trades_topic=topic_name(p, "md.trades"),
                      bars_topic=topic_name(p, "md.bars"),
                      dlq=DeadLetterQueue(producer, topic_name(p, "dlq")))  # fmt: skip


async def test_reconnects_after_drops_without_losing_or_duplicating(settings):
    messages = recorded_session()
    n_trades = sum(m["T"] == "t" for m in messages)
    n_bars = sum(m["T"] in ("b", "u") and m["S"] != "BAD" for m in messages)
    server = AlpacaServer(
        messages, drops=[(60, "close"), (140, "abort")], overlap=9, refuse_next=406
    )
    runner, url = await _serve(server)
    stop = asyncio.Event()
    try:
        async with Producer(settings) as producer:
            feed = _feed(settings, producer, url)
            task = asyncio.create_task(feed.run(stop))
            await asyncio.wait_for(server.done.wait(), 60)
            for _ in range(400):  # the last frames are in flight to Kafka
                if feed.sent_trades + feed.sent_bars >= n_trades + n_bars or task.done():
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(task, 10)
    finally:
        await runner.cleanup()
    # refused once (406), dropped twice: four connections, each subscribed but the first
    assert server.connections == 4 and len(server.subscriptions) == 3
    assert server.subscriptions[0]["trades"] == ["*"] and server.subscriptions[0]["bars"] == ["*"]
    assert feed.duplicates >= 2 * 9 - 2  # the overlap came again and was dropped

    p = settings.topic_prefix
    trades = [decode(r.value, Trade) for r in
              await read_topic(settings, topic_name(p, "md.trades"), expect=n_trades)]  # fmt: skip
    ids = [t.trade_id for t in trades]
    want_ids = [str(m["i"]) for m in messages if m["T"] == "t"]
    assert sorted(ids) == sorted(want_ids)  # every trade exactly once
    first = next(m for m in messages if m["T"] == "t")
    got = next(t for t in trades if t.trade_id == str(first["i"]))
    assert got.ts == parse_rfc3339_ms(first["t"]) and got.price == first["p"]

    bars = [decode(r.value, Bar) for r in
            await read_topic(settings, topic_name(p, "md.bars"), expect=n_bars)]  # fmt: skip
    assert len(bars) == n_bars
    versions = sorted((b.symbol, b.ts, b.volume) for b in bars)
    want = sorted(
        (m["S"], parse_rfc3339_ms(m["t"]), float(m["v"]))
        for m in messages if m["T"] in ("b", "u") and m["S"] != "BAD"
    )  # fmt: skip
    assert versions == want  # each bar and each correction once
    dlq = await read_topic(settings, topic_name(p, "dlq"), expect=1)
    assert len(dlq) == 1 and b"BAD" in dlq[0].value


async def test_bad_credentials_stop_the_feed_with_the_reason(settings):
    server = AlpacaServer(recorded_session(minutes=1))
    runner, url = await _serve(server)
    try:
        async with Producer(settings) as producer:
            feed = _feed(settings, producer, url, secret="wrong")
            with pytest.raises(FeedError, match="402 auth failed"):
                await asyncio.wait_for(feed.run(asyncio.Event()), 10)
    finally:
        await runner.cleanup()
    assert server.auth_failures == 1  # no hammering with bad credentials


def test_rfc3339_with_nanoseconds_and_offsets():
    assert parse_rfc3339_ms("2021-02-22T15:51:44.208123456Z") == 1614009104208
    assert parse_rfc3339_ms("2021-02-22T10:51:44-05:00") == 1614009104000
    with pytest.raises(ValueError):
        parse_rfc3339_ms("2021-02-22 15:51:44")
