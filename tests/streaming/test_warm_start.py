"""A stream job on a fresh checkpoint seeds its windows from the raw history: values equal the oracle
over history + stream, not over the streamed events alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.streaming.helpers import assert_rows_equal, fresh_id_base, make_events, oracle, publish, view_aggregations
from tests.streaming.test_stream_online import online_values

pytestmark = pytest.mark.integration


def _latest(events, spec) -> dict:
    return {k: row for (k, _t), row in oracle(events, spec.join_key, view_aggregations(spec)).items()}


def test_fresh_job_warm_starts_from_history(stream_job, feast_store, tmp_path):
    rng = np.random.default_rng(11)
    base = fresh_id_base()
    users = [base + i for i in range(5)]
    merchants = [base + 100 + i for i in range(3)]
    start = datetime.now(UTC) - timedelta(hours=20)
    events = make_events(rng, 240, users, merchants, start, timedelta(hours=19, minutes=50), ties=0)
    cut = 160
    while events[cut]["event_timestamp"] == events[cut - 1]["event_timestamp"]:
        cut += 1
    history, live = events[:cut], events[cut:]
    folder = tmp_path / "history"
    folder.mkdir()
    frame = pd.DataFrame(history)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame.to_parquet(folder / "part-0.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)

    job = stream_job(warm_start=True, warm_start_path=str(folder))
    publish(stream_job.topic, live)
    query = job.start()
    query.processAllAvailable()
    job.stop()

    changed = 0
    for spec in stream_job.spec.views:
        keys = sorted({e[spec.join_key] for e in live})
        expected = _latest(events, spec)
        got = online_values(feast_store, spec, keys)
        assert_rows_equal({k: expected[k] for k in keys}, got, f"warm-started {spec.name}")
        cold = _latest(live, spec)  # what a job without warm start would have written
        changed += sum(cold[k] != expected[k] for k in keys)
    assert changed, "the history should change some values (else this test could not fail)"
    offline = pd.concat([pd.read_parquet(p) for p in (tmp_path / "offline").rglob("*.parquet")])
    assert offline["event_timestamp"].min() >= pd.Timestamp(live[0]["event_timestamp"])  # history not re-emitted
