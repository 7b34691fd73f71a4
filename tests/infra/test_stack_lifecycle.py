"""`rtml up` / `down` / `status` against real processes, in a private environment (own ports and state dir)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import kafka_broker, redis_server
from infra.proc import pid_alive, port_open
from infra.stack import down, status, up

pytestmark = pytest.mark.integration
RTML = [sys.executable, "-m", "rtml.cli"]


def rtml(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*RTML, *args], capture_output=True, text=True, timeout=180, env=env or dict(os.environ))


def test_up_twice_reuses_then_down_stops_everything(own_env):
    s = own_env
    first = up(progress=False)
    assert sorted(first.started) == ["kafka", "redis"]
    assert first.kafka.pid and pid_alive(first.kafka.pid)
    assert first.redis.pid and pid_alive(first.redis.pid)
    assert kafka_broker.is_ready(s.kafka_bootstrap)
    assert redis_server.answers_ping(s.redis_url)
    assert first.spark_kafka_jars and all(p.exists() for p in first.spark_kafka_jars)

    second = up(progress=False)
    assert second.started == []
    assert (second.kafka.pid, second.redis.pid) == (first.kafka.pid, first.redis.pid)

    cli = rtml("up")
    assert cli.returncode == 0, cli.stderr
    assert f"already running at {s.kafka_bootstrap} (pid {first.kafka.pid})" in cli.stdout
    assert f"already running at {s.redis_url} (pid {first.redis.pid})" in cli.stdout

    stopped = down(progress=False)
    assert sorted(stopped) == ["kafka", "redis"]
    assert not pid_alive(first.kafka.pid) and not pid_alive(first.redis.pid)
    host, port = s.kafka_host_port
    assert not port_open(host, port) and not port_open(host, kafka_broker.controller_port(s))
    assert not port_open(*s.redis_host_port)
    assert not list(s.run_dir.glob("*.pid"))
    assert down(progress=False) == []


def test_status_command_reports_pids_and_answers(own_env):
    s = own_env
    before = rtml("status")
    assert before.returncode == 1
    lines = before.stdout.splitlines()
    assert any(line.startswith("kafka") and s.kafka_bootstrap in line and "DOWN" in line for line in lines)
    assert any(line.startswith("redis") and s.redis_url in line and "DOWN" in line for line in lines)

    info = up(progress=False, spark_jars=False)
    after = rtml("status")
    assert after.returncode == 0, after.stdout + after.stderr
    lines = after.stdout.splitlines()
    assert any(line.startswith("kafka") and f"pid {info.kafka.pid}" in line and "answers" in line for line in lines)
    assert any(line.startswith("redis") and f"pid {info.redis.pid}" in line and "answers" in line for line in lines)
    assert [st.answers for st in status()] == [True, True]

    gone = rtml("down")
    assert gone.returncode == 0
    assert f"stopped pid {info.kafka.pid}" in gone.stdout and f"stopped pid {info.redis.pid}" in gone.stdout
    assert not pid_alive(info.kafka.pid) and not pid_alive(info.redis.pid)


def test_external_services_are_used_but_never_started_or_stopped(stack, monkeypatch, tmp_path):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "ext"))
    monkeypatch.setenv("RTML_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)
    monkeypatch.setenv("RTML_REDIS_URL", stack.redis_url)
    info = up(progress=False, spark_jars=False)
    assert info.started == []
    assert info.kafka.external and info.redis.external
    assert down(progress=False) == []
    assert kafka_broker.is_ready(stack.kafka_bootstrap) and redis_server.answers_ping(stack.redis_url)
    with pytest.raises(Exception, match="not started by rtml"):
        redis_server.stop_redis()


def test_services_answering_without_our_pid_file_are_reused_not_stopped(stack, monkeypatch, tmp_path):
    """Same ports as the session stack but another state dir: nothing of ours runs there, yet both answer."""
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "other"))
    info = up(progress=False, spark_jars=False)
    assert info.started == []
    assert not info.kafka.managed and not info.redis.managed
    assert down(progress=False) == []
    assert kafka_broker.is_ready(stack.kafka_bootstrap) and redis_server.answers_ping(stack.redis_url)


def test_stop_and_restart_redis_mid_test(own_env):
    s = own_env
    first = redis_server.start(progress=False)
    assert first.started
    redis_server.stop_redis()
    assert not redis_server.answers_ping(s.redis_url)
    assert not pid_alive(first.pid)
    again = redis_server.start_redis()
    assert again.started and again.pid != first.pid
    assert redis_server.answers_ping(s.redis_url)


def test_generated_broker_config(own_env):
    s = own_env
    paths = kafka_broker.BrokerPaths.of(s)
    props = dict(
        line.split("=", 1)
        for line in kafka_broker.server_properties(s, paths).splitlines()
        if "=" in line and not line.startswith("#")
    )
    host, port = s.kafka_host_port
    cport = kafka_broker.controller_port(s)
    assert cport == port + 1
    assert props["listeners"] == f"CLIENT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["super.users"] == "User:admin;User:controller"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["controller.quorum.voters"] == f"1@127.0.0.1:{cport}"
    assert props["log.dirs"] == str(s.state_dir / "kafka" / "data")
    assert props["num.partitions"] == "3"
    assert props["offsets.topic.replication.factor"] == "1"
    assert (props["default.replication.factor"], props["min.insync.replicas"]) == ("1", "1")
    assert props["auto.create.topics.enable"] == "false"  # topics come from `rtml up` (admin) only
    # Replayed history carries old record timestamps: time-based retention would delete it within minutes.
    assert props["log.retention.ms"] == "-1"
    assert Path(props["log.dirs"]).is_relative_to(s.state_dir)


def test_concurrent_ups_start_one_broker_and_one_redis(own_env):
    """Two `rtml up` at the same moment: one starts the services, the other waits and reuses them."""
    procs = [
        subprocess.Popen([*RTML, "up", "--no-spark-jars"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("kafka: starting") == 1 and stdout.count("redis: starting") == 1
    assert stdout.count("kafka: already running") == 1 and stdout.count("redis: already running") == 1
    assert kafka_broker.is_running(own_env) and redis_server.is_running(own_env)


def test_generated_config_of_a_three_node_cluster(own_env, monkeypatch):
    from core.settings import settings

    monkeypatch.setenv("RTML_KAFKA_BROKERS", "3")
    s = settings()
    port = s.kafka_host_port[1]
    assert s.kafka_bootstrap == f"127.0.0.1:{port},127.0.0.1:{port + 2},127.0.0.1:{port + 4}"
    voters = f"1@127.0.0.1:{port + 1},2@127.0.0.1:{port + 3},3@127.0.0.1:{port + 5}"
    for node in kafka_broker.nodes(s):
        props = dict(
            line.split("=", 1)
            for line in kafka_broker.server_properties(s, node.paths, node).splitlines()
            if "=" in line and not line.startswith("#")
        )
        assert props["node.id"] == str(node.id)
        assert props["controller.quorum.voters"] == voters
        assert props["listeners"] == f"CLIENT://127.0.0.1:{port + 2 * (node.id - 1)},CONTROLLER://127.0.0.1:{port + 2 * node.id - 1}"
        assert (props["default.replication.factor"], props["min.insync.replicas"]) == ("3", "2")
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["unclean.leader.election.enable"] == "false"
        assert props["log.dirs"] == str(s.state_dir / "kafka-cluster3" / f"node-{node.id}" / "data")
