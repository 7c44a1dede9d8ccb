"""Kafka transport: batch consumer with commit-after-flush, acked producer, DLQ, topics."""

from technic_stream.kafka.admin import ensure_topics
from technic_stream.kafka.consumer import Batch, BatchConsumer, BatchHandler, TopicPartition
from technic_stream.kafka.dlq import DLQ_HEADERS, DeadLetterQueue, dlq_headers
from technic_stream.kafka.producer import Producer

__all__ = [
    "DLQ_HEADERS",
    "Batch",
    "BatchConsumer",
    "BatchHandler",
    "DeadLetterQueue",
    "Producer",
    "TopicPartition",
    "dlq_headers",
    "ensure_topics",
]
