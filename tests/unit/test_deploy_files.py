"""The production stack on paper: the compose file wires what DESIGN.md names."""

from __future__ import annotations

import yaml

from technic_stream.config import ENV_PREFIX, Settings
from technic_stream.topics import TOPICS
from tests.conftest import ROOT

#: The deployable processes of DESIGN.md ("Processes and commands").
PROCESSES = ("engine", "scanner", "notifier", "archiver", "bars", "gateway")
WIRING = (
    "TECHNIC_KAFKA_BOOTSTRAP",
    "TECHNIC_REDIS_URL",
    "TECHNIC_MONGO_URL",
    "TECHNIC_TOPIC_PREFIX",
)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())


def test_backing_services_are_kafka_kraft_redis_and_mongo_with_healthchecks():
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in kafka["environment"]["KAFKA_LISTENERS"]
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["redis"]["image"].startswith("redis")
    assert services["mongo"]["image"].startswith("mongo")
    for name in ("kafka", "redis", "mongo"):
        assert services[name]["healthcheck"]["test"], name


def test_every_process_is_a_service_wired_to_kafka_redis_and_mongo():
    services = compose()["services"]
    kafka_port = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].rsplit(":", 1)[1]
    for process in PROCESSES:
        svc = services[process]
        assert svc["command"] == [process]
        env = svc["environment"]
        for var in WIRING:
            assert env.get(var), (process, var)
        assert env["TECHNIC_KAFKA_BOOTSTRAP"] == f"kafka:{kafka_port}"
        assert env["TECHNIC_REDIS_URL"].startswith("redis://redis:")
        assert env["TECHNIC_MONGO_URL"].startswith("mongodb://mongo:")
        assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["depends_on"]["mongo"]["condition"] == "service_healthy"
        assert svc["healthcheck"]["test"]
        port = env["TECHNIC_OPS_PORT"]
        assert f":{port}/readyz" in " ".join(svc["healthcheck"]["test"])


def test_topics_are_bootstrapped_before_any_process_starts():
    topics = compose()["services"]["topics"]
    assert topics["command"] == ["topics", "create"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert int(topics["environment"]["TECHNIC_PARTITIONS"]) >= 1
    # `topics create` creates exactly the DESIGN.md table.
    assert {t.name for t in TOPICS} >= {
        "md.trades",
        "md.bars",
        "scan.requests",
        "scan.control",
        "scan.tasks",
        "scan.progress",
        "scan.results",
        "alerts.rules",
        "alerts.fired",
        "dlq",
    }


def test_every_technic_variable_in_the_stack_is_a_real_setting():
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    for name, svc in compose()["services"].items():
        for var in svc.get("environment") or {}:
            if var.startswith(ENV_PREFIX):
                assert var in known, (name, var)


def test_dockerfile_runs_the_cli_and_exposes_the_ops_port():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["technic-stream"]' in text
    assert "TECHNIC_OPS_PORT=9400" in text and "EXPOSE 9400" in text
    assert "STOPSIGNAL SIGTERM" in text


def test_the_image_bakes_the_engines_kernels_where_its_processes_look_for_them():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    cache = [line for line in final if "NUMBA_CACHE_DIR=" in line]
    assert len(cache) == 1 and "/tmp" not in cache[0]  # one place, kept in the image
    warm = [i for i, line in enumerate(final) if line.startswith("RUN technic-stream warm")]
    user = next(i for i, line in enumerate(final) if line.startswith("USER "))
    # baked after the package is installed, owned by the user that runs the processes
    assert warm and warm[0] < user and 'chown -R technic "$NUMBA_CACHE_DIR"' in final[warm[0]]
