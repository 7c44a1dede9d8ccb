"""The alert gate against a real Redis: cooldown, expiry, throttle, ``once``, replays, and
firings appended to the owner's channel in the same step as the decision."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest

from technic_stream.redis import redis_client
from technic_stream.redis.alert_gate import AlertGate, GateRequest, GateRule
from technic_stream.redis.channels import ChannelPublisher


@pytest.fixture
async def redis(settings):
    client = redis_client(settings)
    yield client
    await client.aclose()


def req(rule: str, symbol: str, *, mode: str = "once_per_bar_close", cooldown_s: int = 0,
        expires_at: int | None = None, throttle_max: int = 100, window_s: int = 60,
        version: int = 1) -> GateRequest:  # fmt: skip
    aid = uuid.uuid4().hex
    data = orjson.dumps({"alert_id": aid, "symbol": symbol})
    terms = GateRule(rule, version, mode, cooldown_s, expires_at, throttle_max, window_s,
                     "alerts.ann")  # fmt: skip
    return GateRequest(terms, symbol, aid, data)


def gate_for(redis, settings) -> tuple[AlertGate, ChannelPublisher]:
    pub = ChannelPublisher(redis, settings.redis_prefix)
    return AlertGate(redis, settings.redis_prefix, publisher=pub), pub


async def _channel_ids(pub: ChannelPublisher) -> list[str]:
    epoch, _ = await pub.position("alerts.ann")
    return [
        orjson.loads(d)["alert_id"] for _, d in (await pub.history("alerts.ann", 0, epoch)).entries
    ]


async def test_cooldown_is_per_symbol(settings, redis):
    gate, _ = gate_for(redis, settings)
    first = await gate.decide(
        [req("cool", "AAA", cooldown_s=60), req("cool", "BBB", cooldown_s=60)]
    )
    again = await gate.decide([req("cool", "AAA", cooldown_s=60)])
    assert [v.fire for v in first] == [True, True]
    assert [v.fire for v in again] == [False]  # AAA fired under a minute ago


async def test_an_expired_rule_stops_firing_and_says_so(settings, redis):
    gate, _ = gate_for(redis, settings)
    past = int(time.time() * 1000) - 1_000
    (v,) = await gate.decide([req("old", "AAA", expires_at=past)])
    assert not v.fire and v.changed and v.status == "expired"
    assert (await gate.status("old"))["status"] == "expired"


async def test_the_throttle_pauses_the_rule_after_its_budget(settings, redis):
    gate, pub = gate_for(redis, settings)
    first = await gate.decide([req("loud", f"S{i}", throttle_max=3) for i in range(2)])
    rest = await gate.decide([req("loud", f"T{i}", throttle_max=3) for i in range(3)])
    assert [v.fire for v in first + rest] == [True, True, True, False, False]
    assert rest[1].changed and rest[1].status == "paused" and "3 firings" in rest[1].reason
    status = await gate.status("loud")
    assert status["status"] == "paused" and status["fired"] == "3"
    # a newer version of the rule re-arms it
    (v,) = await gate.decide([req("loud", "U0", throttle_max=3, version=2)])
    assert v.fire and (await gate.status("loud"))["status"] == "active"
    assert len(await _channel_ids(pub)) == 4


async def test_once_fires_once(settings, redis):
    gate, _ = gate_for(redis, settings)
    verdicts = await gate.decide([req("one", "AAA", mode="once"), req("one", "BBB", mode="once")])
    assert [v.fire for v in verdicts] == [True, False]
    assert (await gate.status("one"))["status"] == "fired"


async def test_a_replay_gets_the_recorded_decision_and_appends_nothing(settings, redis):
    gate, pub = gate_for(redis, settings)
    asked = [req("rep", "AAA"), req("rep", "BBB", cooldown_s=60)]
    first = await gate.decide(asked)
    assert [(v.fire, v.replayed) for v in first] == [(True, False), (True, False)]
    ids = await _channel_ids(pub)
    assert ids == [q.alert_id for q in asked]  # in the channel, in order
    again = await gate.decide(asked)  # a crash before the commit: the same ids again
    assert [(v.fire, v.replayed) for v in again] == [(True, True), (True, True)]
    assert await _channel_ids(pub) == ids  # nothing appended twice


async def test_an_alert_asked_twice_in_one_call_is_decided_once(settings, redis):
    gate, pub = gate_for(redis, settings)
    q = req("twice", "AAA")
    verdicts = await gate.decide([q, q])
    assert [(v.fire, v.replayed) for v in verdicts] == [(True, False), (True, True)]
    assert await _channel_ids(pub) == [q.alert_id]


async def test_a_decision_is_found_in_the_next_span_and_lapses_after_it(settings, redis):
    """Decisions are kept in spans of ``decision_ttl_s`` (here 1 s of Redis's clock): a
    replay in the span after the decision's gets it, one after that decides afresh."""
    pub = ChannelPublisher(redis, settings.redis_prefix)
    gate = AlertGate(redis, settings.redis_prefix, decision_ttl_s=1, publisher=pub)

    async def second() -> int:
        return (await redis.time())[0]

    async def until(s: int) -> None:
        sec, us = await redis.time()
        await asyncio.sleep(max(0.0, s - sec - us / 1e6) + 0.01)

    for _attempt in range(5):  # (a run that straddles a span's edge says nothing: again)
        q = req("span", "AAA", mode="every_time")
        s0 = await second()
        (first,) = await gate.decide([q])
        left_ms = await redis.pttl(f"{settings.redis_prefix}rule:span:decided:{s0}")
        if await second() != s0:
            continue
        await until(s0 + 1)
        (found,) = await gate.decide([q])
        if await second() != s0 + 1:
            continue
        await until(s0 + 2)
        (lapsed,) = await gate.decide([q])
        break
    else:
        raise AssertionError("Redis's clock never held still for a call")
    assert (first.fire, first.replayed) == (True, False)
    assert 0 < left_ms <= 2_000  # the span's hash expires when the span after it ends
    assert (found.fire, found.replayed) == (True, True)  # from the span before
    assert (lapsed.fire, lapsed.replayed) == (True, False)  # gone: decided again
    assert (await _channel_ids(pub))[-2:] == [q.alert_id, q.alert_id]


async def test_firings_beyond_the_history_size_leave_exactly_the_latest(settings, redis):
    pub = ChannelPublisher(redis, settings.redis_prefix, history_size=5)
    gate = AlertGate(redis, settings.redis_prefix, publisher=pub)
    asked = [req("many", f"S{i}", mode="every_time") for i in range(12)]
    assert all(v.fire for v in await gate.decide(asked))
    epoch, offset = await pub.position("alerts.ann")
    assert offset == 12
    assert await redis.xlen(pub.keys("alerts.ann")[1]) == 5  # trimmed exactly, in the call
    latest = await pub.history("alerts.ann", 7, epoch)
    assert latest.complete
    assert [orjson.loads(d)["alert_id"] for _, d in latest.entries] == [
        q.alert_id for q in asked[7:]
    ]
    assert not (await pub.history("alerts.ann", 6, epoch)).complete


async def _envelopes(pubsub, n: int) -> list[dict]:
    got: list[dict] = []
    for _ in range(40):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
        if msg:
            got.append(orjson.loads(msg["data"]))
            if len(got) == n:
                return got
    raise AssertionError(f"{len(got)} of {n} messages published")


async def test_firings_reach_subscribers_and_pattern_subscribers(settings, redis):
    """The gate publishes only when anyone listens: a subscriber of the channel, or any
    pattern subscription (PUBSUB NUMSUB does not count those)."""
    gate, pub = gate_for(redis, settings)
    direct = redis.pubsub()
    await direct.subscribe(pub.pubsub_channel("alerts.ann"))
    await direct.get_message(timeout=1.0)
    asked = [req("heard", "AAA"), req("heard", "BBB")]
    await gate.decide(asked)
    epoch, _ = await pub.position("alerts.ann")
    assert await _envelopes(direct, 2) == [
        {"channel": "alerts.ann", "offset": i + 1, "epoch": epoch,
         "data": {"alert_id": q.alert_id, "symbol": q.symbol}}
        for i, q in enumerate(asked)
    ]  # fmt: skip
    await direct.aclose()
    pattern = redis.pubsub()
    await pattern.psubscribe(f"{settings.redis_prefix}ch:*")
    await pattern.get_message(timeout=1.0)
    late = req("heard", "CCC")
    await gate.decide([late])
    (env,) = await _envelopes(pattern, 1)
    assert (env["offset"], env["data"]["alert_id"]) == (3, late.alert_id)
    await pattern.aclose()
