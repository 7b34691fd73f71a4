"""Point-in-time correctness of training sets: crafted edge cases against an independent merge_asof
oracle, through Feast's duckdb offline store and through the fast ASOF path; no leakage of the
scored transaction; delayed labels; clear errors for bad inputs."""

from __future__ import annotations

import sys
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.errors import UserFacingError
from core.settings import settings
from tests.training.history import make_history, write_history, write_parquet
from tests.training.oracle import fresh_apply, mismatches, oracle_join

T = pd.Timestamp("2026-03-10 12:00", tz="UTC")
US = pd.Timedelta(microseconds=1)
USER_AGGS = [
    *[f"txn_{fn}_{w}" for w in ("10m", "1h", "24h") for fn in ("count", "sum", "mean", "max")],
    "distinct_merchants_1h",
    "secs_since_prev_txn",
]
MERCHANT_AGGS = ["merchant_txn_count_1h", "merchant_amount_mean_1h"]
REFS = [
    "user_profile:account_age_days",
    "user_profile:credit_limit",
    "merchant_profile:risk_tier",
    "merchant_profile:category",
    *[f"user_txn_aggregates:{f}" for f in USER_AGGS],
    *[f"merchant_txn_aggregates:{f}" for f in MERCHANT_AGGS],
]
NAMES = [r.split(":")[1] for r in REFS]
STREAM_TTL = timedelta(days=2)
PROFILE_TTL = timedelta(days=400)


def _user_rows() -> pd.DataFrame:
    """Stream rows; txn_sum_10m is a unique marker of the row. Written out of time order on purpose."""
    times = [
        (1, T - pd.Timedelta(minutes=30)),  # u1: latest before T, written first
        (1, T - pd.Timedelta(hours=3)),
        (1, T - pd.Timedelta(hours=1)),
        (2, T),  # u2: exactly at the entity time -> used
        (2, T - pd.Timedelta(hours=1)),
        (3, T - STREAM_TTL),  # u3: exactly at the TTL boundary -> still valid
        (4, T - STREAM_TTL - US),  # u4: 1 µs past the TTL -> expired
        (5, T + US),  # u5: only a future row -> nothing
        (7, T - US),  # u7: 1 µs before and after
        (7, T + US),
    ]
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"user_id": [u for u, _ in times], "event_timestamp": [t for _, t in times]})
    for col in USER_AGGS:
        df[col] = rng.integers(1, 50, len(df)) if "count" in col or "distinct" in col else rng.uniform(1, 500, len(df))
    df["txn_sum_10m"] = np.arange(100.0, 100.0 + len(df))
    df["user_id"] = df["user_id"].astype("int64")
    for col in ("txn_count_10m", "txn_count_1h", "txn_count_24h", "distinct_merchants_1h"):
        df[col] = df[col].astype("int64")
    return df


def _merchant_rows() -> pd.DataFrame:
    times = [(1, T - pd.Timedelta(minutes=5)), (1, T + pd.Timedelta(minutes=5)), (2, T - STREAM_TTL - US), (3, T)]
    df = pd.DataFrame({"merchant_id": [m for m, _ in times], "event_timestamp": [t for _, t in times]})
    df["merchant_id"] = df["merchant_id"].astype("int64")
    df["merchant_txn_count_1h"] = np.array([11, 12, 13, 14], dtype="int64")
    df["merchant_amount_mean_1h"] = [1.5, 2.5, 3.5, 4.5]
    return df


def _profiles() -> tuple[pd.DataFrame, pd.DataFrame]:
    users = pd.DataFrame(
        {
            "user_id": np.array([1, 1, 2, 3, 4, 5, 7], dtype="int64"),
            "home_country": ["DE", "DE", "FR", "ES", "IT", "NL", "DE"],
            "card_type": "debit",
            "account_age_days": np.array([10, 20, 30, 40, 50, 60, 70], dtype="int64"),
            "credit_limit": [1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 7000.0],
            "event_timestamp": [
                T - pd.Timedelta(days=10),
                T + pd.Timedelta(days=1),  # a later snapshot is not visible at T
                T - pd.Timedelta(days=5),
                T - PROFILE_TTL,  # boundary: valid
                T - PROFILE_TTL - US,  # expired
                T - pd.Timedelta(days=1),
                T - pd.Timedelta(days=1),
            ],
        }
    )
    merchants = pd.DataFrame(
        {
            "merchant_id": np.array([1, 2, 3], dtype="int64"),
            "category": ["grocery", "travel", "fuel"],
            "merchant_country": ["DE", "US", "FR"],
            "risk_tier": np.array([0, 2, 1], dtype="int64"),
            "event_timestamp": T - pd.Timedelta(days=30),
        }
    )
    return users, merchants


