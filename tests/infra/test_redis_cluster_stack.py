"""`rtml up --redis-cluster` / `status` / `down` against real redis-server processes, and the bounded
memory of the Redis `rtml up` starts (maxmemory with a policy that refuses writes)."""

from __future__ import annotations

import os

import pytest

from infra import redis_cluster, redis_server
from infra.proc import pid_alive, port_open
from infra.redis_server import admin_client
from tests.infra.conftest import free_port
from tests.infra.test_stack_lifecycle import rtml

pytestmark = pytest.mark.integration


def _memory_policy(host: str, port: int) -> tuple[str, int]:
    c = admin_client(host, port, 2.0)
    try:
        cfg = c.config_get("maxmemory*")
        return cfg["maxmemory-policy"], int(cfg["maxmemory"])
    finally:
        c.close()


def test_local_redis_has_maxmemory_and_refuses_writes_instead_of_evicting(own_env, monkeypatch):
    monkeypatch.setenv("RTML_REDIS_MAXMEMORY", "64mb")
    from core.settings import settings

    s = settings()
    started = redis_server.start(progress=False)
    assert started.started
    assert _memory_policy(*s.redis_host_port) == ("noeviction", 64 * 1024**2)


def test_up_redis_cluster_then_status_then_down(own_env, stack, monkeypatch):
    monkeypatch.setenv("RTML_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)  # the session's broker (external: untouched)
    from core.kafka_io import credentials

    admin = credentials("admin", stack)  # the session's broker authenticates (SASL): own_env cleared the user
    if admin is not None:
        monkeypatch.setenv("RTML_KAFKA_USER", admin[0])
        monkeypatch.setenv("RTML_KAFKA_PASSWORD", admin[1])
    monkeypatch.setenv("RTML_REDIS_CLUSTER_PORT", str(free_port(consecutive=6, cluster_bus=True)))
    up = rtml("up", "--redis-cluster", "--no-spark-jars", env=dict(os.environ))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "cluster ready" in up.stdout and "export RTML_REDIS_CLUSTER=1" in up.stdout

    monkeypatch.setenv("RTML_REDIS_CLUSTER", "1")
    from core.settings import settings

    s = settings()
    assert s.redis_mode == "cluster" and len(s.redis_nodes) == 6
    pids = redis_cluster.running_pids(s)
    assert len(pids) == 6 and all(pid_alive(p) for p in pids.values())
    assert redis_cluster.cluster_ok(s)
    primaries = redis_cluster.primaries(s)
    assert len(primaries) == 3 and sum(b - a + 1 for r in primaries.values() for a, b in r) == 16384
    assert redis_cluster._replicas_ready(s)
    for host, port in s.redis_nodes:
        policy, maxmemory = _memory_policy(host, port)
        assert policy == "noeviction" and maxmemory > 0

    status = rtml("status", env=dict(os.environ))
    assert any(line.startswith("redis") and "redis-cluster://" in line and "answers" in line
               for line in status.stdout.splitlines()), status.stdout
    again = rtml("up", "--no-spark-jars", env=dict(os.environ))  # RTML_REDIS_CLUSTER=1: the same cluster
    assert again.returncode == 0 and "cluster already running" in again.stdout, again.stdout + again.stderr

    down = rtml("down", env=dict(os.environ))
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p) for p in pids.values())
    assert not any(port_open(h, p) for h, p in s.redis_nodes)
    assert not list(s.run_dir.glob("redis-cluster-*.pid"))
