"""API key lookups under a crowd of logins, and the indexes behind the per-owner lists,
against the local MongoDB-protocol server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from technic_stream.gateway.auth import ApiKeys, AuthError
from technic_stream.storage.indexes import OWNER_INDEXES
from tests.integration.gateway_helpers import running_gateway


class _Finds(monitoring.CommandListener):
    """Counts the ``find`` commands the client sends, per collection."""

    def __init__(self) -> None:
        self.finds: dict[str, int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            coll = str(event.command["find"])
            self.finds[coll] = self.finds.get(coll, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_crowd_logging_in_with_one_key_looks_it_up_once(settings):
    listener = _Finds()
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_url, event_listeners=[listener])
    try:
        keys = ApiKeys(mongo[settings.mongo_db])
        key = (await keys.create("crowd")).key
        who = await asyncio.gather(*(keys.check(key) for _ in range(50)))
        assert {w.owner for w in who} == {"crowd"}
        assert listener.finds == {"api_keys": 1}

        # a wrong secret: every waiter is refused by the one lookup, and the next try asks
        # again (a failed lookup is not kept)
        wrong = key[:-3] + ("AAA" if not key.endswith("AAA") else "BBB")
        refused = await asyncio.gather(
            *(keys.check(wrong) for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, AuthError) and r.reason == "unknown API key" for r in refused)
        assert listener.finds == {"api_keys": 2}
        with pytest.raises(AuthError):
            await keys.check(wrong)
        assert listener.finds == {"api_keys": 3}

        # a waiter that gives up does not cancel the lookup the others wait for
        other = (await keys.create("crowd-2")).key
        first = asyncio.ensure_future(keys.check(other))
        second = asyncio.ensure_future(keys.check(other))
        await asyncio.sleep(0)
        first.cancel()
        assert (await second).owner == "crowd-2"
        assert listener.finds == {"api_keys": 4}
    finally:
        await mongo.close()


async def test_the_gateway_creates_the_indexes_of_the_owner_queries(settings):
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_url)
    db = mongo[settings.mongo_db]
    want = {coll: [k for k, _ in keys] for coll, keys in OWNER_INDEXES.items()}
    try:
        async with running_gateway(settings):
            found: dict[str, list[list[str]]] = {}
            for _ in range(100):
                found = {
                    coll: [list(ix["key"]) async for ix in await db[coll].list_indexes()]
                    for coll in want
                }
                if all(keys in found[coll] for coll, keys in want.items()):
                    break
                await asyncio.sleep(0.1)
            missing = {c: k for c, k in want.items() if k not in found[c]}
            assert not missing, f"indexes not created: {missing} (found {found})"
    finally:
        await mongo.close()
