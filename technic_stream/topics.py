"""The topic table of DESIGN.md as data.

One source for topic creation, the AsyncAPI document and the checks on the
production compose file. Names are relative; :func:`topic_name` adds the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TOPICS", "TopicSpec", "all_topic_names", "group_name", "topic_name"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSpec:
    """One topic: its relative name, key, message types and who uses it."""

    name: str
    key: str
    messages: tuple[str, ...]
    writers: tuple[str, ...]
    readers: tuple[str, ...]
    description: str
    compacted: bool = False
    raw: bool = False  # carries foreign bytes (the DLQ): no schema of ours


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        name="md.trades",
        key="symbol",
        messages=("Trade",),
        writers=("feed adapters", "other services"),
        readers=("bar builder",),
        description="Trades (prints) per symbol, in event-time order per symbol.",
    ),
    TopicSpec(
        name="md.bars",
        key="symbol",
        messages=("Bar", "BarBatch"),
        writers=("bar builder", "replay", "synthetic", "other services"),
        readers=("engine", "archiver"),
        description=(
            "OHLCV bars of any timeframe (field tf). A bar with the same ts as the previous "
            "one for its symbol and timeframe is a correction and replaces it. High-volume "
            "producers may send BarBatch (columns of many bars); a batch only holds symbols "
            "of the partition it is written to, keyed by its first symbol."
        ),
    ),
    TopicSpec(
        name="scan.requests",
        key="scan_id",
        messages=("ScanRequest",),
        writers=("gateway", "CLI", "other services"),
        readers=("scan worker",),
        description="Requests to scan a universe with a rule.",
    ),
    TopicSpec(
        name="scan.control",
        key="scan_id",
        messages=("ScanControl",),
        writers=("gateway", "CLI"),
        readers=("scan worker",),
        description="Control of running scans (cancel).",
    ),
    TopicSpec(
        name="scan.tasks",
        key="scan_id:chunk",
        messages=("ScanTask",),
        writers=("scan coordinator",),
        readers=("scan workers",),
        description="One chunk of a sharded scan, for any worker of the group.",
    ),
    TopicSpec(
        name="scan.progress",
        key="scan_id",
        messages=("ScanProgress",),
        writers=("scan worker",),
        readers=("gateway", "others"),
        description="Progress of a scan: stage, counts, rate and ETA.",
    ),
    TopicSpec(
        name="scan.results",
        key="scan_id",
        messages=("ScanResult",),
        writers=("scan worker",),
        readers=("archiver", "gateway"),
        description="Partial results as chunks finish, then the final ranked result.",
    ),
    TopicSpec(
        name="alerts.rules",
        key="rule_id",
        messages=("AlertRule",),
        writers=("gateway", "other services"),
        readers=("engine",),
        description="Live alert rules; a null value (tombstone) deletes the rule.",
        compacted=True,
    ),
    TopicSpec(
        name="alerts.fired",
        key="owner",
        messages=("Alert",),
        writers=("engine",),
        readers=("notifier", "archiver", "gateway"),
        description="Alerts fired by live rules, with a deterministic alert_id.",
    ),
    TopicSpec(
        name="dlq",
        key="original key",
        messages=(),
        writers=("any consumer",),
        readers=("operators",),
        description=(
            "Messages that failed decoding or validation: original key and bytes, with "
            "headers source-topic, source-partition, source-offset, error-class, error-reason."
        ),
        raw=True,
    ),
)

_BY_NAME = {t.name: t for t in TOPICS}


def topic_name(prefix: str, name: str) -> str:
    """Full topic name: ``topic_name("technic.", "md.bars") == "technic.md.bars"``."""
    if name not in _BY_NAME:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(_BY_NAME)}")
    return f"{prefix}{name}"


def all_topic_names(prefix: str) -> list[str]:
    return [f"{prefix}{t.name}" for t in TOPICS]


def group_name(prefix: str, service: str) -> str:
    """Consumer group of a service, under the topic prefix (deployments sharing a broker
    keep their groups apart): ``technic.archiver``."""
    return f"{prefix}{service}"
