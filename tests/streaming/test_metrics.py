"""The stream job's Prometheus metrics are served under their contract names, and move with a batch."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client import CollectorRegistry

from streaming.feature_specs import AggSpec, StreamSpec, ViewSpec
from streaming.metrics import StreamMetrics

NAMES = (
    "rtml_stream_events_read_total",
    "rtml_stream_dlq_total",
    "rtml_stream_late_events_total",
    "rtml_stream_rows_written_total",
    "rtml_stream_batch_duration_seconds",
    "rtml_stream_feature_freshness_seconds",
    "rtml_stream_consumer_lag",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_served_and_counted_once_per_batch(tmp_path):
    """Counters from Spark's query progress (events read, late events dropped, lag), each batch counted once."""
    from streaming.stream_job import StreamJob, StreamOptions, job_counters

    view = ViewSpec("v", "user_id", (AggSpec("n", "count", "amount", 600_000_000),), str(tmp_path / "v"), ("n",))
    other = ViewSpec("w", "merchant_id", (AggSpec("n", "count", "amount", 600_000_000),), str(tmp_path / "w"), ("n",))
    job = StreamJob.__new__(StreamJob)  # no broker/registry needed to count progress
    job.options = StreamOptions(checkpoint_dir=tmp_path / "ck")
    job.spec = StreamSpec(views=(view, other), topic="t", bootstrap="x:1", watermark_delay_us=300_000_000)
    job.metrics = StreamMetrics(CollectorRegistry())
    job._seen_batches = set()
    (tmp_path / "ck" / "batches").mkdir(parents=True)
    (tmp_path / "ck" / "batches" / f"{7:012d}.json").write_text('{"online_v": 3}')
    progress = {
        "batchId": 7, "numInputRows": 5,
        "stateOperators": [  # dedup by event id (3 copies, 2 late events), then the tile aggregation (none late)
            {"operatorName": "dedupeWithinWatermark", "numRowsDroppedByWatermark": 2,
             "customMetrics": {"numDroppedDuplicateRows": 3}},
            {"operatorName": "stateStoreSave", "numRowsDroppedByWatermark": 0},
        ],
        "sources": [{"latestOffset": '{"t": {"0": 20}}', "endOffset": '{"t": {"0": 15}}'}],
    }
    job.observe_progress(progress)
    job.observe_progress(progress)  # seen again (recentProgress): not counted twice
    job.metrics.dlq.labels(reason="unparseable_json").inc()
    job.metrics.rows_written.labels(view="v", store="online").inc(3)
    job.metrics.freshness.set(0.4)

    port = _free_port()
    job.metrics.serve(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in NAMES:
        assert name in text, name
    assert 'rtml_stream_events_read_total 5.0' in text
    assert 'rtml_stream_late_events_total{kind="dropped"} 2.0' in text
    assert 'rtml_stream_consumer_lag{partition="0"} 5.0' in text
    assert job_counters(tmp_path / "ck") == {"online_v": 3, "events_read": 5, "late_dropped": 2, "duplicates_dropped": 3}


def test_progress_of_a_long_running_job_is_counted_once_per_batch_with_bounded_memory(tmp_path):
    from streaming.stream_job import SEEN_BATCHES_KEPT, StreamJob, StreamOptions

    view = ViewSpec("v", "user_id", (AggSpec("n", "count", "amount", 600_000_000),), str(tmp_path / "v"), ("n",))
    job = StreamJob.__new__(StreamJob)
    job.options = StreamOptions(checkpoint_dir=tmp_path / "ck")
    job.spec = StreamSpec(views=(view,), topic="t", bootstrap="x:1", watermark_delay_us=300_000_000)
    registry = CollectorRegistry()
    job.metrics = StreamMetrics(registry)
    job._seen_batches = set()
    n = 5 * SEEN_BATCHES_KEPT
    for b in range(n):
        for listed in (b - 1, b, b - 1):  # each poll of recentProgress lists earlier batches again
            if listed >= 0:
                job.observe_progress({"batchId": listed, "numInputRows": 2})
    assert registry.get_sample_value("rtml_stream_events_read_total") == 2 * n
    assert len(job._seen_batches) <= 2 * SEEN_BATCHES_KEPT
