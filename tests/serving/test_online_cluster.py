"""The online store on a real local Redis Cluster (3 primaries + 3 replicas): `rtml materialize` writes
every view through it, Feast's own get_online_features (``redis_type: redis_cluster``) and the serving
reader read the same values, the reader follows MOVED and ASK, and when a primary is killed under load
reads fail (cleanly) only until its replica is promoted while writes are replayed, losing nothing."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pandas as pd
import pytest

from infra.redis_server import admin_client
from tests.serving.conftest import MERCHANT_BASE, N_MERCHANTS, N_USERS, USER_BASE, write_feature_data

pytestmark = pytest.mark.integration


def _free_base(start: int) -> int:
    from infra.proc import port_open

    base = start
    while any(port_open("127.0.0.1", base + i, 0.2) for i in range(6)):
        base += 6
    return base


@pytest.fixture(scope="module")
def cluster(stack, tmp_path_factory):
    import os

    from infra import redis_cluster

    root = tmp_path_factory.mktemp("cluster")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RTML_REDIS_URL", raising=False)
        for name in ("RTML_REDIS_USER", "RTML_REDIS_PASSWORD"):  # the session's Redis admin: not this cluster's
            mp.delenv(name, raising=False)
        mp.setenv("RTML_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)  # the session's broker
        mp.setenv("RTML_STATE_DIR", str(root / "state"))
        mp.setenv("RTML_DATA_DIR", str(root / "data"))
        mp.setenv("RTML_REDIS_CLUSTER", "1")
        mp.setenv("RTML_REDIS_CLUSTER_PORT", str(_free_base(int(os.environ.get("RTML_REDIS_CLUSTER_PORT") or 17100))))
        from core.settings import settings

        info = redis_cluster.start(progress=False)
        assert info.started
        try:
            yield settings()
        finally:
            redis_cluster.stop(progress=False)


@pytest.fixture(scope="module")
def loaded(cluster):
    """Feature data written offline and materialized into the cluster with `rtml materialize`."""
    from core.feast_store import apply_repo, get_store
    from rtml.materialize import materialize

    now = pd.Timestamp.now(tz="UTC").floor("s")
    data = write_feature_data(cluster.data_dir, now)
    apply_repo()
    done = materialize(end=(now + pd.Timedelta(seconds=5)).to_pydatetime())
    assert set(done) == {"user_profile", "merchant_profile", "user_txn_aggregates", "merchant_txn_aggregates"}
    return get_store(), data


def _rows():
    users = [USER_BASE + i for i in range(1, N_USERS + 2)]
    return [{"user_id": u, "merchant_id": MERCHANT_BASE + 1 + (i % N_MERCHANTS)} for i, u in enumerate(users)]


def _refs(store):
    from core.online_store import online_views

    return {name: [f for f, _ in v.features if f != v.join_key] for name, v in online_views(store).items()}


def test_cluster_has_three_primaries_with_replicas_and_bounded_memory(cluster):

    from infra import redis_cluster

    primaries = redis_cluster.primaries(cluster)
    assert len(primaries) == 3 and sum(b - a + 1 for r in primaries.values() for a, b in r) == 16384
    assert redis_cluster._replicas_ready(cluster)
    for host, port in cluster.redis_nodes:
        c = admin_client(host, port, 5.0)
        cfg = c.config_get("maxmemory*")
        assert cfg["maxmemory-policy"] == "noeviction" and int(cfg["maxmemory"]) > 0
        c.close()


def test_materialized_values_read_the_same_through_feast_and_the_serving_reader(loaded):
    from core.online_store import OnlineStore

    store, data = loaded
    assert store.config.online_store.redis_type == "redis_cluster"
    refs = _refs(store)
    feats = [f"{v}:{f}" for v, fs in refs.items() for f in fs]
    rows = _rows()
    expected = store.get_online_features(features=feats, entity_rows=rows).to_dict()
    # values equal the source rows (an independent computation, not just Feast vs us)
    aggs = data["user_aggs"].set_index("user_id")
    for i, row in enumerate(rows[:N_USERS]):
        want = aggs.loc[row["user_id"], "txn_sum_24h"]
        assert expected["txn_sum_24h"][i] == pytest.approx(want)

    online = OnlineStore.from_settings(feast_store=store, timeout_s=2.0)
    plan = online.read_plan(refs)

    async def read():
        try:
            return await online.read_many(plan, rows), [await online.read(plan, r) for r in rows]
        finally:
            online.close()

    many, single = asyncio.run(read())
    assert many == single
    for i, got in enumerate(many):
        for ref in feats:
            name = ref.split(":")[1]
            assert got.values[name] == expected[name][i], (rows[i], name)
    # the keys of these rows live on more than one primary: the reader really routed them
    keys = [k for r in rows for k in (online.redis_keys("user_profile", [r["user_id"]])[0],
                                       online.redis_keys("merchant_profile", [r["merchant_id"]])[0])]
    assert len(online.sync.owners(keys)) >= 2


def test_reader_follows_moved_and_ask(loaded, cluster):
    import redis

    from core.online_store import OnlineStore
    from core.redis_client import key_slot

    store, _ = loaded
    refs = _refs(store)
    rows = _rows()
    online = OnlineStore.from_settings(feast_store=store, timeout_s=2.0)
    plan = online.read_plan(refs)

    async def baseline():
        return await online.read_many(plan, rows)

    want = asyncio.run(baseline())
    online.close()

    # MOVED: a stale slot table that sends every key to one node
    async def stale_read():
        reader = online.reader
        await reader.refresh(force=True)
        one = reader._slots[0]
        reader._slots = [one] * len(reader._slots)
        before = reader.topology_refreshes
        got = await online.read_many(plan, rows)
        await asyncio.sleep(0.3)
        got2 = await online.read_many(plan, rows)
        await asyncio.sleep(0.2)  # the refresh runs in the background
        return got, got2, reader.topology_refreshes - before

    got, got2, refreshes = asyncio.run(stale_read())
    online.close()
    assert got == want and got2 == want and refreshes >= 1

    # ASK: one user's hash is migrated between primaries mid-migration (slot MIGRATING / IMPORTING)
    key = online.redis_keys("user_profile", [rows[0]["user_id"]])[0]
    slot = key_slot(key)
    owners = online.sync.slot_owners()
    src = owners[slot]
    dst = next(a for a in {a for a in owners if a is not None} if a != src)
    a, b = admin_client(src[0], src[1], 5.0), admin_client(dst[0], dst[1], 5.0)
    a_id, b_id = a.execute_command("CLUSTER MYID").decode(), b.execute_command("CLUSTER MYID").decode()
    b.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", a_id)
    a.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", b_id)
    kw = a.connection_pool.connection_kwargs  # the target node wants the admin's AUTH too (ACL users)
    auth = ["AUTH2", kw["username"], kw["password"]] if kw.get("password") else []
    a.execute_command("MIGRATE", dst[0], dst[1], "", 0, 5000, *auth, "KEYS", key)
    try:
        with pytest.raises(redis.exceptions.AskError):  # the source now redirects this key with ASK
            a.exists(key)

        async def ask_read():
            try:
                return await online.read_many(plan, rows)
            finally:
                online.close()

        assert asyncio.run(ask_read()) == want
    finally:
        for c in (a, b):
            c.execute_command("CLUSTER SETSLOT", slot, "NODE", b_id)
        a.close()
        b.close()
    online.close()


def test_stream_job_writes_the_cluster(loaded, cluster, kafka_topic, tmp_path):
    """The stream job (Spark, Kafka) writes its aggregates into the cluster: Feast reads the oracle's values."""
    from datetime import UTC, datetime, timedelta

    from prometheus_client import CollectorRegistry

    from core.online_store import OnlineStore
    from core.redis_client import key_slot
    from streaming.feature_specs import load_stream_spec
    from streaming.metrics import StreamMetrics
    from streaming.spark_session import build_session
    from streaming.stream_job import StreamJob, StreamOptions
    from streaming.tile_store import tile_keys
    from tests.streaming.helpers import (
        assert_rows_equal,
        fresh_id_base,
        make_events,
        oracle,
        publish,
        view_aggregations,
    )
    from tests.streaming.test_stream_online import online_values

    store, _ = loaded
    spec = load_stream_spec(store)
    writer = OnlineStore.from_settings(feast_store=store)
    slot_owner = writer.sync.slot_owners()
    rng = np.random.default_rng(3)
    base = fresh_id_base()
    users, merchants = [base + i for i in range(6)], [base + 100 + i for i in range(4)]
    user_view = next(v for v in spec.views if v.join_key == "user_id")
    spare = iter(range(base + 200, base + 100_000, 7))
    while len({slot_owner[key_slot(k)] for k in tile_keys(writer, user_view, np.array(users))}) < 2:
        users[-1] = next(spare)  # consecutive ids often hash near each other: make sure two primaries own some
    events = make_events(rng, 200, users, merchants, datetime.now(UTC) - timedelta(hours=5), timedelta(hours=4))
    topic, dlq = kafka_topic("txns", partitions=2), kafka_topic("dlq", partitions=1)
    spark = build_session("rtml-test-cluster-stream", "local[2]", shuffle_partitions=2)
    job = StreamJob(StreamOptions(job_name="cluster", topic=topic, dlq_topic=dlq, checkpoint_dir=tmp_path / "checkpoint",
                                  trigger_seconds=0.2, metrics_port=0),
                    spark=spark, store=store, metrics=StreamMetrics(CollectorRegistry()))
    try:
        publish(topic, events)
        query = job.start()
        query.processAllAvailable()
        job.stop()
    finally:
        job.close()
        spark.stop()
    for view in spec.views:
        keys = sorted({e[view.join_key] for e in events})
        expected = {k: row for (k, _t), row in oracle(events, view.join_key, view_aggregations(view)).items()}
        assert_rows_equal(expected, online_values(store, view, keys), f"online {view.name} on the cluster")
    # the tile hashes live on the primaries that own their slots (not all on one node)
    tiles = [k for v in spec.views for k in tile_keys(writer, v, np.array(sorted({e[v.join_key] for e in events})))]
    owners = writer.sync.owners(tiles)
    assert len(owners) >= 2
    for addr, idx in owners.items():
        assert all(writer.sync.client(addr).hgetall(tiles[i]) for i in idx)  # the writer role may read hashes
    writer.close()


