"""The stream job's Prometheus metrics are served under their contract names, and move with a batch."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

from streaming.feature_specs import AggSpec, StreamSpec, ViewSpec
from streaming.metrics import StreamMetrics
from streaming.processor import BatchProcessor
from streaming.state_store import StateStore

NAMES = (
    "rtml_stream_events_read_total",
    "rtml_stream_dlq_total",
    "rtml_stream_late_events_total",
    "rtml_stream_rows_written_total",
    "rtml_stream_batch_duration_seconds",
    "rtml_stream_feature_freshness_seconds",
    "rtml_stream_consumer_lag",
)


class MemoryWriter:
    def __init__(self):
        self.rows = {}

    def write(self, spec, rows):
        self.rows[spec.name] = rows
        return len(rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_served_and_counted(tmp_path):
    view = ViewSpec("v", "user_id", (AggSpec("n", "count", "amount", 600_000_000),), str(tmp_path / "v"), ("n",))
    spec = StreamSpec(views=(view,), topic="t", bootstrap="x:1", watermark_delay_us=300_000_000)
    metrics = StreamMetrics(CollectorRegistry())
    letters = []
    proc = BatchProcessor(spec, StateStore(tmp_path / "ck", spec.views), MemoryWriter(), "m", letters.extend, metrics)
    now_us = 1_764_000_000_000_000
    rows = pd.DataFrame({
        "source_topic": ["t", "t", "t"], "partition": [0, 0, 1], "offset": [0, 1, 0],
        "user_id": [1, 2, None], "amount": [1.0, 2.0, None], "event_us": [now_us, now_us + 1, None],
        "batch_us": now_us, "dlq_reason": [None, None, "unparseable_json"], "dlq_field": None,
        "raw_base64": [None, None, "eHg="],
    })
    proc.process(rows, 0)
    late = rows.iloc[:2].copy()
    late["event_us"] = [now_us - 1, now_us - 400_000_000]  # within the watermark, beyond it
    proc.process(late, 1)
    metrics.consumer_lag.labels(partition="0").set(5)

    port = _free_port()
    metrics.serve(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in NAMES:
        assert name in text, name
    assert 'rtml_stream_events_read_total 5.0' in text
    assert 'rtml_stream_dlq_total{reason="unparseable_json"} 1.0' in text
    assert 'rtml_stream_late_events_total{kind="within_watermark"} 1.0' in text
    assert 'rtml_stream_late_events_total{kind="dropped"} 1.0' in text
    assert 'rtml_stream_rows_written_total{store="online",view="v"} 3.0' in text
    assert 'rtml_stream_consumer_lag{partition="0"} 5.0' in text
    assert len(letters) == 1 and letters[0][1]["reason"] == "unparseable_json" and letters[0][1]["raw"] == "xx"
    assert np.isfinite(metrics.freshness._value.get())
