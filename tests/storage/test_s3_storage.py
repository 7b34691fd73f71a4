"""The offline store on a real S3 API (a local s3proxy): storage helpers, the simulator's history, both
point-in-time engines and the offline writer's exactly-once replay give the same bytes / rows as local files."""

from __future__ import annotations

import hashlib
import stat
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from core import storage
from core.settings import settings

pytestmark = pytest.mark.integration

SMALL = dict(start=datetime(2026, 11, 2, tzinfo=UTC), days=3, n_users=200, n_merchants=40, seed=7, progress=False)


def _digests_local(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _digests(loc: storage.Location) -> dict[str, str]:
    root = loc.path + "/"
    return {p[len(root):]: hashlib.sha256(storage.Location(loc.fs, p, True).read_bytes()).hexdigest()
            for p in loc.files(suffix="")}


def test_server_needs_the_generated_credentials(s3_env, s3_data_dir, monkeypatch):
    # anonymous requests are refused: the server really checks the credentials
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(s3_env["RTML_S3_ENDPOINT"] + "/rtml-test/", timeout=5)
    assert err.value.code == 403
    (storage.data_root() / "ok.json").write_text("{}")
    monkeypatch.setenv("RTML_S3_SECRET_KEY", "wrong")
    with pytest.raises(OSError, match="(?i)signature|forbidden|denied|403"):
        storage.data_root().join("x.json").write_text("{}")


def test_generated_credentials_file_is_private(tmp_path, monkeypatch):
    from infra.s3proxy_server import S3ProxyPaths, credentials

    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    for var in ("RTML_S3_ACCESS_KEY", "RTML_S3_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    s = settings()
    access, secret = credentials(s, S3ProxyPaths.of(s))
    assert stat.S_IMODE(s.s3.credentials_file.stat().st_mode) == 0o600
    assert s.s3.credentials() == (access, secret) and len(secret) >= 30
    assert credentials(s, S3ProxyPaths.of(s)) == (access, secret)  # generated once, then reused


def test_location_roundtrip_on_s3(s3_data_dir):
    root = storage.data_root()
    assert root.uri == s3_data_dir and root.spark_uri == "s3a://" + s3_data_dir[5:]
    folder = root / "view"
    assert not folder.exists() and folder.files() == []
    folder.join("part-b.parquet").write_table(pa.table({"k": [3, 4], "v": [0.5, 1.5]}))
    folder.join("part-a.parquet").write_table(pa.table({"k": [1], "v": [2.0]}))
    folder.join("_SUCCESS.parquet").write_bytes(b"")  # markers and hidden names are not data
    folder.join("sub", "part-c.parquet").write_table(pa.table({"k": [9], "v": [9.0]}))
    assert folder.is_dir() and folder.exists()
    assert [p.rsplit("/", 1)[1] for p in folder.files()] == ["part-a.parquet", "part-b.parquet", "part-c.parquet"]
    assert [p.name for p in folder.glob("part-")] == ["part-a.parquet", "part-b.parquet"]
    assert sorted(folder.read_table().column("k").to_pylist()) == [1, 3, 4, 9]
    assert storage.location(f"s3arrow://{folder.path}").read_table().num_rows == 4
    (root / "m.json").write_text('{"a": 1}')
    assert (root / "m.json").read_text() == '{"a": 1}'
    con = storage.duckdb_connect()  # DuckDB reads s3:// through pyarrow (no httpfs extension)
    files = ", ".join(f"'s3://{f}'" for f in folder.files())
    assert con.sql(f"SELECT sum(k) FROM read_parquet([{files}])").fetchall() == [(17,)]
    folder.delete()
    assert not folder.exists()


def test_history_on_s3_is_byte_identical_to_local(s3_data_dir, tmp_path):
    from streaming.simulator import simulate_history

    on_s3 = simulate_history(**SMALL)
    local = simulate_history(data_dir=tmp_path, **SMALL)
    assert on_s3.data_dir == s3_data_dir and on_s3.paths["transactions"] == s3_data_dir + "/transactions"
    assert on_s3.n_transactions == local.n_transactions > 0
    expected = _digests_local(tmp_path)
    assert len(expected) == 3 + SMALL["days"]
    assert _digests(storage.data_root()) == expected
    # a shorter rerun replaces the day parts: no stale day survives on the object store
    simulate_history(**{**SMALL, "days": 2})
    simulate_history(data_dir=tmp_path, **{**SMALL, "days": 2})
    assert _digests(storage.data_root()) == _digests_local(tmp_path)
    frame = storage.data_root().join("transactions").read_pandas()
    assert len(frame) == len(pd.read_parquet(tmp_path / "transactions"))


def _history_specs(root: str):
    from training.pit_join import ViewSpec

    return [
        ViewSpec("user_profile", f"{root}/users.parquet", ("user_id",), ("account_age_days", "credit_limit"),
                 ttl=timedelta(days=400)),
        ViewSpec("user_txn_aggregates", f"{root}/user_txn_features", ("user_id",),
                 ("txn_count_1h", "txn_sum_1h", "txn_mean_24h"), ttl=timedelta(days=2)),
        ViewSpec("merchant_txn_aggregates", f"{root}/merchant_txn_features", ("merchant_id",),
                 ("merchant_txn_count_1h",), ttl=timedelta(days=2)),
    ]


def test_pit_join_both_engines_on_s3_equal_local(s3_data_dir, tmp_path):
    from tests.training.history import make_history, write_history
    from training.pit_join import pit_join

    h = make_history(n_users=60, n_merchants=12, days=5, seed=3)
    write_history(h, tmp_path)
    write_history(h, storage.data_root())
    entity = h.transactions[["user_id", "merchant_id", "event_timestamp"]].copy()
    entity["event_timestamp"] = entity["event_timestamp"].astype("datetime64[us, UTC]")
    for engine in ("sorted", "duckdb"):
        local = pit_join(entity, _history_specs(str(tmp_path)), engine=engine)
        assert local.num_rows == len(entity)
        assert local.column("txn_count_1h").null_count < local.num_rows  # real features, not all null
        for scheme in ("s3", "s3arrow", "s3a"):  # the paths Feast sources carry for each offline store
            remote = pit_join(entity, _history_specs(f"{scheme}://{s3_data_dir[5:]}"), engine=engine)
            assert remote.equals(local), (engine, scheme)


def _spec():
    from streaming.feature_specs import AggSpec, ViewSpec

    return ViewSpec(name="user_txn_features", join_key="user_id",
                    aggs=(AggSpec("txn_count_1h", "count", "amount", 3_600_000_000),
                          AggSpec("txn_sum_1h", "sum", "amount", 3_600_000_000)),
                    offline_path=f"{settings().data_url}/user_txn_features", feature_names=())


def _rows(keys: list[int], t0_us: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": keys, "event_timestamp": [t0_us + i for i in range(len(keys))],
                         "txn_count_1h": [i + 1 for i in range(len(keys))],
                         "txn_sum_1h": [10.0 * (i + 1) for i in range(len(keys))]})


def test_replayed_micro_batch_neither_duplicates_nor_loses_rows_on_s3(s3_data_dir):
    from streaming.materialize import latest_rows
    from streaming.offline_writer import write_offline

    spec = _spec()
    t0 = int(datetime(2026, 11, 3, tzinfo=UTC).timestamp() * 1_000_000)
    batches = {b: _rows(list(range(b * 10, b * 10 + 5)), t0 + b * 1000) for b in range(3)}
    for b, rows in batches.items():
        write_offline(spec, rows, f"stream-j1-b{b:012d}")
    # the job died after writing batch 1 and before committing it: Spark replays batch 1 (and 2) with the
    # same batch ids, so the same object names are written again
    for b in (1, 2):
        uri = write_offline(spec, batches[b], f"stream-j1-b{b:012d}")
        assert uri == f"{spec.offline_path}/stream-j1-b{b:012d}.parquet"
    folder = storage.location(spec.offline_path)
    assert [p.name for p in folder.glob("")] == [f"stream-j1-b{b:012d}.parquet" for b in range(3)]
    got = folder.read_pandas().sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
    want = pd.concat(batches.values()).sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
    assert len(got) == len(want) == 15
    assert got["user_id"].tolist() == want["user_id"].tolist()
    assert got["txn_sum_1h"].tolist() == want["txn_sum_1h"].tolist()
    latest = latest_rows(spec.offline_path, spec.join_key, [a.name for a in spec.aggs],
                         datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC))
    assert len(latest) == 15 and latest["user_id"].is_unique
