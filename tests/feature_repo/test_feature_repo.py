"""The Feast repo applies cleanly and batch features round-trip through Redis unchanged."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core.redis_auth import connect
from core.settings import FEATURE_REPO, settings

pytestmark = pytest.mark.integration


def _profiles(n_users: int, n_merchants: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two snapshots per user (the second one later) so 'latest' is observable."""
    rng = np.random.default_rng(7)
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    t1 = pd.Timestamp("2026-02-01", tz="UTC")
    ids = np.arange(1, n_users + 1, dtype="int64")
    users = pd.concat(
        [
            pd.DataFrame(
                {
                    "user_id": ids,
                    "home_country": rng.choice(["DE", "FR", "NL"], n_users),
                    "card_type": rng.choice(["debit", "credit"], n_users),
                    "account_age_days": rng.integers(1, 3000, n_users).astype("int64"),
                    "credit_limit": np.round(rng.uniform(500, 9000, n_users), 2),
                    "event_timestamp": ts,
                }
            )
            for ts in (t0, t1)
        ],
        ignore_index=True,
    )
    merchants = pd.DataFrame(
        {
            "merchant_id": np.arange(1, n_merchants + 1, dtype="int64"),
            "category": rng.choice(["grocery", "travel"], n_merchants),
            "merchant_country": rng.choice(["DE", "US"], n_merchants),
            "risk_tier": rng.integers(0, 3, n_merchants).astype("int64"),
            "event_timestamp": t0,
        }
    )
    return users, merchants


@pytest.fixture()
def profiles(stack, tmp_path, monkeypatch):
    """Fresh data and registry dirs for this test, with Redis flushed."""
    monkeypatch.setenv("RTML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RTML_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)
    monkeypatch.setenv("RTML_REDIS_URL", stack.redis_url)
    data_dir = settings().data_dir
    data_dir.mkdir(parents=True)
    users, merchants = _profiles(50, 10)
    users.to_parquet(data_dir / "users.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)
    merchants.to_parquet(data_dir / "merchants.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)

    connect(stack.redis_url, role="admin").flushdb()
    return users, merchants


def test_feast_apply_and_plan_run_clean_from_the_repo_folder(tmp_path):
    """The plain Feast CLI works from feature_repo/ (definitions only are imported)."""
    env = {"PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "RTML_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    registry = tmp_path / "registry.db"
    yaml_file = tmp_path / "feature_store.yaml"
    yaml_file.write_text((FEATURE_REPO / "feature_store.yaml").read_text().replace("../.rtml/registry.db", str(registry)))
    for command in (["plan"], ["apply"]):
        done = subprocess.run(
            [f"{sys.prefix}/bin/feast", "-f", str(yaml_file), *command],
            cwd=FEATURE_REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    assert registry.exists()
    def feast_list(kind: str) -> str:
        done = subprocess.run(
            [f"{sys.prefix}/bin/feast", "-f", str(yaml_file), kind, "list"],
            cwd=FEATURE_REPO, env=env, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "user_txn_aggregates" in feast_list("stream-feature-views")
    assert "fraud_model_v1" in feast_list("feature-services")
    assert "transaction_context" in feast_list("on-demand-feature-views")


def test_definitions_carry_ownership_and_stream_aggregations(stack, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    from core.feast_store import apply_repo, get_store

    apply_repo()
    assert "Deploying infrastructure" not in capsys.readouterr().out  # Feast's chatter stays in the DEBUG log
    store = get_store()
    views = [*store.list_feature_views(), *store.list_stream_feature_views()]
    assert {v.name for v in views} == {"user_profile", "merchant_profile", "user_txn_aggregates", "merchant_txn_aggregates"}
    for view in views:
        assert view.owner and view.description and view.tags and view.ttl.total_seconds() > 0
    user_aggs = store.get_stream_feature_view("user_txn_aggregates").aggregations
    served = {f.name for f in store.get_stream_feature_view("user_txn_aggregates").features} - {"user_id"}
    assert {a.name for a in user_aggs} == served
    assert {a.time_window.total_seconds() for a in user_aggs} == {600, 3600, 86400}
    service = store.get_feature_service("fraud_model_v1")
    assert "transaction_context" in [p.name for p in service.feature_view_projections]


def test_materialized_batch_features_equal_the_latest_source_rows(profiles):
    from core.feast_store import apply_repo
    from rtml.commands.features import online_features
    from rtml.materialize import materialize

    users, merchants = profiles
    apply_repo()
    done = materialize(end=datetime(2026, 6, 1, tzinfo=UTC))
    assert set(done) == {"user_profile", "merchant_profile"}  # stream views have no data yet

    latest = users.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")
    ids = [int(i) for i in latest.index] + [10_000]  # plus one unknown user
    rows = online_features([("user_id", i) for i in ids] + [("merchant_id", int(m)) for m in merchants.merchant_id])
    online = {"user": [r for r in rows if "user_id" in r], "merchant": [r for r in rows if "merchant_id" in r]}
    for row in online["user"][:-1]:
        expected = latest.loc[row["user_id"]]
        for col in ("home_country", "card_type", "account_age_days", "credit_limit"):
            assert row[col] == expected[col], (row["user_id"], col)
    assert online["user"][-1]["credit_limit"] is None
    for row, (_, expected) in zip(online["merchant"], merchants.iterrows(), strict=True):
        assert (row["category"], row["merchant_country"], row["risk_tier"]) == (
            expected.category, expected.merchant_country, expected.risk_tier,
        )


def test_full_rematerialize_repairs_a_redis_that_lost_its_data(profiles, stack):

    from core.feast_store import apply_repo
    from rtml.commands.features import online_features
    from rtml.materialize import materialize

    users, _ = profiles
    apply_repo()
    end = datetime(2026, 6, 1, tzinfo=UTC)
    materialize(end=end, incremental=True)
    connect(stack.redis_url, role="admin").flushdb()
    materialize(end=end, incremental=True)  # nothing new since the last run: Redis stays empty
    assert online_features([("user_id", 1)])[0]["credit_limit"] is None
    materialize(end=end)
    expected = users[users.user_id == 1].sort_values("event_timestamp").iloc[-1].credit_limit
    assert online_features([("user_id", 1)])[0]["credit_limit"] == expected
