"""Hand-packed pipelines against a real Redis: inline HSET reads back bit-exact, replies
come back in order, errors surface after every reply is read, NOSCRIPT is recovered."""

from __future__ import annotations

import math

import pytest
from redis.exceptions import ResponseError

from technic_stream.redis import redis_client
from technic_stream.redis.resp import InlineHset, Script, execute


@pytest.fixture
async def redis(settings):
    client = redis_client(settings)
    yield client
    await client.aclose()


FIELDS = ["ts", "close", "sma_20", "rsi_14"]


async def test_inline_hset_reads_back_every_float_exactly(settings, redis):
    hset = InlineHset(FIELDS)
    rows = {
        "A": [1767623400000, 101.25, 1 / 3, float("nan")],
        "B": [0, 5e-324, 1.7976931348623157e308, -0.0],
        "C": [7, float("inf"), 2.5, 1e16],  # an infinity: the general form
    }
    keyed = {f"{settings.redis_prefix}h:{s}": r for s, r in rows.items()}
    cmds = [hset.general(k, v) if any(map(math.isinf, v)) else hset.command(k, v)
            for k, v in keyed.items()]  # fmt: skip
    assert await execute(redis, cmds) == [4, 4, 4]
    for sym, want in rows.items():
        got = await redis.hgetall(f"{settings.redis_prefix}h:{sym}")
        back = [float(got[f.encode()]) for f in FIELDS]
        for w, b in zip(want, back, strict=True):
            assert (math.isnan(w) and math.isnan(b)) or (
                w == b and math.copysign(1, w) == math.copysign(1, b)
            )


async def test_errors_surface_after_all_replies_and_noscript_is_recovered(settings, redis):
    key = f"{settings.redis_prefix}list"
    await redis.rpush(key, "x")
    with pytest.raises(ResponseError):  # HGET on a list
        await execute(redis, [["HGET", key, "f"], ["LLEN", key]])
    assert await execute(redis, [["LLEN", key]]) == [1]  # the connection is still in step
    script = Script("return tonumber(ARGV[1]) + 1")
    await redis.script_flush()
    assert await execute(redis, [script.call([], [41]), ["PING"]], scripts=[script]) == [
        42,
        b"PONG",
    ]
