"""Redis over TLS (RTML_REDIS_TLS=1): the local Redis of `rtml up` (its own port and state dir, started and
stopped here) with a CA and server certificate generated into the state dir, serving TLS only; every client
verifies it against that CA and authenticates with its ACL user: redis-py (`connect`), the serving hot path
(asyncio), the stream writer's upsert and Feast's own Redis client."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import numpy as np
import pandas as pd
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import online_format as fmt
from core.redis_client import FastRedis, RedisTarget, RedisUnavailable
from core.resp import resp
from tests.fixtures.redis_tls import tls_redis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory):
    with tls_redis(tmp_path_factory.mktemp("redis-tls")) as s:
        yield s


def _key(s, suffix: str = "") -> bytes:
    """A key of the Feast project (the ACL users' key pattern ends with the project name)."""
    from core.feast_store import project_name

    return f"tls-probe-{suffix}-{time.monotonic_ns()}".encode() + project_name().encode()


def _plain(port: int, **kw) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0), **kw)


def test_local_redis_serves_tls_only_with_private_keys(tls_stack):
    s = tls_stack
    port = s.redis_host_port[1]
    assert s.redis_url == f"rediss://127.0.0.1:{port}/0"
    assert s.redis_ca_file == s.redis_tls_dir / "ca.crt" and s.redis_ca_file.exists()
    for name in ("ca.key", "tls.key"):
        assert stat.S_IMODE(os.stat(s.redis_tls_dir / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(s.redis_tls_dir).st_mode) == 0o700
    # A plaintext client (even with the right password) gets no Redis protocol answer: no plaintext port.
    from core.redis_auth import load_secrets

    with pytest.raises(redis.ConnectionError):
        _plain(port, username="rtml-admin", password=load_secrets(s)["admin"]).ping()

    async def hot_path_plaintext():
        client = FastRedis("127.0.0.1", port, timeout_s=2, connect_timeout_s=2)
        try:
            return await client.execute(resp(b"PING"), 1)
        finally:
            client.close()

    with pytest.raises(RedisUnavailable):
        asyncio.run(hot_path_plaintext())


def test_acl_users_over_verified_tls(tls_stack):
    from core.redis_auth import connect

    key = _key(tls_stack, "acl")
    writer, reader = connect(role="writer"), connect(role="serving")
    try:
        assert writer.connection_pool.connection_kwargs["ssl_ca_certs"] == str(tls_stack.redis_ca_file)
        assert writer.hset(key, "f", "1") == 1
        assert reader.hgetall(key) == {b"f": b"1"}
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.hset(key, "f", "2")
        assert writer.delete(key) == 1
    finally:
        writer.close()
        reader.close()


def test_a_client_with_another_ca_fails_verification(tls_stack, tmp_path):
    from core.redis_auth import client_ssl_context
    from infra.redis_tls import ensure_certificates

    other = ensure_certificates(tmp_path / "other-ca", ca_name="someone else's CA").ca_cert
    port = tls_stack.redis_host_port[1]
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        _plain(port, ssl=True, ssl_ca_certs=str(other)).ping()
    # The system's trust store does not know the private CA either (no silent fallback to no verification).
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        _plain(port, ssl=True).ping()

    async def hot_path(ctx):
        client = FastRedis("127.0.0.1", port, timeout_s=2, connect_timeout_s=2, ssl=ctx)
        try:
            return await client.execute(resp(b"PING"), 1)
        finally:
            client.close()

    with pytest.raises(RedisUnavailable, match="SSLCertVerificationError"):
        asyncio.run(hot_path(client_ssl_context(str(other))))
    # with the right CA the same handshake gets as far as Redis (which wants AUTH: the default user is off)
    with pytest.raises(RedisUnavailable, match="NOAUTH"):
        asyncio.run(hot_path(client_ssl_context(str(tls_stack.redis_ca_file))))


def test_stream_upsert_serving_read_and_feast_over_tls(tls_stack):
    from core.feast_store import apply_repo, get_store
    from core.online_store import OnlineStore

    assert ",ssl=true,ssl_ca_certs=" in tls_stack.feast_redis_connection
    apply_repo()  # Feast's own Redis client, over TLS as rtml-writer
    store = get_store()
    online = OnlineStore.from_settings(feast_store=store)
    assert online.target.tls and online.read_target.tls and online.read_target.username == "rtml-serving"
    view = online.views["user_profile"]
    keys = np.arange(9_000_000, 9_000_020, dtype=np.int64)
    rows = pd.DataFrame({view.join_key: keys, "event_timestamp": int(time.time() * 1e6) - np.arange(20) * 1000})
    features = [f for f, _ in view.features if f != view.join_key]
    for i, (name, value_type) in enumerate(view.features):
        if name == view.join_key:
            continue
        if value_type == fmt.INT64:
            rows[name] = pd.Series(np.arange(20) + 100 * i, dtype="Int64")
        elif value_type == fmt.STRING:
            rows[name] = [f"v{i}-{j}" for j in range(20)]
        else:
            rows[name] = np.arange(20) * 0.5 + i
    assert online.write(view, rows) == 20  # the stream job's upsert (Lua script, rtml-writer)

    plan = online.read_plan({view.name: features})

    async def serve():
        try:
            return await online.read_many(plan, [{view.join_key: int(k)} for k in keys])
        finally:
            online.close()

    fetched = asyncio.run(serve())  # the serving hot path (asyncio, rtml-serving)
    by_feast = store.get_online_features(features=[f"{view.name}:{f}" for f in features],
                                         entity_rows=[{view.join_key: int(k)} for k in keys]).to_dict()
    for j, got in enumerate(fetched):
        assert not got.missing
        for name in features:
            want = rows[name].iloc[j]
            want = want if isinstance(want, str) else pytest.approx(float(want), rel=1e-6)
            assert got.values[name] == want, name
            assert by_feast[name][j] == want, name


def test_redis_target_carries_the_ca(tls_stack):
    target = RedisTarget.from_settings(tls_stack, "serving")
    assert target.tls and target.tls_ca == str(tls_stack.redis_ca_file)
    assert target.redis_py_tls() == {"ssl": True, "ssl_ca_certs": str(tls_stack.redis_ca_file)}
    ctx = target.ssl_context()
    assert ctx.check_hostname and ctx.verify_mode.name == "CERT_REQUIRED"


def test_deployment_script_serves_tls_from_a_mounted_secret(tmp_path):
    """infra/k8s/redis/start-redis.sh (compose and Kubernetes) with REDIS_TLS_DIR: a real redis-server, TLS only."""
    import shutil
    import subprocess

    from infra.redis_server import ACL_SCRIPT
    from infra.redis_tls import main
    from tests.fixtures.redis_tls import free_port

    assert main([str(tmp_path / "secret"), "redis.rtml.svc"]) == 0  # what an operator runs for the Secret
    port, passwords = free_port(), {"REDIS_ADMIN_PASSWORD": "a" * 20, "REDIS_WRITER_PASSWORD": "w" * 20,
                                     "REDIS_SERVING_PASSWORD": "s" * 20}
    env = {"PATH": os.environ["PATH"], "REDIS_ACL_DIR": str(tmp_path / "acl"), "REDIS_TLS_DIR": str(tmp_path / "secret"),
           "REDIS_TLS_PORT": str(port), **passwords}
    proc = subprocess.Popen([shutil.which("sh"), str(ACL_SCRIPT), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no", "--dir", str(tmp_path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    client = _plain(port, ssl=True, ssl_ca_certs=str(tmp_path / "secret" / "ca.crt"), username="rtml-serving",
                    password="s" * 20)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        with pytest.raises(redis.ConnectionError):
            _plain(port, username="rtml-serving", password="s" * 20).ping()
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_local_cluster_with_tls_is_refused_clearly(monkeypatch, tmp_path):
    from core.errors import UserFacingError
    from infra import redis_cluster

    monkeypatch.delenv("RTML_REDIS_URL", raising=False)
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RTML_REDIS_CLUSTER", "1")
    monkeypatch.setenv("RTML_REDIS_TLS", "1")
    with pytest.raises(UserFacingError, match="not the local cluster"):
        redis_cluster.start(progress=False)
    assert not redis_cluster.running_pids()
