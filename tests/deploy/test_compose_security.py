"""infra/docker-compose.yml is safe out of the box: ports on loopback only, credentials only from the
git-ignored infra/.env (documented in infra/.env.example), no anonymous Grafana admin, no Prometheus
lifecycle API, Kafka with SASL/SCRAM users and ACLs per role (no plaintext listener), Redis with ACL users
and bounded memory that refuses writes, an exact served model tag."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy.manifests import (
    COMPOSE,
    COMPOSE_INTERPOLATION,
    INFRA,
    KAFKA_START,
    REPO_ROOT,
    interpolate,
    kafka_env_to_properties,
)

ENV_EXAMPLE = INFRA / ".env.example"
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|(^|_)AUTH$|API_KEY")


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def _required(value: str) -> str | None:
    """The variable name if ``value`` is exactly one ``${NAME:?message}`` (no default, empty refused)."""
    match = COMPOSE_INTERPOLATION.fullmatch(value)
    return match.group(1) if match and match.group(2) == ":?" else None


def test_published_ports_bind_loopback_only(services):
    published = 0
    for name, service in services.items():
        for spec in service.get("ports", []):
            assert isinstance(spec, str), f"{name}: use the short syntax IP:HOST:CONTAINER"
            parts = spec.split(":")
            assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name} publishes {spec} on every interface"
            published += 1
    assert published >= 7


def test_secret_variables_come_only_from_the_env_file(services):
    """Every password / secret / token a container gets is a required ${NAME:?...} reference to a
    variable that infra/.env.example documents with an empty value: no literal credential in the repo."""
    example = _example()
    secrets = 0
    for name, service in services.items():
        for var, value in _env(service).items():
            if _SECRET_NAME.search(var):
                ref = _required(value)
                assert ref, f"{name}: {var} must be ${{NAME:?...}} from infra/.env, not {value!r}"
                assert ref in example and example[ref] == "", f"{name}: {ref} not documented empty in .env.example"
                secrets += 1
    assert secrets >= 6


def test_every_required_variable_is_documented(services):
    used = {m.group(1) for m in COMPOSE_INTERPOLATION.finditer(COMPOSE.read_text()) if m.group(2) == ":?"}
    assert {"GRAFANA_ADMIN_PASSWORD", "REDIS_WRITER_PASSWORD", "REDIS_SERVING_PASSWORD", "RTML_SERVING_MODEL_TAG"} <= used
    assert used <= set(_example())


def test_env_file_is_git_ignored_and_the_example_is_not():
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=REPO_ROOT)
    assert ignored.returncode == 0, "infra/.env must be git-ignored"
    example = subprocess.run(["git", "check-ignore", "-q", "infra/.env.example"], cwd=REPO_ROOT)
    assert example.returncode == 1
    assert all(v == "" or not _SECRET_NAME.search(k) for k, v in _example().items())


def test_grafana_has_an_admin_password_and_no_anonymous_access(services):
    env = _env(services["grafana"])
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED", "false") == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert _required(env["GF_SECURITY_ADMIN_PASSWORD"]) == "GRAFANA_ADMIN_PASSWORD"
    assert env.get("GF_USERS_ALLOW_SIGN_UP") == "false"


def test_prometheus_has_no_lifecycle_or_admin_api(services):
    flags = services["prometheus"]["command"]
    assert not any(f.startswith(("--web.enable-lifecycle", "--web.enable-admin-api")) for f in flags)
    assert any(f.startswith("--config.file=") for f in flags)


def _size(value: str) -> int:
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3}
    number, unit = re.fullmatch(r"(\d+)([a-zA-Z]*)", value).groups()
    return int(number) * units.get(unit.lower(), 1)


def test_redis_bounded_memory_refuses_writes(services):
    redis = services["redis"]
    args = redis["command"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = _size(args[args.index("--maxmemory") + 1])
    assert 0 < maxmemory <= 0.8 * _size(redis["mem_limit"]), "room above maxmemory for AOF rewrite and fragmentation"


def test_redis_starts_through_the_acl_script_as_non_root(services):
    redis = services["redis"]
    assert redis["entrypoint"] == ["sh", "/usr/local/bin/start-redis.sh"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"] if v.startswith(".")}
    assert (INFRA / mounts["/usr/local/bin/start-redis.sh"]).resolve() == INFRA / "k8s" / "redis" / "start-redis.sh"
    env = _env(redis)
    for user in ("ADMIN", "WRITER", "SERVING"):
        assert _required(env[f"REDIS_{user}_PASSWORD"]) == f"REDIS_{user}_PASSWORD"
    assert any(t.startswith(env["REDIS_ACL_DIR"]) for t in redis["tmpfs"])
    assert str(redis["user"]) != "0" and redis["read_only"] is True
    # redis-cli exits 0 on NOAUTH: the check must look for PONG, as a real user
    check = " ".join(redis["healthcheck"]["test"])
    assert "--user rtml-serving" in check and "PONG" in check
    assert _required(env["REDISCLI_AUTH"]) == "REDIS_SERVING_PASSWORD"


def test_rtml_containers_use_their_own_redis_user(services):
    """Writers (the stream job, `rtml apply` in init) get rtml-writer; the prediction service the
    read-only rtml-serving; the monitor, which never touches Redis, no Redis credential."""
    expected = {"init": "rtml-writer", "stream": "rtml-writer", "fraud-scoring": "rtml-serving"}
    for name, user in expected.items():
        env = _env(services[name])
        assert env["RTML_REDIS_USER"] == user, name
        secret = "REDIS_WRITER_PASSWORD" if user == "rtml-writer" else "REDIS_SERVING_PASSWORD"
        assert _required(env["RTML_REDIS_PASSWORD"]) == secret, name
    assert "RTML_REDIS_PASSWORD" not in _env(services["monitor"])


def test_no_deployment_file_serves_latest():
    """The served model tag comes from a variable with no default: the `latest` model may be one the
    promotion gate rejected."""
    compose = yaml.safe_load(COMPOSE.read_text())
    tag = _env(compose["services"]["fraud-scoring"])["RTML_SERVING_MODEL_TAG"]
    assert _required(tag) == "RTML_SERVING_MODEL_TAG"
    assert "RTML_SERVING_MODEL_TAG" in _example() and _example()["RTML_SERVING_MODEL_TAG"] == ""
    for path in [COMPOSE, *sorted((INFRA / "k8s").rglob("*.yaml")), *sorted((INFRA / "k8s").rglob("*.env"))]:
        assert not re.search(r"RTML_SERVING_MODEL_TAG\W+\S*:latest", path.read_text()), path
        assert "fraud_model:latest" not in path.read_text(), path


def test_prometheus_scrapes_the_prediction_service_with_a_metrics_key(services):
    """/metrics of the prediction service needs an API key of scope `metrics`: Prometheus reads it from a
    compose secret filled from METRICS_API_KEY in infra/.env, never from the repository."""
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose["secrets"]["metrics_api_key"] == {"environment": "METRICS_API_KEY"}
    assert "metrics_api_key" in services["prometheus"]["secrets"]
    assert "METRICS_API_KEY" in _example() and _example()["METRICS_API_KEY"] == ""
    config = yaml.safe_load((INFRA / "docker" / "prometheus-compose.yml").read_text())
    serving = next(j for j in config["scrape_configs"] if j["job_name"] == "rtml-serving")
    assert serving["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_api_key"}
    for job in config["scrape_configs"]:
        assert "credentials" not in (job.get("authorization") or {}) and "bearer_token" not in job


# ---- Kafka: SASL/SCRAM-SHA-512 on every listener, StandardAuthorizer, a user per role --------------------

def _kafka_properties(services: dict) -> dict[str, str]:
    return kafka_env_to_properties(_env(services["kafka"]))


def test_every_kafka_listener_authenticates_and_the_authorizer_denies_by_default(services):
    props = _kafka_properties(services)
    protocols = dict(item.split(":") for item in props["listener.security.protocol.map"].split(","))
    listeners = {item.split("://")[0] for item in props["listeners"].split(",")}
    assert listeners == set(protocols) and set(protocols.values()) == {"SASL_PLAINTEXT"}
    controller = props["controller.listener.names"]
    for name in listeners - {controller}:  # clients and the broker itself: SCRAM
        assert props[f"listener.name.{name.lower()}.sasl.enabled.mechanisms"] == "SCRAM-SHA-512", name
        jaas = props[f"listener.name.{name.lower()}.scram-sha-512.sasl.jaas.config"]
        assert jaas.startswith("org.apache.kafka.common.security.scram.ScramLoginModule required") and 'username="admin"' in jaas
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props[f"listener.name.{controller.lower()}.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["super.users"] == "User:admin;User:controller"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["auto.create.topics.enable"] == "false"


def test_passwords_inside_kafka_settings_are_required_env_file_variables(services):
    """JAAS settings carry passwords inside a longer value: each one is a required ${NAME:?...} of infra/.env."""
    example = _example()
    found = 0
    for name, service in services.items():
        for var, value in _env(service).items():
            for password in re.findall(r'(?:password|user_[a-z]+)="([^"]*)"', value):
                assert _required(password), f"{name}: {var} holds a literal password"
                assert example.get(_required(password)) == "", f"{name}: {_required(password)} not in .env.example"
                found += 1
    assert found >= 4  # the broker's two SCRAM listeners, the controller's user and its password


def test_the_broker_bootstraps_its_admin_through_the_start_script(services):
    kafka = services["kafka"]
    assert kafka["entrypoint"] == ["bash", "/usr/local/bin/kafka-start.sh"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in kafka["volumes"] if v.startswith(".")}
    assert (INFRA / mounts["/usr/local/bin/kafka-start.sh"]).resolve() == KAFKA_START
    env = _env(kafka)
    assert _required(env["SCRAM_ADMIN_PASSWORD"]) == "KAFKA_ADMIN_PASSWORD"
    jaas = env["KAFKA_LISTENER_NAME_INTERNAL_SCRAM___SHA___512_SASL_JAAS_CONFIG"]
    assert 'password="${KAFKA_ADMIN_PASSWORD:?' in jaas  # the broker's own client is the bootstrapped admin
    check = " ".join(kafka["healthcheck"]["test"])
    assert "--command-config /tmp/kafka/admin-client.properties" in check  # an unauthenticated check is refused


def test_rtml_containers_use_their_own_kafka_user(services):
    """Each container authenticates as its role (RTML_KAFKA_USER overrides the code's role); `init` is the admin
    that creates the topics, the users (a password per role from infra/.env) and their ACLs."""
    from core.kafka_io import ROLES

    expected = {"init": "admin", "stream": "stream", "fraud-scoring": "serving", "monitor": "monitor",
                "consistency": "monitor"}
    for name, user in expected.items():
        env = _env(services[name])
        assert env["RTML_KAFKA_USER"] == user, name
        assert _required(env["RTML_KAFKA_PASSWORD"]) == f"KAFKA_{user.upper()}_PASSWORD", name
    init = _env(services["init"])
    for role in ROLES:
        if role != "admin":
            assert _required(init[f"KAFKA_{role.upper()}_PASSWORD"]) == f"KAFKA_{role.upper()}_PASSWORD", role
    assert "python -m infra.kafka_broker provision-roles" in " ".join(services["init"]["command"])
    assert "RTML_KAFKA_PASSWORD" not in _env(services["kafka"])


def _stub_kafka_home(tmp_path) -> tuple[object, object]:
    """A BROKER_HOME whose bin/ records the storage tool's and the broker's arguments instead of running them."""
    home, log = tmp_path / "kafka", tmp_path / "calls"
    (home / "bin").mkdir(parents=True)
    for tool in ("kafka-storage.sh", "kafka-server-start.sh"):
        script = home / "bin" / tool
        script.write_text(f'#!/bin/sh\nprintf "%s\\0" {tool} "$@" >> "{log}"\nprintf "\\n" >> "{log}"\n')
        script.chmod(0o755)
    return home, log


def test_start_script_renders_the_compose_properties_and_formats_with_the_admin(services, tmp_path):
    import os
    import secrets
    import stat

    variables = {name: secrets.token_hex(12) for name in _example() if name.startswith("KAFKA_")}
    env = {k: interpolate(v, variables) for k, v in _env(services["kafka"]).items()}
    home, log = _stub_kafka_home(tmp_path)
    config, client = tmp_path / "run" / "server.properties", tmp_path / "run" / "admin-client.properties"
    run_env = {"PATH": os.environ["PATH"], "BROKER_HOME": str(home), "BROKER_CONFIG": str(config),
               "BROKER_CLIENT_CONFIG": str(client), "KAFKA_HEAP_OPTS": "-Xmx1g", **env}
    done = subprocess.run(["bash", str(KAFKA_START)], env=run_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    written = dict(line.split("=", 1) for line in config.read_text().splitlines())
    assert written == kafka_env_to_properties(env)  # every KAFKA_* setting, by the image's rule, and nothing else
    assert "heap.opts" not in written and "scram.admin.password" not in written  # launcher settings stay out
    admin = variables["KAFKA_ADMIN_PASSWORD"]
    assert f'password="{admin}"' in written["listener.name.internal.scram-sha-512.sasl.jaas.config"]
    calls = [line.split("\0")[:-1] for line in log.read_text().splitlines()]
    assert calls == [
        ["kafka-storage.sh", "format", "--ignore-formatted", "--cluster-id", env["CLUSTER_ID"], "--config", str(config),
         "--add-scram", f"SCRAM-SHA-512=[name=admin,password={admin}]"],
        ["kafka-server-start.sh", str(config)],
    ]
    assert f'username="admin" password="{admin}"' in client.read_text()
    for path in (config, client):  # they hold passwords
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    del run_env["SCRAM_ADMIN_PASSWORD"]
    log.unlink()
    refused = subprocess.run(["bash", str(KAFKA_START)], env=run_env, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "KAFKA_ADMIN_PASSWORD" in refused.stderr and not log.exists()
