"""Kafka transport against the real local broker (tansu)."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
from prometheus_client import REGISTRY

from technic_stream.kafka import DLQ_HEADERS, BatchConsumer, Producer
from technic_stream.messages import Bar, encode
from tests.integration.helpers import BarCollector, eventually, read_topic


def bar(symbol: str, i: int, **changes: object) -> Bar:
    doc = dict(
        symbol=symbol,
        tf="1m",
        ts=1_700_000_000_000 + i * 60_000,
        open=100.0 + i,
        high=101.0 + i,
        low=99.0 + i,
        close=100.5 + i,
        volume=1_000.0 + i,
    )
    doc.update(changes)
    return Bar(**doc)  # type: ignore[arg-type]


async def run_until_done(consumer: BatchConsumer, limit_s: float = 30.0) -> None:
    await asyncio.wait_for(consumer.run(), limit_s)


async def test_produce_consume_round_trip(settings):
    topic = f"{settings.topic_prefix}md.bars"
    sent = [bar(sym, i) for sym in ("AAPL", "MSFT", "IBM") for i in range(20)]
    async with Producer(settings) as producer:
        for b in sent:
            await producer.send(topic, encode(b), key=b.symbol.encode())
        assert await producer.flush() == len(sent)
        handler = BarCollector(settings, producer, stop_after=len(sent))
        async with BatchConsumer(settings, [topic], f"g-{settings.topic_prefix}", handler) as c:
            handler.consumer = c
            await run_until_done(c)
    assert sorted(handler.bars, key=lambda b: (b.symbol, b.ts)) == sorted(
        sent, key=lambda b: (b.symbol, b.ts)
    )
    # Per-symbol order survives: each symbol lives on one partition.
    for sym in ("AAPL", "MSFT", "IBM"):
        got = [b.ts for b in handler.bars if b.symbol == sym]
        assert got == sorted(got)


async def test_malformed_messages_go_to_dlq_with_headers_and_good_ones_flow(settings):
    s = settings.model_copy(update={"max_message_bytes": 1024})
    topic = f"{s.topic_prefix}md.bars"
    good_before, good_after = bar("AAPL", 1), bar("AAPL", 2)
    high_below_low = orjson.dumps({**orjson.loads(encode(bar("AAPL", 3))), "high": 1.0})
    unknown_tf = orjson.dumps({**orjson.loads(encode(bar("AAPL", 4))), "tf": "7m"})
    oversize = encode(bar("AAPL", 5))[:-1] + b"," + b'"pad":"' + b"x" * 2000 + b'"}'
    payloads = [
        ("good", encode(good_before)),
        ("json", b'{"type": "bar", "v": 1, '),
        ("ohlc", high_below_low),
        ("tf", unknown_tf),
        ("size", oversize),
        ("good", encode(good_after)),
    ]
    async with Producer(s) as producer:
        for _, value in payloads:
            await producer.send(topic, value, key=b"AAPL")
        await producer.flush()
        handler = BarCollector(s, producer, stop_after=len(payloads))
        async with BatchConsumer(s, [topic], f"g-{s.topic_prefix}", handler) as c:
            handler.consumer = c
            await run_until_done(c)
    assert handler.bars == [good_before, good_after]

    dead = await read_topic(s, f"{s.topic_prefix}dlq", expect=4)
    assert len(dead) == 4
    by_offset = {int(dict(r.headers)["source-offset"]): r for r in dead}
    source = await read_topic(s, topic, expect=len(payloads))
    offsets = {r.value: r.offset for r in source}
    expected_reasons = {
        payloads[1][1]: ("MessageDecodeError", "invalid JSON"),
        payloads[2][1]: ("MessageDecodeError", "is below max(open, close, low)"),
        payloads[3][1]: ("MessageDecodeError", "tf: Input should be"),
        payloads[4][1]: ("MessageDecodeError", "exceeds the limit of 1024"),
    }
    for value, (error_class, reason) in expected_reasons.items():
        record = by_offset[offsets[value]]
        headers = {k: v.decode() for k, v in record.headers}
        assert set(DLQ_HEADERS) <= set(headers)
        assert headers["source-topic"] == topic
        assert int(headers["source-partition"]) == source[0].partition
        assert headers["error-class"] == error_class
        assert reason in headers["error-reason"]
        assert record.value == value  # the original bytes, untouched
        assert record.key == b"AAPL"  # the original key


async def test_commits_survive_a_crash_and_only_the_uncommitted_tail_is_replayed(settings):
    s = settings.model_copy(update={"kafka_fetch_max_records": 10})
    topic = f"{s.topic_prefix}md.bars"
    total = 60
    async with Producer(s) as producer:
        for i in range(total):
            await producer.send(topic, encode(bar("AAPL", i)), key=b"AAPL")
        await producer.flush()
        group = f"g-{s.topic_prefix}"

        # First process: dies inside its third batch, after committing two.
        first = BarCollector(s, producer, crash_on_batch=3)
        consumer = BatchConsumer(s, [topic], group, first)
        await consumer.start()
        first.consumer = consumer
        crashed = False
        try:
            await run_until_done(consumer)
        except RuntimeError as exc:
            crashed = "simulated crash" in str(exc)
        finally:
            await consumer.aclose()
        assert crashed
        ((committed_tp, committed_at),) = consumer.committed.items()
        assert committed_at == len(first.handled) > 0  # two whole batches, committed
        assert first.handled == [(committed_tp.partition, o) for o in range(committed_at)]

        # Second process: resumes at the commit; replays the crashed batch, nothing before it.
        second = BarCollector(s, producer, stop_after=total - committed_at)
        async with BatchConsumer(s, [topic], group, second) as c:
            second.consumer = c
            await run_until_done(c)
    offsets = [o for _, o in second.handled]
    assert offsets == list(range(committed_at, total))
    assert not set(first.handled) & set(second.handled)
    assert [b.ts for b in first.bars + second.bars] == [bar("AAPL", i).ts for i in range(total)]


async def test_graceful_stop_commits_what_was_processed(settings):
    settings = settings.model_copy(update={"kafka_fetch_max_records": 10})
    topic = f"{settings.topic_prefix}md.bars"
    async with Producer(settings) as producer:
        for i in range(30):
            await producer.send(topic, encode(bar("IBM", i)), key=b"IBM")
        await producer.flush()
        group = f"g-{settings.topic_prefix}"
        first = BarCollector(settings, producer, stop_after=1)
        async with BatchConsumer(settings, [topic], group, first) as c:
            first.consumer = c
            await run_until_done(c)
        done = len(first.handled)
        assert 0 < done < 30
        assert first.revoked and first.revoked[-1]  # hand-over hook ran on shutdown
        second = BarCollector(settings, producer, stop_after=30 - done)
        async with BatchConsumer(settings, [topic], group, second) as c:
            second.consumer = c
            await run_until_done(c)
    assert [o for _, o in second.handled] == list(range(done, 30))


async def test_two_members_split_the_partitions(settings):
    topic = f"{settings.topic_prefix}md.bars"
    group = f"g-{settings.topic_prefix}"
    async with Producer(settings) as producer:
        a = BarCollector(settings, producer)
        b = BarCollector(settings, producer)
        async with (
            BatchConsumer(settings, [topic], group, a) as ca,
            BatchConsumer(settings, [topic], group, b) as cb,
        ):
            runs = [asyncio.create_task(ca.run()), asyncio.create_task(cb.run())]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while loop.time() < deadline:  # until the group has settled
                got_a, got_b = ca.assignment(), cb.assignment()
                if got_a and got_b and len(got_a | got_b) == settings.partitions:
                    break
                await asyncio.sleep(0.1)
            ca.stop()
            cb.stop()
            await asyncio.gather(*runs)
    assert got_a and got_b and not got_a & got_b
    assert len(got_a | got_b) == settings.partitions


async def test_send_many_lands_each_key_where_send_puts_it_in_order(settings):
    one, many = f"{settings.topic_prefix}md.bars", f"{settings.topic_prefix}md.trades"
    records = [(f"K{i % 7}".encode(), orjson.dumps({"n": i})) for i in range(300)]
    async with Producer(settings) as producer:
        for key, value in records:
            await producer.send(one, value, key=key)
        batches = await producer.send_many(many, records)
        assert batches in range(1, settings.partitions + 1)  # one batch per partition used
        assert await producer.flush() == 300 + batches  # every record and batch acknowledged
    a = await read_topic(settings, one, expect=300)
    b = await read_topic(settings, many, expect=300)
    where = {(r.key, r.value): r.partition for r in a}
    assert {(r.key, r.value): r.partition for r in b} == where
    for key in {k for k, _ in records}:  # per key, in the order sent
        assert [r.value for r in b if r.key == key] == [v for k, v in records if k == key]


class _DeferredWrites(BarCollector):
    """Hands back each batch's "writes" as a task that waits for a release, the way the
    engine overlaps a batch's round trips with the next batch's work."""

    def __init__(self, settings, producer) -> None:
        super().__init__(settings, producer)
        self.release: list[asyncio.Event] = []
        self.written: list[int] = []  # batch numbers, in the order their writes finished
        self.ends: list[int] = []  # each batch's next offset

    async def on_batch(self, batch):
        await super().on_batch(batch)
        self.ends.append(self.handled[-1][1] + 1)
        n, gate = self.batches, asyncio.Event()
        self.release.append(gate)

        async def write() -> None:
            await gate.wait()
            self.written.append(n)

        return asyncio.create_task(write())


async def until(cond, what: str, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _deferred_consumer(settings, bars: int, per_fetch: int, in_flight: int = 1):
    """``bars`` IBM bars in the topic, then a running consumer of ``per_fetch`` records a
    batch whose handler's writes wait for a release: (handler, consumer, its run task)."""
    settings = settings.model_copy(update={"kafka_fetch_max_records": per_fetch})
    topic = f"{settings.topic_prefix}md.bars"
    async with Producer(settings) as producer:
        for i in range(bars):
            await producer.send(topic, encode(bar("IBM", i)), key=b"IBM")
        await producer.flush()
        handler = _DeferredWrites(settings, producer)
        group = f"g-{settings.topic_prefix}"
        async with BatchConsumer(settings, [topic], group, handler, in_flight=in_flight) as c:
            yield handler, c, asyncio.create_task(c.run())


