"""The channel publisher against a real Redis: offsets, epochs, history, idempotency."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from technic_stream.redis import redis_client
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.redis.interest import ChannelInterest, revision
from technic_stream.redis.resp import execute


@pytest.fixture
async def redis(settings):
    client = redis_client(settings)
    yield client
    await client.aclose()


async def _next_message(pubsub) -> dict:
    for _ in range(40):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
        if msg:
            return orjson.loads(msg["data"])
    raise AssertionError("nothing published")


async def test_offsets_are_dense_and_pubsub_carries_the_envelope(settings, redis):
    pub = ChannelPublisher(redis, settings.redis_prefix)
    pubsub = redis.pubsub()
    await pubsub.subscribe(pub.pubsub_channel("bars.1m.AAPL"))
    await pubsub.get_message(timeout=1.0)
    first = await pub.publish("bars.1m.AAPL", b'{"close": 1.5}')
    second = await pub.publish("bars.1m.AAPL", b'{"close": 1.6}')
    assert (first.offset, second.offset) == (1, 2) and first.epoch == second.epoch
    got = [await _next_message(pubsub), await _next_message(pubsub)]
    assert got == [
        {"channel": "bars.1m.AAPL", "offset": 1, "epoch": first.epoch, "data": {"close": 1.5}},
        {"channel": "bars.1m.AAPL", "offset": 2, "epoch": first.epoch, "data": {"close": 1.6}},
    ]
    await pubsub.aclose()
    assert await pub.position("bars.1m.AAPL") == (first.epoch, 2)
    with pytest.raises(ValueError, match="must be JSON"):
        await pub.publish("bars.1m.AAPL", b"{not json")


async def test_a_replayed_publish_with_its_key_is_a_no_op(settings, redis):
    pub = ChannelPublisher(redis, settings.redis_prefix)
    a = await pub.publish("alerts.u1", b'{"id": 1}', idempotency_key="alert-1")
    again = await pub.publish("alerts.u1", b'{"id": 1}', idempotency_key="alert-1")
    b = await pub.publish("alerts.u1", b'{"id": 2}', idempotency_key="alert-2")
    assert (a.offset, a.new) == (1, True)
    assert (again.offset, again.new) == (1, False)
    assert b.offset == 2
    hist = await pub.history("alerts.u1", 0, a.epoch)
    assert [o for o, _ in hist.entries] == [1, 2]


async def test_history_covers_what_it_holds_and_says_so_when_it_cannot(settings, redis):
    pub = ChannelPublisher(redis, settings.redis_prefix, history_size=5)
    for i in range(10):
        p = await pub.publish("ind.1m.MSFT", orjson.dumps({"i": i}))
    assert await redis.xlen(pub.keys("ind.1m.MSFT")[1]) == 5  # the size, exactly
    recent = await pub.history("ind.1m.MSFT", 7, p.epoch)
    assert recent.complete and [(o, orjson.loads(d)["i"]) for o, d in recent.entries] == [
        (8, 7), (9, 8), (10, 9),
    ]  # fmt: skip
    assert (await pub.history("ind.1m.MSFT", 10, p.epoch)).entries == []
    trimmed = await pub.history("ind.1m.MSFT", 2, p.epoch)  # offsets 3-5 are gone
    assert not trimmed.complete and trimmed.offset == 10
    assert not (await pub.history("ind.1m.MSFT", 7, "other-epoch")).complete
    assert not (await pub.history("ind.1m.MSFT", 12, p.epoch)).complete  # from the future


async def test_losing_the_history_starts_a_new_epoch(settings, redis):
    pub = ChannelPublisher(redis, settings.redis_prefix)
    old = await pub.publish("scan.s1", b"{}")
    await redis.delete(*pub.keys("scan.s1")[:2])  # Redis lost it (restart without persistence)
    new = await pub.publish("scan.s1", b"{}")
    assert new.offset == 1 and new.epoch != old.epoch
    assert not (await pub.history("scan.s1", 1, old.epoch)).complete


async def test_many_channels_in_one_pipeline(settings, redis):
    pub = ChannelPublisher(redis, settings.redis_prefix)
    items = [(f"ind.1m.S{i % 50}", orjson.dumps({"n": i}), None) for i in range(200)]
    done = await pub.publish_many(items)
    per_channel: dict[str, list[int]] = {}
    for p in done:
        per_channel.setdefault(p.channel, []).append(p.offset)
    assert all(offs == [1, 2, 3, 4] for offs in per_channel.values()) and len(per_channel) == 50
    await asyncio.sleep(0)


async def test_interest_lasts_until_its_latest_deadline_then_lapses(settings, redis):
    interest = ChannelInterest(redis, settings.redis_prefix)
    await interest.keep(["ind.1m.AAPL", "bars.1m.AAPL"], 600)
    await interest.keep(["ind.1m.AAPL"], 0.2)  # a shorter deadline does not shorten it
    await interest.keep(["ind.1m.MSFT"], 0.2)
    assert await interest.wanted() == {"ind.1m.AAPL", "bars.1m.AAPL", "ind.1m.MSFT"}
    await asyncio.sleep(0.4)
    assert await interest.wanted() == {"ind.1m.AAPL", "bars.1m.AAPL"}


async def test_interest_moves_its_revision_only_when_a_channel_becomes_wanted(settings, redis):
    interest = ChannelInterest(redis, settings.redis_prefix)
    _, rev0 = await interest.wanted_at()
    assert await interest.keep(["ind.1m.AAPL", "bars.1m.AAPL"], 600) == 2
    names, rev1 = await interest.wanted_at()
    assert names == {"ind.1m.AAPL", "bars.1m.AAPL"} and rev1 == rev0 + 1
    assert await interest.keep(["ind.1m.AAPL"], 900) == 0  # a renewal: same revision
    assert (await interest.wanted_at())[1] == rev1
    assert await interest.keep(["ind.1m.AAPL", "ind.1m.MSFT"], 0.1) == 1
    (rev2,) = await execute(redis, [interest.revision_command()])
    assert revision(rev2) == rev1 + 1
    await asyncio.sleep(0.2)
    assert (await interest.wanted_at())[0] == {"ind.1m.AAPL", "bars.1m.AAPL"}
    assert await interest.keep(["ind.1m.MSFT"], 600) == 1  # lapsed, so new again
    assert (await interest.wanted_at())[1] == rev1 + 2
    many = [f"ind.1m.X{i}" for i in range(4_500)]  # more than one script call holds
    assert await interest.keep(many, 600) == 4_500
    assert len(await interest.wanted()) == 4_503


async def test_multi_line_json_is_stored_on_one_line(settings, redis):
    """The gateway joins messages into one frame with newlines, so data must not hold any."""
    pub = ChannelPublisher(redis, settings.redis_prefix)
    await pub.publish("alerts.alice", b'{\n  "a": 1,\r\n  "b": "x"\n}')
    hist = await pub.history("alerts.alice", 0, (await pub.position("alerts.alice"))[0])
    assert hist.entries == [(1, b'{"a":1,"b":"x"}')]
