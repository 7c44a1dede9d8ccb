"""Shared fixtures. Integration fixtures start the real local servers once per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from technic_stream.config import Settings
from technic_stream.local import LocalStack

ROOT = Path(__file__).resolve().parent.parent

# CI runs the default hypothesis profile (derandomized: the same examples every run, so a
# red CI is reproducible); HYPOTHESIS_PROFILE=deep explores ten times further at random.
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
hypothesis_settings.register_profile("default", max_examples=60, derandomize=True, **_COMMON)
hypothesis_settings.register_profile("deep", max_examples=600, **_COMMON)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Unit tests must not pick up a developer's TECHNIC_* environment.
for _name in list(os.environ):
    if _name.startswith("TECHNIC_"):
        del os.environ[_name]


def _test_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        # Short group timings: tansu holds a JoinGroup for half the session timeout.
        "kafka_session_timeout_ms": 2_000,
        "kafka_heartbeat_interval_ms": 300,
        "kafka_fetch_timeout_ms": 100,
        "kafka_linger_ms": 2,
        "ops_port": 0,
        "partitions": 4,
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """The broker, Redis and MongoDB-protocol server, started once for the session."""
    with LocalStack(_test_settings()) as stack:
        yield stack


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def settings(local_stack: LocalStack, unique: str) -> AsyncIterator[Settings]:
    """Settings for one test: the session's servers, a fresh topic prefix, Redis prefix and DB.

    The test's topics exist before it starts.
    """
    from technic_stream.kafka import ensure_topics

    live = local_stack.settings.model_copy(
        update={
            "topic_prefix": f"t{unique}.",
            "redis_prefix": f"t{unique}:",
            "mongo_db": f"t{unique}",
        }
    )
    await ensure_topics(live)
    yield live


def make_settings(**overrides: object) -> Settings:
    return _test_settings(**overrides)
