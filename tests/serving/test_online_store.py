"""core.online_store against a real Redis: its writes are byte for byte Feast's own (also with versioned
view names), Feast's get_online_features / online_read read them, and entity hashes expire with the longest TTL of the views written to them."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
import pandas as pd
import pytest

from core import online_format as fmt
from core.online_store import OnlineStore, online_view
from tests.streaming.helpers import fresh_id_base

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def feast_store(stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("online-store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTML_STATE_DIR", str(root / "state"))
        mp.setenv("RTML_DATA_DIR", str(root / "data"))
        from core.feast_store import apply_repo, get_store

        apply_repo()
        yield get_store()


def _rows(view, keys, ts_us, seed) -> pd.DataFrame:
    """Random values of every feature of ``view`` (every third value from the second on null)."""
    rng = np.random.default_rng(seed)
    n = len(keys)
    rows = pd.DataFrame({view.join_key: keys, "event_timestamp": ts_us})
    for name, value_type in view.features:
        if name == view.join_key:
            continue
        if value_type == fmt.INT64:
            col = pd.Series(rng.integers(-50, 5000, n), dtype="Int64")
        elif value_type == fmt.STRING:
            col = pd.Series(rng.choice(["DE", "FR", "ünï", ""], n), dtype=object)
        else:
            col = pd.Series(np.round(rng.uniform(-900, 900, n), 3))
        col[1::3] = None
        rows[name] = col
    return rows


def _dump(client, keys):
    return {k: client.hgetall(k) for k in keys}


def _feast_frame(rows):
    df = rows.copy()
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], unit="us", utc=True)
    return df


def test_writes_equal_feast_bytes_and_get_online_features_reads_them(feast_store, redis_client):
    online = OnlineStore.from_settings(feast_store=feast_store)
    assert set(online.views) == {"user_profile", "merchant_profile", "user_txn_aggregates", "merchant_txn_aggregates"}
    now_us = int(time.time() * 1e6)
    for i, view in enumerate(online.views.values()):
        base = fresh_id_base()
        keys = np.arange(base, base + 30, dtype=np.int64)
        rows = _rows(view, keys, now_us - np.arange(30, dtype=np.int64) * 1_234_567, i)
        rkeys = online.redis_keys(view, keys)
        feast_store.write_to_online_store(view.name, _feast_frame(rows))
        by_feast = _dump(redis_client, rkeys)
        assert all(by_feast.values())
        redis_client.delete(*rkeys)
        assert online.write(view, rows) == 30
        assert _dump(redis_client, rkeys) == by_feast, view.name
        feats = [f"{view.name}:{f}" for f, _ in view.features if f != view.join_key]
        got = feast_store.get_online_features(features=feats, entity_rows=[{view.join_key: int(k)} for k in keys]).to_dict()
        for ref in feats:
            name = ref.split(":")[1]
            want = [None if pd.isna(v) else v for v in rows[name]]
            assert got[name] == want, name
    online.close()


def test_versioned_view_names_equal_feasts_writer_and_reader(feast_store, redis_client):
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values

    from core.redis_client import RedisTarget

    fv = feast_store.get_feature_view("user_profile")
    fv.current_version_number = 3
    config = feast_store.config.model_copy(deep=True)
    config.registry.enable_online_feature_view_versioning = True
    view = online_view(fv, versioning=True)
    assert view.stored_name == "user_profile_v3"
    online = OnlineStore(config.project, {view.name: view}, RedisTarget.from_settings())

    base = fresh_id_base()
    keys = np.arange(base, base + 12, dtype=np.int64)
    rows = _rows(view, keys, int(time.time() * 1e6) - np.arange(12, dtype=np.int64), 7)
    feast_rows = []
    for j, key in enumerate(keys.tolist()):
        values = {}
        for name, value_type in view.features:
            v = rows[name].iloc[j]
            values[name] = python_values_to_proto_values([None if pd.isna(v) else v], _vt(value_type))[0]
        ek = EntityKey(join_keys=["user_id"], entity_values=python_values_to_proto_values([key], _vt(fmt.INT64)))
        feast_rows.append((ek, values, pd.Timestamp(int(rows["event_timestamp"].iloc[j]), unit="us", tz="UTC").to_pydatetime(), None))
    rkeys = online.redis_keys(view, keys)
    feast_redis = RedisOnlineStore()
    feast_redis.online_write_batch(config, fv, feast_rows, None)
    by_feast = _dump(redis_client, rkeys)
    assert all(fmt.ts_field("user_profile_v3") in h for h in by_feast.values())
    redis_client.delete(*rkeys)
    online.write(view, rows)
    assert _dump(redis_client, rkeys) == by_feast

    # Feast's reader (versioned) and ours read the same values.
    entity_keys = [r[0] for r in feast_rows]
    features = [f for f, _ in view.features]
    read_by_feast = feast_redis.online_read(config, fv, entity_keys, list(features))  # Feast appends to the list
    plan = online.read_plan({view.name: features})

    async def ours():
        try:
            return await online.read_many(plan, [{"user_id": int(k)} for k in keys])
        finally:
            online.close()

    fetched = asyncio.run(ours())
    from feast.type_map import feast_value_type_to_python_type

    for (ts, values), got in zip(read_by_feast, fetched, strict=True):
        assert got.oldest_ts == pytest.approx(ts.timestamp())
        for name in features:
            want = feast_value_type_to_python_type(values[name]) if values[name].WhichOneof("val") else None
            assert got.values[name] == want, name


def _vt(value_type: int):
    from feast.value_type import ValueType

    return ValueType(value_type)


def test_hashes_expire_with_the_longest_ttl_of_their_views(feast_store, redis_client):
    online = OnlineStore.from_settings(feast_store=feast_store)
    # Real views: a profile write sets about its 400-day TTL; an aggregate write (2 days) never shortens it.
    key = np.array([fresh_id_base()], dtype=np.int64)
    now_us = int(time.time() * 1e6)
    profile, aggs = online.view("user_profile"), online.view("user_txn_aggregates")
    rk = online.redis_keys(profile, key)[0]
    online.write(aggs, _rows(aggs, key, [now_us], 1))
    assert 2 * 86400_000 - 5000 < redis_client.pttl(rk) <= 2 * 86400_000
    online.write(profile, _rows(profile, key, [now_us], 2))
    assert 400 * 86400_000 - 5000 < redis_client.pttl(rk) <= 400 * 86400_000
    online.write(aggs, _rows(aggs, key, [now_us + 1], 3))
    assert redis_client.pttl(rk) > 399 * 86400_000

    # Short TTLs, checked just inside and just outside: a 3 s view and a 1.5 s view on one hash.
    long_view = dataclasses.replace(profile, ttl_s=3.0)
    short_view = dataclasses.replace(aggs, ttl_s=1.5)
    key = np.array([fresh_id_base()], dtype=np.int64)
    rk = online.redis_keys(long_view, key)[0]
    t0 = time.time()
    online.write(short_view, _rows(short_view, key, [int(t0 * 1e6)], 4))
    online.write(long_view, _rows(long_view, key, [int(t0 * 1e6)], 5))
    time.sleep(max(0.0, t0 + 1.8 - time.time()))  # outside the short view's TTL, inside the long one's
    assert redis_client.exists(rk) and fmt.ts_field(short_view.stored_name) in redis_client.hgetall(rk)
    time.sleep(max(0.0, t0 + 2.6 - time.time()))  # just inside the longest TTL
    assert redis_client.exists(rk)
    time.sleep(max(0.0, t0 + 3.25 - time.time()))  # just outside it
    assert not redis_client.exists(rk)

    # Refreshed on every write: a hash rewritten before it expires lives a TTL from the last write.
    key = np.array([fresh_id_base()], dtype=np.int64)
    rk = online.redis_keys(short_view, key)[0]
    t0 = time.time()
    online.write(short_view, _rows(short_view, key, [int(t0 * 1e6)], 6))
    time.sleep(1.0)
    online.write(short_view, _rows(short_view, key, [int(time.time() * 1e6)], 7))
    time.sleep(max(0.0, t0 + 2.2 - time.time()))  # past the first write's TTL, inside the second's
    assert redis_client.exists(rk)
    time.sleep(max(0.0, t0 + 2.75 - time.time()))
    assert not redis_client.exists(rk)
    online.close()


def test_the_store_pickles_without_connections_and_writes_after_unpickling(feast_store, redis_client):
    import pickle

    online = OnlineStore.from_settings(feast_store=feast_store)
    view = online.view("merchant_txn_aggregates")
    key = np.array([fresh_id_base()], dtype=np.int64)
    online.write(view, _rows(view, key, [int(time.time() * 1e6)], 1))  # opens connections
    clone = pickle.loads(pickle.dumps(online))
    assert clone.write(view.name, _rows(view, key, [int(time.time() * 1e6)], 2)) == 1
    assert redis_client.exists(online.redis_keys(view, key)[0])
    online.close()
    clone.close()
