"""Redis and MongoDB-protocol round trips through our client factories."""

from __future__ import annotations

import asyncio

import pytest
from pymongo import ASCENDING, UpdateOne
from pymongo.errors import DuplicateKeyError

from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client


async def test_redis_round_trip_and_pubsub(settings):
    client = redis_client(settings)
    try:
        key = f"{settings.redis_prefix}ind:1d:AAPL"
        await client.hset(key, mapping={"ts": 1, "rsi_14": 28.5})
        assert await client.hgetall(key) == {b"ts": b"1", b"rsi_14": b"28.5"}

        channel = f"{settings.redis_prefix}bars.1d.AAPL"
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        assert await client.publish(channel, b"hello") == 1
        msg = None
        for _ in range(20):
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if msg:
                break
        assert msg is not None and msg["data"] == b"hello"
        await pubsub.aclose()
    finally:
        await client.aclose()


async def test_mongo_round_trip_indexes_and_bulk_upserts(settings):
    client = mongo_client(settings)
    try:
        db = client[settings.mongo_db]
        bars = db["bars"]
        await bars.create_index(
            [("symbol", ASCENDING), ("tf", ASCENDING), ("period", ASCENDING)], unique=True
        )
        doc = {"symbol": "AAPL", "tf": "1d", "period": 2012, "close": [1.5, 2.5]}
        await bars.insert_one(doc)
        found = await bars.find_one({"symbol": "AAPL"}, {"_id": 0})
        assert found == {"symbol": "AAPL", "tf": "1d", "period": 2012, "close": [1.5, 2.5]}
        with pytest.raises(DuplicateKeyError):
            await bars.insert_one({"symbol": "AAPL", "tf": "1d", "period": 2012})
        ops = [
            UpdateOne({"symbol": s, "tf": "1d", "period": 2013}, {"$set": {"n": i}}, upsert=True)
            for i, s in enumerate(["AAPL", "MSFT", "AAPL"])
        ]
        result = await bars.bulk_write(ops, ordered=True)
        assert result.upserted_count == 2 and result.modified_count == 1
        assert await bars.count_documents({"period": 2013}) == 2
        assert (await bars.find_one({"symbol": "AAPL", "period": 2013}))["n"] == 2
    finally:
        await client.drop_database(settings.mongo_db)
        await client.close()


async def test_clients_fail_fast_against_a_dead_server(settings):
    from technic_stream.local import free_port

    dead = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "redis_timeout_s": 0.5,
        }
    )
    client = redis_client(dead)
    try:
        with pytest.raises(Exception, match=r"(?i)connect"):
            await asyncio.wait_for(client.ping(), 5)
    finally:
        await client.aclose()
