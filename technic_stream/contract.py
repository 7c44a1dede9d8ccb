"""The published wire contract: JSON Schemas and an AsyncAPI 3 document, from the models.

``technic-stream schemas export`` writes them under ``schemas/``; a test fails
when the committed files differ from what the models generate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from technic_stream import __version__
from technic_stream.kafka.dlq import DLQ_HEADERS
from technic_stream.messages import MODELS
from technic_stream.topics import TOPICS, TopicSpec

__all__ = ["asyncapi_document", "json_schemas", "render_files", "stale_files", "write_files"]

_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _type_name(model: type) -> str:
    return str(model.model_fields["type"].default)  # type: ignore[attr-defined]


def json_schemas() -> dict[str, dict[str, Any]]:
    """``{"bar.schema.json": {...}, ...}``: one JSON Schema per message type."""
    out: dict[str, dict[str, Any]] = {}
    for model in MODELS:
        name = _type_name(model)
        schema = model.model_json_schema(mode="validation")
        schema = {"$schema": _SCHEMA_DIALECT, "$id": f"{name}.schema.json", **schema}
        required = set(schema.get("required", []))
        required.update({"type", "v"})  # on the wire both are always present
        schema["required"] = sorted(required)
        out[f"{name}.schema.json"] = schema
    return out


def _channel_id(spec: TopicSpec) -> str:
    head, *rest = spec.name.replace("-", ".").split(".")
    return head + "".join(p.capitalize() for p in rest)


def asyncapi_document(prefix: str = "technic.", partitions: int = 8) -> dict[str, Any]:
    """An AsyncAPI 3.0 document of every topic: key, messages, writers and readers."""
    by_name = {m.__name__: m for m in MODELS}
    messages: dict[str, Any] = {}
    for model in MODELS:
        doc = (model.__doc__ or "").strip().splitlines()
        messages[model.__name__] = {
            "name": model.__name__,
            "title": model.__name__,
            "summary": doc[0] if doc else model.__name__,
            "contentType": "application/json",
            "payload": {"$ref": f"./{_type_name(model)}.schema.json"},
        }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "The original key and bytes of a rejected message, with the reason in headers.",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "required": list(DLQ_HEADERS),
            "properties": {h: {"type": "string"} for h in DLQ_HEADERS},
        },
        "payload": {},
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in TOPICS:
        cid = _channel_id(spec)
        names = list(spec.messages) if not spec.raw else ["DeadLetter"]
        for n in names:
            if n not in by_name and n != "DeadLetter":
                raise KeyError(f"topic {spec.name} names unknown message {n}")
        config: dict[str, Any] = {"cleanup.policy": ["compact" if spec.compacted else "delete"]}
        channel: dict[str, Any] = {
            "address": f"{prefix}{spec.name}",
            "title": f"{prefix}{spec.name}",
            "description": spec.description
            + (" A null value (tombstone) deletes the key." if spec.compacted else ""),
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {
                "kafka": {
                    "topic": f"{prefix}{spec.name}",
                    "partitions": partitions,
                    "topicConfiguration": config,
                    "bindingVersion": "0.5.0",
                }
            },
            "x-key": spec.key,
            "x-writers": list(spec.writers),
            "x-readers": list(spec.readers),
        }
        channels[cid] = channel
        ref = {"$ref": f"#/channels/{cid}"}
        cap = cid[0].upper() + cid[1:]
        key_binding = {"kafka": {"key": {"type": "string", "description": spec.key}}}
        operations[f"send{cap}"] = {
            "action": "send",
            "channel": ref,
            "summary": "Written by " + ", ".join(spec.writers) + f"; key = {spec.key}.",
            "bindings": key_binding,
        }
        operations[f"receive{cap}"] = {
            "action": "receive",
            "channel": ref,
            "summary": "Read by " + ", ".join(spec.readers) + ".",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "technic-stream",
            "version": __version__,
            "description": (
                "Kafka topics of technic-stream. Every payload is JSON with `type` and `v`; "
                "times are epoch milliseconds UTC. The topic prefix is configurable "
                f"(TECHNIC_TOPIC_PREFIX, default `{prefix}`). Invalid messages go to the DLQ."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "Any Kafka-protocol broker (Apache Kafka, tansu for local runs).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render_files() -> dict[str, str]:
    """File name → exact text, for every file under ``schemas/``."""
    files = {
        name: json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, schema in json_schemas().items()
    }
    files["asyncapi.yaml"] = (
        "# Generated by `technic-stream schemas export`; do not edit.\n"
        + yaml.safe_dump(asyncapi_document(), sort_keys=False, width=100, allow_unicode=True)
    )
    return files


def write_files(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    rendered = render_files()
    for old in directory.glob("*.schema.json"):
        if old.name not in rendered:
            old.unlink()
    for name, text in rendered.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(directory: Path) -> list[str]:
    """Names of files that are missing, differ from the models, or should not be there."""
    rendered = render_files()
    stale = []
    for name, text in rendered.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    stale.extend(p.name for p in directory.glob("*.schema.json") if p.name not in rendered)
    return sorted(stale)
