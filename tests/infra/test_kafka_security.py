"""SASL/SCRAM-SHA-512 and per-role ACLs on the real local broker (secure by default).

Every probe runs against the session's broker with the role's own generated credentials (the session's admin
override is cleared here): refused without credentials or with a wrong password (the broker logs the SASL
authentication failure), TopicAuthorizationFailed on every topic a role has no ACL for, allowed on its own.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from core.contracts import all_topics, domain_topics
from core.errors import UserFacingError
from core.kafka_io import (
    ROLES,
    client_security,
    ensure_topics,
    load_secrets,
    make_producer,
    role_acls,
    secrets_path,
    spark_kafka_options,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def own_roles(stack, monkeypatch):
    """The session authenticates every client as admin; these tests use each role's own credentials."""
    monkeypatch.delenv("RTML_KAFKA_USER", raising=False)
    monkeypatch.delenv("RTML_KAFKA_PASSWORD", raising=False)
    if stack.kafka_external or stack.kafka_auth.security != "sasl":
        pytest.fail("these probes need the local secured broker (unset RTML_KAFKA_BOOTSTRAP / RTML_KAFKA_SECURITY)")
    return stack


def _broker_log(s) -> str:
    return (s.run_dir / "kafka.log").read_text(errors="replace")


def _admin(s, **security) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=s.kafka_bootstrap.split(","), request_timeout_ms=3000, bootstrap_timeout_ms=3000, **security
    )


def test_unauthenticated_client_is_refused(own_roles):
    s = own_roles
    marker = "Unexpected Kafka request of type METADATA during SASL handshake"
    before = _broker_log(s).count(marker)
    with pytest.raises(KafkaTimeoutError):
        _admin(s)  # PLAINTEXT: no SASL handshake
    assert _broker_log(s).count(marker) > before


@pytest.mark.parametrize("user", ["product", "admin", "nobody"])
def test_wrong_password_is_refused(own_roles, user):
    s = own_roles
    marker = "invalid credentials with SASL mechanism SCRAM-SHA-512"
    before = _broker_log(s).count(marker)
    wrong = dict(client_security("product"), sasl_plain_username=user, sasl_plain_password="wrong-" + uuid.uuid4().hex)
    with pytest.raises(KafkaTimeoutError):
        _admin(s, **wrong)
    assert _broker_log(s).count(marker) > before


def _can_write(producer, topic: str) -> bool:
    try:
        producer.send(topic, value={"probe": uuid.uuid4().hex}).get(timeout=15)
        return True
    except TopicAuthorizationFailedError:
        return False


def _role_can_write(role: str, topic: str) -> bool:
    """A fresh producer per probe (kafka-python keeps failing sends once a denied topic is in its metadata)."""
    producer = make_producer(role=role, max_block_ms=5000)
    try:
        return _can_write(producer, topic)
    finally:
        producer.close()


def _can_read(s, role: str, topic: str) -> bool:
    consumer = KafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap.split(","), enable_auto_commit=False, request_timeout_ms=10000,
        **client_security(role),
    )  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        consumer.poll(timeout_ms=3000)
        consumer.position(TopicPartition(topic, 0), timeout_ms=5000)
        return True
    except TopicAuthorizationFailedError:
        return False
    finally:
        consumer.close()


@pytest.mark.parametrize("role", [r for r in ROLES if r not in ("admin",)])
def test_each_role_writes_and_reads_only_its_topics(own_roles, role):
    s = own_roles
    grants = role_acls(s.topics)[role]
    wrote = {t: _role_can_write(role, t) for t in all_topics()}
    read = {t: _can_read(s, role, t) for t in all_topics()}
    assert wrote == {t: t in grants.write for t in all_topics()}
    assert read == {t: t in grants.read for t in all_topics()}
    assert any(wrote.values()) and not all(wrote.values())  # each role has some, never all


def test_admin_reads_and_writes_everything(own_roles):
    s = own_roles
    assert all(_role_can_write("admin", t) for t in all_topics())
    assert all(_can_read(s, "admin", t) for t in all_topics())


def test_only_admin_creates_topics(own_roles):
    name = f"forbidden-{uuid.uuid4().hex[:8]}"
    with pytest.raises(UserFacingError, match=rf"{name} missing or not visible to role 'product'.*rtml up"):
        ensure_topics([name], role="product")
    ensure_topics([name], partitions=1, role="admin")
    ensure_topics([name], role="admin")  # idempotent


def test_a_deployment_user_overrides_the_role(own_roles, monkeypatch):
    s = own_roles
    monkeypatch.setenv("RTML_KAFKA_USER", "serving")
    monkeypatch.setenv("RTML_KAFKA_PASSWORD", load_secrets(s)["serving"])
    # the env names the principal: serving's ACLs apply whatever role the code passes
    assert not _role_can_write("product", domain_topics().events)
    assert _role_can_write("product", s.topics.predictions)


