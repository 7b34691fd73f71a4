"""Crash and restart from the checkpoint: a replayed micro-batch changes nothing, nothing is lost or counted twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.streaming.helpers import assert_rows_equal, fresh_id_base, make_events, oracle, publish, view_aggregations
from tests.streaming.test_stream_online import online_values

pytestmark = pytest.mark.integration


class Crash(RuntimeError):
    pass


def _events(seed: int, n: int, span: timedelta = timedelta(hours=5)):
    rng = np.random.default_rng(seed)
    base = fresh_id_base()  # Redis is shared between runs: new entity ids every run
    users, merchants = [base + i for i in range(5)], [base + 100 + i for i in range(3)]
    return make_events(rng, n, users, merchants, datetime.now(UTC) - timedelta(hours=6), span)


def _expected(events, spec):
    return {k: row for (k, _t), row in oracle(events, spec.join_key, view_aggregations(spec)).items()}


@pytest.mark.parametrize("step", ["before_write", "after_write"])
def test_crash_mid_batch_then_restart(stream_job, feast_store, step):
    """A batch that crashed before or after its Redis writes is replayed on restart: values equal the oracle
    (the replay rewrote identical absolute tiles; nothing counted twice)."""
    events = _events(31 + len(step), 150)
    job_name = f"crash{uuid.uuid4().hex[:6]}"
    publish(stream_job.topic, events[:60])
    crashed = {"done": False, "armed": False}

    def fault(batch_id: int, at: str) -> None:
        if at == step and crashed["armed"] and not crashed["done"]:
            crashed["done"] = True
            raise Crash(f"simulated crash at {at} of batch {batch_id}")

    job = stream_job(fault_hook=fault, job_name=job_name)
    query = job.start()
    query.processAllAvailable()
    crashed["armed"] = True
    publish(stream_job.topic, events[60:])
    with pytest.raises(Exception, match="simulated crash"):
        query.processAllAvailable()
    assert crashed["done"]
    job.close()

    restarted = stream_job(job_name=job_name)
    restarted.start().processAllAvailable()
    restarted.stop()
    for spec in stream_job.spec.views:
        keys = sorted({e[spec.join_key] for e in events})
        assert_rows_equal(_expected(events, spec), online_values(feast_store, spec, keys), f"online {spec.name}")


@pytest.mark.xfail(
    strict=False,
    reason="known defect under investigation: after SIGKILL mid-stream and a restart, the tiled stream job's online "
    "values have been seen to stay short of the oracle (it passed in other runs); the replay/exactly-once path of "
    "the tiled job must be fixed first next round",
)
def test_kill_process_mid_stream_then_restart(stack, feast_store, kafka_topic, tmp_path):
    """`rtml stream` killed with SIGKILL while it works through the topic, then started again."""
    events = _events(47, 400)
    topic, dlq = kafka_topic("txns", partitions=2), kafka_topic("dlq", partitions=1)
    publish(topic, events)
    checkpoint = tmp_path / "checkpoint"
    cmd = [sys.executable, "-m", "rtml.cli", "stream", "--job-name", f"kill{uuid.uuid4().hex[:6]}", "--topic", topic,
           "--dlq-topic", dlq, "--checkpoint-dir", str(checkpoint), "--trigger-seconds", "0.3",
           "--max-offsets-per-trigger", "30", "--metrics-port", "0", "--master", "local[2]"]
    from streaming.feature_specs import load_stream_spec

    spec = load_stream_spec(feast_store)
    log = open(tmp_path / "stream.log", "wb")

    def start():
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def batches() -> int:
        folder = checkpoint / "batches"
        return len(list(folder.glob("*.json"))) if folder.exists() else 0

    proc = start()
    try:
        deadline = time.monotonic() + 240
        while batches() < 3:
            assert proc.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "stream job made no progress"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert batches() < len(events) / 30, "killed mid-stream"

        proc = start()
        deadline = time.monotonic() + 300  # 14 micro-batches of 30 records; slow on a loaded 2-core machine
        views = {v.name: (v, sorted({e[v.join_key] for e in events})) for v in spec.views}
        while True:
            assert proc.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
            done = all(_matches(_expected(events, v), online_values(feast_store, v, keys)) for v, keys in views.values())
            if done:
                break
            assert time.monotonic() < deadline, "restarted job did not finish the topic"
            time.sleep(1.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    for v, keys in views.values():
        assert_rows_equal(_expected(events, v), online_values(feast_store, v, keys), f"online {v.name}")


def _matches(expected, actual) -> bool:
    try:
        assert_rows_equal(expected, actual, "poll")
    except AssertionError:
        return False
    return True
