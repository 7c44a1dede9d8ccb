"""Checkpoints of consumer state, stored in Redis with the source offset they cover.

A stateful consumer (bar builder, engine) saves, per partition, a snapshot of its state
together with the offset of the next record it has not applied. On assignment it loads
the snapshot and seeks to that offset, so recovery replays only the tail after the
snapshot, and replayed outputs repeat earlier ones exactly (same ids, same bars).

Key: ``{redis_prefix}ckpt:{group}:{topic}:{partition}``; value: JSON (orjson, NumPy
arrays as lists) ``{"offset": n, "saved_ms": t, "state": {...}}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

__all__ = ["Checkpoint", "CheckpointStore"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    offset: int  # the next offset to read
    saved_ms: int
    state: dict[str, Any]


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
