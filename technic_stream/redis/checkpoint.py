"""Checkpoints of consumer state, stored in Redis with the source offset they cover.

A stateful consumer (bar builder, engine) saves, per partition, a snapshot of its state
together with the offset of the next record it has not applied. On assignment it loads
the snapshot and seeks to that offset, so recovery replays only the tail after the
snapshot, and replayed outputs repeat earlier ones exactly (same ids, same bars).

Key: ``{redis_prefix}ckpt:{group}:{topic}:{partition}``; value: JSON (orjson, NumPy
arrays as lists) ``{"offset": n, "saved_ms": t, "state": {...}}``, or for binary state
(:meth:`CheckpointStore.save_blob`) ``TSCK``, offset and saved time (two little-endian
int64) and the blob. Either way one SET: the state and its offset are written atomically.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

__all__ = ["BlobCheckpoint", "Checkpoint", "CheckpointStore"]

_BLOB = struct.Struct("<4sqq")
_MAGIC = b"TSCK"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    offset: int  # the next offset to read
    saved_ms: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BlobCheckpoint:
    offset: int
    saved_ms: int
    blob: bytes


class CheckpointStore:
    def __init__(self, redis: aioredis.Redis, prefix: str, group: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}ckpt:{group}:"

    def key(self, topic: str, partition: int) -> str:
        return f"{self._prefix}{topic}:{partition}"

    async def save(self, topic: str, partition: int, offset: int, state: dict[str, Any]) -> int:
        """Store a snapshot; returns its size in bytes."""
        blob = orjson.dumps(
            {"offset": offset, "saved_ms": int(time.time() * 1000), "state": state},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        await self._redis.set(self.key(topic, partition), blob)
        return len(blob)

    async def load(self, topic: str, partition: int) -> Checkpoint | None:
        blob = await self._redis.get(self.key(topic, partition))
        if blob is None:
            return None
        data = orjson.loads(blob)
        return Checkpoint(int(data["offset"]), int(data["saved_ms"]), data["state"])

    async def save_blob(self, topic: str, partition: int, offset: int, blob: bytes) -> int:
        """Store a binary snapshot with its offset (one SET); returns its size in bytes."""
        head = _BLOB.pack(_MAGIC, offset, int(time.time() * 1000))
        await self._redis.set(self.key(topic, partition), head + blob)
        return len(head) + len(blob)

    async def load_blob(self, topic: str, partition: int) -> BlobCheckpoint | None:
        raw = await self._redis.get(self.key(topic, partition))
        if raw is None:
            return None
        if not isinstance(raw, bytes):
            raise ValueError("checkpoints need a Redis client that returns bytes")
        if len(raw) < _BLOB.size or raw[:4] != _MAGIC:
            raise ValueError("not a binary checkpoint")
        _, offset, saved_ms = _BLOB.unpack_from(raw, 0)
        return BlobCheckpoint(int(offset), int(saved_ms), raw[_BLOB.size :])

    async def offset(self, topic: str, partition: int) -> int | None:
        """The offset of the stored binary checkpoint, reading only its header."""
        raw = await self._redis.getrange(self.key(topic, partition), 0, _BLOB.size - 1)
        if not isinstance(raw, bytes) or len(raw) < _BLOB.size or raw[:4] != _MAGIC:
            return None
        return int(_BLOB.unpack_from(raw, 0)[1])
