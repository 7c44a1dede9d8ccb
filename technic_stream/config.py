"""Settings: the one place that reads the environment.

Every value comes from a ``TECHNIC_*`` environment variable (or the keyword
arguments of :class:`Settings`, for tests). The object is frozen; build it once
with :func:`load_settings` and pass it through constructors.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from technic_stream.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "load_settings"]

ENV_PREFIX = "TECHNIC_"

_TOPIC_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]{0,100}$")
_REDIS_PREFIX_RE = re.compile(r"^[A-Za-z0-9._:-]{0,100}$")


class Settings(BaseSettings):
    """Runtime configuration, one field per ``TECHNIC_<FIELD>`` variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    # External services. Unset means "start a local one" (``technic-stream up``
    # and the test fixtures); set means "use this one and start nothing".
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers, host:port[,host:port]"
    )
    redis_url: str | None = Field(default=None, description="redis:// URL")
    mongo_url: str | None = Field(default=None, description="mongodb:// URL")

    # Naming.
    topic_prefix: str = Field(default="technic.", description="prefix of every Kafka topic")
    redis_prefix: str = Field(default="technic:", description="prefix of every Redis key")
    mongo_db: str = Field(default="technic", min_length=1, max_length=63)

    # Topics created by ``up`` and the fixtures.
    partitions: int = Field(default=8, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)

    # Kafka client tuning.
    kafka_client_id: str = "technic-stream"
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100, le=100_000)
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    kafka_fetch_max_records: int = Field(default=5_000, ge=1, le=1_000_000)
    kafka_fetch_timeout_ms: int = Field(default=200, ge=0, le=60_000)
    kafka_fetch_max_wait_ms: int = Field(
        default=10, ge=1, le=60_000,
        description="longest a fetch waits at the broker for data (bounds added latency)",
    )  # fmt: skip
    kafka_idle_fetch_max_wait_ms: int = Field(
        default=100, ge=1, le=60_000,
        description="the fetch wait of a consumer that has had no record for "
        "kafka_idle_after_s (the first record after that waits up to this long); "
        "the local broker answers an empty fetch only when the wait is up",
    )  # fmt: skip
    kafka_idle_after_s: float = Field(
        default=2.0, ge=0, le=3_600, description="quiet time before a consumer polls slower"
    )
    kafka_linger_ms: int = Field(default=5, ge=0, le=10_000)
    kafka_max_batch_bytes: int = Field(default=1_048_576, ge=1_024)
    kafka_acks: Literal["all", "1", "0"] = "all"
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1_000)
    max_message_bytes: int = Field(
        default=1_000_000, ge=256, description="larger messages go to the DLQ unread"
    )

    # Timeouts for the other clients.
    redis_timeout_s: float = Field(default=5.0, gt=0, le=300)
    mongo_timeout_ms: int = Field(default=5_000, ge=100, le=300_000)

    # The gateway's public HTTP/WebSocket address.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    gateway_jwt_secret: SecretStr | None = Field(
        default=None,
        description="HS256 secret that signs and checks tokens; unset: a random one per "
        "process (set it when several gateways share clients)",
    )
    gateway_jwt_public_key: str | None = Field(
        default=None, description="PEM public key: also accept RS256 tokens from your issuer"
    )
    gateway_jwt_issuer: str = Field(default="technic-stream", description="iss and aud of tokens")
    gateway_token_ttl_s: int = Field(default=900, ge=10, le=86_400)
    gateway_queue_max: int = Field(
        default=1_000, ge=8, le=1_000_000, description="messages queued per connection"
    )
    gateway_coalesce_max: int = Field(
        default=32, ge=1, le=1_000, description="messages joined into one WebSocket frame"
    )
    gateway_max_subscriptions: int = Field(default=200, ge=1, le=100_000)
    gateway_max_connections_per_key: int = Field(default=100, ge=1, le=1_000_000)
    gateway_max_frame_bytes: int = Field(
        default=65_536, ge=256, le=16_777_216, description="largest client WebSocket frame"
    )
    gateway_max_request_bytes: int = Field(default=1_048_576, ge=1_024, le=67_108_864)
    gateway_rest_rate: float = Field(
        default=100.0, gt=0, description="REST requests/s per key (token bucket, shared)"
    )
    gateway_rest_burst: int = Field(default=200, ge=1)
    gateway_subscribe_rate: float = Field(default=50.0, gt=0, description="subscribes/s per key")
    gateway_subscribe_burst: int = Field(default=200, ge=1)
    gateway_ping_interval_s: float = Field(default=25.0, gt=0, le=3_600)
    gateway_idle_timeout_s: float = Field(
        default=60.0, gt=0, description="close a connection without subscriptions after this"
    )
    gateway_connect_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="time to authenticate after the upgrade"
    )
    gateway_pubsub_silence_s: float = Field(
        default=15.0, gt=0, description="readiness fails when pub/sub is silent this long"
    )

    # Operations side port (/healthz, /readyz, /metrics); 0 picks a free port.
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9400, ge=0, le=65535)

    # Bar builder (trades → bars).
    bar_timeframes: str = Field(
        default="1s,1m,5m,15m,1h,1d", description="bars built from trades, comma-separated"
    )
    bar_grace_ms: int = Field(
        default=2_000, ge=0, le=3_600_000, description="how late a trade may still correct"
    )
    session_tz: str = Field(default="America/New_York", description="time zone of the session")
    session_open: str = Field(default="09:30", pattern=r"^\d\d:\d\d$")
    session_close: str = Field(default="16:00", pattern=r"^\d\d:\d\d$")
    max_future_ms: int = Field(
        default=300_000,
        ge=0,
        description="event times further ahead of the wall clock go to the DLQ",
    )

    # Alpaca market data v2 feed adapter (runs under 'up' when a key is set).
    alpaca_url: str = Field(
        default="wss://stream.data.alpaca.markets/v2/iex", description="v2/iex or v2/sip"
    )
    alpaca_key: SecretStr | None = None
    alpaca_secret: SecretStr | None = None
    alpaca_trades: str = Field(default="", description="symbols whose trades to stream, or *")
    alpaca_bars: str = Field(default="*", description="symbols whose minute bars to stream")

    # Stateful consumers: how often state is checkpointed with its offsets (and always on
    # revoke and shutdown).
    checkpoint_interval_s: float = Field(default=1.0, ge=0, le=3_600)

    # Indicator engine.
    engine_indicators: str = Field(
        default=(
            "sma(20), sma(50), sma(200), ema(9), ema(21), rsi(14), macd(12,26,9), bb(20,2), "
            "atr(14), adx(14), obv, relvol(20)"
        ),
        description="indicators every symbol gets on every timeframe (rules add more)",
    )
    engine_malloc_keep_mb: int = Field(
        default=128, ge=0, le=65_536,
        description="freed memory the engine's allocator keeps for the next batch's arrays "
        "(MB; 0: glibc's defaults, which hand large blocks back to the kernel at once)",
    )  # fmt: skip
    engine_compute_threads: int = Field(
        default=2, ge=1, le=64,
        description="threads that apply a batch's partitions to their books and evaluate "
        "their rules (numba, which releases the GIL); 1: all in the event loop's thread",
    )  # fmt: skip
    engine_warmup: bool = Field(
        default=True,
        description="compile (or load from numba's cache) the engine's kernels on made-up "
        "bars before it joins its group, so it takes partitions only once it can process "
        "them (a fresh machine's first batch otherwise compiles them: tens of seconds)",
    )
    engine_history_bars: int = Field(
        default=250, ge=1, le=100_000, description="recent bars kept per symbol for warm-ups"
    )
    engine_checkpoint_interval_s: float = Field(default=10.0, ge=0, le=3_600)
    engine_checkpoint_bars: int = Field(
        default=500_000, ge=1, description="checkpoint a partition after this many bars"
    )
    engine_batch_max: int = Field(
        default=20_000, ge=1, le=1_000_000, description="records fetched per engine batch"
    )
    channel_publish: Literal["subscribed", "all"] = Field(
        default="subscribed",
        description="market channels (ind.*, bars.*) to publish: those a gateway has "
        "registered interest in, or all",
    )
    channel_history_size: int = Field(
        default=1_000, ge=1, le=1_000_000, description="messages kept per channel"
    )
    channel_history_ttl_s: int = Field(
        default=3_600, ge=1, le=604_800, description="age of a channel's oldest message"
    )

    # Scans.
    scan_chunk_symbols: int = Field(
        default=500, ge=1, le=20_000, description="symbols per chunk (the unit of checkpoints)"
    )
    scan_concurrency: int = Field(default=2, ge=1, le=64, description="scans run at once")
    scan_snapshot_chunk_symbols: int = Field(
        default=5_000, ge=1, le=20_000, description="symbols per chunk of snapshot scans"
    )
    scan_cache_ttl_s: int = Field(
        default=600, ge=0, le=604_800, description="how long loaded bar arrays stay in Redis"
    )
    scan_compute_slots: int = Field(
        default=2, ge=1, le=64,
        description="chunks computed at once per worker (scans take turns chunk by chunk)",
    )  # fmt: skip
    scan_queue_max: int = Field(
        default=64, ge=1, le=10_000, description="scan requests a worker takes in at once"
    )
    scan_shard_min_chunks: int = Field(
        default=4, ge=2, le=100_000,
        description="history scans of at least this many chunks are offered to the group",
    )  # fmt: skip
    scan_worker_ttl_s: float = Field(
        default=10.0, gt=0, le=600,
        description="a scan worker's liveness: its chunk claims lapse this long after it dies",
    )  # fmt: skip
    scan_progress_hz: float = Field(
        default=10.0, gt=0, le=100, description="most progress events per second per scan"
    )

    # Notifier (webhooks, FCM, APNs).
    notifier_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="longest one delivery attempt may take"
    )
    notifier_max_attempts: int = Field(
        default=8, ge=1, le=100,
        description="attempts per delivery before it goes to the DLQ with its history",
    )  # fmt: skip
    notifier_retry_base_s: float = Field(
        default=1.0, gt=0, le=3_600, description="first retry delay (doubles, with jitter)"
    )
    notifier_retry_max_s: float = Field(
        default=300.0, gt=0, le=86_400, description="longest delay between attempts"
    )
    notifier_owner_rate: int = Field(
        default=600, ge=1, le=1_000_000,
        description="deliveries per owner per minute; beyond, one notice per target instead",
    )  # fmt: skip
    notifier_concurrency: int = Field(
        default=64, ge=1, le=10_000, description="deliveries in flight per notifier process"
    )
    notifier_digest_s: float = Field(
        default=0.0, ge=0, le=3_600,
        description="hold an owner's alerts of one bar this long, then send them as one "
        "message per target (0: a message per alert)",
    )  # fmt: skip
    notifier_fcm_credentials: str | None = Field(
        default=None,
        description="path of a Firebase service account's JSON key; unset: no FCM pushes",
    )
    notifier_fcm_url: str = Field(
        default="https://fcm.googleapis.com", description="FCM HTTP v1 API base URL"
    )
    notifier_apns_key: str | None = Field(
        default=None, description="path of the APNs .p8 signing key; unset: no APNs pushes"
    )
    notifier_apns_key_id: str | None = Field(default=None, description="the .p8 key's id")
    notifier_apns_team_id: str | None = Field(default=None, description="Apple team id")
    notifier_apns_topic: str | None = Field(default=None, description="the app's bundle id")
    notifier_apns_url: str = Field(
        default="https://api.push.apple.com",
        description="APNs base URL (https://api.sandbox.push.apple.com for development)",
    )
    notifier_ledger_ttl_s: int = Field(
        default=7 * 86_400, ge=60, le=90 * 86_400,
        description="how long a delivery's outcome is remembered (redelivered alerts skip it)",
    )  # fmt: skip

    # Lifecycle.
    shutdown_grace_s: float = Field(default=10.0, gt=0, le=600)

    # Logging.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix_ok(cls, value: str) -> str:
        if not _TOPIC_PREFIX_RE.match(value):
            raise ValueError("may hold only letters, digits, '.', '_' and '-' (at most 100)")
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _redis_prefix_ok(cls, value: str) -> str:
        if not _REDIS_PREFIX_RE.match(value):
            raise ValueError("may hold only letters, digits, '.', '_', ':' and '-' (at most 100)")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_ok(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port], got {part.strip()!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_ok(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("mongo_url")
    @classmethod
    def _mongo_url_ok(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("expected a mongodb:// or mongodb+srv:// URL")
        return value


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            hint = difflib.get_close_matches(upper, known, n=1)
            problems.append(
                f"{name}: unknown variable" + (f" (did you mean {hint[0]}?)" if hint else "")
            )
    return problems


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment (and ``overrides``).

    Raises :class:`ConfigError` naming each offending ``TECHNIC_*`` variable,
    including unknown ones (a typo must not silently fall back to a default).
    """
    env = os.environ if environ is None else environ
    problems = _unknown_variables(env)
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems), problems)
    return settings
