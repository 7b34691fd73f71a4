"""The same events through the stream job and through the backfill: identical features (skew = 0),
offline (row by row) and online (after Redis lost the entities and the backfill re-materialized them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.online_store import OnlineStore
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


def history_frame(events: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(events)
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    return df


def test_stream_and_backfill_agree(stream_job, feast_store, spark, tmp_path, redis_client):
    from streaming.backfill import run_backfill

    rng = np.random.default_rng(11)
    base = fresh_id_base()  # Redis is shared between runs: new entity ids every run
    users, merchants = [base + i for i in range(5)], [base + 100 + i for i in range(3)]
    start = datetime.now(UTC) - timedelta(hours=20)
    events = make_events(rng, 240, users, merchants, start, timedelta(hours=18))
    split = 150
    t_max = events[split - 1]["event_timestamp"]
    late = [dict(e) for e in events[split:split + 3]]  # arrive after t_max, event time just before it
    for i, e in enumerate(late):
        e["event_timestamp"] = t_max - timedelta(seconds=30 * (i + 1))
    events = events[:split] + late + events[split + 3:]
    delay = timedelta(microseconds=stream_job.spec.watermark_delay_us)
    sentinel = dict(events[-1], user_id=base + 999, merchant_id=base + 998,
                    event_timestamp=max(e["event_timestamp"] for e in events) + delay + timedelta(seconds=1))
    all_events = events + [sentinel]

    job = stream_job()
    publish(stream_job.topic, events[:split])
    query = job.start()
    query.processAllAvailable()
    publish(stream_job.topic, events[split:] + [sentinel])
    query.processAllAvailable()
    job.stop()
    from streaming.processor import job_counters

    counters = job_counters(job.options.checkpoint(), stream_job.spec)
    assert counters["late_within_watermark"] == 3
    assert counters["late_dropped"] == 0

    history = tmp_path / "history"
    history.mkdir()
    history_frame(all_events).to_parquet(history / "part-0.parquet", index=False)
    stream_online = {v.name: online_values(feast_store, v, sorted({e[v.join_key] for e in events}))
                     for v in stream_job.spec.views}

    # Redis loses the entities, the backfill (offline rows + full materialize) brings them back.
    writer = OnlineStore.from_settings(feast_store=feast_store)
    for v in stream_job.spec.views:
        keys = writer.redis_keys(v.name, np.array(sorted({e[v.join_key] for e in all_events}), dtype=np.int64))
        redis_client.delete(*keys)
    b_start = min(e["event_timestamp"] for e in all_events).replace(microsecond=0) - timedelta(seconds=1)
    b_end = sentinel["event_timestamp"] + timedelta(seconds=1)
    result = run_backfill(b_start, b_end, spark=spark, store=feast_store, source_path=str(history), buckets=3)

    for v in stream_job.spec.views:
        names = [a.name for a in v.aggs]
        streamed = read_offline(stream_job.offline[v.name])
        backfilled = pd.concat([pd.read_parquet(f) for f in result.files[v.name]], ignore_index=True)
        real = streamed[v.join_key].isin({e[v.join_key] for e in events})
        streamed = streamed[real].sort_values([v.join_key, "event_timestamp", *names]).reset_index(drop=True)
        backfilled = backfilled[backfilled[v.join_key].isin(streamed[v.join_key])]
        backfilled = backfilled.sort_values([v.join_key, "event_timestamp", *names]).reset_index(drop=True)
        assert len(streamed) == len(events), f"{v.name}: one final row per event"
        pd.testing.assert_frame_equal(streamed, backfilled, check_exact=True)  # skew = 0, bit for bit
        # and both equal the brute-force oracle for every event
        expected = oracle(events, v.join_key, view_aggregations(v), as_of="every")
        got = {(int(r[v.join_key]), r["event_timestamp"].to_pydatetime()): {n: (None if pd.isna(r[n]) else r[n]) for n in names}
               for _, r in streamed.iterrows()}
        assert_rows_equal(expected, got, f"offline {v.name}")
        # online after re-materialization == online written by the stream job
        keys = sorted({e[v.join_key] for e in events})
        assert online_values(feast_store, v, keys) == stream_online[v.name]
