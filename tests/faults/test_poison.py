"""A poison message on every topic a service reads: each reader sends it to the DLQ with
the reason and goes on; no process dies, and the good message behind it is processed."""

from __future__ import annotations

from collections import Counter

import pytest

from technic_stream.kafka import Producer
from technic_stream.redis import redis_client
from technic_stream.storage import mongo_client
from technic_stream.topics import topic_name
from tests.integration.engine_helpers import bar_bytes, market
from tests.integration.helpers import eventually, read_topic, service_children

pytestmark = pytest.mark.timeout(240)

#: topic → the services that read it (each sends the poison to the DLQ once)
READERS = {
    "md.trades": ["bars"],
    "md.bars": ["engine", "archiver"],
    "scan.requests": ["scanner"],
    "scan.control": ["scanner"],
    "scan.tasks": ["scanner"],
    "alerts.rules": ["engine"],
    "alerts.fired": ["notifier", "archiver"],
    "scan.results": ["archiver"],
}
POISON = b'{"type": "bar", "symbol": "X", "oops'  # cut off: not JSON


async def test_a_poison_message_on_every_topic_goes_to_the_dlq_and_nobody_dies(settings, tmp_path):
    names = ["bars", "engine", "archiver", "scanner", "notifier"]
    async with service_children(settings, tmp_path, *names) as kids:
        p = settings.topic_prefix
        good = market(1, 3, seed=5)["S0"]
        async with Producer(settings) as producer:
            for topic in READERS:
                await producer.send(topic_name(p, topic), POISON, key=b"poison")
            # behind the poison on md.bars: good bars, which must still be processed
            for j in range(3):
                await producer.send(topic_name(p, "md.bars"), bar_bytes("S0", good, j),
                                    key=b"poison")  # fmt: skip
            await producer.flush()
        expected = sum(len(r) for r in READERS.values())
        dlq = await read_topic(settings, topic_name(p, "dlq"), expect=expected, wait_s=60)
        sources = Counter(dict(r.headers)["source-topic"].decode() for r in dlq)
        assert sources == Counter({topic_name(p, t): len(r) for t, r in READERS.items()})
        for r in dlq:
            headers = dict(r.headers)
            assert r.value == POISON
            assert headers["error-reason"] and headers["error-class"], headers
        # the good bars behind the poison: in the engine's values and in the archive
        redis = redis_client(settings)
        mongo = mongo_client(settings)
        try:
            key = f"{settings.redis_prefix}ind:1m:S0"
            await eventually(lambda: redis.hget(key, "ts"),
                             lambda ts: ts is not None and int(float(ts)) == int(good[0][-1]),
                             "the engine's values of S0")  # fmt: skip
            bars = mongo[settings.mongo_db]["bars"]
            await eventually(lambda: bars.count_documents({"symbol": "S0"}), lambda n: n > 0,
                             "S0 archived")  # fmt: skip
        finally:
            await redis.aclose()
            await mongo.close()
        for name, child in kids.items():  # nobody died, everybody still ready
            assert child.proc is not None and child.proc.returncode is None, name
            assert await child.ready(), f"{name}:\n{child.log_tail()}"
