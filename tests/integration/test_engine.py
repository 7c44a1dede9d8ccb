"""The indicator engine through the real broker and Redis: values equal the batch twins,
rules fire exactly where a reference evaluation says, once per their mode; bad records
go to the DLQ while the bars around them are processed; new rules warm up mid-stream."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from technic_stream.kafka import Producer
from technic_stream.messages import Alert, alert_id, decode
from technic_stream.redis import redis_client
from technic_stream.redis.alert_gate import AlertGate
from technic_stream.redis.channels import ChannelPublisher
from technic_stream.redis.interest import ChannelInterest
from technic_stream.topics import topic_name
from tests.integration.engine_helpers import (
    TF,
    bar_bytes,
    decoded_hash,
    expected_values,
    market,
    matches,
    rule,
    running_engine,
    send_bars,
    send_rules,
    wait_for,
)
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.timeout(360)  # (a cold numba cache: the first start compiles)

RULES = [
    rule("cross", "crosses_above(ema(9), sma(20))"),  # once_per_bar_close, every symbol
    rule("rsi", "rsi(7) < 35", mode="every_time", symbols=["S1", "S2"]),  # needs rsi(7)
    rule("first", "close > sma(50)", mode="once", symbols=["S3"]),
    rule("noisy", "close > open", symbols=["S4"], throttle_max=3, throttle_window_s=3600),
    rule(
        "bar",
        "close > bb(20, 2).upper",
        mode="once_per_bar",
        owner="bob",
        message="{{symbol}} closed at {{close}} above the band",
    ),
]


def reference(series) -> set[tuple[str, str, int]]:
    out: set[tuple[str, str, int]] = set()
    for sym, bars in series.items():
        ts = bars[0]
        out |= {("cross", sym, int(ts[j])) for j in matches(RULES[0].expr, bars)}
        out |= {("bar", sym, int(ts[j])) for j in matches(RULES[4].expr, bars)}
        if sym in ("S1", "S2"):
            out |= {("rsi", sym, int(ts[j])) for j in matches(RULES[1].expr, bars)}
        if sym == "S3":
            out |= {("first", sym, int(ts[j])) for j in matches(RULES[2].expr, bars)[:1]}
        if sym == "S4":
            out |= {("noisy", sym, int(ts[j])) for j in matches(RULES[3].expr, bars)[:3]}
    return out


async def test_values_equal_the_batch_twin_and_rules_fire_where_the_reference_says(settings):
    series = market(12, 240, seed=1)
    engine_settings = settings.model_copy(update={"max_message_bytes": 2_000})
    inverted = orjson.loads(bar_bytes("S2", series["S2"], 0)) | {"high": 1.0, "low": 2.0}
    rows = 200  # a BarBatch over the engine's 2,000-byte limit
    huge = {"type": "bar_batch", "v": 1, "tf": TF, "symbols": ["S5"] * rows, "ts": [1] * rows}
    huge |= {f: [1.0] * rows for f in ("open", "high", "low", "close", "volume")}
    bad = [
        (b"S1", b'{"type": "bar", "v": 1, "symbol": '),  # malformed JSON
        (b"S2", orjson.dumps(inverted)),  # high < low
        (b"S3", bar_bytes("S3", series["S3"], 0, tf="2m")),  # unknown timeframe
        (b"S5", orjson.dumps(huge)),  # over the size limit
    ]
    broken = orjson.loads(RULES[0].model_dump_json()) | {"rule_id": "broken", "expr": "sma(20 >"}
    await send_rules(settings, [*RULES, ("broken", orjson.dumps(broken))])
    redis = redis_client(settings)
    try:  # a dashboard watches S0 (as the gateway registers it); nobody watches S1
        await ChannelInterest(redis, settings.redis_prefix).keep(
            [f"ind.{TF}.S0", f"bars.{TF}.S0"], 600
        )
    finally:
        await redis.aclose()
    n = await send_bars(settings, series, 0, 120, extra=bad)
    n += await send_bars(settings, series, 120, 240)

    async with running_engine(engine_settings) as engine:
        assert {r: engine.rules.rules[r].status for r in engine.rules.rules} == {
            "cross": "active", "rsi": "active", "first": "active", "noisy": "active",
            "bar": "active", "broken": "error",
        }  # fmt: skip
        await wait_for(lambda: engine.consumer.records_processed >= n, "all bars")

    redis = redis_client(settings)
    try:
        for sym, bars in series.items():
            got = decoded_hash(await redis.hgetall(f"{settings.redis_prefix}ind:{TF}:{sym}"))
            assert got["ts"] == bars[0][-1] and got["close"] == bars[4][-1]
            for name, value in expected_values(bars).items():
                np.testing.assert_array_equal(got[name], value, err_msg=f"{sym} {name}")
        pub = ChannelPublisher(redis, settings.redis_prefix)
        assert (await pub.position(f"ind.{TF}.S0"))[1] >= 1
        assert await pub.position(f"ind.{TF}.S1") == ("", 0)  # unwatched: hash only
        assert await pub.position(f"bars.{TF}.S1") == ("", 0)
        last_bar = orjson.loads((await pub.history(f"bars.{TF}.S0", 0, (await pub.position(
            f"bars.{TF}.S0"))[0])).entries[-1][1])  # fmt: skip
        assert last_bar["ts"] == series["S0"][0][-1]
        gate = AlertGate(redis, settings.redis_prefix)
        noisy = await gate.status("noisy")
        assert noisy["status"] == "paused" and "throttled" in noisy["reason"]
        assert (await gate.status("first"))["status"] == "fired"
        assert (await gate.status("broken"))["status"] == "error"
        bob = await pub.history("alerts.bob", 0, (await pub.position("alerts.bob"))[0])
    finally:
        await redis.aclose()

    want = reference(series)
    fired = await read_topic(settings, topic_name(settings.topic_prefix, "alerts.fired"),
                             expect=len(want) + 1, wait_s=5)  # fmt: skip
    alerts = [decode(r.value, Alert) for r in fired]
    got = {(a.rule_id, a.symbol, a.ts) for a in alerts}
    assert got == want
    assert len(alerts) == len(want)  # once per its mode: no repeats
    for a, record in zip(alerts, fired, strict=True):
        assert a.alert_id == alert_id(a.rule_id, a.symbol, a.tf, a.ts)
        assert record.key == a.owner.encode()
    band = [a for a in alerts if a.rule_id == "bar"]
    assert band and all(a.message == f"{a.symbol} closed at {a.close!r} above the band"
                        for a in band)  # fmt: skip
    for a in band:  # the values it fired on: its bar's close, above the band's upper line
        assert a.values["close"] == a.close > a.values["bb_20_2.upper"]
    assert [orjson.loads(d)["alert_id"] for _, d in bob.entries] == [a.alert_id for a in band]

    dlq = await read_topic(settings, topic_name(settings.topic_prefix, "dlq"), expect=5, wait_s=5)
    reasons = sorted(dict(r.headers)["error-reason"].decode() for r in dlq)
    assert len(dlq) == 5, reasons
    text = " | ".join(reasons)
    for expected in ("invalid JSON", "high", "tf", "exceeds", "column"):
        assert expected in text, text


async def test_a_rule_added_mid_stream_is_warmed_from_history_and_fires_exactly(settings):
    series = market(6, 200, seed=2)
    n = await send_bars(settings, series, 0, 120)
    late = rule("late", "crosses_above(rsi(5), 60)", ts=5)
    async with running_engine(settings) as engine:
        await wait_for(lambda: engine.consumer.records_processed >= n, "first half")
        await send_rules(settings, [late])
        await wait_for(lambda: "late" in engine.rules.rules, "rule loaded")
        book = next(p.books[TF] for p in engine.parts.values() if TF in p.books)
        sym = book.names[0]
        assert book.ready(sym)["rsi_5"]  # warmed from the 120 bars it had seen
        n += await send_bars(settings, series, 120, 200)
        await wait_for(lambda: engine.consumer.records_processed >= n, "second half")
    want = {
        ("late", s, int(bars[0][j])) for s, bars in series.items()
        for j in matches(late.expr, bars) if j >= 120
    }  # fmt: skip
    fired = await read_topic(settings, topic_name(settings.topic_prefix, "alerts.fired"),
                             expect=len(want) + 1, wait_s=5)  # fmt: skip
    assert want, "the data should cross somewhere"
    assert {(a.rule_id, a.symbol, a.ts) for a in (decode(r.value, Alert) for r in fired)} == want


async def test_corrections_fire_once_per_bar_and_every_time_per_print(settings):
    """Each bar of S0 printed three times (its close and two corrections, all in one
    fetch, so one batch gives the gate the same alert id again): a ``once_per_bar`` rule
    that holds on every print sends one alert per bar, ``once_per_bar_close`` one per
    close, and ``every_time`` one per print (the correction's number in its id)."""
    series = market(1, 12, seed=3)
    topic = topic_name(settings.topic_prefix, "md.bars")
    async with Producer(settings) as producer:
        for j in range(12):
            first = orjson.loads(bar_bytes("S0", series["S0"], j))
            for k in range(3):  # the close, then two corrections (volume changes)
                print_ = {**first, "volume": first["volume"] + k}
                await producer.send(topic, orjson.dumps(print_), key=b"S0")
        await producer.flush()
    await send_rules(settings, [
        rule("per_bar", "volume > 0", mode="once_per_bar"),
        rule("on_close", "volume > 0"),
        rule("each", "volume > 0", mode="every_time"),
    ])  # fmt: skip
    async with running_engine(settings) as engine:
        await wait_for(lambda: engine.consumer.records_processed >= 36, "all prints")
    fired = await read_topic(settings, topic_name(settings.topic_prefix, "alerts.fired"),
                             expect=12 * 5 + 1, wait_s=5)  # fmt: skip
    alerts = [decode(r.value, Alert) for r in fired]
    ts = [int(t) for t in series["S0"][0]]
    by_rule = {r: [a for a in alerts if a.rule_id == r] for r in ("per_bar", "on_close", "each")}
    assert [a.ts for a in by_rule["per_bar"]] == ts
    assert [a.ts for a in by_rule["on_close"]] == ts
    assert sorted(a.ts for a in by_rule["each"]) == sorted(ts * 3)
    assert len({a.alert_id for a in by_rule["each"]}) == 36
    assert all(a.alert_id == alert_id("per_bar", "S0", TF, a.ts) for a in by_rule["per_bar"])


async def test_a_new_partition_is_checkpointed_after_its_bar_count_not_at_its_first_batch(
    settings,
):
    """The checkpoint interval and bar count of a partition with no checkpoint count from
    when it was taken on (they had counted from the clock's zero, so such a partition
    was checkpointed at its first batch on any machine up longer than the interval)."""
    s = settings.model_copy(
        update={"engine_checkpoint_interval_s": 60.0, "engine_checkpoint_bars": 40}
    )
    series = market(1, 50, seed=5)
    sent = await send_bars(s, series, 0, 30)
    async with running_engine(s) as engine:
        await wait_for(lambda: engine.consumer.records_processed >= sent, "the first bars")
        assert [p.saved_offset for p in engine.parts.values()] == [None] * len(engine.parts)
        sent += await send_bars(s, series, 30, 50)
        await wait_for(
            lambda: any(p.saved_offset for p in engine.parts.values()), "the bar count's checkpoint"
        )
        (saved,) = [p.saved_offset for p in engine.parts.values() if p.saved_offset]
        assert 40 <= saved <= sent


async def test_a_channel_wanted_mid_stream_is_published_from_the_next_batches_on(
    settings, monkeypatch
):
    """A new subscriber's channel is published a batch or two after its interest is
    recorded, not after the engine's periodic re-read (made an hour here, so only the
    revision read with each batch's writes can tell the engine)."""
    import technic_stream.engine.service as service

    monkeypatch.setattr(service, "_INTEREST_REFRESH_S", 3_600.0)
    series = market(2, 40, seed=7)
    sent = await send_bars(settings, series, 0, 10)
    redis = redis_client(settings)
    pub = ChannelPublisher(redis, settings.redis_prefix)
    try:
        async with running_engine(settings) as engine:
            await wait_for(lambda: engine.consumer.records_processed >= sent, "the first bars")
            assert await pub.position(f"bars.{TF}.S1") == ("", 0)  # nobody wanted it
            added = await ChannelInterest(redis, settings.redis_prefix).keep([f"bars.{TF}.S1"], 600)
            assert added == 1
            for stop in range(11, 41):  # a batch at a time: the first write sees the change
                sent += await send_bars(settings, series, stop - 1, stop)
                await wait_for(lambda n=sent: engine.consumer.records_processed >= n, "a batch")
                if (await pub.position(f"bars.{TF}.S1"))[1]:
                    break
            assert stop <= 13, f"published only from bar {stop}"
            epoch, offset = await pub.position(f"bars.{TF}.S1")
            hist = await pub.history(f"bars.{TF}.S1", 0, epoch)
            assert [orjson.loads(d)["ts"] for _, d in hist.entries] == [
                int(series["S1"][0][j]) for j in range(stop - offset, stop)
            ]
            assert await pub.position(f"bars.{TF}.S0") == ("", 0)  # still unwanted
    finally:
        await redis.aclose()
