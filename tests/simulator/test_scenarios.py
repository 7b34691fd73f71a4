"""Drift scenarios change what they announce from ``starts_at`` on, and nothing before (history and live)."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from streaming.simulator import Scenario, live_events_frame, simulate_history
from tests.simulator.conftest import SMALL, START

STARTS = START + timedelta(days=3, hours=7, minutes=13)
MIX_CATEGORIES = {"travel", "electronics"}


def _load(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    txns = pd.read_parquet(out / "transactions")
    labels = pd.read_parquet(out / "labels.parquet")
    merchants = pd.read_parquet(out / "merchants.parquet")[["merchant_id", "category", "risk_tier"]]
    df = txns.merge(labels[["transaction_id", "is_fraud"]], on="transaction_id").merge(merchants, on="merchant_id")
    return df.sort_values("transaction_id").reset_index(drop=True), labels


@pytest.fixture(scope="module")
def baseline(history):
    return _load(history[0])


def _with(tmp_path, name: str, strength: float = 1.0):
    summary = simulate_history(data_dir=tmp_path, scenario=Scenario(name, STARTS, strength), **SMALL)
    return summary, _load(tmp_path)


def _before(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["event_timestamp"] < pd.Timestamp(STARTS)].reset_index(drop=True)


def _after(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["event_timestamp"] >= pd.Timestamp(STARTS)].reset_index(drop=True)


def _assert_unchanged_before(base: tuple, changed: tuple) -> None:
    (b, bl), (c, cl) = base, changed
    pd.testing.assert_frame_equal(_before(b), _before(c))
    pd.testing.assert_frame_equal(_before(bl), _before(cl))


def test_amount_shift_multiplies_amounts_after_start_only(baseline, tmp_path):
    summary, changed = _with(tmp_path, "amount_shift", strength=1.0)
    _assert_unchanged_before(baseline, changed)
    b, c = _after(baseline[0]), _after(changed[0])
    assert len(b) == len(c) > 0 and (b["transaction_id"] == c["transaction_id"]).all()
    ratio = c["amount"] / b["amount"]
    assert ((c["amount"] - 2 * b["amount"]).abs() <= 0.011).all()
    assert ratio.median() == pytest.approx(2.0, abs=0.01)
    assert summary.scenarios == [{"name": "amount_shift", "starts_at": STARTS.isoformat(), "strength": 1.0}]


def test_merchant_mix_moves_spending_to_travel_and_electronics_after_start(baseline, tmp_path):
    _, changed = _with(tmp_path, "merchant_mix", strength=1.0)
    _assert_unchanged_before(baseline, changed)
    b, c = _after(baseline[0]), _after(changed[0])
    share_b = b["category"].isin(MIX_CATEGORIES).mean()
    share_c = c["category"].isin(MIX_CATEGORIES).mean()
    assert share_c > share_b + 0.3  # strength 1 moves half of legit traffic
    assert c["amount"].median() > 1.5 * b["amount"].median()  # travel/electronics tickets are larger


def test_new_fraud_pattern_adds_small_card_testing_fraud_after_start(baseline, tmp_path):
    summary, changed = _with(tmp_path, "new_fraud_pattern", strength=1.0)
    _assert_unchanged_before(baseline, changed)
    b, c = _after(baseline[0]), _after(changed[0])
    tiny_fraud_b = ((b["is_fraud"] == 1) & (b["amount"] < 3)).sum()
    tiny_fraud_c = ((c["is_fraud"] == 1) & (c["amount"] < 3)).sum()
    assert tiny_fraud_c > 5 * max(tiny_fraud_b, 1)
    assert c["is_fraud"].mean() > b["is_fraud"].mean() + 0.003
    # card testing spreads over many merchants: per fraudulent user after start, more distinct merchants
    fraud_c = c[(c["is_fraud"] == 1) & (c["amount"] < 3)]
    assert fraud_c.groupby("user_id")["merchant_id"].nunique().median() >= 4
    assert summary.fraud_rate > baseline[1]["is_fraud"].mean()


def test_scenario_names_and_strength_are_validated():
    with pytest.raises(ValueError, match="unknown scenario"):
        Scenario("price_war", STARTS)
    with pytest.raises(ValueError):
        Scenario("amount_shift", STARTS, strength=0)


LIVE = dict(rate_per_s=50.0, max_events=6000, seed=11, n_users=300, n_merchants=60, start_time=START)
LIVE_STARTS = START + timedelta(seconds=60)


@pytest.mark.parametrize("name", ["amount_shift", "merchant_mix", "new_fraud_pattern"])
def test_live_scenarios_change_nothing_before_start(name):
    base = live_events_frame(**LIVE)
    drift = live_events_frame(**LIVE, scenario=Scenario(name, LIVE_STARTS, 1.0))
    cut = pd.Timestamp(LIVE_STARTS)
    pd.testing.assert_frame_equal(
        base[base["event_timestamp"] < cut].reset_index(drop=True),
        drift[drift["event_timestamp"] < cut].reset_index(drop=True),
    )
    b, d = base[base["event_timestamp"] >= cut], drift[drift["event_timestamp"] >= cut]
    assert len(b) == len(d) > 0  # live mode keeps the slot schedule
    if name == "amount_shift":
        assert d["amount"].sum() == pytest.approx(2 * b["amount"].sum(), rel=1e-3)
    elif name == "merchant_mix":
        assert (d["merchant_id"] != b["merchant_id"]).mean() > 0.3
    else:
        assert ((d["is_fraud"] == 1) & (d["amount"] < 3)).sum() > 5 * max(
            ((b["is_fraud"] == 1) & (b["amount"] < 3)).sum(), 1
        )
