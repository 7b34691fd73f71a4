"""Clear, fast errors: missing tools, ports taken by something else, a broker that never gets ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import UserFacingError
from infra import kafka_broker, redis_server
from infra.proc import cmdline, port_open


def _bin_dir(tmp_path: Path, *tools: str) -> Path:
    """A PATH folder holding only the named tools (symlinks to the real ones)."""
    import shutil

    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in tools:
        (folder / tool).symlink_to(shutil.which(tool))
    return folder


@pytest.fixture
def listener():
    """A plain TCP listener that accepts connections and never says anything."""
    socks = []

    def listen(port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        socks.append(sock)
        return sock

    yield listen
    for sock in socks:
        sock.close()


def _processes_with(marker: str) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and any(marker in a for a in cmdline(int(p.name)))
    ]


def test_missing_java_fails_fast_naming_java(own_env, tmp_path):
    env = dict(os.environ, PATH=str(_bin_dir(tmp_path, "redis-server")))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "rtml.cli", "up"], capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert "`java` not found" in done.stderr and "apt-get install openjdk-17-jre-headless" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert elapsed < 5
    assert not port_open(*own_env.redis_host_port)  # nothing was started before failing
    assert not list(own_env.run_dir.glob("*.pid"))


def test_missing_mvn_when_jars_not_cached(own_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RTML_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(_bin_dir(tmp_path, "java", "redis-server")))
    with pytest.raises(UserFacingError, match=r"`mvn` not found.*apt-get install"):
        kafka_broker.preflight()


def test_kafka_port_taken_by_non_kafka_listener(own_env, listener):
    listener(own_env.kafka_host_port[1])
    started = time.monotonic()
    with pytest.raises(
        UserFacingError, match=rf"port {own_env.kafka_host_port[1]} is taken .* does not speak Kafka.*RTML_KAFKA_PORT"
    ):
        kafka_broker.start(progress=False)
    assert time.monotonic() - started < 10
    assert not kafka_broker.BrokerPaths.of(own_env).pid_file.exists()


def test_controller_port_taken(own_env, listener):
    cport = kafka_broker.controller_port(own_env)
    listener(cport)
    with pytest.raises(UserFacingError, match=rf"controller port {cport}.*RTML_KAFKA_CONTROLLER_PORT"):
        kafka_broker.start(progress=False)


def test_redis_port_taken_by_non_redis_listener(own_env, listener):
    listener(own_env.redis_host_port[1])
    started = time.monotonic()
    with pytest.raises(
        UserFacingError, match=rf"port {own_env.redis_host_port[1]} is taken .* Redis PING.*RTML_REDIS_PORT"
    ):
        redis_server.start(progress=False)
    assert time.monotonic() - started < 10


@pytest.mark.integration
def test_broker_never_ready_points_to_its_log(own_env, monkeypatch):
    monkeypatch.setenv("RTML_KAFKA_START_TIMEOUT", "1")
    paths = kafka_broker.BrokerPaths.of(own_env)
    with pytest.raises(UserFacingError) as err:
        kafka_broker.start(progress=False)
    message = str(err.value)
    assert "did not become ready" in message and "RTML_KAFKA_START_TIMEOUT" in message
    assert str(paths.log_file) in message
    assert not paths.pid_file.exists()
    assert _processes_with(str(paths.config)) == []  # the half-started JVM was stopped
    assert not port_open(*own_env.kafka_host_port)


@pytest.mark.integration
def test_broker_that_exits_at_startup_shows_log_lines(own_env):
    """Storage formatted for another node id: the broker refuses to start; the error quotes its log."""
    paths = kafka_broker.BrokerPaths.of(own_env)
    kafka_broker.ensure_secrets(own_env)
    paths.data.mkdir(parents=True)
    (paths.data / "meta.properties").write_text(
        "version=1\nnode.id=7\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAQ\n"
    )
    with pytest.raises(UserFacingError) as err:
        kafka_broker.start(progress=False, timeout_s=60)
    message = str(err.value)
    assert "exited with code" in message
    assert str(paths.log_file) in message and "Last lines" in message
    assert not paths.pid_file.exists()
