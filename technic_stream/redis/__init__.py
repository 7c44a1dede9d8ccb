"""Redis: client factory (latest values, channels and history streams land here)."""

from technic_stream.redis.client import redis_client

__all__ = ["redis_client"]
