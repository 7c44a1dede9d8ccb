"""The alert gate against a real Redis: cooldown, expiry, throttle, ``once``, replays, and
firings appended to the owner's channel in the same step as the decision."""

from __future__ import annotations

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
