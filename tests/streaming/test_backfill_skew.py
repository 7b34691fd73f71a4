"""The same events through the stream job and through the backfill (the batch job over the raw event log
that writes the offline rows): skew = 0. Offline rows equal the oracle for every event; the online value
the stream served for each entity equals, bit for bit, the offline row of that entity's latest event
(training sees what serving saw); and after Redis lost the entities, the backfill restores the same
online values (written a few tiles at a time: an entity is never split across writes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from streaming.tile_store import tile_keys
from tests.streaming.helpers import assert_offline_equals_oracle, fresh_id_base, make_events, publish
from tests.streaming.test_stream_online import online_values

pytestmark = pytest.mark.integration


def history_frame(events: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(events)
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    return df


def test_stream_and_backfill_agree(stream_job, feast_store, spark, tmp_path, redis_client, monkeypatch):
    from streaming import backfill
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

    from streaming import tile_store

    monkeypatch.setattr(tile_store, "MAX_ENTITIES_PER_WRITE", 2)  # entities merged two at a time (5 users, 3 merchants)
    job = stream_job()
    publish(stream_job.topic, events[:split])
    query = job.start()
    query.processAllAvailable()
    publish(stream_job.topic, events[split:])
    query.processAllAvailable()
    job.stop()
    stream_online = {v.name: online_values(feast_store, v, sorted({e[v.join_key] for e in events}))
                     for v in stream_job.spec.views}

    history = tmp_path / "history"
    history.mkdir()
    history_frame(events).to_parquet(history / "part-0.parquet", index=False)
    b_start = min(e["event_timestamp"] for e in events)
    b_end = max(e["event_timestamp"] for e in events) + timedelta(seconds=1)
    offline_dirs = {v.name: str(tmp_path / "offline" / v.name) for v in stream_job.spec.views}
    result = run_backfill(b_start, b_end, spark=spark, store=feast_store, source_path=str(history),
                          offline_dirs=offline_dirs, materialize=False)
    again = run_backfill(b_start, b_end, spark=spark, store=feast_store, source_path=str(history),
                         offline_dirs=offline_dirs, materialize=False)
    assert again.files == result.files  # a rerun rewrites the same files: no duplicate rows

    for v in stream_job.spec.views:
        names = [a.name for a in v.aggs]
        rows = assert_offline_equals_oracle(result.files[v.name], v, events)
        # skew 0: what serving saw (stream online) == the training row of the entity's latest event, bit for bit
        latest = rows.sort_values("event_timestamp").groupby(v.join_key).tail(1).set_index(v.join_key)
        for k, served in stream_online[v.name].items():
            for n in names:
                want = latest.loc[k, n]
                assert (served[n] is None and pd.isna(want)) or served[n] == want, (v.name, k, n, served[n], want)

    # Redis loses the entities (features and tiles); the backfill brings back the same online values.
    from core.online_store import OnlineStore

    writer = OnlineStore.from_settings(feast_store=feast_store)
    for v in stream_job.spec.views:
        keys = np.array(sorted({e[v.join_key] for e in events}), dtype=np.int64)
        redis_client.delete(*writer.redis_keys(v.name, keys), *tile_keys(writer, v, keys))
        assert online_values(feast_store, v, [int(keys[0])])[int(keys[0])][v.aggs[0].name] is None
    monkeypatch.setattr(backfill, "ONLINE_CHUNK_ROWS", 3)  # executors write a few tiles at a time, entities whole
    restored = run_backfill(b_start, b_end, spark=spark, store=feast_store, source_path=str(history),
                            offline_dirs=offline_dirs, materialize=True)
    assert all(n > 0 for n in restored.materialized.values())
    for v in stream_job.spec.views:
        keys = sorted({e[v.join_key] for e in events})
        assert online_values(feast_store, v, keys) == stream_online[v.name]
