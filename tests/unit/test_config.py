import pytest

from technic_stream.config import load_settings
from technic_stream.errors import ConfigError


def test_defaults_describe_the_embedded_default():
    s = load_settings()
    assert s.kafka_bootstrap is None and s.redis_url is None and s.mongo_url is None
    assert s.topic_prefix == "technic."
    assert s.redis_prefix == "technic:"
    assert s.partitions == 8


def test_reads_technic_environment(monkeypatch):
    monkeypatch.setenv("TECHNIC_KAFKA_BOOTSTRAP", "kafka:9092,kafka2:9093")
    monkeypatch.setenv("TECHNIC_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("TECHNIC_MONGO_URL", "mongodb://db:27017/")
    monkeypatch.setenv("TECHNIC_PARTITIONS", "16")
    s = load_settings()
    assert s.kafka_bootstrap == "kafka:9092,kafka2:9093"
    assert s.redis_url == "redis://cache:6379/0"
    assert s.mongo_url == "mongodb://db:27017/"
    assert s.partitions == 16


def test_settings_are_frozen():
    s = load_settings()
    with pytest.raises(Exception, match="frozen"):
        s.partitions = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("TECHNIC_PARTITIONS", "0", "greater than or equal to 1"),
        ("TECHNIC_PARTITIONS", "many", "valid integer"),
        ("TECHNIC_KAFKA_BOOTSTRAP", "kafka", "host:port"),
        ("TECHNIC_KAFKA_BOOTSTRAP", "kafka:99999", "host:port"),
        ("TECHNIC_REDIS_URL", "http://x", "redis://"),
        ("TECHNIC_MONGO_URL", "postgres://x", "mongodb://"),
        ("TECHNIC_TOPIC_PREFIX", "bad prefix!", "letters, digits"),
        ("TECHNIC_LOG_LEVEL", "LOUD", "DEBUG"),
    ],
)
def test_errors_name_the_variable(monkeypatch, var, value, fragment):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert var in str(info.value)
    assert fragment in str(info.value)
    assert any(p.startswith(var) for p in info.value.problems)


def test_several_errors_are_all_reported(monkeypatch):
    monkeypatch.setenv("TECHNIC_PARTITIONS", "0")
    monkeypatch.setenv("TECHNIC_REDIS_URL", "nope")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert {p.split(":")[0] for p in info.value.problems} == {
        "TECHNIC_PARTITIONS",
        "TECHNIC_REDIS_URL",
    }


def test_unknown_keyword_is_rejected():
    with pytest.raises(ConfigError, match="TECHNIC_NO_SUCH_THING"):
        load_settings(no_such_thing=1)


def test_empty_url_means_unset(monkeypatch):
    monkeypatch.setenv("TECHNIC_REDIS_URL", "")
    assert load_settings().redis_url is None


def test_unknown_variable_is_rejected_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("TECHNIC_KAFKA_BOOTSRAP", "kafka:9092")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.problems == [
        "TECHNIC_KAFKA_BOOTSRAP: unknown variable (did you mean TECHNIC_KAFKA_BOOTSTRAP?)"
    ]