def write_crafted(data) -> dict[str, pd.DataFrame]:
    """The crafted profiles and feature rows as Parquet under ``data`` (a local folder or a storage Location)."""
    users, merchants = _profiles()
    write_parquet(users, data / "users.parquet")
    write_parquet(merchants, data / "merchants.parquet")
    write_parquet(_user_rows(), data / "user_txn_features" / "part-0.parquet")
    write_parquet(_merchant_rows(), data / "merchant_txn_features" / "part-0.parquet")
    return {"users": users, "merchants": merchants, "user_rows": _user_rows(), "merchant_rows": _merchant_rows()}


def _entities() -> pd.DataFrame:
    rows = [(u, 2 if u == 4 else 1, T) for u in (1, 2, 3, 4, 5, 6, 7)]
    rows += [(1, 2, T - pd.Timedelta(hours=2)), (1, 2, T - pd.Timedelta(hours=2)), (2, 3, T), (1, 9, T)]
    df = pd.DataFrame(rows, columns=["user_id", "merchant_id", "event_timestamp"])
    df["user_id"] = df["user_id"].astype("int64")
    df["merchant_id"] = df["merchant_id"].astype("int64")
    df["event_timestamp"] = df["event_timestamp"].astype("datetime64[us, UTC]")
    return df


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """Edge-case data under a fresh data/state dir, registered with `feast apply`."""
    root = tmp_path_factory.mktemp("crafted")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTML_STATE_DIR", str(root / "state"))
        mp.setenv("RTML_DATA_DIR", str(root / "data"))
        mp.delenv("RTML_OFFLINE_STORE", raising=False)
        data = settings().data_dir
        users, merchants = _profiles()
        write_parquet(users, data / "users.parquet")
        write_parquet(merchants, data / "merchants.parquet")
        # two part files so the folder source is exercised, out of time order inside and across files
        rows = _user_rows()
        write_parquet(rows.iloc[:5], data / "user_txn_features" / "part-b.parquet")
        write_parquet(rows.iloc[5:], data / "user_txn_features" / "part-a.parquet")
        write_parquet(_merchant_rows(), data / "merchant_txn_features" / "part-0.parquet")
        fresh_apply()
        yield {"users": users, "merchants": merchants, "user_rows": rows, "merchant_rows": _merchant_rows()}


def _oracle(crafted) -> pd.DataFrame:
    return oracle_join(
        _entities(),
        [
            (crafted["users"], ["user_id"], ["account_age_days", "credit_limit"], PROFILE_TTL),
            (crafted["merchants"], ["merchant_id"], ["risk_tier", "category"], PROFILE_TTL),
            (crafted["user_rows"], ["user_id"], USER_AGGS, STREAM_TTL),
            (crafted["merchant_rows"], ["merchant_id"], MERCHANT_AGGS, STREAM_TTL),
        ],
    )


@pytest.mark.parametrize("join", ["feast", "fast"])
def test_edge_cases_match_the_oracle_and_hand_expectations(crafted, join):
    from training.datasets import historical_features

    ent = _entities()
    got = historical_features(ent, REFS, join=join)
    assert len(got) == len(ent)  # nothing dropped, duplicates kept
    assert list(got.columns) == [*ent.columns, *NAMES]
    pd.testing.assert_frame_equal(got[ent.columns], ent)  # entity order preserved
    got.loc[0, "user_id"] = -1  # the result owns its entity columns: the caller's frame is untouched
    assert ent.loc[0, "user_id"] != -1
    got.loc[0, "user_id"] = ent.loc[0, "user_id"]
    expected = _oracle(crafted)
    assert mismatches(got, expected, NAMES) == {}

    marker = got["txn_sum_10m"].tolist()
    # u1 at T: the 30-min-old row (written first in the file) is the latest, not the last written
    assert marker[0] == 100.0
    assert marker[1] == 103.0  # u2: row stamped exactly at the entity time is visible
    assert marker[2] == 105.0  # u3: exactly TTL old -> valid
    assert np.isnan(marker[3])  # u4: TTL + 1 µs old -> expired
    assert np.isnan(marker[4])  # u5: only a future row
    assert np.isnan(marker[5])  # u6: no history at all
    assert marker[6] == 108.0  # u7: 1 µs before, not 1 µs after
    assert marker[7] == marker[8] == 101.0  # u1 at T-2h: the 3h-old row; duplicate entity rows both kept
    # profiles: the future snapshot of u1 is invisible; u4's snapshot is past the 400-day TTL
    assert got["credit_limit"].tolist()[:5] == [1000.0, 3000.0, 4000.0, pytest.approx(np.nan, nan_ok=True), 6000.0]
    # merchants: m1's future row invisible; m2's row expired at T but valid 2 h earlier;
    # m3's row at the entity time visible; m9 unknown
    assert got["merchant_txn_count_1h"].tolist()[0] == 11
    assert np.isnan(got["merchant_txn_count_1h"].iloc[3])
    assert got["merchant_txn_count_1h"].iloc[7] == 13
    assert got["merchant_txn_count_1h"].iloc[9] == 14
    assert np.isnan(got["merchant_txn_count_1h"].iloc[10]) and got["risk_tier"].isna().iloc[10]


