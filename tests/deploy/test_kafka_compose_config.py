"""The Kafka configuration of infra/docker-compose.yml, run on a real broker (no Docker): the compose broker's
environment (its ${...} filled from a throwaway env file, host names mapped to 127.0.0.1 and free ports) is
started by the compose entrypoint itself, infra/docker/kafka-start.sh, with the image's two launch scripts
replaced by shims that run the same jars. The compose `init` command then provisions the roles. The broker
must refuse unauthenticated clients and wrong passwords, grant each role only its ACLs, and carry a record
from one listener to the other."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from tests.deploy.manifests import COMPOSE, INFRA, KAFKA_START, interpolate, kafka_env_to_properties

pytestmark = pytest.mark.integration

MECHANISM = "SCRAM-SHA-512"


def test_env_to_properties_rule():
    assert kafka_env_to_properties({"KAFKA_LOG_RETENTION_MS": "-1", "KAFKA_HEAP_OPTS": "x", "CLUSTER_ID": "y",
                                    "KAFKA_LISTENER_NAME_A_SCRAM___SHA___512_SASL_JAAS_CONFIG": "j"}) == {
        "log.retention.ms": "-1", "listener.name.a.scram-sha-512.sasl.jaas.config": "j"
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _remap(value: str, ports: dict[int, int]) -> str:
    """Compose host names (and the wildcard bind address) -> 127.0.0.1, compose ports -> free local ports."""
    out = []
    for item in value.split(","):
        head, _, port = item.rpartition(":")
        head = head.replace("//kafka", "//127.0.0.1").replace("//localhost", "//127.0.0.1")
        if head.endswith("//"):
            head += "127.0.0.1"
        if head.endswith("@kafka"):
            head = head.removesuffix("kafka") + "127.0.0.1"
        out.append(f"{head}:{ports[int(port)]}")
    return ",".join(out)


def _env_file() -> dict[str, str]:
    """A throwaway infra/.env: every variable of infra/.env.example, passwords random."""
    names = [line.split("=", 1)[0] for line in (INFRA / ".env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {name: secrets.token_hex(12) for name in names}


def _sasl(user: str, password: str) -> dict:
    return dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism=MECHANISM, sasl_plain_username=user,
                sasl_plain_password=password)


@pytest.fixture
def compose_broker(tmp_path, monkeypatch):
    """The compose broker, started by kafka-start.sh; yields (internal, host, variables, services, broker log)."""
    from infra import kafka_broker
    from infra.proc import require_tool

    java = require_tool("java")
    jars = kafka_broker.jars_dir(progress=False)
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    variables = _env_file()
    env = {k: interpolate(str(v), variables) for k, v in compose["kafka"]["environment"].items()}
    props = kafka_env_to_properties(env)
    ports = {int(listener.rsplit(":", 1)[1]): _free_port() for listener in props["listeners"].split(",")}
    for name in ("KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_CONTROLLER_QUORUM_VOTERS"):
        env[name] = _remap(env[name], ports)
    env["KAFKA_LOG_DIRS"] = str(tmp_path / "data")

    # The image's bin/kafka-storage.sh and bin/kafka-server-start.sh: the same classes from rtml's Kafka jars.
    log = tmp_path / "broker.log"
    log4j = tmp_path / "log4j2.properties"
    log4j.write_text(f"status = warn\nappender.f.type = File\nappender.f.name = F\nappender.f.fileName = {log}\n"
                     "appender.f.layout.type = PatternLayout\nappender.f.layout.pattern = %d %p %m%n\n"
                     "rootLogger.level = INFO\nrootLogger.appenderRef.f.ref = F\n")
    home = tmp_path / "kafka"
    (home / "bin").mkdir(parents=True)
    for tool, main in (("kafka-storage.sh", "kafka.tools.StorageTool"), ("kafka-server-start.sh", "kafka.Kafka")):
        (home / "bin" / tool).write_text(f'#!/bin/sh\nexec "{java}" -Xmx384m -XX:+UseSerialGC '
                                         f'-Dlog4j2.configurationFile={log4j} -cp "{jars}/*" {main} "$@"\n')
        (home / "bin" / tool).chmod(0o755)
    run_env = {"PATH": os.environ["PATH"], "BROKER_HOME": str(home), "BROKER_CONFIG": str(tmp_path / "run" / "server.properties"),
               "BROKER_CLIENT_CONFIG": str(tmp_path / "run" / "admin-client.properties"), **env}
    with open(tmp_path / "broker.out", "wb") as out:
        proc = subprocess.Popen(["bash", str(KAFKA_START)], env=run_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    advertised = dict(li.split("://") for li in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    internal, host = advertised["INTERNAL"], advertised["HOST"]
    # this test process is a client like the rtml containers: the admin of `init` for the readiness check
    monkeypatch.setenv("RTML_KAFKA_BOOTSTRAP", internal)
    monkeypatch.setenv("RTML_KAFKA_USER", "admin")
    monkeypatch.setenv("RTML_KAFKA_PASSWORD", variables["KAFKA_ADMIN_PASSWORD"])
    try:
        deadline = time.monotonic() + 120
        while not (kafka_broker.is_ready(internal) and kafka_broker.is_ready(host)):
            assert proc.poll() is None, (tmp_path / "broker.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "broker not ready within 120 s"
            time.sleep(0.5)
        yield internal, host, variables, compose, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _init_provisions_the_roles(compose: dict, variables: dict, internal: str) -> None:
    """The first half of the compose `init` command, with init's own environment."""
    command = " ".join(compose["init"]["command"])
    assert "python -m infra.kafka_broker provision-roles" in command
    env = {k: interpolate(str(v), variables) for k, v in compose["init"]["environment"].items()
           if k.startswith("KAFKA_") or k in ("RTML_KAFKA_USER", "RTML_KAFKA_PASSWORD")}
    done = subprocess.run([sys.executable, "-m", "infra.kafka_broker", "provision-roles"], timeout=120,
                          env={**os.environ, **env, "RTML_KAFKA_BOOTSTRAP": internal}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "" and not any(v in done.stderr for v in variables.values())


def _service_user(compose: dict, variables: dict, service: str) -> tuple[str, str]:
    env = compose[service]["environment"]
    return env["RTML_KAFKA_USER"], interpolate(env["RTML_KAFKA_PASSWORD"], variables)


def _writes(bootstrap: str, security: dict, topic: str) -> bool:
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    producer = KafkaProducer(bootstrap_servers=[bootstrap], max_block_ms=10000, **security)
    try:
        producer.send(topic, key=uuid.uuid4().bytes, value=b"{}").get(timeout=15)
        return True
    except TopicAuthorizationFailedError:
        return False
    finally:
        producer.close()


def test_compose_kafka_runs_secured_and_serves_both_listeners(compose_broker):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.errors import KafkaTimeoutError

    from core.contracts import all_topics, domain_topics
    from core.settings import Topics

    internal, host, variables, compose, log = compose_broker
    _init_provisions_the_roles(compose, variables, internal)
    admin_sec = _sasl("admin", variables["KAFKA_ADMIN_PASSWORD"])
    admin = KafkaAdminClient(bootstrap_servers=[host], request_timeout_ms=10000, **admin_sec)
    try:
        assert set(all_topics()) <= set(admin.list_topics())
        cluster = admin.describe_cluster()
        env = compose["kafka"]["environment"]
        assert cluster["cluster_id"] == env["CLUSTER_ID"]
        broker_id = str(cluster["brokers"][0]["broker_id"])
        described = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker_id)], config_filter="all")
        configs = {k: v["value"] for k, v in described["broker"][broker_id].items()}
        assert configs["log.retention.ms"] == "-1"
        assert configs["log.retention.bytes"] == env["KAFKA_LOG_RETENTION_BYTES"]
        assert configs["auto.create.topics.enable"] == "false"
        assert configs["num.partitions"] == env["KAFKA_NUM_PARTITIONS"]
        no_acls = f"no-acls-{uuid.uuid4().hex[:8]}"  # a topic nobody has an ACL for: allow.everyone.if.no.acl.found
        admin.create_topics([NewTopic(no_acls, 1, 1)])
    finally:
        admin.close()
    assert not _writes(host, _sasl("product", variables["KAFKA_PRODUCT_PASSWORD"]), no_acls)
    assert _writes(host, admin_sec, no_acls)

    # refused: no SASL at all, and a wrong password (the broker logs both)
    for listener in (internal, host):
        with pytest.raises(KafkaTimeoutError):
            KafkaAdminClient(bootstrap_servers=[listener], request_timeout_ms=3000, bootstrap_timeout_ms=3000)
    assert "during SASL handshake" in log.read_text()
    with pytest.raises(KafkaTimeoutError):
        KafkaAdminClient(bootstrap_servers=[host], request_timeout_ms=3000, bootstrap_timeout_ms=3000,
                         **_sasl("admin", "wrong-" + uuid.uuid4().hex))
    assert f"invalid credentials with SASL mechanism {MECHANISM}" in log.read_text()

    # each container's own user may do its job and no more (role_acls): serving writes predictions, not events
    t, d = Topics(), domain_topics()
    serving = _sasl(*_service_user(compose, variables, "fraud-scoring"))
    assert _writes(internal, serving, t.predictions) and not _writes(internal, serving, d.events)
    monitor = _sasl(*_service_user(compose, variables, "monitor"))
    assert _writes(internal, monitor, t.alerts) and not _writes(internal, monitor, d.labels)

    # a product service on the Docker host writes a transaction; the stream job's user reads it on INTERNAL
    product = _sasl("product", variables["KAFKA_PRODUCT_PASSWORD"])
    key = uuid.uuid4().hex.encode()
    producer = KafkaProducer(bootstrap_servers=[host], **product)
    producer.send(d.events, key=key, value=b'{"probe": 1}').get(timeout=20)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=[internal], consumer_timeout_ms=10000, enable_auto_commit=False,
                             **_sasl(*_service_user(compose, variables, "stream")))
    try:
        consumer.assign([TopicPartition(d.events, p) for p in consumer.partitions_for_topic(d.events)])
        consumer.seek_to_beginning()
        keys = [m.key for m in consumer]
    finally:
        consumer.close()
    assert key in keys
