"""The alert rules' batched reads and replaces against the local MongoDB-protocol server:
what each caller gets equals what it would get alone, in fewer commands."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import DuplicateKeyError

from technic_stream.storage.rules import RuleStore


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _rule(rule_id: str, owner: str, **extra: Any) -> dict[str, Any]:
    return {"_id": rule_id, "owner": owner, "expr": "rsi(14) < 30", "tf": "1d", **extra}


@pytest.fixture
async def store(settings):
    listener = _Commands()
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_url, event_listeners=[listener])
    coll = mongo[settings.mongo_db][f"rules_{uuid.uuid4().hex[:8]}"]
    try:
        yield RuleStore(coll), listener
    finally:
        await coll.drop()
        await mongo.close()


async def test_concurrent_reads_by_id_share_commands_and_each_gets_its_own_document(store):
    rules, listener = store
    for i in range(10):
        await rules.collection.insert_one(_rule(f"r{i}", "alice", n=i))
    listener.sent.clear()
    ids = [f"r{i % 12}" for i in range(40)]  # r10, r11 do not exist; every id asked twice+
    got = await asyncio.gather(*(rules.get(i) for i in ids))
    for rule_id, doc in zip(ids, got, strict=True):
        if rule_id in ("r10", "r11"):
            assert doc is None
        else:
            assert doc == _rule(rule_id, "alice", n=int(rule_id[1:]))
    assert listener.sent["find"] <= 2  # the first alone, the rest together
    assert rules.get.calls == 40 and rules.get.batches == listener.sent["find"]
    got[0]["expr"] = "changed"  # one caller's document is not another's
    assert got[12]["_id"] == got[0]["_id"] and got[12]["expr"] == "rsi(14) < 30"


async def test_concurrent_owner_lists_share_commands_and_stay_apart(store):
    rules, listener = store
    for i in (3, 1, 2):
        await rules.collection.insert_one(_rule(f"a{i}", "alice"))
    await rules.collection.insert_one(_rule("b1", "bob"))
    listener.sent.clear()
    owners = ["alice", "bob", "carol", "alice"] * 5
    got = await asyncio.gather(*(rules.of_owner(o) for o in owners))
    want = {
        "alice": [_rule("a1", "alice"), _rule("a2", "alice"), _rule("a3", "alice")],
        "bob": [_rule("b1", "bob")],
        "carol": [],
    }
    assert got == [want[o] for o in owners]
    assert listener.sent["find"] <= 2


async def test_concurrent_replaces_answer_each_as_alone_in_one_bulk_write(store):
    rules, listener = store
    await rules.collection.insert_one(_rule("mine", "alice", v=0))
    await rules.collection.insert_one(_rule("bobs", "bob", v=0))
    listener.sent.clear()
    got = await asyncio.gather(
        rules.replace(_rule("mine", "alice", v=1)),  # replaces alice's rule
        rules.replace(_rule("new", "alice", v=1)),  # inserts
        rules.replace(_rule("bobs", "alice", v=1)),  # bob's id: refused, the rest go on
        rules.replace(_rule("mine", "alice", v=2)),  # the same id again: the later wins
        return_exceptions=True,
    )
    assert got[0] is True and got[1] is False and got[3] is True
    assert isinstance(got[2], DuplicateKeyError)
    assert await rules.get("mine") == _rule("mine", "alice", v=2)
    assert await rules.get("new") == _rule("new", "alice", v=1)
    assert await rules.get("bobs") == _rule("bobs", "bob", v=0)
    # one write for the batch, one more for the id seen twice (an unordered write keeps
    # no order between its statements)
    assert listener.sent["update"] == 2


async def test_a_read_made_after_a_write_completed_sees_it(store):
    rules, _ = store
    for v in range(5):
        assert await rules.replace(_rule("r", "alice", v=v)) is (v > 0)
        got = await asyncio.gather(rules.get("r"), rules.of_owner("alice"))
        assert got == [_rule("r", "alice", v=v), [_rule("r", "alice", v=v)]]
