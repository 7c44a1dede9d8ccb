"""Record batches framed in numba are the client's own batches for the same records."""

from __future__ import annotations

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from hypothesis import given
from hypothesis import strategies as st

from technic_stream.kafka.batches import framed_batches

_records = st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=300)), max_size=60)


def _read(data: bytes) -> list[tuple[bool, list[tuple[int, bytes, bytes, int]]]]:
    """Each batch in ``data`` by the client's reader: (CRC valid, its records)."""
    out = []
    records = MemoryRecords(data)
    while (batch := records.next_batch()) is not None:
        out.append((batch.validate_crc(), [(r.offset, r.key, r.value, r.timestamp)
                                           for r in batch]))  # fmt: skip
    return out


@given(records=_records)
def test_a_framed_batch_is_the_clients_batch_byte_for_byte(records):
    keys, values = [k for k, _ in records], [v for _, v in records]
    got = framed_batches(keys, values, 1 << 20, timestamp_ms=1_767_000_000_123)
    if not records:
        assert got == []
        return
    (batch,) = got
    theirs = BatchBuilder(1 << 20, 0)
    for k, v in records:
        assert theirs.append(timestamp=1_767_000_000_123, key=k, value=v) is not None
    assert batch._build() == theirs._build()
    assert batch.record_count() == len(records) and batch.size() == len(batch._build())


@given(records=_records, max_bytes=st.integers(100, 2_000))
def test_batches_keep_to_the_size_and_hold_every_record_in_order(records, max_bytes):
    """Each batch within ``max_bytes`` (a record too big for one goes alone), every
    record once, in order, each batch's CRC valid."""
    keys, values = [k for k, _ in records], [v for _, v in records]
    got = []
    for batch in framed_batches(keys, values, max_bytes, timestamp_ms=5):
        data = batch._build()
        assert len(data) <= max_bytes or batch.record_count() == 1
        ((crc_ok, recs),) = _read(data)
        assert crc_ok and [r[0] for r in recs] == list(range(len(recs)))
        assert {r[3] for r in recs} == {5}
        got += [(k, v) for _, k, v, _ in recs]
    assert got == records


def test_the_producer_state_goes_into_the_header_before_the_crc():
    (batch,) = framed_batches([b"k"], [b"v"], 1 << 20, timestamp_ms=9)
    batch._set_producer_state(41, 3, 17)
    theirs = BatchBuilder(1 << 20, 0)
    theirs.append(timestamp=9, key=b"k", value=b"v")
    theirs._set_producer_state(41, 3, 17)
    assert batch._build() == theirs._build()
    assert _read(batch._build())[0][0]
