"""A real three-node KRaft cluster (`rtml up --brokers 3`): replication 3, min.insync.replicas 2, acks=all with
idempotence; SIGKILL of one node while a producer sends loses and duplicates no acknowledged event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from infra import kafka_broker
from infra.proc import pid_alive, port_open
from tests.infra.conftest import free_port

pytestmark = pytest.mark.integration


def _rtml(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RTML_KAFKA_BROKERS"}  # the CLI flag alone decides
    return subprocess.run(
        [sys.executable, "-m", "rtml.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture
def cluster(own_env, monkeypatch):
    """`rtml up --brokers 3` in a private environment; yields the settings of the three-node cluster."""
    from core.settings import settings

    monkeypatch.setenv("RTML_KAFKA_PORT", str(free_port(consecutive=6)))
    monkeypatch.setenv("RTML_KAFKA_HEAP", "384m")
    monkeypatch.setenv("RTML_KAFKA_START_TIMEOUT", "180")
    up = _rtml("up", "--brokers", "3", "--no-spark-jars")
    monkeypatch.setenv("RTML_KAFKA_BROKERS", "3")
    s = settings()
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "starting a 3-node KRaft cluster" in up.stdout
        yield s
    finally:
        kafka_broker.stop(progress=False, s=s)


def _leaders(admin, topic: str) -> dict[int, int]:
    [described] = admin.describe_topics([topic])
    return {p["partition_index"]: p["leader_id"] for p in described["partitions"]}


def test_three_nodes_replicate_and_survive_a_sigkilled_broker(cluster):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType

    from core.contracts import domain_topics
    from core.kafka_io import client_security, make_admin, make_producer

    s = cluster
    pids = kafka_broker.running_pids(s)
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    status = _rtml("status")  # with RTML_KAFKA_BROKERS unset: the first node's bootstrap still answers
    assert f"pid {','.join(map(str, pids))}" in status.stdout and "answers" in status.stdout
    assert len(s.kafka_bootstrap.split(",")) == 3
    topic = domain_topics().events

    admin = make_admin(role="admin")
    try:
        assert len(admin.describe_cluster()["brokers"]) == 3
        [described] = admin.describe_topics([topic])
        assert all(sorted(p["replica_nodes"]) == sorted(p["isr_nodes"]) == [1, 2, 3] for p in described["partitions"])
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert configs["topic"][topic]["min.insync.replicas"]["value"] == "2"
        victim_node = _leaders(admin, topic)[0]  # the leader of partition 0: its partitions must fail over
    finally:
        admin.close()
    victim = next(n for n in kafka_broker.nodes(s) if n.id == victim_node)
    victim_pid = kafka_broker.running_pids(s)[victim_node - 1]

    producer = make_producer(role="product", linger_ms=5)
    assert producer.config["acks"] == -1 and producer.config["enable_idempotence"]
    total, kill_at = 3000, 1000
    acked: list[int] = []
    failed: list[tuple[int, str]] = []
    lock = threading.Lock()

    def on_ok(i):
        return lambda _md: (lock.acquire(), acked.append(i), lock.release())

    def on_err(i):
        return lambda exc: (lock.acquire(), failed.append((i, repr(exc))), lock.release())

    for i in range(total):
        if i == kill_at:
            producer.flush(timeout=30)  # some events acknowledged before the kill, the rest during/after it
            os.kill(victim_pid, signal.SIGKILL)
        producer.send(topic, key=str(i % 97), value={"i": i}).add_callback(on_ok(i)).add_errback(on_err(i))
        if i % 100 == 0:
            time.sleep(0.02)
    producer.flush(timeout=120)
    producer.close()
    assert not pid_alive(victim_pid)
    assert failed == []
    assert len(acked) == total

    # Read everything back from the two surviving nodes (admin inspects the topic).
    survivors = ",".join(n.address for n in kafka_broker.nodes(s) if n.id != victim.id)
    consumer = KafkaConsumer(
        bootstrap_servers=survivors.split(","), enable_auto_commit=False, consumer_timeout_ms=5000,
        **client_security("admin"),
    )  # fmt: skip
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(parts)
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in parts) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                seen += [int(r.value.decode().split(":")[1].rstrip("}")) for r in records]
    finally:
        consumer.close()
    lost = set(acked) - set(seen)
    duplicated = len(seen) - len(set(seen))
    print(
        f"3-broker SIGKILL: sent {total}, acknowledged {len(acked)}, read {len(seen)}, lost {len(lost)}, "
        f"duplicated {duplicated}"
    )
    assert (len(lost), duplicated) == (0, 0)
    assert sorted(seen) == list(range(total))

    # `rtml up` again restarts the killed node; `rtml down` (no RTML_KAFKA_BROKERS) then stops all three by pid.
    again = kafka_broker.start(progress=False, timeout_s=180)
    assert again.started and len(again.pids) == 3 and set(again.pids) - {victim_pid} >= set(pids) - {victim_pid}
    down = _rtml("down")
    assert down.returncode == 0, down.stderr
    assert all(f"stopped pid {p}" in down.stdout for p in again.pids)
    assert not any(pid_alive(p) for p in again.pids)
    assert not any(port_open("127.0.0.1", n.port) for n in kafka_broker.nodes(s))
    assert not list(s.run_dir.glob("kafka*.pid"))