def test_oracle_disagrees_with_a_leaky_join(crafted):
    """The oracle can fail: a join that ignores the TTL gives different cells on these edge cases."""
    leaky = oracle_join(_entities(), [(crafted["user_rows"], ["user_id"], USER_AGGS, None)])
    assert mismatches(leaky, _oracle(crafted), ["txn_sum_10m"]) == {"txn_sum_10m": 1}


def test_unknown_features_are_clear_errors(crafted):
    from training.datasets import historical_features

    with pytest.raises(UserFacingError, match="no feature.*bogus"):
        historical_features(_entities(), ["user_txn_aggregates:bogus"])
    with pytest.raises(UserFacingError, match="unknown feature view 'nope'"):
        historical_features(_entities(), ["nope:x"], join="fast")
    with pytest.raises(UserFacingError, match="unknown feature service"):
        historical_features(_entities(), "no_such_service")


# ---------------------------------------------------------------- full training frames on a crafted history


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTML_STATE_DIR", str(root / "state"))
        mp.setenv("RTML_DATA_DIR", str(root / "data"))
        mp.delenv("RTML_OFFLINE_STORE", raising=False)
        h = make_history(n_users=60, n_merchants=15, days=6, seed=5)
        write_history(h, settings().data_dir)
        fresh_apply()
        yield h


def test_training_frame_is_point_in_time_and_paths_agree(history):
    from core.feature_refs import ref_names, service_feature_refs
    from training.datasets import build_training_set, frame_columns, training_frame

    names = ref_names(service_feature_refs())
    feast_df = training_frame(join="feast")
    fast_df = training_frame(join="fast")
    assert len(feast_df) == len(fast_df) == len(history.labels)
    pd.testing.assert_frame_equal(feast_df, fast_df)

    # independent: the user's stream features are those of the user's PREVIOUS transaction (strictly
    # before the scored one), within the 2-day TTL; never the scored transaction's own row
    txn = feast_df[["transaction_id", "user_id", "merchant_id", "event_time"]].rename(
        columns={"event_time": "event_timestamp"}
    )
    expected = oracle_join(
        txn,
        [
            (history.user_features, ["user_id"], USER_AGGS, STREAM_TTL),
            (history.merchant_features, ["merchant_id"], MERCHANT_AGGS, STREAM_TTL),
        ],
        allow_exact=False,
    )
    assert mismatches(feast_df, expected, USER_AGGS + MERCHANT_AGGS) == {}
    # the leaky join (features as of the transaction's own time, which count the transaction) differs
    leaky = oracle_join(txn, [(history.user_features, ["user_id"], USER_AGGS, STREAM_TTL)], allow_exact=True)
    assert mismatches(feast_df, leaky, ["txn_count_24h"])["txn_count_24h"] > len(feast_df) // 2
    # rows with no history are kept with missing values, and exist in this data
    assert feast_df["txn_count_24h"].isna().sum() > 0
    assert set(names) <= set(feast_df.columns)
    assert set(frame_columns().segments) <= set(feast_df.columns)
    # on-demand features from the request fields
    np.testing.assert_array_equal(feast_df["txn_amount"], feast_df["amount"])

    ts = build_training_set(join="fast")
    m = ts.manifest
    assert m["rows"] == len(history.labels)
    assert m["positives"] == int(history.labels.is_fraud.sum())
    assert m["label_rate"] == pytest.approx(history.labels.is_fraud.mean())
    assert m["features"] == names and len(m["content_hash"]) == 64
    assert (ts.path / "data.parquet").exists() and (ts.path / "manifest.json").exists()
    assert build_training_set(join="feast").manifest["content_hash"] == m["content_hash"]


def test_label_cutoff_and_time_range(history):
    from training.datasets import entity_frame

    labels = history.labels
    cutoff = labels["label_timestamp"].quantile(0.4)
    start, end = labels["event_timestamp"].quantile(0.2), labels["event_timestamp"].quantile(0.9)
    df = entity_frame(start, end, cutoff)
    expected = labels[
        (labels.label_timestamp <= cutoff) & (labels.event_timestamp >= start) & (labels.event_timestamp < end)
    ]
    assert sorted(df.transaction_id) == sorted(expected.transaction_id)
    assert (df["event_timestamp"] == df["event_time"] - US).all()
    assert df["event_time"].is_monotonic_increasing


