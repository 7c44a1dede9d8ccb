"""Local servers for development, tests and the embedded default (``technic-stream up``)."""

from technic_stream.local.process import ServerProcess, free_port
from technic_stream.local.stack import LocalStack, ServiceEndpoint

__all__ = ["LocalStack", "ServerProcess", "ServiceEndpoint", "free_port"]
