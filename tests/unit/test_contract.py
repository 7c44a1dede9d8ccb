import yaml
from jsonschema import Draft202012Validator

from technic_stream.contract import asyncapi_document, json_schemas, render_files, stale_files
from technic_stream.messages import MODELS, encode
from technic_stream.topics import TOPICS
from tests.conftest import ROOT
from tests.unit.test_messages import samples


def test_committed_schemas_match_the_models():
    stale = stale_files(ROOT / "schemas")
    assert stale == [], f"run `technic-stream schemas export`; stale: {stale}"


def test_drift_is_detected(tmp_path):
    (tmp_path / "bar.schema.json").write_text("{}\n")
    (tmp_path / "old.schema.json").write_text("{}\n")
    stale = stale_files(tmp_path)
    assert "bar.schema.json" in stale  # differs
    assert "trade.schema.json" in stale  # missing
    assert "old.schema.json" in stale  # should not be there


def test_schemas_accept_what_we_send():
    import orjson

    schemas = json_schemas()
    for message in samples():
        schema = schemas[f"{message.type}.schema.json"]
        Draft202012Validator.check_schema(schema)
        errors = list(Draft202012Validator(schema).iter_errors(orjson.loads(encode(message))))
        assert errors == [], (message.type, errors)


def test_schemas_reject_what_we_reject():
    import orjson

    schema = json_schemas()["bar.schema.json"]
    doc = orjson.loads(encode(samples()[1]))
    for bad in ({**doc, "tf": "2h"}, {**doc, "volume": -1}, {**doc, "extra": 1}):
        assert list(Draft202012Validator(schema).iter_errors(bad)), bad
    missing = {k: v for k, v in doc.items() if k != "type"}
    assert list(Draft202012Validator(schema).iter_errors(missing))


def test_asyncapi_names_every_topic_with_key_writers_and_readers():
    doc = asyncapi_document()
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"]: c for c in doc["channels"].values()}
    assert set(addresses) == {f"technic.{t.name}" for t in TOPICS}
    for spec in TOPICS:
        channel = addresses[f"technic.{spec.name}"]
        assert channel["x-key"] == spec.key
        assert channel["x-writers"] and channel["x-readers"]
    refs = {
        ref["$ref"].rsplit("/", 1)[-1]
        for c in doc["channels"].values()
        for ref in c["messages"].values()
    }
    assert {m.__name__ for m in MODELS} <= refs
    assert addresses["technic.alerts.rules"]["bindings"]["kafka"]["topicConfiguration"] == {
        "cleanup.policy": ["compact"]
    }
    for op in doc["operations"].values():
        assert op["channel"]["$ref"].split("/")[-1] in doc["channels"]


def test_rendered_asyncapi_is_valid_yaml_with_schema_refs_that_exist():
    files = render_files()
    doc = yaml.safe_load(files["asyncapi.yaml"])
    for message in doc["components"]["messages"].values():
        ref = message["payload"].get("$ref")
        if ref:
            assert ref.removeprefix("./") in files
