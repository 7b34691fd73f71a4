"""An event sent twice (same event id, the feature repo's :func:`core.contracts.event_id_field`) counts once: in
the stream job (copies in the same micro-batch and in a later one) and in the backfill over a raw event log
that holds it twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.contracts import event_id_field
from streaming.stream_job import job_counters
from tests.streaming.helpers import (
    assert_offline_equals_oracle,
    assert_online_equals_oracle,
    fresh_id_base,
    make_events,
    publish,
)
from tests.streaming.test_backfill_skew import history_frame

pytestmark = pytest.mark.integration


def _events(seed: int, n: int, ago: timedelta, span: timedelta) -> list[dict]:
    rng = np.random.default_rng(seed)
    base = fresh_id_base()  # Redis is shared between runs: new entity ids every run
    users, merchants = [base + i for i in range(4)], [base + 100 + i for i in range(2)]
    return make_events(rng, n, users, merchants, datetime.now(UTC) - ago, span)


def test_stream_counts_a_resent_event_once(stream_job, feast_store):
    eid = event_id_field()
    # inside the watermark delay (the source's 5 min): every copy meets its original's id in the state
    recent = _events(41, 60, timedelta(minutes=4), timedelta(minutes=3))
    old = dict(recent[0], **{eid: "old-" + recent[0][eid], "event_timestamp": recent[0]["event_timestamp"] - timedelta(hours=1)})
    events = [old, *recent]
    first, second = events[:40], events[40:]
    same_batch = [dict(e) for e in first[::4]]  # 10 copies beside their originals
    later = [dict(e) for e in first[:1] + first[1::5] + second[::3]]  # 1 + 8 + 7 copies, one batch later
    assert all(c[eid] for c in same_batch + later)

    job = stream_job()
    publish(stream_job.topic, first + same_batch)
    query = job.start()
    query.processAllAvailable()
    publish(stream_job.topic, second + later)
    query.processAllAvailable()
    job.stop()

    assert_online_equals_oracle(feast_store, stream_job.spec.views, events)
    counters = job_counters(job.options.checkpoint())
    assert counters["events_read"] == len(events) + len(same_batch) + len(later)
    # the copy of the hour-old event (first[0]) arrives after the watermark passed it: dropped as late, not counted
    assert old in same_batch and old in later
    assert counters["duplicates_dropped"] == len(same_batch) + len(later) - 1
    assert counters["late_dropped"] == 1


def test_backfill_counts_a_logged_twice_event_once(spark, feast_store, tmp_path):
    from streaming.backfill import run_backfill
    from streaming.feature_specs import load_stream_spec

    events = _events(43, 80, timedelta(hours=6), timedelta(hours=5))
    history = tmp_path / "history"
    history.mkdir()
    history_frame(events).to_parquet(history / "part-0.parquet", index=False)
    history_frame([dict(e) for e in events[::3]]).to_parquet(history / "part-1.parquet", index=False)  # 27 copies
    b_start = min(e["event_timestamp"] for e in events)
    b_end = max(e["event_timestamp"] for e in events) + timedelta(seconds=1)
    views = load_stream_spec(feast_store).views
    offline_dirs = {v.name: str(tmp_path / "offline" / v.name) for v in views}
    result = run_backfill(b_start, b_end, spark=spark, store=feast_store, source_path=str(history),
                          offline_dirs=offline_dirs, materialize=False)
    assert result.events_read == len(events)
    for v in views:
        assert_offline_equals_oracle(result.files[v.name], v, events)
