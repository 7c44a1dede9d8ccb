"""The exception family. Every error we raise is a :class:`TechnicStreamError`."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "KafkaTransportError",
    "LocalServiceError",
    "MessageDecodeError",
    "TechnicStreamError",
]


class TechnicStreamError(Exception):
    """Root of our errors. Subclasses carry context and render it in ``str()``."""


class ConfigError(TechnicStreamError):
    """Settings could not be built; ``problems`` names each variable and why."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class LocalServiceError(TechnicStreamError):
    """A local server (broker, Redis, MongoDB-protocol) failed to start or answer."""

    def __init__(self, service: str, reason: str, log_tail: str = "") -> None:
        self.service = service
        self.reason = reason
        self.log_tail = log_tail
        text = f"{service}: {reason}"
        if log_tail:
            text += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(text)


class MessageDecodeError(TechnicStreamError):
    """A wire message could not be decoded or failed validation.

    ``reason`` is one line fit for a DLQ header; the Kafka coordinates are
    filled in by the consumer that read the message.
    """

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(reason)

    def __str__(self) -> str:
        where = ""
        if self.topic is not None:
            where = f" [topic={self.topic} partition={self.partition} offset={self.offset}]"
        return f"{self.reason}{where}"


class KafkaTransportError(TechnicStreamError):
    """A Kafka operation failed after the client's own retries."""

    def __init__(self, operation: str, reason: str, *, topic: str | None = None) -> None:
        self.operation = operation
        self.topic = topic
        where = f" on {topic}" if topic else ""
        super().__init__(f"kafka {operation}{where} failed: {reason}")
