"""`rtml stream --master spark://...` on a real Spark standalone cluster: a master and two workers (1 core each)
started here from pyspark's own spark-class. Spark's REST API must show tasks on both workers' executors, and the
online values (stream) and offline rows (backfill on the same cluster) must equal a local[2] run of the same events."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.streaming.helpers import assert_rows_equal, fresh_id_base, make_events, oracle, publish, view_aggregations
from tests.streaming.test_backfill_skew import history_frame
from tests.streaming.test_stream_online import online_values

pytestmark = pytest.mark.integration

MASTER_PORT = int(os.environ.get("RTML_TEST_SPARK_MASTER_PORT", "17077"))
MASTER_UI, WORKER_UIS, DRIVER_UI = 18080, (18081, 18082), 18083


def _spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on {port}")


def _get(url: str):
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone master and two 1-core workers; stopped by pid at the end."""
    home = _spark_home()
    work = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOG_DIR": str(work), "SPARK_WORKER_DIR": str(work / "work")}
    spark_class = os.path.join(home, "bin", "spark-class")
    procs = []
    log = open(work / "cluster.log", "wb")
    try:
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(MASTER_PORT),
             "--webui-port", str(MASTER_UI)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_port(MASTER_PORT, 90)
        url = f"spark://127.0.0.1:{MASTER_PORT}"
        for ui in WORKER_UIS:
            procs.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                 "--memory", "1g", "--webui-port", str(ui), "--work-dir", str(work / f"w{ui}"), url],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 120
        while True:
            try:
                alive = [w for w in _get(f"http://127.0.0.1:{MASTER_UI}/json/").get("workers", [])
                         if w.get("state") == "ALIVE"]
            except OSError:  # the master's UI comes up after its RPC port
                alive = []
            if len(alive) >= 2:
                break
            assert time.monotonic() < deadline, (work / "cluster.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        log.close()


def _shift_back(values: dict, shift: int) -> dict:
    return {k - shift: row for k, row in values.items()}


def _shifted(events: list[dict], by: int) -> list[dict]:
    return [dict(e, user_id=e["user_id"] + by, merchant_id=e["merchant_id"] + by) for e in events]


def test_stream_and_backfill_on_a_standalone_cluster_equal_local(cluster, stream_job, feast_store, kafka_topic,
                                                                 tmp_path):
    rng = np.random.default_rng(5)
    base, shift = fresh_id_base(), 500
    users, merchants = [base + i for i in range(8)], [base + 100 + i for i in range(4)]
    events = make_events(rng, 300, users, merchants, datetime.now(UTC) - timedelta(hours=4), timedelta(hours=3))
    remote = _shifted(events, shift)  # same events, other entity ids: both runs write the same Redis

    # local[2] (the test's own session)
    job = stream_job()
    publish(stream_job.topic, events)
    job.start().processAllAvailable()
    job.stop()
    local = {v.name: online_values(feast_store, v, sorted({e[v.join_key] for e in events})) for v in stream_job.spec.views}

    # the cluster: `rtml stream --master spark://...` as an operator runs it
    topic, dlq = kafka_topic("txns", partitions=4), kafka_topic("dlq", partitions=1)
    publish(topic, remote)
    log = open(tmp_path / "stream.log", "wb")
    cmd = [sys.executable, "-m", "rtml.cli", "stream", "--master", cluster, "--job-name", f"cl{uuid.uuid4().hex[:6]}",
           "--topic", topic, "--dlq-topic", dlq, "--checkpoint-dir", str(tmp_path / "ck"), "--trigger-seconds", "0.5",
           "--max-offsets-per-trigger", "200", "--metrics-port", "0", "--shuffle-partitions", "4",
           "--ui-port", str(DRIVER_UI)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    used: dict[str, int] = {}
    try:
        specs = stream_job.spec.views
        keys = {v.name: sorted({e[v.join_key] for e in remote}) for v in specs}
        deadline = time.monotonic() + 900  # ~1 min on an idle 2-core machine; generous for a loaded CI box
        while True:
            assert proc.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "stream.log").read_text()[-3000:]
            try:
                app = _get(f"http://127.0.0.1:{DRIVER_UI}/api/v1/applications")[0]["id"]
                executors = _get(f"http://127.0.0.1:{DRIVER_UI}/api/v1/applications/{app}/executors")
                used = {e["hostPort"]: e["totalTasks"] for e in executors if e["id"] != "driver"}
            except (OSError, IndexError, KeyError, ValueError):
                pass
            done = all(_shift_back(online_values(feast_store, v, keys[v.name]), shift) == local[v.name] for v in specs)
            if done and len(used) >= 2 and all(n > 0 for n in used.values()):
                break
            time.sleep(1.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert len(used) >= 2 and all(n > 0 for n in used.values()), used  # tasks ran on both workers' executors
    if os.environ.get("RTML_CLUSTER_REPORT"):  # the benchmark reads it
        Path(os.environ["RTML_CLUSTER_REPORT"]).write_text(json.dumps(used))

    for v in stream_job.spec.views:
        on_cluster = online_values(feast_store, v, [k + shift for k in sorted(local[v.name])])
        assert _shift_back(on_cluster, shift) == local[v.name], f"online {v.name}: cluster != local[2]"
        want = {k: row for (k, _t), row in oracle(events, v.join_key, view_aggregations(v)).items()}
        assert_rows_equal(want, local[v.name], f"online {v.name}")

    # offline rows: the backfill on the cluster == the backfill on local[2]
    history = tmp_path / "history"
    history.mkdir()
    history_frame(events).to_parquet(history / "part-0.parquet", index=False)
    start = min(e["event_timestamp"] for e in events)
    end = max(e["event_timestamp"] for e in events) + timedelta(seconds=1)
    out = {}
    for name, master in (("local", "local[2]"), ("cluster", cluster)):
        dirs = {v.name: str(tmp_path / name / v.name) for v in stream_job.spec.views}
        script = (
            "import json, sys; from datetime import datetime; from streaming.backfill import run_backfill; "
            f"r = run_backfill(datetime.fromisoformat({start.isoformat()!r}), datetime.fromisoformat({end.isoformat()!r}), "
            f"master={master!r}, source_path={str(history)!r}, offline_dirs={dirs!r}, materialize=False); "
            "print(json.dumps(r.rows_written))"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        out[name] = dirs
    for v in stream_job.spec.views:
        frames = {}
        for name, dirs in out.items():
            files = sorted(Path(dirs[v.name]).glob("*.parquet"))
            frames[name] = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).sort_values(
                [v.join_key, "event_timestamp", *[a.name for a in v.aggs]]).reset_index(drop=True)
        assert len(frames["local"]) == len(events)
        pd.testing.assert_frame_equal(frames["cluster"], frames["local"], check_exact=True)
