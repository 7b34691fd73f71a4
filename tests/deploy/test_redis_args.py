"""The Redis of docker-compose and of the Kubernetes StatefulSet, started by a real redis-server through
their start script (infra/k8s/redis/start-redis.sh) with their arguments: persistence, bounded memory that
refuses writes instead of evicting, and the ACL users (no anonymous access, a writer limited to the Feast
project's keys, a read-only serving user). Their health checks pass only when Redis answers PONG."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.deploy.manifests import COMPOSE, K8S, one

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")]

SCRIPT = K8S / "redis" / "start-redis.sh"
PASSWORDS = {"REDIS_ADMIN_PASSWORD": "a" * 48, "REDIS_WRITER_PASSWORD": "b" * 48, "REDIS_SERVING_PASSWORD": "c" * 48}
PROJECT = "rtml_fraud"  # checked against feature_store.yaml in test_redis_acl.py
FEAST_KEY = b"\x02\x00\x00\x00user_id\x04\x00\x00\x00\x08\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00" + PROJECT.encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _compose_args() -> list[str]:
    return yaml.safe_load(COMPOSE.read_text())["services"]["redis"]["command"]


def _k8s_container() -> dict:
    return one("StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]


def _bytes(size: str) -> int:
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
    return int(size[:-2]) * units[size[-2:].lower()] if size[-2:].lower() in units else int(size)


def _start(args: list[str], port: int, tmp_path: Path) -> subprocess.Popen:
    """A redis-server started like the deployment starts it, answering its admin."""
    env = {"PATH": os.environ["PATH"], "REDIS_ACL_DIR": str(tmp_path / "acl"), **PASSWORDS}
    proc = subprocess.Popen(["sh", str(SCRIPT), *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    admin = redis.Redis(port=port, username="rtml-admin", password=PASSWORDS["REDIS_ADMIN_PASSWORD"], socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                if admin.ping():
                    return proc
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not answer within 20 s"
                time.sleep(0.1)
    finally:
        admin.close()


@pytest.fixture(params=["compose", "k8s"])
def server(request, tmp_path):
    """(args, port) of a redis-server started like the deployment starts it."""
    args = _compose_args() if request.param == "compose" else _k8s_container()["args"]
    port = _free_port()
    proc = _start(args, port, tmp_path)
    try:
        yield args, port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_killed_server_replays_the_script_writes_of_its_append_only_file(tmp_path):
    """The writer's Lua scripts land in the append-only file as MULTI/EXEC blocks; Redis 7.0 replays them as the
    default user and re-checks ACLs at EXEC: with the default user at -@all every block was refused (NOPERM) and
    its writes lost after a SIGKILL (the fault matrix lost 54 of 600 events)."""
    args, port = _compose_args(), _free_port()
    assert args[args.index("--appendonly") + 1] == "yes"
    proc = _start(args, port, tmp_path)
    try:
        writer = _client(port, "rtml-writer")
        script = "for i, k in ipairs(KEYS) do redis.call('HSET', k, 'f', ARGV[1]) end return #KEYS"
        keys = [b"%d" % i + FEAST_KEY for i in range(20)]
        assert writer.eval(script, len(keys), *keys, "w") == len(keys)
        writer.close()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    proc = _start(args, port, tmp_path)
    try:
        admin = _client(port, "rtml-admin")
        assert [admin.hget(k, "f") for k in keys] == [b"w"] * len(keys)
        with pytest.raises(redis.exceptions.AuthenticationError):  # the default user's rights reach no client
            _client(port).hget(keys[0], "f")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


NO_RETRY = Retry(NoBackoff(), 0)  # redis-py retries a refused AUTH with backoff: answer at once


def _client(port: int, user: str | None = None, password: str | None = None) -> redis.Redis:
    names = {"rtml-admin": "REDIS_ADMIN_PASSWORD", "rtml-writer": "REDIS_WRITER_PASSWORD", "rtml-serving": "REDIS_SERVING_PASSWORD"}
    if user is None:
        return redis.Redis(port=port, socket_timeout=5, retry=NO_RETRY)
    return redis.Redis(port=port, username=user, password=password or PASSWORDS[names[user]], socket_timeout=5, retry=NO_RETRY)


def test_persistence_and_bounded_memory_that_refuses_writes(server):
    args, port = server
    admin, writer = _client(port, "rtml-admin"), _client(port, "rtml-writer")
    config = admin.config_get("*")
    given: dict[str, str] = {}
    for token in args:
        if token.startswith("--"):
            key = token
            given[key] = ""
        else:
            given[key] = f"{given[key]} {token}".strip()
    assert config["appendonly"] == given["--appendonly"]
    assert config["save"] == given["--save"]
    assert given["--maxmemory-policy"] == config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) == _bytes(given["--maxmemory"]) > 0
    writer.hset(FEAST_KEY, "probe", "1")
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 200_000)
    stored = 0
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(100_000):
            writer.hset(b"%d" % i + FEAST_KEY, mapping={"f": "x" * 100})
            stored += 1
    assert stored > 0 and admin.dbsize() == stored + 1  # nothing was evicted
    assert writer.hget(FEAST_KEY, "probe") == b"1"


def test_acl_users(server):
    _args, port = server
    anonymous, writer, serving = _client(port), _client(port, "rtml-writer"), _client(port, "rtml-serving")
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get(FEAST_KEY)
    with pytest.raises(redis.exceptions.AuthenticationError):
        _client(port, "rtml-serving", "wrong").ping()
    # the writer: hashes, TTLs and the write script on the project's keys only
    pipe = writer.pipeline()
    pipe.hset(FEAST_KEY, mapping={b"\x01\x02\x03\x04": b"v", b"_ts:view": b"t"}).pexpire(FEAST_KEY, 60_000)
    assert pipe.execute() == [2, True]
    script = "redis.call('HSET', KEYS[1], 'f', ARGV[1]) return redis.call('PEXPIRETIME', KEYS[1])"
    assert writer.eval(script, 1, FEAST_KEY, "w") > 0
    assert writer.hset(b"rtml:tiles:view:" + FEAST_KEY, "t", "1") == 1
    for denied in (lambda: writer.hset(b"other-key", "f", "v"), lambda: writer.eval(script, 1, b"other-key", "w"),
                   lambda: writer.flushall(), lambda: writer.config_set("maxmemory", 0), lambda: writer.set(FEAST_KEY + b"x", "1"),
                   lambda: writer.acl_setuser("x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    # serving: reads the project's hashes, can write nothing
    assert serving.hmget(FEAST_KEY, [b"\x01\x02\x03\x04", b"_ts:view"]) == [b"v", b"t"]
    for denied in (lambda: serving.hset(FEAST_KEY, "f", "v"), lambda: serving.delete(FEAST_KEY), lambda: serving.flushdb(),
                   lambda: serving.eval("return 1", 0), lambda: serving.hmget(b"other-key", ["f"]),
                   lambda: serving.config_get("*"), lambda: serving.keys("*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    assert writer.hget(FEAST_KEY, "f") == b"w"


def _health(command: list[str], port: int, password: str) -> int:
    """Runs a deployment health check against the test server (redis-cli pointed at its port)."""
    text = " ".join(command) if command[0] != "sh" else command[-1]
    text = text.replace("CMD-SHELL ", "").replace("redis-cli ", f"redis-cli -p {port} ")
    env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": password}
    return subprocess.run(["sh", "-c", text], env=env, capture_output=True, timeout=20).returncode


def test_health_checks_need_pong(server):
    _args, port = server
    compose_check = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]["healthcheck"]["test"]
    k8s_probe = _k8s_container()["readinessProbe"]["exec"]["command"]
    for check in (compose_check, k8s_probe):
        assert _health(check, port, PASSWORDS["REDIS_SERVING_PASSWORD"]) == 0
        assert _health(check, port, "wrong") != 0