def test_killing_a_primary_under_load_fails_reads_only_during_failover_and_loses_no_write(loaded, cluster):
    from core.online_store import OnlineStore
    from core.redis_client import RedisUnavailable
    from infra import redis_cluster

    store, _ = loaded
    online = OnlineStore.from_settings(feast_store=store, timeout_s=0.2)
    writer = OnlineStore.from_settings(feast_store=store)
    view = writer.view("merchant_txn_aggregates")
    merchants = np.arange(MERCHANT_BASE + 100, MERCHANT_BASE + 160, dtype=np.int64)  # on every primary
    assert len(writer.sync.owners(writer.redis_keys(view, merchants))) == 3
    plan = online.read_plan({"merchant_txn_aggregates": ["merchant_txn_count_1h"]})
    victim_port = next(iter(redis_cluster.primaries(cluster)))

    written: list[int] = []
    write_errors: list[BaseException] = []
    stop = threading.Event()

    def write_loop():
        version = 0
        while not stop.is_set():
            version += 1
            rows = pd.DataFrame({"merchant_id": merchants, "event_timestamp": int(time.time() * 1e6),
                                 "merchant_txn_count_1h": version, "merchant_amount_mean_1h": float(version)})
            try:
                assert writer.write(view, rows) == len(merchants)
                written.append(version)
            except BaseException as exc:  # noqa: BLE001
                write_errors.append(exc)
                return
            time.sleep(0.05)

    failures: list[float] = []
    messages: set[str] = set()

    async def load(seconds_after_kill: float):
        killed_at = None
        t_end = None
        while True:
            now = time.monotonic()
            if killed_at is None and len(written) >= 5:
                redis_cluster.stop_node(victim_port, cluster, kill=True)
                killed_at = now
                t_end = now + seconds_after_kill
            if t_end is not None and now > t_end:
                return killed_at
            try:
                await online.read_many(plan, [{"merchant_id": int(m)} for m in merchants])
            except RedisUnavailable as exc:
                failures.append(time.monotonic())
                messages.add(str(exc))
                await asyncio.sleep(0.01)

    t = threading.Thread(target=write_loop, daemon=True)
    t.start()
    try:
        killed_at = asyncio.run(load(25.0))
    finally:
        stop.set()
        t.join(60)
        online.close()
    try:
        assert not write_errors, write_errors
        assert failures, "killing a primary must fail some reads (its slots have no owner until promotion)"
        failed_for = failures[-1] - killed_at
        assert failed_for <= 15.0
        assert time.monotonic() - failures[-1] > 5.0  # recovered by itself, no restart of the reader
        for m in messages:  # clear, and no host or port for API clients
            assert "127.0.0.1" not in m and str(victim_port) not in m, m
        # no lost update: every entity holds the last version the writer confirmed
        assert writer.replayed_batches >= 1
        last = written[-1]

        async def final():
            fresh = OnlineStore.from_settings(feast_store=store, timeout_s=2.0)
            try:
                return await fresh.read_many(plan, [{"merchant_id": int(m)} for m in merchants])
            finally:
                fresh.close()

        for got in asyncio.run(final()):
            assert got.values["merchant_txn_count_1h"] == last
    finally:
        writer.close()
        redis_cluster.start_node(victim_port, cluster)  # rejoins as a replica
