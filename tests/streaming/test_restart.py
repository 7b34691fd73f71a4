"""Crash and restart from the checkpoint: nothing lost, nothing counted twice (online, offline, counters)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from streaming.processor import job_counters
from streaming.state_store import StateStore
from tests.streaming.helpers import (
    assert_rows_equal,
    fresh_id_base,
    make_events,
    oracle,
    publish,
    read_offline,
    view_aggregations,
)
from tests.streaming.test_stream_online import online_values

pytestmark = pytest.mark.integration


class Crash(RuntimeError):
    pass


def _events(seed: int, n: int, span: timedelta = timedelta(hours=5)):
    rng = np.random.default_rng(seed)
    base = fresh_id_base()  # Redis is shared between runs: new entity ids every run
    users, merchants = [base + i for i in range(5)], [base + 100 + i for i in range(3)]
    return make_events(rng, n, users, merchants, datetime.now(UTC) - timedelta(hours=6), span)


def _sentinel(events: list[dict]) -> dict:
    """An event of another user, past the watermark delay: makes the earlier rows final (offline)."""
    last = max(e["event_timestamp"] for e in events)
    return dict(events[-1], transaction_id="sentinel", user_id=events[-1]["user_id"] + 999,
                merchant_id=events[-1]["merchant_id"] + 999, event_timestamp=last + timedelta(minutes=6))


def _check(events, spec_views, store, offline: dict[str, pd.DataFrame], counters: dict) -> None:
    assert counters["events_read"] == len(events)
    assert counters["events_accepted"] == len(events)
    for spec in spec_views:
        keys = sorted({e[spec.join_key] for e in events})
        expected = {k: row for (k, _t), row in oracle(events, spec.join_key, view_aggregations(spec)).items()}
        assert_rows_equal(expected, online_values(store, spec, keys), f"online {spec.name}")
        rows = offline[spec.name]
        # final rows: one per event older than the watermark, never a duplicate from a replayed batch
        watermark = max(e["event_timestamp"] for e in events) - timedelta(hours=0, minutes=5)
        final = [e for e in events if e["event_timestamp"] < watermark]
        assert len(rows) == len(final)
        want = {k: v for k, v in oracle(events, spec.join_key, view_aggregations(spec), as_of="every").items()
                if k[1] < watermark}
        names = [a.name for a in spec.aggs]
        got = {}
        for _, r in rows.iterrows():
            got[(int(r[spec.join_key]), r["event_timestamp"].to_pydatetime())] = {
                n: (None if pd.isna(r[n]) else r[n]) for n in names}
        assert_rows_equal(want, got, f"offline {spec.name}")


@pytest.mark.parametrize("step", ["before_offline", "before_state", "after_state"])
def test_crash_mid_batch_then_restart(stream_job, feast_store, step):
    # dense in event time: partitions published and read at different speeds stay inside the watermark
    events = _events(31 + len(step), 150, span=timedelta(minutes=3))
    job_name = f"crash{uuid.uuid4().hex[:6]}"
    publish(stream_job.topic, events[:60])
    crashed = {"done": False, "armed": False}

    def fault(batch_id: int, at: str) -> None:
        if at == step and crashed["armed"] and not crashed["done"]:
            crashed["done"] = True
            raise Crash(f"simulated crash at {at} of batch {batch_id}")

    job = stream_job(fault_hook=fault, job_name=job_name)
    query = job.start()
    query.processAllAvailable()  # the first batches are done
    crashed["armed"] = True
    publish(stream_job.topic, events[60:])
    with pytest.raises(Exception, match="simulated crash"):
        query.processAllAvailable()
    assert crashed["done"]
    job.close()

    restarted = stream_job(job_name=job_name)
    q2 = restarted.start()
    q2.processAllAvailable()
    events = events + [_sentinel(events)]
    publish(stream_job.topic, events[-1:])
    q2.processAllAvailable()
    restarted.stop()
    counters = job_counters(restarted.options.checkpoint(), stream_job.spec)
    offline = {v: read_offline(d) for v, d in stream_job.offline.items()}
    _check(events, stream_job.spec.views, feast_store, offline, counters)


def test_kill_process_mid_stream_then_restart(stack, feast_store, kafka_topic, tmp_path):
    """`rtml stream` killed with SIGKILL while it works through the topic, then started again."""
    events = _events(47, 400, span=timedelta(minutes=3))
    topic, dlq = kafka_topic("txns", partitions=2), kafka_topic("dlq", partitions=1)
    publish(topic, events)
    job_name = f"kill{uuid.uuid4().hex[:6]}"
    checkpoint = tmp_path / "checkpoint"
    cmd = [sys.executable, "-m", "rtml.cli", "stream", "--job-name", job_name, "--topic", topic, "--dlq-topic", dlq,
           "--checkpoint-dir", str(checkpoint), "--trigger-seconds", "0.3", "--max-offsets-per-trigger", "30",
           "--metrics-port", "0", "--master", "local[2]"]
    from streaming.feature_specs import load_stream_spec

    spec = load_stream_spec(feast_store)
    store = StateStore(checkpoint, spec.views)
    log = open(tmp_path / "stream.log", "wb")

    def start():
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    proc = start()
    try:
        deadline = time.monotonic() + 180
        while len(store.versions()) < 1 or store.versions()[-1] < 3:
            assert proc.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "stream job made no progress"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        done_before = job_counters(checkpoint, spec)["events_read"]
        assert 0 < done_before < len(events), "killed mid-stream"

        proc = start()
        deadline = time.monotonic() + 240
        sentinel = _sentinel(events)
        for expected in (len(events), len(events) + 1):
            while job_counters(checkpoint, spec).get("events_read", 0) < expected:
                assert proc.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "restarted job did not finish the topic"
                time.sleep(0.5)
            if expected == len(events):
                publish(topic, [sentinel])
        events = events + [sentinel]
        time.sleep(2)  # a further (wrong) batch would show up in the counters below
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    offline = {}
    for v in spec.views:
        files = sorted(glob.glob(os.path.join(v.offline_path, f"stream-{job_name}-b*.parquet")))
        offline[v.name] = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    _check(events, spec.views, feast_store, offline, job_counters(checkpoint, spec))
