"""`rtml up --s3` / `status` / `down` for the local s3proxy, in a private state dir and port."""

from __future__ import annotations

import stat

import pytest

from core import storage
from core.settings import settings
from infra import s3proxy_server
from infra.proc import pid_alive
from infra.stack import _start_s3, down, status

pytestmark = pytest.mark.integration


def test_up_s3_creates_the_bucket_and_down_stops_it(tmp_path, monkeypatch):
    from tests.infra.conftest import free_port

    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RTML_S3_PORT", str(free_port()))
    monkeypatch.setenv("RTML_DATA_DIR", "s3://rtml-up/data")
    for var in ("RTML_S3_ENDPOINT", "RTML_S3_ACCESS_KEY", "RTML_S3_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    s = settings()
    info = _start_s3(progress=False, spark_jars=True)  # the s3 part of `rtml up --s3`
    try:
        assert info.started and info.managed and pid_alive(info.pid)
        assert stat.S_IMODE(s.s3.credentials_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "state" / "s3proxy" / "s3proxy.conf").stat().st_mode) == 0o600
        # the bucket exists (a folder of the filesystem backend) and takes objects with the generated keys
        (storage.data_root() / "hello.json").write_text("{}")
        assert (tmp_path / "state" / "s3proxy" / "data" / "rtml-up" / "data" / "hello.json").read_text() == "{}"
        assert all(j.endswith(".jar") for j in storage.s3a_jars())
        line = [x for x in status() if x.name == "s3"][0]
        assert line.answers and line.managed and line.pid == info.pid
        again = s3proxy_server.start(progress=False)
        assert not again.started and again.pid == info.pid  # reused, not started twice
    finally:
        stopped = down(progress=False, s=s)
    assert stopped == ["s3"]
    assert not pid_alive(info.pid) and not s3proxy_server.answers(s.s3.endpoint)
