"""Spark on an S3 data dir through s3a (hadoop-aws + AWS SDK jars from the cache, options from settings):
the backfill, including a replayed backfill over a crashed earlier attempt, and Feast's Spark offline store
(which reuses the backfill test's session)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from core import storage
from core.settings import settings
from tests.training.oracle import fresh_apply, mismatches

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark_env(s3_env, tmp_path_factory):
    """An s3:// data dir for the module; the Spark session is stopped at its end."""
    from tests.fixtures.s3 import s3_data_env

    root = tmp_path_factory.mktemp("spark-s3")
    with s3_data_env(s3_env, "spark") as url, pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTML_STATE_DIR", str(root / "state"))
        mp.setenv("RTML_SPARK_MASTER", "local[2]")
        mp.setenv("RTML_SPARK_DRIVER_MEMORY", "1g")
        env = {"url": url, "root": root, "mp": mp, "sessions": []}
        from infra import spark_deps

        spark_deps.s3a_jars()  # resolved once into the shared cache, as `rtml up --s3` does (a clean clone has none)
        _fresh_jvm()  # a JVM started by an earlier module lacks the s3a jars (jars load only at JVM start)
        yield env
        from pyspark.sql import SparkSession

        # stop the session with the s3a (and no Kafka) jars, so later modules build their own
        for session in [*env["sessions"], SparkSession.getActiveSession()]:
            if session is not None:
                session.stop()


def _fresh_jvm() -> None:
    """Stop this process's Spark context and its JVM gateway: the next session starts a new JVM."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    if SparkContext._gateway is not None:
        SparkContext._gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None


def _rows(folder: storage.Location, join_key: str) -> pd.DataFrame:
    df = folder.read_pandas()
    return df.sort_values([join_key, "event_timestamp"]).reset_index(drop=True)


def test_backfill_on_s3a_equals_local_and_replays_exactly_once(spark_env, tmp_path):
    from core.feast_store import get_store
    from streaming.backfill import run_backfill
    from streaming.feature_specs import load_stream_spec
    from streaming.simulator import simulate_history
    from streaming.spark_session import build_session

    simulate_history(start=START, days=2, n_users=80, n_merchants=15, seed=3, progress=False)
    simulate_history(start=START, days=2, n_users=80, n_merchants=15, seed=3, progress=False,
                     data_dir=tmp_path / "local")
    fresh_apply()
    store = get_store()
    spec = load_stream_spec(store)
    assert all(v.offline_path.startswith(f"s3arrow://{spark_env['url'][5:]}/") for v in spec.views)
    # first Spark session of the module, with the Kafka connector too: pyspark keeps one JVM per process, and
    # the stream tests that may run later in it need the connector on that JVM's class path
    spark = build_session("rtml-test-s3-backfill")
    spark_env["sessions"].append(spark)
    assert spark.conf.get("spark.hadoop.fs.s3a.endpoint") == settings().s3.endpoint
    start, end = START + timedelta(hours=30), START + timedelta(hours=46)

    first = run_backfill(start, end, spark=spark, store=store, materialize=False)
    assert first.events_read > 200
    local_dirs = {v.name: str(tmp_path / "offline" / v.name) for v in spec.views}
    local = run_backfill(start, end, spark=spark, store=store, materialize=False,
                         source_path=str(tmp_path / "local" / "transactions"), offline_dirs=local_dirs)
    assert local.rows_written == first.rows_written
    remote_rows = {}
    for v in spec.views:
        remote = _rows(storage.location(v.offline_path), v.join_key)
        remote_rows[v.name] = remote
        assert len(remote) == first.rows_written[v.name] > 0
        pd.testing.assert_frame_equal(remote, _rows(storage.location(local_dirs[v.name]), v.join_key))
        assert not remote.duplicated([v.join_key, "event_timestamp"]).any()
        assert first.files[v.name] == [p.uri for p in storage.location(v.offline_path).glob("h")]
        assert [p.rsplit("/", 1)[1] for p in first.files[v.name]] == [
            p.rsplit("/", 1)[1] for p in local.files[v.name]]

    # An earlier attempt died midway: one of its objects holds only part of its rows (an object store shows
    # an object whole or not at all, but a crashed run may have left an older one), another is missing. The
    # replay rewrites every object under the same name: no duplicate, no loss, no stale object left.
    for v in spec.views:
        folder = storage.location(v.offline_path)
        parts = folder.glob("h")
        assert len(parts) >= 2
        partial = parts[0].read_table()
        parts[0].write_table(partial.slice(0, max(1, partial.num_rows // 2)))
        parts[1].delete()
        assert len(_rows(folder, v.join_key)) < first.rows_written[v.name]
    again = run_backfill(start, end, spark=spark, store=store, materialize=False)
    assert again.rows_written == first.rows_written
    for v in spec.views:
        folder = storage.location(v.offline_path)
        assert again.files[v.name] == first.files[v.name] == [p.uri for p in folder.glob("h")]
        pd.testing.assert_frame_equal(_rows(folder, v.join_key), remote_rows[v.name])


def test_feast_spark_offline_store_reads_s3a(spark_env):
    from core.feast_store import get_store
    from tests.training.test_datasets import (
        NAMES,
        REFS,
        _entities,
        _oracle,
        write_crafted,
    )
    from training.datasets import historical_features

    mp = spark_env["mp"]
    data = storage.data_root() / "crafted"
    mp.setenv("RTML_DATA_DIR", data.uri)
    mp.setenv("RTML_OFFLINE_STORE", "spark")
    crafted = write_crafted(data)
    try:
        fresh_apply()
        source = get_store().get_feature_view("user_profile").batch_source
        assert type(source).__name__ == "SparkSource" and source.path == f"s3a://{data.path}/users.parquet"
        ent = _entities()
        got = historical_features(ent, REFS, join="feast")
        from pyspark.sql import SparkSession

        spark_env["sessions"].append(SparkSession.getActiveSession())  # the one Feast's Spark store made
    finally:
        mp.delenv("RTML_OFFLINE_STORE")
        mp.setenv("RTML_DATA_DIR", spark_env["url"])
        fresh_apply()
    expected = _oracle(crafted)
    assert len(got) == len(ent)
    assert mismatches(got, expected, NAMES) == {}
