"""Redis ACL users on the online store's clients, against a real redis-server started (and stopped) here."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import pytest
import redis

from core.redis_client import FastRedis, RedisTarget, RedisUnavailable, SyncRouter
from core.resp import resp

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory):
    """A redis-server whose default user is off: `reader` may only read, `writer` may do everything."""
    port = _free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path_factory.mktemp("redis")),
         "--user", "default", "off",
         "--user", "reader", "on", ">reader-pw", "~*", "&*", "+@read", "+@connection",
         "--user", "writer", "on", ">writer-pw", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, username="writer", password="writer-pw").ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(port: int, username: str | None, password: str | None, key: bytes = b"k") -> list:
    async def go():
        client = FastRedis("127.0.0.1", port, username=username, password=password, timeout_s=2, connect_timeout_s=2)
        try:
            return await client.execute(resp(b"GET", key), 1)
        finally:
            client.close()

    return asyncio.run(go())


def test_hot_path_client_authenticates_and_reads(acl_redis):
    redis.Redis(port=acl_redis, username="writer", password="writer-pw").set("k", "v")
    assert _get(acl_redis, "reader", "reader-pw") == [b"v"]


def test_unauthenticated_and_wrong_password_are_refused_without_leaking_the_secret(acl_redis):
    with pytest.raises(RedisUnavailable, match="NOAUTH"):
        _get(acl_redis, None, None)
    with pytest.raises(RedisUnavailable) as refused:
        _get(acl_redis, "reader", "not-the-password")
    assert "WRONGPASS" in str(refused.value) and "not-the-password" not in str(refused.value)


def test_writer_connections_carry_the_acl_user(acl_redis):
    addr = ("127.0.0.1", acl_redis)
    reader = SyncRouter(RedisTarget("standalone", (addr,), username="reader", password="reader-pw"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.client(addr).hset("h", "f", "1")
    writer = SyncRouter(RedisTarget("standalone", (addr,), username="writer", password="writer-pw"))
    assert writer.client(addr).hset("h", "f", "1") == 1


def test_settings_hand_the_user_to_every_client(monkeypatch):
    from core.settings import settings

    monkeypatch.setenv("RTML_REDIS_USER", "rtml-serving")
    monkeypatch.setenv("RTML_REDIS_PASSWORD", "s3cret")
    target = RedisTarget.from_settings()
    assert (target.username, target.password) == ("rtml-serving", "s3cret")
    assert "s3cret" not in repr(target) and "s3cret" not in repr(settings())
    assert settings().feast_redis_connection.endswith(",username=rtml-serving,password=s3cret")


def test_tls_setting_reaches_the_url_feast_and_every_client(monkeypatch, tmp_path):
    from core.redis_auth import tls_kwargs
    from core.settings import settings

    for name in ("RTML_REDIS_URL", "RTML_REDIS_CLUSTER", "RTML_REDIS_TLS_CA", "RTML_REDIS_USER", "RTML_REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RTML_REDIS_PORT", "16999")
    monkeypatch.setenv("RTML_REDIS_TLS", "0")
    assert settings().redis_url == "redis://127.0.0.1:16999/0" and tls_kwargs() == {} and settings().redis_ca_file is None
    assert "ssl" not in settings().feast_redis_connection and not RedisTarget.from_settings().tls

    monkeypatch.setenv("RTML_REDIS_TLS", "1")
    s = settings()
    ca = str(tmp_path.resolve() / "secrets" / "redis-tls" / "ca.crt")
    assert s.redis_url == "rediss://127.0.0.1:16999/0" and s.redis_mode == "standalone"
    assert s.feast_redis_connection.endswith(f",ssl=true,ssl_ca_certs={ca}")
    assert tls_kwargs() == {"ssl": True, "ssl_ca_certs": ca}
    target = RedisTarget.from_settings()
    assert target.tls and target.tls_ca == ca

    # an external rediss:// Redis: TLS without the flag; its CA from RTML_REDIS_TLS_CA, else the system's store
    monkeypatch.delenv("RTML_REDIS_TLS")
    monkeypatch.setenv("RTML_REDIS_URL", "rediss://redis.example:6380/2")
    assert settings().redis_tls and settings().redis_ca_file is None and tls_kwargs()["ssl_ca_certs"] is None
    monkeypatch.setenv("RTML_REDIS_TLS_CA", str(tmp_path / "corp-ca.pem"))
    assert settings().feast_redis_connection == f"redis.example:6380,db=2,ssl=true,ssl_ca_certs={tmp_path / 'corp-ca.pem'}"
