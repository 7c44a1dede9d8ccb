"""Creating the topics of DESIGN.md (idempotent)."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from technic_stream.config import Settings
from technic_stream.errors import KafkaTransportError
from technic_stream.topics import TOPICS

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)


async def ensure_topics(
    settings: Settings,
    *,
    bootstrap: str | None = None,
    prefix: str | None = None,
    partitions: int | None = None,
) -> list[str]:
    """Create every topic of the table that does not exist yet; return all their names."""
    bootstrap = bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        raise KafkaTransportError("create topics", "no bootstrap servers configured")
    prefix = settings.topic_prefix if prefix is None else prefix
    count = partitions or settings.partitions
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=f"{settings.kafka_client_id}-admin",
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = []
        for spec in TOPICS:
            name = f"{prefix}{spec.name}"
            if name in existing:
                continue
            config = {"cleanup.policy": "compact"} if spec.compacted else {}
            wanted.append(
                NewTopic(
                    name,
                    num_partitions=count,
                    replication_factor=settings.replication_factor,
                    topic_configs=config,
                )
            )
        if wanted:
            # A concurrent creator may win the race; that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
            log.info("topics created", extra={"topics": [t.name for t in wanted]})
    except KafkaError as exc:
        raise KafkaTransportError("create topics", str(exc)) from exc
    finally:
        await admin.close()
    return [f"{prefix}{spec.name}" for spec in TOPICS]
