"""`rtml stream --master spark://...` on a real Spark standalone cluster: a master and two workers (1 core each)
started here from pyspark's own spark-class. Spark's REST API must show tasks on both workers' executors, and the
online values (stream) and offline rows (backfill on the same cluster) must equal a local[2] run of the same events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.fixtures.spark_cluster import cluster_executor_tasks
from tests.streaming.helpers import assert_rows_equal, fresh_id_base, make_events, oracle, publish, view_aggregations
from tests.streaming.test_backfill_skew import history_frame
from tests.streaming.test_stream_online import online_values

pytestmark = pytest.mark.integration

DRIVER_UI = 18083


def _shift_back(values: dict, shift: int) -> dict:
    return {k - shift: row for k, row in values.items()}


def _shifted(events: list[dict], by: int) -> list[dict]:
    return [dict(e, user_id=e["user_id"] + by, merchant_id=e["merchant_id"] + by) for e in events]


def test_stream_and_backfill_on_a_standalone_cluster_equal_local(spark_cluster, stream_job, feast_store, kafka_topic,
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
    cmd = [sys.executable, "-m", "rtml.cli", "stream", "--master", spark_cluster, "--job-name", f"cl{uuid.uuid4().hex[:6]}",
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
                used = cluster_executor_tasks(DRIVER_UI)
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
    for name, master in (("local", "local[2]"), ("cluster", spark_cluster)):
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
