"""The gateway's Prometheus metrics (one process-wide registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("technic_gateway_connections", "Open WebSocket connections")
CONNECTS = Counter("technic_gateway_connects", "WebSocket connections by outcome", ["outcome"])
SUBSCRIPTIONS = Gauge("technic_gateway_subscriptions", "Client subscriptions, all connections")
CHANNELS = Gauge("technic_gateway_channels", "Redis pub/sub channels this process holds")
MESSAGES_IN = Counter("technic_gateway_messages_in", "Messages received from Redis pub/sub")
DELIVERIES = Counter("technic_gateway_deliveries", "Messages written to clients")
WRITES = Counter("technic_gateway_writes", "WebSocket frames written (each holds 1+ messages)")
DROPS = Counter("technic_gateway_drops", "Messages not delivered, by reason", ["reason"])
SLOW_DISCONNECTS = Counter(
    "technic_gateway_slow_disconnects", "Connections closed because they fell behind"
)
QUEUE_DEPTH = Histogram(
    "technic_gateway_queue_depth",
    "Queued messages per connection when its writer wakes",
    buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
RECOVERIES = Counter(
    "technic_gateway_recoveries", "Subscribes with since, by result", ["recovered"]
)
GAPS = Counter("technic_gateway_gaps", "Subscriptions ended for a gap or a new epoch", ["reason"])
RATE_LIMITED = Counter("technic_gateway_rate_limited", "Requests refused by a limit", ["limit"])
REQUESTS = Histogram(
    "technic_gateway_request_seconds",
    "REST request time by route and status",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PUBSUB_RECONNECTS = Counter("technic_gateway_pubsub_reconnects", "Redis pub/sub reconnections")
