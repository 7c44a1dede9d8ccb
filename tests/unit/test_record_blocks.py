"""Record batches framed in numba, held to aiokafka's own reader on the same bytes."""

from __future__ import annotations

import numpy as np
import pytest
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from technic_stream.kafka import blocks
from technic_stream.kafka.blocks import FetchBlocks, RecordBlock, RecordChain, chain_of
from technic_stream.kernels.records import PLAIN, batch_spans, frame_records

TP = TopicPartition("t", 3)
Rec = tuple[bytes | None, bytes | None, int]  # key, value, timestamp delta
Row = tuple[int, int, int, bytes | None, bytes | None]  # offset, timestamp, its type, key, value


def batch(base: int, recs: list[Rec], *, compression: int = 0, headers: bool = False,
          transactional: bool = False) -> bytes:  # fmt: skip
    b = DefaultRecordBatchBuilder(
        magic=2, compression_type=compression, is_transactional=transactional,
        producer_id=7 if transactional else -1, producer_epoch=0 if transactional else -1,
        base_sequence=0 if transactional else -1, batch_size=1 << 20,
    )  # fmt: skip
    for i, (key, value, dt) in enumerate(recs):
        hs = [("h", b"v")] if headers and i == 0 else []
        b.append(i, timestamp=1_700_000_000_000 + dt, key=key, value=value, headers=hs)
    out = bytearray(b.build())
    out[0:8] = base.to_bytes(8, "big")  # the broker's offset (the CRC does not cover it)
    return bytes(out)


def reference(data: bytes, fetch_offset: int = 0) -> list[Row]:
    records = MemoryRecords(data)
    out = []
    while records.has_next():
        b = records.next_batch()
        assert b.validate_crc()
        out += [(r.offset, r.timestamp, r.timestamp_type, r.key, r.value) for r in b
                if r.offset >= fetch_offset]  # fmt: skip
    return out


def framed(data: bytes, fetch_offset: int = 0) -> list[Row]:
    status, _next, off, ts, types, kat, klen, vat, vlen = frame_records(
        np.frombuffer(data, dtype=np.uint8), fetch_offset, True
    )
    assert status == PLAIN
    return [
        (int(off[i]), int(ts[i]), int(types[i]),
         None if klen[i] < 0 else data[kat[i] : kat[i] + klen[i]],
         None if vlen[i] < 0 else data[vat[i] : vat[i] + vlen[i]])
        for i in range(len(off))
    ]  # fmt: skip


keys = st.none() | st.binary(max_size=40)
values = st.none() | st.binary(max_size=300)
records = st.lists(st.tuples(keys, values, st.integers(0, 10**9)), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.lists(records, min_size=1, max_size=5), st.integers(0, 10**12), st.data())
def test_framing_gives_what_aiokafka_reads(batches, base, data):
    payload, offset = b"", base
    for recs in batches:
        payload += batch(offset, recs)
        offset += len(recs)
    fetch_offset = data.draw(st.integers(base, offset))
    assert framed(payload, fetch_offset) == reference(payload, fetch_offset)
    status, next_offset, *_ = frame_records(np.frombuffer(payload, np.uint8), fetch_offset, True)
    assert (status, next_offset) == (PLAIN, offset)


def test_a_batch_cut_off_by_the_fetch_limit_is_left_for_the_next_fetch():
    whole = batch(0, [(b"k", b"a" * 50, 0)] * 3) + batch(3, [(b"k", b"b" * 50, 1)] * 4)
    cut = whole[:-9]
    assert framed(cut) == reference(cut)
    assert len(framed(cut)) == 3
    _status, next_offset, *_ = frame_records(np.frombuffer(cut, np.uint8), 0, True)
    assert next_offset == 3


def test_log_append_time_gives_the_batch_timestamp():
    data = bytearray(batch(0, [(None, b"x", 5), (None, b"y", 9)]))
    data[22] |= 0x08  # attributes: timestamp type LogAppendTime (low byte of the int16)
    got = framed(bytes(data))
    records = MemoryRecords(bytes(data))
    want = [(r.offset, r.timestamp, r.timestamp_type, r.key, r.value) for r in records.next_batch()]
    assert got == want and got[0][2] == 1 and got[0][1] == got[1][1]


@pytest.mark.parametrize(
    "data, transactional_ok",
    [
        (batch(0, [(b"k", b"v", 0)] * 3, compression=1), True),  # gzip
        (batch(0, [(b"k", b"v", 0)] * 3, headers=True), True),
        (batch(0, [(b"k", b"v", 0)] * 3, transactional=True), False),
    ],
    ids=["compressed", "headers", "transactional-read-committed"],
)
def test_what_the_framer_does_not_read_it_says_so(data, transactional_ok):
    status, *_ = frame_records(np.frombuffer(data, np.uint8), 0, transactional_ok)
    assert status != PLAIN


def test_a_transactional_batch_read_uncommitted_is_framed():
    data = batch(0, [(b"k", b"v", 0)] * 3, transactional=True)
    assert framed(data) == reference(data)


