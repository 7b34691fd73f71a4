"""The monitor against the real Kafka broker: predictions in, alert events out, offsets committed
per window so a restart resumes where it stopped; and `rtml monitor` end to end with a registered model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.contracts import ALERT_FIELDS
from core.settings import REPO_ROOT
from monitoring.alerts import AlertSink
from monitoring.metrics import MonitorMetrics
from monitoring.monitor import FEATURE_DRIFT, Monitor, MonitorConfig
from monitoring.reference import Reference
from monitoring.retrain import RetrainConfig
from monitoring.windows import WindowSpec
from tests.fixtures.predictions import DEFAULT_FEATURES, feature_frame, prediction_messages

pytestmark = pytest.mark.integration
F = DEFAULT_FEATURES
WINDOW = 1000


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference(frame=feature_frame(5000, seed=1)[[*F, "score"]], features=F, model="fraud_model:kafka-test")


def _produce(topic: str, messages: list, start_ms: int | None = None) -> None:
    """Message timestamps start now (a broker with time-based retention deletes old-timestamped records)."""
    from core.kafka_io import make_producer

    start_ms = start_ms or int(time.time() * 1000)
    producer = make_producer(role="admin")
    try:
        for i, msg in enumerate(messages):
            key = msg.get("request_id") if isinstance(msg, dict) else str(i)
            value = msg if isinstance(msg, dict) else None
            if value is None:  # raw malformed bytes: bypass the JSON serializer
                producer.send(topic, key=key, value=msg, timestamp_ms=start_ms + i)
            else:
                producer.send(topic, key=key, value=value, timestamp_ms=start_ms + i)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)


def _produce_raw(topic: str, payloads: list[bytes]) -> None:
    from core.kafka_io import make_producer

    producer = make_producer(value_serializer=None, role="admin")
    try:
        for p in payloads:
            producer.send(topic, key="bad", value=p)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)


def _read_all(topic: str, expect: int, timeout_s: float = 20.0) -> list[dict]:
    from core.kafka_io import make_consumer

    consumer = make_consumer([topic], f"reader-{uuid.uuid4().hex[:8]}", role="admin")
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out += [json.loads(r.value) for r in records]
    finally:
        consumer.close()
    return out


def _consumer(topics: list[str], group: str):
    from core.kafka_io import make_consumer

    return make_consumer(topics, group, check_crcs=False, max_poll_records=5000, role="admin")


def _committed(topic: str, group: str) -> int:
    """Sum over partitions of the group's committed offsets."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    from core.kafka_io import client_security
    from core.settings import settings

    consumer = KafkaConsumer(
        bootstrap_servers=settings().kafka_bootstrap.split(","), group_id=group, enable_auto_commit=False,
        **client_security("admin"),
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in partitions)
    finally:
        consumer.close(autocommit=False)


def test_drifted_predictions_produce_an_alert_on_the_alerts_topic(stack, kafka_topic, reference, tmp_path):
    from core.kafka_io import make_producer

    predictions = kafka_topic("predictions", partitions=1)
    alerts = kafka_topic("alerts", partitions=1)
    frames = [feature_frame(WINDOW, seed=10 + i) for i in range(3)]
    frames += [feature_frame(WINDOW, seed=20 + i, amount_scale=3.0) for i in range(2)]
    messages = []
    for k, frame in enumerate(frames):
        messages += prediction_messages(frame, start_ts=time.time() + 100 * k, features=F, id_prefix=f"w{k}")
    _produce(predictions, messages)

    metrics = MonitorMetrics()
    producer = make_producer(role="admin")
    config = MonitorConfig(window=WindowSpec(size=WINDOW, min_events=100), retrain=RetrainConfig(enabled=False))
    monitor = Monitor(config, lambda: reference, tmp_path, metrics, AlertSink(producer, alerts, metrics=metrics))
    consumer = _consumer([predictions], f"mon-{uuid.uuid4().hex[:8]}")
    try:
        windows = monitor.run(consumer, predictions, None, max_windows=5, idle_exit_s=10)
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)
    assert windows == 5
    assert [r.drifted_features == [] for r in monitor.results] == [True, True, True, False, False]

    events = _read_all(alerts, expect=1)
    assert len(events) == 1
    event = events[0]
    assert set(event) == set(ALERT_FIELDS) and event["alert"] == FEATURE_DRIFT
    assert event["details"]["window_id"] == 4  # the first drifted window
    assert {"txn_amount", "txn_mean_24h", "merchant_amount_mean_1h"} <= set(event["details"]["drifted_features"])
    assert Path(event["report_path"]).is_file()
    assert metrics.value("rtml_monitor_events_total", {"topic": predictions}) == 5 * WINDOW
    assert metrics.value("rtml_monitor_consumer_lag", {"topic": predictions, "partition": "0"}) == 0


