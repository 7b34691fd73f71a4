"""`rtml up --mlflow`: a real `mlflow server` over the local tracking store, serving the runs that
`rtml train` writes; stopped by pid with its workers."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from infra.proc import pid_alive, port_open
from tests.training.conftest import ROUNDS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_mlflow_server_serves_the_local_store_and_stops_by_pid(world, fresh_registry, monkeypatch):
    from infra import mlflow_server
    from training.pipeline import train

    port = _free_port()
    monkeypatch.setenv("RTML_MLFLOW_PORT", str(port))
    out = train(training_set=world["training_set"].path, trials=1, seed=2, progress=False, max_rounds=ROUNDS)
    address, pid = mlflow_server.start(progress=False)
    try:
        assert address == f"http://127.0.0.1:{port}" and mlflow_server.running_pid() == pid
        assert mlflow_server.start(progress=False) == (address, pid)  # idempotent
        with urllib.request.urlopen(f"{address}/api/2.0/mlflow/runs/get?run_id={out.run_id}", timeout=10) as resp:
            run = json.loads(resp.read())["run"]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["rtml.model_tag"] == out.tag
        with urllib.request.urlopen(address, timeout=10) as resp:  # the UI
            assert resp.status == 200 and b"<html" in resp.read(2000).lower()
    finally:
        assert mlflow_server.stop(progress=False)
    assert not pid_alive(pid) and not port_open("127.0.0.1", port)
    assert mlflow_server.running_pid() is None and not mlflow_server.stop(progress=False)


def test_mlflow_server_refuses_a_remote_store(fresh_registry, monkeypatch):
    from core.errors import UserFacingError
    from infra import mlflow_server

    monkeypatch.setenv("RTML_MLFLOW_URI", "http://tracking.example:5000")
    with pytest.raises(UserFacingError, match="local store only"):
        mlflow_server.start(progress=False)