async def test_a_batch_handed_back_unwritten_is_committed_only_once_written(settings):
    async with _deferred_consumer(settings, bars=10, per_fetch=5) as (handler, c, run):
        # the second batch is handed over while the first one's writes are pending,
        # and the consumer then waits for the first (one batch pending at most)
        await until(lambda: handler.batches == 2, "a second batch")
        assert c.committed == {} and handler.written == []
        first_end = handler.handled[4][1] + 1
        handler.release[0].set()
        await until(lambda: c.committed, "the first commit")
        (tp,) = c.committed
        assert c.committed[tp] == first_end
        # no more records arrive: the last batch is committed when written, not later
        await asyncio.sleep(0.3)
        assert c.committed[tp] == first_end  # not before its writes finish
        handler.release[1].set()
        await until(lambda: c.committed[tp] == handler.handled[-1][1] + 1, "the last commit")
        assert handler.written == [1, 2]
        c.stop()
        await asyncio.wait_for(run, 10)
    assert c.records_processed == 10


async def test_two_batches_in_flight_are_committed_in_order_each_once_written(settings):
    """With ``in_flight=2`` a third batch is handed over while two are being written; the
    consumer then waits for the oldest; commits follow the batches' order even when a
    later batch's writes finish first."""
    async with _deferred_consumer(settings, bars=16, per_fetch=4, in_flight=2) as (
        handler, c, run
    ):  # fmt: skip
        await until(lambda: handler.batches == 3, "a third batch")
        await asyncio.sleep(0.3)
        assert handler.batches == 3  # two pending and the third handed over: it waits
        assert c.committed == {}
        handler.release[1].set()  # the second is written before the first:
        await asyncio.sleep(0.3)
        assert c.committed == {}  # nothing is committed past an unwritten batch
        handler.release[0].set()
        await until(lambda: c.committed, "the first commits")
        (tp,) = c.committed
        await until(lambda: c.committed[tp] == handler.ends[1], "both written batches")
        await until(lambda: handler.batches >= 4, "a fourth batch once two are settled")

        def all_written() -> bool:
            for gate in handler.release:
                gate.set()
            return c.records_processed == 16

        await until(all_written, "every batch written and committed")
        assert c.committed[tp] == handler.ends[-1] == handler.handled[-1][1] + 1
        assert handler.written[:2] == [2, 1]
        c.stop()
        await asyncio.wait_for(run, 10)
    assert c.records_processed == 16