def test_secrets_are_private_files_and_in_no_log_line(own_roles, caplog, tmp_path):
    s = own_roles
    path = secrets_path(s)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((s.state_dir / "kafka" / "server.properties").stat().st_mode) == 0o600
    passwords = list(load_secrets(s).values())
    assert len(passwords) == len(ROLES) and all(len(p) >= 24 for p in passwords)

    # Clients at DEBUG, a refused login, the CLI: none prints a password.
    caplog.set_level(logging.DEBUG, logger="kafka")
    producer = make_producer(role="product")
    producer.send(domain_topics().events, value={"probe": 1}).get(timeout=15)
    producer.close()
    with pytest.raises(KafkaTimeoutError):
        _admin(s, **dict(client_security("product"), sasl_plain_password="not-the-password"))
    cli = subprocess.run(
        [sys.executable, "-m", "rtml.cli", "-v", "up", "--no-spark-jars"], capture_output=True, text=True,
        timeout=180, env=dict(os.environ),
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    status = subprocess.run([sys.executable, "-m", "rtml.cli", "status"], capture_output=True, text=True, timeout=60)
    texts = {
        "client log": caplog.text,
        "rtml up": cli.stdout + cli.stderr,
        "rtml status": status.stdout + status.stderr,
        "broker log": _broker_log(s),
        "broker stdout": (s.run_dir / "kafka.out").read_text(errors="replace"),
    }
    assert "SCRAM" in caplog.text or "sasl" in caplog.text.lower()  # the DEBUG log did cover authentication
    leaks = {name for name, text in texts.items() for p in passwords if p in text}
    assert leaks == set()


SPARK_PROBE = """
import json, sys
from pyspark.sql import SparkSession
from core.kafka_io import spark_kafka_options
role, allowed, denied, jars = sys.argv[1:5]
spark = (SparkSession.builder.master("local[1]").appName("rtml-sasl-probe").config("spark.jars", jars)
         .config("spark.ui.enabled", "false").config("spark.jars.ivy", "/nonexistent-no-downloads").getOrCreate())
spark.sparkContext.setLogLevel("OFF")
def count(topic):
    try:
        df = spark.read.format("kafka").options(**spark_kafka_options(role)).option("subscribe", topic).load()
        return df.count()
    except Exception as exc:
        return type(exc).__name__ + ": " + ("TopicAuthorization" if "TopicAuthorization" in str(exc) else str(exc)[:300])
print(json.dumps({"allowed": count(allowed), "denied": count(denied)}))
spark.stop()
"""


def test_spark_kafka_source_authenticates_as_its_role(own_roles):
    """The stream job's Spark source (core.kafka_io.spark_kafka_options) reads transactions as `stream` and is
    refused on a topic the role has no ACL for."""
    from infra.spark_deps import connector_jars

    s = own_roles
    producer = make_producer(role="product")
    producer.send(domain_topics().events, value={"probe": "spark"}).get(timeout=15)
    producer.close()
    options = spark_kafka_options("stream")
    assert options["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["kafka.sasl.jaas.config"].startswith("org.apache.kafka.common.security.scram.ScramLoginModule")
    jars = ",".join(str(p) for p in connector_jars())
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    done = subprocess.run(
        [sys.executable, "-c", SPARK_PROBE, "stream", domain_topics().events, s.topics.predictions, jars],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result["allowed"], int) and result["allowed"] >= 1
    assert "TopicAuthorization" in str(result["denied"])
    password = load_secrets(s)["stream"]
    assert password not in done.stdout + done.stderr


@pytest.mark.parametrize(("user", "published"), [("monitor", True), ("operator", True), ("serving", False)])
def test_audit_entries_reach_the_topic_as_the_deployment_user(own_roles, monkeypatch, caplog, user, published):
    """On k8s RTML_KAFKA_USER overrides the audit trail's role: the monitor pod (rollout policy, retraining
    promotions) and the rtml-apply Job (as the operator user) must reach `audit`; a user without the ACL is
    refused (a warning; the JSONL keeps the entry)."""
    from core import audit

    s = own_roles
    admin = client_security("admin")  # the admin reads the topic back (before the override names the user)
    monkeypatch.setenv("RTML_KAFKA_USER", user)
    monkeypatch.setenv("RTML_KAFKA_PASSWORD", load_secrets(s)[user])
    reason = f"acl-probe-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="core.audit"):
        entry = audit.record("model.rollout.abort", f"probe as {user}", before={}, after={}, reason=reason)
    warnings = [r.getMessage() for r in caplog.records if r.name == "core.audit"]
    assert audit.read()[-1] == entry
    consumer = KafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap.split(","), enable_auto_commit=False, consumer_timeout_ms=3000, **admin
    )
    try:
        consumer.assign([TopicPartition(s.topics.audit, p) for p in consumer.partitions_for_topic(s.topics.audit)])
        consumer.seek_to_beginning()
        on_topic = [json.loads(m.value) for m in consumer if reason.encode() in m.value]
    finally:
        consumer.close()
    if published:
        assert warnings == [] and on_topic == [entry]
    else:
        assert on_topic == [] and len(warnings) == 1 and "could not publish" in warnings[0]
