"""The pipelined writer writes exactly the bytes Feast writes, readable by get_online_features,
and only moves an entity forward in event time."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from streaming.feature_specs import load_stream_spec
from streaming.online_writer import (
    FeastOnlineWriter,
    PipelinedOnlineWriter,
    encode_double_values,
    encode_int64_values,
    encode_timestamps,
)
from tests.streaming.helpers import fresh_id_base

pytestmark = pytest.mark.integration


def test_value_encoding_matches_protobuf():
    ints = np.array([0, 1, -1, 127, 128, 2**40, -(2**63), 2**63 - 1], dtype=np.int64)
    assert encode_int64_values(ints) == [Value(int64_val=int(v)).SerializeToString() for v in ints]
    dbl = np.array([0.0, -0.0, 1.5, -3.25, 1e300, 123456.78])
    assert encode_double_values(dbl) == [Value(double_val=float(v)).SerializeToString() for v in dbl]
    assert encode_double_values(np.array([np.nan])) == [Value().SerializeToString()]
    us = np.array([0, 1, 999_999, 1_700_000_000_000_000, 1_700_000_000_123_456, -1_000_000])
    want = []
    for u in us.tolist():
        t = Timestamp()
        t.FromMicroseconds(u)
        want.append(t.SerializeToString())
    assert encode_timestamps(us) == want


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


def test_pipelined_bytes_equal_feast_bytes(feast_store, redis_client):
    spec_all = load_stream_spec(feast_store)
    pipelined = PipelinedOnlineWriter(redis_client, feast_store.config.project)
    feast = FeastOnlineWriter(feast_store, redis_client)
    for i, spec in enumerate(spec_all.views):
        base = fresh_id_base()
        keys = np.arange(base, base + 25, dtype=np.int64)
        ts = 1_764_000_000_000_000 + np.arange(25, dtype=np.int64) * 1_234_567
        rows = _rows(spec, keys, ts, i)
        rkeys = pipelined.redis_keys(spec.join_key, keys)
        feast.write(spec, rows)
        by_feast = _dump(redis_client, rkeys)
        redis_client.delete(*rkeys)
        pipelined.write(spec, rows)
        assert _dump(redis_client, rkeys) == by_feast
        assert all(by_feast.values())
        feats = [f"{spec.name}:{a.name}" for a in spec.aggs]
        got = feast_store.get_online_features(features=feats, entity_rows=[{spec.join_key: int(k)} for k in keys]).to_dict()
        for a in spec.aggs:
            want = [None if pd.isna(v) else v for v in rows[a.name]]
            assert got[a.name] == want


def test_online_only_moves_forward(feast_store, redis_client):
    spec = load_stream_spec(feast_store).view("user_txn_aggregates")
    w = PipelinedOnlineWriter(redis_client, feast_store.config.project)
    key = np.array([fresh_id_base()], dtype=np.int64)
    t = int(datetime(2026, 1, 2).timestamp() * 1e6)
    newer, older, same = _rows(spec, key, [t], 1), _rows(spec, key, [t - 1], 2), _rows(spec, key, [t], 3)
    assert w.write(spec, newer) == 1
    snapshot = _dump(redis_client, w.redis_keys(spec.join_key, key))
    assert w.write(spec, older) == 0  # an older row never replaces a newer one
    assert _dump(redis_client, w.redis_keys(spec.join_key, key)) == snapshot
    assert w.write(spec, same) == 1  # same event time: a correction (late event inside the watermark)
    assert _dump(redis_client, w.redis_keys(spec.join_key, key)) != snapshot