def test_in_flight_must_be_at_least_one(settings):
    with pytest.raises(ValueError, match="in_flight"):
        BatchConsumer(settings, ["t"], "g", object(), in_flight=0)  # type: ignore[arg-type]


async def test_a_quiet_consumer_polls_slower_and_fast_again_once_records_come(settings):
    """After ``kafka_idle_after_s`` without a record the fetch wait is the idle one; the
    next record is still consumed, and the wait is the short one again; a consumer made
    with ``idle_fetch=False`` keeps the short wait, one with ``fetch_wait_ms`` that wait."""
    s = settings.model_copy(update={"kafka_idle_after_s": 0.3, "kafka_fetch_timeout_ms": 50,
                                    "kafka_idle_fetch_max_wait_ms": 80})  # fmt: skip
    topic = f"{s.topic_prefix}md.bars"

    async def waits() -> int | None:
        return c.fetch_wait_ms

    async def got() -> int:
        return min(len(handler.bars), len(fast.bars), len(bulk.bars))

    async with Producer(s) as producer:
        handler = BarCollector(s, producer)
        fast = BarCollector(s, producer)
        bulk = BarCollector(s, producer)
        async with (
            BatchConsumer(s, [topic], f"g-{s.topic_prefix}", handler) as c,
            BatchConsumer(s, [topic], f"f-{s.topic_prefix}", fast, idle_fetch=False) as f,
            BatchConsumer(s, [topic], f"b-{s.topic_prefix}", bulk, fetch_wait_ms=250) as b,
        ):
            runs = [asyncio.create_task(x.run()) for x in (c, f, b)]
            assert c.fetch_wait_ms == f.fetch_wait_ms == s.kafka_fetch_max_wait_ms
            assert b.fetch_wait_ms == 250
            await eventually(waits, lambda ms: ms == 80, "the idle wait")
            assert f.fetch_wait_ms == s.kafka_fetch_max_wait_ms  # as quiet, still fast
            await producer.send(topic, encode(bar("AAPL", 1)), key=b"AAPL")
            await producer.flush()
            await eventually(got, lambda n: n == 1, "the record")
            assert c.fetch_wait_ms == s.kafka_fetch_max_wait_ms
            assert b.fetch_wait_ms == 250  # with records as without
            for x in (c, f, b):
                x.stop()
            await asyncio.gather(*runs)
    assert handler.bars == fast.bars == bulk.bars == [bar("AAPL", 1)]


