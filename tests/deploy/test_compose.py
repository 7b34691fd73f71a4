"""infra/docker-compose.yml: valid against the Compose specification schema, and consistent with the code
(ports, environment variables, topics) and with the files it mounts."""

from __future__ import annotations

import json
import os
from importlib import resources

import jsonschema
import pytest
import yaml

from core.contracts import all_topics
from core.settings import settings
from tests.deploy.manifests import COMPOSE, DASHBOARD, INFRA, REPO_ROOT, cli_default, rtml_env_vars


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def compose_schema() -> dict:
    """The Compose specification's JSON schema, as vendored by check-jsonschema."""
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    return json.loads(text)


def test_valid_against_compose_spec(compose):
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_file(compose):
    """The schema check is not vacuous: a misspelt service key fails it."""
    schema = compose_schema()
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _published(service: dict) -> dict[int, int]:
    """container port -> host port (short syntax ``[IP:]HOST:CONTAINER``)."""
    out = {}
    for spec in service.get("ports", []):
        host, _, container = str(spec).rpartition(":")
        out[int(container.split("/")[0])] = int(host.rpartition(":")[2])
    return out


def test_expected_services(services):
    assert {"kafka", "redis", "init", "stream", "fraud-scoring", "monitor", "prometheus", "grafana"} <= set(services)


def test_rtml_env_vars_are_read_by_the_code(services):
    known = rtml_env_vars()
    for name, service in services.items():
        for var in _env(service):
            if var.startswith("RTML_"):
                assert var in known, f"service {name} sets {var}, which no code reads"


def test_rtml_env_points_at_the_compose_services(services, monkeypatch):
    env = _env(services["stream"])
    for var in [v for v in os.environ if v.startswith("RTML_")]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    s = settings()  # parses the variables exactly as the containers will
    kafka_host, kafka_port = s.kafka_host_port
    assert kafka_host == "kafka"
    kafka_env = _env(services["kafka"])
    assert f"INTERNAL://kafka:{kafka_port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert f"INTERNAL://:{kafka_port}" in kafka_env["KAFKA_LISTENERS"].split(",")
    redis_host, redis_port = s.redis_host_port
    assert redis_host == "redis" and redis_port == 6379
    assert s.offline_store in ("duckdb", "spark")
    # Every rtml container shares the state volume where RTML_STATE_DIR points.
    for name in ("init", "stream", "fraud-scoring", "monitor"):
        assert _env(services[name])["RTML_STATE_DIR"] == env["RTML_STATE_DIR"], name
        mounts = [v.removesuffix(":ro") for v in services[name]["volumes"]]
        assert f"rtml-state:{env['RTML_STATE_DIR']}" in mounts, name


def test_host_kafka_listener_is_published(services):
    kafka_env = _env(services["kafka"])
    host_listener = next(a for a in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",") if a.startswith("HOST://"))
    port = int(host_listener.rsplit(":", 1)[1])
    assert _published(services["kafka"]).get(port) == port
    assert port == 9092  # rtml's default RTML_KAFKA_PORT: host-side `rtml` commands reach it unconfigured


def test_stream_command_and_metrics_port(services):
    command = services["stream"]["command"]
    assert command[:2] == ["rtml", "stream"]
    assert "--master" in command and command[command.index("--master") + 1].startswith("local[")
    port = _metrics_port("stream")
    assert port in _published(services["stream"])
    assert f"localhost:{port}/metrics" in " ".join(services["stream"]["healthcheck"]["test"])


def test_monitor_metrics_port(services):
    assert services["monitor"]["command"][:2] == ["rtml", "monitor"]
    port = _metrics_port("monitor")
    assert port in _published(services["monitor"])
    assert f"localhost:{port}/metrics" in " ".join(services["monitor"]["healthcheck"]["test"])


def test_prediction_service_port_and_readiness(services):
    port = cli_default("serve", "--port")
    assert port in _published(services["fraud-scoring"])
    assert f"localhost:{port}/readyz" in " ".join(services["fraud-scoring"]["healthcheck"]["test"])


def _metrics_port(command: str) -> int:
    for option in ("--metrics-port", "--port"):
        value = cli_default(command, option)
        if value is not None:
            return int(value)
    raise AssertionError(f"`rtml {command}` has no metrics port option")


def test_init_creates_the_topics_of_the_code(services):
    """`provision-roles` creates all_topics() (and the users and ACLs): tests/deploy/test_kafka_compose_config.py
    runs it against the compose broker."""
    command = " ".join(services["init"]["command"])
    assert "python -m infra.kafka_broker provision-roles" in command
    assert "rtml apply" in command
    assert len(all_topics()) == 6  # the fraud repo's 3 domain topics + rtml's 3


def test_depends_on_known_services_with_healthchecks(services):
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, but it has no healthcheck"


def test_mounted_files_exist(services):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (INFRA / source).resolve().exists(), f"{name} mounts missing {source}"


def test_build_context_and_dockerfile(services):
    build = services["stream"]["build"]
    context = (INFRA / build["context"]).resolve()
    assert context == REPO_ROOT
    dockerfile = context / build["dockerfile"]
    assert dockerfile.exists()  # its content: tests/deploy/test_dockerfile.py
    assert (dockerfile.parent / "spark-entrypoint.sh").exists()


def test_prometheus_mounts_alerts_and_its_config_loads_them(services):
    volumes = services["prometheus"]["volumes"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in volumes if v.startswith(".")}
    config = yaml.safe_load((INFRA / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    for rule_file in config.get("rule_files", []):
        rule_file = rule_file if rule_file.startswith("/") else f"/etc/prometheus/{rule_file}"
        assert rule_file in mounts, f"prometheus.yml loads {rule_file}, which is not mounted"
    assert mounts["/etc/prometheus/alerts.yml"] == "./prometheus/alerts.yml"


def test_prometheus_scrapes_every_metrics_endpoint(services):
    volumes = services["prometheus"]["volumes"]
    path = next(v.split(":")[0] for v in volumes if v.split(":")[1] == "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load((INFRA / path).read_text())
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    expected = {f"fraud-scoring:{cli_default('serve', '--port')}", f"stream:{_metrics_port('stream')}",
                f"monitor:{_metrics_port('monitor')}"}
    assert expected <= targets


def test_grafana_provisioning_matches_mounts(services):
    volumes = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"] if v.startswith(".")}
    provisioning = INFRA / volumes["/etc/grafana/provisioning"]
    dashboards = yaml.safe_load((provisioning / "dashboards" / "rtml.yml").read_text())
    path = dashboards["providers"][0]["options"]["path"]
    assert path in volumes and (INFRA / volumes[path]).resolve() == DASHBOARD.parent
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and 9090 in _published(services["prometheus"])
    home = _env(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/{DASHBOARD.name}"


def test_prediction_service_serves_the_model_packed_in_its_image(services):
    """The Bento packs its model; the production pointer on the shared volume must not override it. The
    tag is the exact one the image was built with, from a variable without default (never `latest`)."""
    env = _env(services["fraud-scoring"])
    assert env["RTML_SERVING_MODEL_TAG"].startswith("${RTML_SERVING_MODEL_TAG:?")
    assert "BENTOML_HOME" not in env  # the image's own home holds the packed model
    state = _env(services["stream"])["RTML_STATE_DIR"]
    assert f"rtml-state:{state}:ro" in services["fraud-scoring"]["volumes"]


def test_kafka_image_is_the_local_broker_version(services):
    from infra.kafka_broker import DEFAULT_VERSION

    assert services["kafka"]["image"] == f"apache/kafka:{DEFAULT_VERSION}"
