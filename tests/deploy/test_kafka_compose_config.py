"""The Kafka configuration of infra/docker-compose.yml, run on a real broker (no Docker): the compose
environment is turned into server.properties the way the apache/kafka image does (KAFKA_FOO_BAR ->
foo.bar), with the host names mapped to 127.0.0.1 and free ports; the KRaft broker must start with it,
answer on both listeners, and carry rtml's topics and a record from one listener to the other."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid

import pytest
import yaml

from tests.deploy.manifests import COMPOSE

pytestmark = pytest.mark.integration

# Variables the image's launcher reads itself instead of turning them into broker properties.
NOT_PROPERTIES = {"KAFKA_HEAP_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS",
                  "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL", "KAFKA_LOG4J_LOGGERS", "KAFKA_TOOLS_LOG4J_LOGLEVEL"}


def env_to_properties(env: dict[str, str]) -> dict[str, str]:
    """apache/kafka's rule: strip KAFKA_, lower-case, ``___`` -> ``-``, ``__`` -> ``_``, ``_`` -> ``.``."""
    props = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name in NOT_PROPERTIES:
            continue
        key = name[len("KAFKA_"):].lower().replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")
        props[key] = str(value)
    return props


def test_env_to_properties_rule():
    assert env_to_properties({"KAFKA_LOG_RETENTION_MS": "-1", "KAFKA_HEAP_OPTS": "x", "CLUSTER_ID": "y"}) == {
        "log.retention.ms": "-1"
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


@pytest.fixture
def compose_broker(tmp_path, monkeypatch):
    """A broker started from the compose environment; yields (internal bootstrap, host bootstrap)."""
    from infra import kafka_broker
    from infra.proc import require_tool

    # The compose broker is plaintext on the compose network (as RTML_KAFKA_BOOTSTRAP without RTML_KAFKA_USER).
    monkeypatch.setenv("RTML_KAFKA_SECURITY", "plaintext")

    require_tool("java")
    jars = kafka_broker.jars_dir(progress=False)
    env = yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]["environment"]
    props = env_to_properties(env)
    ports = {}
    for listener in props["listeners"].split(","):
        ports[int(listener.rsplit(":", 1)[1])] = _free_port()
    for key in ("listeners", "advertised.listeners", "controller.quorum.voters"):
        props[key] = _remap(props[key], ports)
    props["log.dirs"] = str(tmp_path / "data")
    config = tmp_path / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    log4j = tmp_path / "log4j2.properties"
    log4j.write_text(f"status = warn\nappender.f.type = File\nappender.f.name = F\nappender.f.fileName = {tmp_path}/broker.log\n"
                     "appender.f.layout.type = PatternLayout\nappender.f.layout.pattern = %d %p %m%n\n"
                     "rootLogger.level = WARN\nrootLogger.appenderRef.f.ref = F\n")
    java = [require_tool("java"), "-Xmx384m", "-XX:+UseSerialGC", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{jars}/*"]
    fmt = subprocess.run([*java, "kafka.tools.StorageTool", "format", "-t", env["CLUSTER_ID"], "-c", str(config)],
                         capture_output=True, text=True, timeout=120)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    with open(tmp_path / "broker.out", "wb") as out:
        proc = subprocess.Popen([*java, "kafka.Kafka", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    internal = next(li for li in props["advertised.listeners"].split(",") if li.startswith("INTERNAL://"))
    host = next(li for li in props["advertised.listeners"].split(",") if li.startswith("HOST://"))
    internal, host = internal.split("//", 1)[1], host.split("//", 1)[1]
    try:
        deadline = time.monotonic() + 90
        while not (kafka_broker.is_ready(internal) and kafka_broker.is_ready(host)):
            assert proc.poll() is None, (tmp_path / "broker.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "broker not ready within 90 s"
            time.sleep(0.5)
        yield internal, host
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_compose_kafka_config_runs_and_serves_both_listeners(compose_broker):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    from core.contracts import all_topics, domain_topics
    from core.kafka_io import ensure_topics, make_consumer, make_producer

    internal, host = compose_broker
    ensure_topics(all_topics(), bootstrap=internal, role="admin")  # what the compose `init` service does
    admin = KafkaAdminClient(bootstrap_servers=[host], request_timeout_ms=10000)
    try:
        assert set(all_topics()) <= set(admin.list_topics())
        cluster = admin.describe_cluster()
        env = yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]["environment"]
        assert cluster["cluster_id"] == env["CLUSTER_ID"]
        broker_id = str(cluster["brokers"][0]["broker_id"])
        described = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker_id)], config_filter="all")
        configs = {k: v["value"] for k, v in described["broker"][broker_id].items()}
        assert configs["log.retention.ms"] == "-1"
        assert configs["log.retention.bytes"] == env["KAFKA_LOG_RETENTION_BYTES"]
        assert configs["auto.create.topics.enable"] == "false"
        assert configs["num.partitions"] == env["KAFKA_NUM_PARTITIONS"]
    finally:
        admin.close()
    key = uuid.uuid4().hex
    producer = make_producer(internal, role="admin")
    producer.send(domain_topics().events, key=key, value={"probe": key}).get(timeout=20)
    producer.close()
    consumer = make_consumer([domain_topics().events], None, bootstrap=host, consumer_timeout_ms=10000, role="admin")
    try:
        keys = [m.key.decode() for m in consumer]
    finally:
        consumer.close()
    assert key in keys