def test_a_malformed_record_is_reported_not_read():
    data = bytearray(batch(0, [(b"k", b"v" * 10, 0)] * 2))
    data[61] = 0x7E  # the first record's length: far past the batch's end
    status, _next, offsets, *_ = frame_records(np.frombuffer(bytes(data), np.uint8), 0, True)
    assert status not in (PLAIN,) and len(offsets) == 0


def test_batch_spans_give_each_batchs_stored_crc():
    data = batch(0, [(b"k", b"v", 0)] * 2) + batch(2, [(None, b"w", 0)])
    spans = batch_spans(np.frombuffer(data, np.uint8)).tolist()
    first = len(batch(0, [(b"k", b"v", 0)] * 2))
    assert [(s, e) for s, e, _ in spans] == [(0, first), (first, len(data))]
    assert spans[0][2] == int.from_bytes(data[17:21], "big")


# -- the blocks aiokafka's fetcher hands a consumer that asked for them ----------------


def partition_records(data: bytes, fetch_offset: int, deserializer=None) -> list:
    assert blocks.install()
    kept = blocks._KeptRecords(data)
    pr = blocks._PartitionRecords(TP, kept, [], fetch_offset, None, deserializer, True, 0)
    items = list(pr)
    return [items, pr.next_fetch_offset]


def test_a_block_consumer_gets_blocks_of_the_size_it_asked_for():
    recs = [(b"k%d" % i, b"v%d" % i, i) for i in range(25)]
    data = batch(100, recs[:10]) + batch(110, recs[10:])
    items, next_offset = partition_records(data, 104, FetchBlocks(8))
    assert [type(i) for i in items] == [RecordBlock] * 3
    assert [len(i) for i in items] == [8, 8, 5] and next_offset == 125
    chain = RecordChain(items)
    want = [r for r in partition_records(data, 104)[0]]
    assert list(chain) == want and len(want) == 21
    assert isinstance(chain[-1], ConsumerRecord) and chain[-1].offset == 124
    assert chain[0] == want[0] and chain[-21] == want[0]
    with pytest.raises(IndexError):
        chain[21]
    assert [r.offset for r in chain.since(120)] == list(range(120, 125))
    joined, starts = chain.values()
    assert joined.tobytes() == b"".join(r.value for r in want)
    assert starts.tolist() == [0, *np.cumsum([len(r.value) for r in want]).tolist()]


def test_a_fetch_the_framer_does_not_read_comes_as_aiokafkas_records():
    data = batch(0, [(b"k", b"v", 0)] * 3, headers=True)
    items, next_offset = partition_records(data, 0, FetchBlocks(100))
    assert [type(i) for i in items] == [ConsumerRecord] * 3 and next_offset == 3
    assert items[0].headers == (("h", b"v"),)
    assert chain_of([items]) is None


def test_a_bad_crc_raises_as_aiokafka_does():
    data = bytearray(batch(0, [(b"k", b"value", 0)] * 3))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptRecordException):
        partition_records(bytes(data), 0, FetchBlocks(100))


def test_a_null_value_reads_as_an_empty_one_end_to_end():
    data = batch(0, [(b"a", b"xy", 0), (b"b", None, 0), (None, b"z", 0)])
    items, _ = partition_records(data, 0, FetchBlocks(100))
    chain = chain_of([RecordChain(items)])
    assert chain is not None and chain[1].value is None and chain[2].key is None
    joined, starts = chain.values()
    assert joined.tobytes() == b"xyz" and starts.tolist() == [0, 2, 2, 3]


def test_blocks_are_not_installed_over_a_fetcher_they_were_not_written_for(monkeypatch):
    """An aiokafka whose fetcher has another record iterator, or one the replacement
    cannot read correctly through, keeps its own: block consumers then get records."""
    from aiokafka.consumer import fetcher

    class Foreign:
        pass

    monkeypatch.setattr(blocks, "_installed", False)
    monkeypatch.setattr(fetcher, "PartitionRecords", Foreign)
    assert blocks.install() is False
    assert fetcher.PartitionRecords is Foreign and not blocks.installed()

    def nothing(self):
        return iter(())

    monkeypatch.setattr(blocks._PartitionRecords, "_unpack_records", nothing)
    assert blocks._works() is False


def test_frame_fetch_reads_a_fetch_answer_as_the_block_consumer_gets_it():
    data = batch(10, [(b"a", b"one", 0), (None, b"two", 5)]) + batch(12, [(b"c", None, 9)])
    chain = blocks.frame_fetch(TP, data, 11)
    assert chain is not None
    assert [(r.offset, r.key, r.value) for r in chain] == [
        (o, k, v) for o, _t, _ty, k, v in reference(data, 11)
    ]  # fmt: skip
    assert all(isinstance(b, RecordBlock) for b in chain.blocks)
    # what the framer leaves to aiokafka's reader, and a bad checksum: no chain
    assert blocks.frame_fetch(TP, batch(0, [(b"k", b"v", 0)], headers=True)) is None
    corrupt = bytearray(data)
    corrupt[-1] ^= 0xFF
    assert blocks.frame_fetch(TP, bytes(corrupt), 11) is None