class _Raw:
    """A BatchHandler that keeps every record as it came, and how each partition's came."""

    def __init__(self, stop_after: int) -> None:
        self.stop_after = stop_after
        self.consumer: BatchConsumer | None = None
        self.records: list[tuple[int, int, bytes | None, bytes | None, int]] = []
        self.kinds: set[tuple[int, str]] = set()

    async def on_batch(self, batch):
        for tp, records in batch.items():
            self.kinds.add((tp.partition, type(records).__name__))
            self.records += [(tp.partition, r.offset, r.key, r.value, r.timestamp)
                             for r in records]  # fmt: skip
        if len(self.records) >= self.stop_after and self.consumer is not None:
            self.consumer.stop()

    async def on_assigned(self, partitions):
        pass

    async def on_revoked(self, partitions):
        pass


async def test_a_block_consumer_gets_the_records_a_plain_one_gets(settings):
    """``blocks=True``: each partition's records framed from the fetch (a RecordChain),
    the same offsets, keys, values and timestamps as aiokafka's records — and a fetch
    holding a record with headers, which the framer leaves, read by aiokafka instead."""
    topic = f"{settings.topic_prefix}md.bars"
    framed = ("technic_kafka_block_fetches_total", {"read": "framed"})
    by_record = ("technic_kafka_block_fetches_total", {"read": "records"})
    before = [REGISTRY.get_sample_value(*m) or 0.0 for m in (framed, by_record)]
    async with Producer(settings) as producer:
        for i in range(300):
            key = None if i % 50 == 7 else f"S{i % 40}".encode()
            await producer.send(topic, None if i % 90 == 3 else encode(bar("X", i)), key=key)
        await producer.send(topic, b"with headers", key=b"S0", headers=[("h", b"1")])
        assert await producer.flush() == 301
    got = {}
    for blocks in (True, False):
        handler = _Raw(stop_after=301)
        group = f"{'b' if blocks else 'p'}-{settings.topic_prefix}"
        async with BatchConsumer(settings, [topic], group, handler, blocks=blocks) as c:
            handler.consumer = c
            await run_until_done(c)
        got[blocks] = handler
    assert len(got[True].records) == 301
    assert sorted(got[True].records) == sorted(got[False].records)
    assert {k for _p, k in got[False].kinds} == {"list"}
    assert "RecordChain" in {k for _p, k in got[True].kinds}
    s0 = next(p for p, _o, key, value, _t in got[True].records if value == b"with headers")
    assert (s0, "list") in got[True].kinds  # its partition's fetch: aiokafka's records
    after = [REGISTRY.get_sample_value(*m) or 0.0 for m in (framed, by_record)]
    assert after[0] > before[0] and after[1] > before[1]
