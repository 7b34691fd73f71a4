"""Fixtures for the stack's own tests: an isolated environment (free ports, temp state dir) per test."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


CLUSTER_BUS_OFFSET = 10000  # a Redis Cluster node also listens on its port + 10000 (the cluster bus)


def free_port(consecutive: int = 1, cluster_bus: bool = False) -> int:
    """A port p such that p .. p+consecutive-1 are all free on 127.0.0.1; with ``cluster_bus``, their cluster bus
    ports (+10000) too, all below the kernel's ephemeral range (32768-), where a client socket could take one."""
    rng = random.Random()
    offsets = (0, CLUSTER_BUS_OFFSET) if cluster_bus else (0,)
    for _ in range(200):
        port = rng.randrange(12000, 22000) if cluster_bus else rng.randrange(20000, 29000)
        if all(_bindable(port + o + i) for o in offsets for i in range(consecutive)):
            return port
    raise RuntimeError("no free port found")


@pytest.fixture
def own_env(monkeypatch, tmp_path) -> Iterator:
    """Settings for a private stack (its own ports and state dir) that never touches the session stack.

    Whatever a test starts in it is stopped at the end (by pid).
    """
    from core.settings import settings
    from infra.stack import down

    for name in ("RTML_KAFKA_BOOTSTRAP", "RTML_REDIS_URL", "RTML_KAFKA_CONTROLLER_PORT", "RTML_KAFKA_START_TIMEOUT",
                 "RTML_KAFKA_USER", "RTML_KAFKA_PASSWORD", "RTML_KAFKA_BROKERS", "RTML_KAFKA_SECURITY",
                 "RTML_REDIS_USER", "RTML_REDIS_PASSWORD", "RTML_REDIS_SECURITY", "RTML_REDIS_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RTML_KAFKA_PORT", str(free_port(consecutive=2)))
    monkeypatch.setenv("RTML_REDIS_PORT", str(free_port()))
    s = settings()
    try:
        yield s
    finally:
        down(progress=False, s=s)
