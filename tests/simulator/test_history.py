"""History mode: determinism, the documented Parquet layout, and statistical sanity of the data."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streaming.simulator import simulate_history
from tests.simulator.conftest import SMALL, START

TS = pa.timestamp("us", tz="UTC")
# The layout as documented in COMMON.md (written out here, not imported from the simulator).
EXPECTED_SCHEMAS = {
    "users.parquet": [
        ("user_id", pa.int64()),
        ("home_country", pa.string()),
        ("card_type", pa.string()),
        ("account_age_days", pa.int64()),
        ("credit_limit", pa.float64()),
        ("event_timestamp", TS),
    ],
    "merchants.parquet": [
        ("merchant_id", pa.int64()),
        ("category", pa.string()),
        ("merchant_country", pa.string()),
        ("risk_tier", pa.int64()),
        ("event_timestamp", TS),
    ],
    "transactions": [
        ("transaction_id", pa.string()),
        ("user_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("country", pa.string()),
        ("channel", pa.string()),
        ("event_timestamp", TS),
    ],
    "labels.parquet": [
        ("transaction_id", pa.string()),
        ("user_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("event_timestamp", TS),
        ("label_timestamp", TS),
        ("is_fraud", pa.int64()),
    ],
}


def _digests(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_in_every_file(history, tmp_path):
    out, _ = history
    again = simulate_history(data_dir=tmp_path, **SMALL)
    first, second = _digests(out), _digests(tmp_path)
    assert len(first) == 3 + SMALL["days"]  # users, merchants, labels + one part per day
    assert first == second
    assert again.n_transactions > 0


def test_different_seed_gives_different_data(history, tmp_path):
    out, _ = history
    simulate_history(data_dir=tmp_path, **{**SMALL, "seed": SMALL["seed"] + 1})
    first, second = _digests(out), _digests(tmp_path)
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first)
    a = pd.read_parquet(out / "transactions")
    b = pd.read_parquet(tmp_path / "transactions")
    assert not (len(a) == len(b) and np.allclose(a["amount"], b["amount"]))


def test_layout_and_schemas_match_the_documented_layout(history):
    out, summary = history
    for name, expected in EXPECTED_SCHEMAS.items():
        files = sorted((out / name).glob("*.parquet")) if name == "transactions" else [out / name]
        for path in files:
            schema = pq.read_schema(path)
            assert [(f.name, f.type) for f in schema] == expected, path
    days = [(START + timedelta(days=d)).strftime("%Y%m%d") for d in range(SMALL["days"])]
    assert sorted(p.name for p in (out / "transactions").iterdir()) == [f"part-{d}.parquet" for d in days]
    n = duckdb.sql(f"select count(*) from read_parquet('{out}/transactions/*.parquet')").fetchall()[0][0]
    assert n == summary.n_transactions


def test_each_day_file_holds_that_day_in_time_order_with_unique_ids(history):
    out, _ = history
    seen: set[str] = set()
    for path in sorted((out / "transactions").glob("part-*.parquet")):
        df = pd.read_parquet(path)
        day = pd.Timestamp(path.stem.removeprefix("part-"), tz="UTC")
        assert df["event_timestamp"].min() >= day
        assert df["event_timestamp"].max() < day + pd.Timedelta(days=1)
        assert df["event_timestamp"].is_monotonic_increasing
        ids = set(df["transaction_id"])
        assert len(ids) == len(df) and not ids & seen
        seen |= ids


def test_fraud_rate_is_realistic(frames, history):
    labels = frames["labels"]
    rate = labels["is_fraud"].mean()
    assert 0.005 <= rate <= 0.02
    assert history[1].n_fraud == labels["is_fraud"].sum()


def test_amounts_are_positive_and_heavy_tailed(frames):
    amount = frames["transactions"]["amount"]
    assert (amount > 0).all()
    assert np.quantile(amount, 0.99) / np.median(amount) > 8
    assert (amount.round(2) == amount).all()  # cents


def test_daily_cycle_has_quiet_nights(frames):
    hours = frames["transactions"]["event_timestamp"].dt.hour.value_counts()
    night = hours.reindex(range(1, 5), fill_value=0).mean()
    midday = hours.reindex(range(11, 15), fill_value=0).mean()
    assert night < 0.2 * midday


def test_labels_one_per_transaction_and_later(frames):
    txns, labels = frames["transactions"], frames["labels"]
    assert len(labels) == len(txns)
    merged = txns.merge(labels, on="transaction_id", suffixes=("", "_l"), validate="one_to_one")
    assert len(merged) == len(txns)
    assert (merged["event_timestamp"] == merged["event_timestamp_l"]).all()
    assert (merged["user_id"] == merged["user_id_l"]).all()
    assert (merged["label_timestamp"] > merged["event_timestamp"]).all()
    delay_h = (labels["label_timestamp"] - labels["event_timestamp"]).dt.total_seconds() / 3600
    assert delay_h.median() > 1  # hours to days, not instant
    assert set(labels["is_fraud"].unique()) <= {0, 1}


def test_profiles_precede_history_and_some_change_inside_it(frames):
    users, merchants, txns = frames["users"], frames["merchants"], frames["transactions"]
    start = pd.Timestamp(START)
    first = users.sort_values("event_timestamp").groupby("user_id").first()
    assert (first["event_timestamp"] < start).all()
    assert set(first.index) == set(range(1, SMALL["n_users"] + 1))
    assert set(txns["user_id"]) <= set(first.index)
    assert (merchants["event_timestamp"] < start).all()
    assert set(txns["merchant_id"]) <= set(merchants["merchant_id"])
    later = users[users["event_timestamp"] >= start]
    assert 0 < len(later) < len(first)
    changed = later.merge(first[["credit_limit"]], left_on="user_id", right_index=True, suffixes=("", "_before"))
    assert (changed["credit_limit"] != changed["credit_limit_before"]).mean() > 0.5


def test_fraud_is_detectable_from_amount_ratio_and_bursts(frames):
    df = frames["transactions"].merge(frames["labels"][["transaction_id", "is_fraud"]], on="transaction_id")
    df = df.sort_values(["user_id", "event_timestamp"])
    df["ratio"] = df["amount"] / df.groupby("user_id")["amount"].transform("median")
    gap = df.groupby("user_id")["event_timestamp"].diff().dt.total_seconds()
    df["burst"] = (gap < 600).astype(int)
    fraud, legit = df[df["is_fraud"] == 1], df[df["is_fraud"] == 0]
    assert fraud["ratio"].median() > 2 * legit["ratio"].median()
    assert fraud["burst"].mean() > 3 * legit["burst"].mean()
    users = frames["users"].drop_duplicates("user_id")[["user_id", "home_country"]]
    dfc = df.merge(users, on="user_id")
    foreign = dfc["country"] != dfc["home_country"]
    assert foreign[dfc["is_fraud"] == 1].mean() > 2 * foreign[dfc["is_fraud"] == 0].mean()


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        simulate_history(start=START, days=0, data_dir=tmp_path, progress=False)
    with pytest.raises(ValueError):
        simulate_history(start=START, days=1, n_users=0, data_dir=tmp_path, progress=False)


def test_rerun_replaces_old_day_parts_and_keeps_foreign_files(tmp_path):
    simulate_history(data_dir=tmp_path, **{**SMALL, "days": 3})
    foreign = tmp_path / "transactions" / "stream-batch-0001.parquet"
    foreign.write_bytes(b"not ours")
    simulate_history(data_dir=tmp_path, **{**SMALL, "days": 2})
    names = sorted(p.name for p in (tmp_path / "transactions").iterdir())
    days = [(START + timedelta(days=d)).strftime("%Y%m%d") for d in range(2)]
    assert names == sorted([f"part-{d}.parquet" for d in days] + [foreign.name])
    assert foreign.read_bytes() == b"not ours"
