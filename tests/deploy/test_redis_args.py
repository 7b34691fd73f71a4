"""The Redis command lines of docker-compose and of the Kubernetes StatefulSet, run by a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import redis
import yaml

from tests.deploy.manifests import COMPOSE, one

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bytes(size: str) -> int:
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
    return int(size[:-2]) * units[size[-2:].lower()] if size[-2:].lower() in units else int(size)


def test_k8s_maxmemory_leaves_headroom_below_the_memory_limit():
    args = _k8s_args()
    limit = one("StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    assert _bytes(args[args.index("--maxmemory") + 1]) <= 0.8 * int(limit[:-2]) * 1024**3


def _compose_args() -> list[str]:
    return yaml.safe_load(COMPOSE.read_text())["services"]["redis"]["command"]


def _k8s_args() -> list[str]:
    return one("StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("args", [_compose_args(), _k8s_args()], ids=["compose", "k8s"])
def test_redis_starts_with_the_deployment_arguments(args, tmp_path):
    assert args[0] == "redis-server"
    port = _free_port()
    proc = subprocess.Popen([shutil.which("redis-server"), *args[1:], "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=5)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not answer within 20 s"
                time.sleep(0.1)
        config = client.config_get("*")
        given: dict[str, str] = {}
        for token in args[1:]:
            if token.startswith("--"):
                key = token
                given[key] = ""
            else:
                given[key] = f"{given[key]} {token}".strip()
        assert config["appendonly"] == given["--appendonly"]
        assert config["save"] == given["--save"]
        # bounded memory that refuses writes instead of evicting features
        assert given["--maxmemory-policy"] == config["maxmemory-policy"] == "noeviction"
        assert int(config["maxmemory"]) == _bytes(given["--maxmemory"]) > 0
        client.set("probe", "1")
        assert client.get("probe") == b"1"
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 200_000)
        stored = 0
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(100_000):
                client.hset(f"entity:{i}", mapping={"f": "x" * 100})
                stored += 1
        assert stored > 0 and client.dbsize() == stored + 1  # nothing was evicted
        assert client.get("probe") == b"1"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=20)
