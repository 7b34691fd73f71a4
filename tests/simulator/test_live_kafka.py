"""Integration: the live producer against the real Kafka broker (``stack`` fixture)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pandas as pd
import pytest

from streaming.producer import stream_live
from streaming.simulator import live_events_frame

pytestmark = pytest.mark.integration


def _consume_all(topic: str, expected: int, timeout_s: float = 60.0) -> list:
    from core.kafka_io import make_consumer

    consumer = make_consumer([topic], group_id=None, consumer_timeout_ms=500, role="admin")
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records.extend(batch)
        # anything beyond the expected count would be a bug: give it a moment to show up
        for batch in consumer.poll(timeout_ms=1000).values():
            records.extend(batch)
    finally:
        consumer.close()
    return records


def test_stream_live_sends_paced_keyed_events_with_event_time_and_labels(kafka_topic):
    topic, labels_topic = kafka_topic("txns"), kafka_topic("labels")
    n, rate = 1500, 500.0
    start = datetime.now(UTC)
    args = dict(max_events=n, seed=21, n_users=300, n_merchants=60, start_time=start, label_delay_scale=1 / 3600)
    t0 = time.monotonic()
    report = stream_live(rate, topic=topic, labels_topic=labels_topic, progress=False, **args)
    wall = time.monotonic() - t0
    expected = live_events_frame(rate, **args)

    assert report.events == n and report.labels_sent == n
    # pacing: the last event is due (n-1)/rate after the first, the producer must not run ahead of it
    assert wall >= (n - 1) / rate * 0.98

    records = _consume_all(topic, n)
    assert len(records) == n
    # same partition as kafka-python's default partitioner would pick for the key (per-user ordering)
    from kafka.partitioner.default import murmur2

    n_parts = len({r.partition for r in records} | {0, 1, 2})  # kafka_topic() makes 3 partitions
    assert all(r.partition == (murmur2(r.key) & 0x7FFFFFFF) % n_parts for r in records)
    by_id = {json.loads(r.value)["transaction_id"]: r for r in records}
    assert len(by_id) == n
    for row in expected.itertuples():
        rec = by_id[row.transaction_id]
        value = json.loads(rec.value)
        assert rec.key == str(row.user_id).encode()
        assert value["user_id"] == row.user_id and value["amount"] == row.amount
        event_ms = row.event_timestamp.value // 1_000_000  # ns -> ms, integer math
        assert rec.timestamp == event_ms
        assert value["event_timestamp"].endswith("Z")
        assert datetime.fromisoformat(value["event_timestamp"].replace("Z", "+00:00")) == row.event_timestamp

    labels = _consume_all(labels_topic, n)
    assert len(labels) == n
    truth = dict(zip(expected["transaction_id"], expected["is_fraud"], strict=True))
    for rec in labels:
        value = json.loads(rec.value)
        assert rec.key == value["transaction_id"].encode()
        assert value["is_fraud"] == truth[value["transaction_id"]]
        assert value["label_timestamp"] > value["event_timestamp"]
        label_ms = pd.Timestamp(value["label_timestamp"]).value // 1_000_000
        assert rec.timestamp == label_ms


def test_stream_live_fails_fast_without_broker(monkeypatch):
    from core.kafka_io import BrokerUnavailable

    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        stream_live(10, max_events=5, bootstrap="127.0.0.1:1", progress=False)
    assert time.monotonic() - t0 < 10


def test_replay_history_sends_parquet_rows_with_their_event_times(kafka_topic, tmp_path):
    from streaming.producer import replay_history
    from streaming.simulator import simulate_history

    topic = kafka_topic("replay")
    summary = simulate_history(
        start="2026-11-01", days=2, n_users=60, n_merchants=15, seed=4, data_dir=tmp_path, progress=False
    )
    report = replay_history(data_dir=tmp_path, topic=topic, progress=False)
    assert report.events == summary.n_transactions and report.files == 2

    expected = pd.read_parquet(tmp_path / "transactions").set_index("transaction_id")
    records = _consume_all(topic, len(expected))
    assert len(records) == len(expected)
    for rec in records:
        value = json.loads(rec.value)
        row = expected.loc[value["transaction_id"]]
        assert rec.key == str(row["user_id"]).encode()
        assert rec.timestamp == row["event_timestamp"].value // 1_000_000
        assert pd.Timestamp(value["event_timestamp"]) == row["event_timestamp"]
        assert (value["user_id"], value["merchant_id"], value["amount"]) == (
            row["user_id"], row["merchant_id"], row["amount"]
        )  # fmt: skip
        assert (value["currency"], value["country"], value["channel"]) == (
            row["currency"],
            row["country"],
            row["channel"],
        )
