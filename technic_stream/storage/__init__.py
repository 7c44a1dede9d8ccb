"""MongoDB storage through PyMongo's asyncio client."""

from technic_stream.storage.client import mongo_client

__all__ = ["mongo_client"]
