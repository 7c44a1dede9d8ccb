"""technic-stream: a real-time stock market scanner on Kafka, numba, Redis and WebSockets."""

__version__ = "0.1.0"

__all__ = ["__version__"]
