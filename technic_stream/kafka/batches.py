"""Record batches framed in numba, for the producer to send as they are.

aiokafka builds a batch a record at a time — a Python call into its C builder and a
metadata object per record, ~0.8 µs a record — which is most of what sending a batch's
alerts cost the engine. :func:`framed_batches` frames many records (keys and values end
to end) into v2 record batches in one numba call each
(:func:`~technic_stream.kernels.records.write_records`); :class:`FramedBatch` hands one
to the producer's ``send_batch`` in place of the client's own builder, and the client
sends it like any other (its header and CRC written once the producer state is known).

The batches are what the client's builder makes for the same records, field for field,
except that every record carries the batch's one timestamp (tests read them back with the
client's own reader and check the CRC).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence

import numpy as np
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.util import calc_crc32c

from technic_stream.buffers import joined
from technic_stream.kernels.records import HEADER, write_records

__all__ = ["FramedBatch", "framed_batches"]

_HEAD = struct.Struct(">qiibIhiqqqhii")  # the v2 batch header, as the client writes it
_CRC_AT, _CRC_FROM, _AFTER_LENGTH = 17, 21, 12
_NO_LEADER_EPOCH = -1
_RECORD_OVERHEAD = 23  # a record's bytes beyond its key and value, at most


class FramedBatch(BatchBuilder):
    """A closed batch of records framed already (see :func:`framed_batches`): what the
    client's accumulator asks of a batch builder, nothing more."""

    def __init__(self, records: np.ndarray, count: int, timestamp_ms: int) -> None:
        # (not BatchBuilder.__init__: that makes the client's builder, not wanted here)
        self._records = records  # the header's bytes, zero, then the records
        self._relative_offset = count
        self._timestamp_ms = timestamp_ms
        self._producer_state = (-1, -1, 0)  # (as the client's builder begins)
        self._buffer: bytes | None = None
        self._closed = True

    def append(self, *, timestamp, key, value, headers=()):  # type: ignore[no-untyped-def]
        return None  # (closed: nothing more goes in)

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int):  # type: ignore[no-untyped-def]
        self._producer_state = (producer_id, producer_epoch, base_sequence)

    def _build(self) -> bytes:
        if self._buffer is None:
            buf = self._records.data  # (a writable view of the array)
            pid, epoch, seq = self._producer_state
            ts = self._timestamp_ms
            _HEAD.pack_into(buf, 0, 0, len(buf) - _AFTER_LENGTH, _NO_LEADER_EPOCH, 2, 0, 0,
                            self._relative_offset - 1, ts, ts, pid, epoch, seq,
                            self._relative_offset)  # fmt: skip
            struct.pack_into(">I", buf, _CRC_AT, calc_crc32c(buf[_CRC_FROM:]))
            self._buffer = buf.tobytes()
        return self._buffer

    def size(self) -> int:
        return int(self._records.shape[0])

    def record_count(self) -> int:
        return int(self._relative_offset)


def framed_batches(
    keys: Sequence[bytes], values: Sequence[bytes], max_bytes: int, timestamp_ms: int | None = None
) -> list[FramedBatch]:
    """The records (``keys[i]``, ``values[i]``), in order, as batches of at most
    ``max_bytes`` each (a record bigger than that, alone)."""
    n = len(values)
    if len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} values")
    if n == 0:
        return []
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    kbuf, key_at = joined(keys)
    vbuf, value_at = joined(values)
    # each record's bytes at most; a batch takes records while they fit
    ends = np.cumsum(np.diff(key_at) + np.diff(value_at) + _RECORD_OVERHEAD)
    room = max_bytes - HEADER
    out: list[FramedBatch] = []
    start, used = 0, 0
    while start < n:
        # (at least one: a record too big for a batch goes alone, as the client sends it)
        stop = max(int(np.searchsorted(ends, used + room, side="right")), start + 1)
        records = write_records(kbuf, key_at[start : stop + 1], vbuf, value_at[start : stop + 1])
        out.append(FramedBatch(records, stop - start, ts))
        used = int(ends[stop - 1])
        start = stop
    return out