def test_bad_inputs_give_clear_errors(history):
    from training.datasets import entity_frame, training_frame

    first_label = history.labels.label_timestamp.min()
    with pytest.raises(UserFacingError, match="no labels known at cutoff"):
        entity_frame(cutoff=first_label - pd.Timedelta(seconds=1))
    with pytest.raises(UserFacingError, match="no events in the time range"):
        entity_frame("2030-01-01", "2030-02-01")
    with pytest.raises(UserFacingError, match="empty time range"):
        entity_frame("2026-03-05", "2026-03-01")
    with pytest.raises(UserFacingError, match="no feature"):
        training_frame(features=["user_txn_aggregates:txn_count_7d"])


@pytest.mark.integration
def test_spark_offline_store_gives_the_same_frame(tmp_path, monkeypatch):
    """RTML_OFFLINE_STORE=spark: same caller code, Feast's Spark offline store, identical values."""
    from training.datasets import historical_features

    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RTML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RTML_OFFLINE_STORE", "spark")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    crafted = write_crafted(settings().data_dir)
    try:
        fresh_apply()
        from core.feast_store import get_store

        assert type(get_store().get_feature_view("user_profile").batch_source).__name__ == "SparkSource"
        ent = _entities()
        spark = historical_features(ent, REFS, join="feast")
        fast = historical_features(ent, REFS, join="fast")
    finally:
        monkeypatch.delenv("RTML_OFFLINE_STORE")
        fresh_apply()  # leave no Spark sources cached for later tests in this process
    assert len(spark) == len(ent)
    expected = _oracle(
        crafted
    )
    assert mismatches(spark, expected, NAMES) == {}
    assert mismatches(fast, expected, NAMES) == {}


@pytest.mark.parametrize(
    ("engine", "layout"),
    [("sorted", "reversed"), ("sorted", "time_sorted_parts"), ("sorted", "shuffled"), ("duckdb", "reversed")],
)
def test_both_join_engines_match_the_oracle_on_random_data(tmp_path, engine, layout):
    """Random keys/times (several views, TTLs, unknown keys, nulls in features, ns entity times) vs the oracle;
    sources on disk in reverse time order, in time order over several files (the sorted engine's fast
    path, many chunks), or shuffled."""
    from training.pit_join import ViewSpec, pit_join

    rng = np.random.default_rng(17)
    span = 5 * 86_400_000_000
    views, specs = [], []
    for i, (n_keys, n_rows, ttl) in enumerate(
        [(50, 3000, timedelta(hours=6)), (7, 500, None), (300, 2000, timedelta(days=2))]
    ):
        keys = rng.integers(0, n_keys, n_rows)
        offs = rng.choice(span, n_rows, replace=False)  # unique times: "as of" has one answer
        df = pd.DataFrame(
            {
                f"k{i % 2}": keys.astype("int64"),
                "event_timestamp": T + pd.to_timedelta(offs, unit="us"),
                f"v{i}_a": rng.normal(size=n_rows),
                f"v{i}_b": rng.integers(0, 9, n_rows).astype("int64"),
            }
        )
        df.loc[df.index % 13 == 0, f"v{i}_a"] = np.nan
        if layout == "reversed":
            write_parquet(df.iloc[::-1], tmp_path / f"v{i}" / "part-0.parquet")
        elif layout == "shuffled":
            write_parquet(df.sample(frac=1, random_state=i), tmp_path / f"v{i}" / "part-0.parquet")
        else:
            ordered = df.sort_values("event_timestamp")
            for p, part in enumerate(np.array_split(np.arange(n_rows), 4)):
                write_parquet(ordered.iloc[part], tmp_path / f"v{i}" / f"part-{p}.parquet")
        views.append((df, [f"k{i % 2}"], [f"v{i}_a", f"v{i}_b"], ttl))
        specs.append(ViewSpec(f"v{i}", str(tmp_path / f"v{i}"), (f"k{i % 2}",), (f"v{i}_a", f"v{i}_b"), ttl=ttl))
    n = 4000
    ent = pd.DataFrame(
        {
            "k0": rng.integers(-5, 320, n).astype("int64"),
            "k1": rng.integers(0, 60, n).astype("int64"),
            "event_timestamp": (
                T + pd.to_timedelta(rng.integers(-86_400_000_000, span + 86_400_000_000, n), unit="us")
            ),
        }
    )
    got = pit_join(ent, specs, engine=engine).to_pandas()
    assert len(got) == n
    names = [f for _, _, feats, _ in views for f in feats]
    assert mismatches(got, oracle_join(ent, views), names) == {}
