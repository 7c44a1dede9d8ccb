"""Building PyMongo's ``AsyncMongoClient`` from settings (Motor is deprecated)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from technic_stream.config import Settings

__all__ = ["mongo_client"]


def mongo_client(settings: Settings, *, url: str | None = None) -> AsyncMongoClient[Any]:
    """An async MongoDB client with bounded timeouts. No I/O until first use.

    Close with ``await client.close()``.
    """
    target = url or settings.mongo_url
    if not target:
        raise ValueError("no MongoDB URL configured (TECHNIC_MONGO_URL)")
    timeout = settings.mongo_timeout_ms
    return AsyncMongoClient(
        target,
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        socketTimeoutMS=max(timeout, 30_000),
        appname=settings.kafka_client_id,
        tz_aware=True,
    )
