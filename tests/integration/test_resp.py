"""Hand-packed pipelines against a real Redis: inline HSET reads back bit-exact, replies
come back in order, errors surface after every reply is read, NOSCRIPT is recovered;
``hmget_table`` reads thousands of hashes into one exact float table."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from redis.exceptions import ResponseError

from technic_stream.redis import redis_client
from technic_stream.redis.resp import AutoPipeline, InlineHset, Script, execute, hmget_table


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


async def test_hmget_table_reads_many_hashes_exactly_with_a_status_per_key(settings, redis):
    rng = np.random.default_rng(3)
    n = 2_500  # over one round trip (per_trip below)
    values = rng.normal(100, 50, size=(n, 3))
    values[7, 2] = float("nan")  # not ready: the engine writes "nan"
    values[8, 1] = float("inf")
    hset = InlineHset(["ts", "close", "rsi_14", "sma_20"])
    keys = [f"{settings.redis_prefix}ind:1d:S{i:05d}" for i in range(n)]
    cmds = [hset.general(k, [i, *v]) if np.isinf(v).any() else hset.command(k, [i, *v])
            for i, (k, v) in enumerate(zip(keys, values.tolist(), strict=True))]  # fmt: skip
    await execute(redis, cmds)
    await redis.hdel(keys[11], "rsi_14")  # lacks one field: status 1
    await redis.delete(keys[12])  # no hash: status 0
    await redis.delete(keys[13])
    await redis.hset(keys[13], "close", 5.0)  # no ts: status 0

    fields = ["ts", "close", "rsi_14"]
    table, status = await hmget_table(redis, keys, fields, per_trip=1_000)

    assert table.shape == (n, 3) and table.dtype == np.float64
    want = np.column_stack([np.arange(n, dtype=np.float64), values[:, :2]])
    ok = np.ones(n, bool)
    ok[[11, 12, 13]] = False
    np.testing.assert_array_equal(table[ok], want[ok])  # bit for bit, NaN and inf included
    assert status[[11, 12, 13]].tolist() == [1, 0, 0]
    assert (status[ok] == 2).all()
    assert math.isnan(table[11, 2]) and table[11, 1] == values[11, 0]
    assert np.isnan(table[12]).all()
    assert table[13].tolist()[1] == 5.0 and math.isnan(table[13, 0])


async def test_hmget_table_raises_on_a_key_that_is_not_a_hash(settings, redis):
    key = f"{settings.redis_prefix}not-a-hash"
    await redis.set(key, "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await hmget_table(redis, [key], ["ts"])
    assert await redis.get(key) == b"x"  # the connection is still in step


async def test_the_commands_of_one_loop_turn_go_in_one_write_each_with_its_reply(settings, redis):
    """An AutoPipeline sends what is asked in one turn together; every caller gets its
    own reply, an error reply fails only its caller, a flushed script is reloaded."""
    pipe = AutoPipeline(redis)
    key = f"{settings.redis_prefix}ap"
    await redis.set(key, "x")
    script = Script("return tonumber(ARGV[1]) * 2")
    await redis.script_flush()
    got = await asyncio.gather(
        *(pipe(("INCRBY", f"{key}:n", i)) for i in range(1, 51)),
        pipe(("HGET", key, "f")),  # WRONGTYPE: a string, not a hash
        pipe(script.call([], [21]), script),
        pipe.many([("SET", f"{key}:a", "1"), ("GET", f"{key}:a")]),
        return_exceptions=True,
    )
    assert (pipe.writes, pipe.commands) == (1, 54)
    assert got[:50] == [i * (i + 1) // 2 for i in range(1, 51)]  # in order: running sums
    assert isinstance(got[50], ResponseError) and "WRONGTYPE" in str(got[50])
    assert got[51] == 42
    assert got[52] == [b"OK", b"1"]  # (raw replies, as the server sends them)
    assert await pipe(("GET", key)) == b"x" and pipe.writes == 2