def test_restart_resumes_from_committed_offsets(stack, kafka_topic, reference, tmp_path):
    predictions = kafka_topic("predictions", partitions=3)
    frame = feature_frame(5 * WINDOW, seed=30)
    _produce(predictions, prediction_messages(frame, start_ts=time.time(), features=F))
    _produce_raw(predictions, [b"{broken", b'{"score": "x"}', b"[]"])
    group = f"mon-{uuid.uuid4().hex[:8]}"
    config = MonitorConfig(
        window=WindowSpec(size=WINDOW, min_events=100), retrain=RetrainConfig(enabled=False), render_reports=False
    )

    first = Monitor(config, lambda: reference, tmp_path, MonitorMetrics(), AlertSink())
    consumer = _consumer([predictions], group)
    try:
        assert first.run(consumer, predictions, None, max_windows=2, idle_exit_s=10) == 2
    finally:
        consumer.close(autocommit=False)  # a crash: nothing beyond the last window is committed
    committed = _committed(predictions, group)
    assert 2 * WINDOW <= committed <= 2 * WINDOW + 3  # + malformed records met before the 2nd window closed

    second = Monitor(config, lambda: reference, tmp_path, MonitorMetrics(), AlertSink())
    consumer = _consumer([predictions], group)
    try:
        windows = second.run(consumer, predictions, None, idle_exit_s=3)
    finally:
        consumer.close(autocommit=False)
    assert windows == 3
    assert sum(r.n_rows for r in first.results + second.results) == 5 * WINDOW  # nothing lost, nothing twice
    assert [r.window_id for r in second.results] == [3, 4, 5]  # the window counter survived the restart
    assert first.malformed + second.malformed == 3
    assert _committed(predictions, group) == 5 * WINDOW + 3


def _model_rows(state_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    env = {**os.environ, "RTML_STATE_DIR": str(state_dir)}
    code = (
        "import json; from tests.fixtures.models import save_test_model; from core.model_store import production_model, reference_sample;"
        "save_test_model(); m = production_model();"
        f"reference_sample(m).to_parquet('{state_dir}/ref.parquet');"
        "print(json.dumps(m.info.metadata['features']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return pd.read_parquet(state_dir / "ref.parquet"), json.loads(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rtml_monitor_cli_end_to_end_with_the_production_model(stack, kafka_topic, tmp_path):
    """`rtml monitor` loads the production model's reference from the registry, serves /metrics, sends the
    alert to Kafka, and stops cleanly on SIGTERM."""
    state = tmp_path / "state"
    state.mkdir()
    ref, features = _model_rows(state)
    rng = np.random.default_rng(5)
    same = ref.sample(3 * WINDOW, replace=True, random_state=1).reset_index(drop=True)
    drifted = ref.sample(WINDOW, replace=True, random_state=2).reset_index(drop=True)
    for col in ("txn_amount", "txn_sum_24h", "txn_mean_24h", "txn_max_24h"):
        drifted[col] = drifted[col] * 3.0
    frames = pd.concat([same, drifted], ignore_index=True)
    frames["score"] = frames["score"] * (1 + rng.normal(0, 0.001, len(frames)))
    predictions, alerts = kafka_topic("predictions", 1), kafka_topic("alerts", 1)
    _produce(predictions, prediction_messages(frames, start_ts=time.time(), features=features))
    port = _free_port()
    env = {**os.environ, "RTML_STATE_DIR": str(state)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtml.cli",
            "monitor",
            "--window-size",
            str(WINDOW),
            "--metrics-port",
            str(port),
            "--predictions-topic",
            predictions,
            "--alerts-topic",
            alerts,
            "--no-labels",
            "--no-retrain",
            "--group",
            f"cli-{uuid.uuid4().hex[:8]}",
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        body = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                body = ""
            if "rtml_monitor_windows_total 4.0" in body:
                break
            time.sleep(0.5)
        assert "rtml_monitor_windows_total 4.0" in body, proc.stdout.read() if proc.poll() is not None else body[-3000:]
        assert 'rtml_drift_detected{feature="txn_amount"} 1.0' in body
        assert 'rtml_drift_detected{feature="account_age_days"} 0.0' in body
        assert "rtml_monitor_window_size 1000.0" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert "4 window(s) evaluated" in out
    events = _read_all(alerts, expect=1)
    assert [e["alert"] for e in events] == [FEATURE_DRIFT]
    assert "txn_amount" in events[0]["details"]["drifted_features"]
    assert events[0]["details"]["model"].startswith("fraud_model:")
    assert list((state / "reports" / "drift").glob("window-000004-*.html"))
