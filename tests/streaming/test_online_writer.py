"""The stream job's two online writers (the online store and the plain-Feast baseline) write the
same bytes for the stream views' rows, readable by get_online_features, and only move forward."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from core.online_store import OnlineStore
from streaming.feature_specs import load_stream_spec
from tests.benchmarks.baseline.online_writer import FeastOnlineWriter
from tests.streaming.helpers import fresh_id_base

pytestmark = pytest.mark.integration


def _rows(spec, keys, ts_us, seed):
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({spec.join_key: keys, "event_timestamp": ts_us})
    for a in spec.aggs:
        rows[a.name] = rng.integers(0, 50, len(keys)) if a.is_int else np.round(rng.uniform(0, 900, len(keys)), 2)
        if a.function == "seconds_since_previous":
            rows.loc[rows.index[::2], a.name] = np.nan  # nulls
    return rows


def _dump(client, keys):
    return {k: client.hgetall(k) for k in keys}


def test_online_store_bytes_equal_feast_writer_bytes(feast_store, redis_client):
    online = OnlineStore.from_settings(feast_store=feast_store)
    feast = FeastOnlineWriter(online)
    now_us = int(time.time() * 1e6)
    for i, spec in enumerate(load_stream_spec(feast_store).views):
        base = fresh_id_base()
        keys = np.arange(base, base + 25, dtype=np.int64)
        rows = _rows(spec, keys, now_us - np.arange(25, dtype=np.int64) * 1_234_567, i)
        rkeys = online.redis_keys(spec, keys)
        assert feast.write(spec, rows) == 25
        by_feast = _dump(redis_client, rkeys)
        redis_client.delete(*rkeys)
        assert online.write(spec, rows) == 25
        assert _dump(redis_client, rkeys) == by_feast
        assert all(by_feast.values())
        feats = [f"{spec.name}:{a.name}" for a in spec.aggs]
        got = feast_store.get_online_features(features=feats, entity_rows=[{spec.join_key: int(k)} for k in keys]).to_dict()
        for a in spec.aggs:
            assert got[a.name] == [None if pd.isna(v) else v for v in rows[a.name]]
    online.close()


@pytest.mark.parametrize("kind", ["online_store", "feast"])
def test_writers_only_move_forward(feast_store, redis_client, kind):
    online = OnlineStore.from_settings(feast_store=feast_store)
    w = online if kind == "online_store" else FeastOnlineWriter(online)
    spec = load_stream_spec(feast_store).view("user_txn_aggregates")
    key = np.array([fresh_id_base()], dtype=np.int64)
    t = int(time.time() * 1e6)
    newer, older, same = _rows(spec, key, [t], 1), _rows(spec, key, [t - 1], 2), _rows(spec, key, [t], 3)
    rkeys = online.redis_keys(spec, key)
    assert w.write(spec, newer) == 1
    snapshot = _dump(redis_client, rkeys)
    assert w.write(spec, older) == 0  # an older row never replaces a newer one
    assert _dump(redis_client, rkeys) == snapshot
    assert w.write(spec, same) == 1  # same event time: a correction (late event inside the watermark)
    assert _dump(redis_client, rkeys) != snapshot
    online.close()
