"""Drift statistics of one window: agree with Evidently's Report, flag what changed and only that."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from monitoring.drift import DriftConfig, DriftDetector
from tests.fixtures.predictions import DEFAULT_FEATURES, feature_frame

AMOUNT_FEATURES = {"txn_amount", "txn_mean_24h", "txn_sum_24h", "txn_max_24h", "merchant_amount_mean_1h"}
RATIOS = {"amount_to_mean_24h", "is_foreign", "risk_tier", "account_age_days"}


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return feature_frame(5000, seed=1)


@pytest.fixture(scope="module")
def detector(reference) -> DriftDetector:
    return DriftDetector(reference, DEFAULT_FEATURES)


def test_no_drift_window_flags_nothing(detector):
    result = detector.evaluate(feature_frame(5000, seed=2))
    assert result.drifted_features == []
    assert result.drift_share == 0.0
    assert not result.prediction.detected
    assert all(c.tested for c in result.features.values())


def test_amounts_times_three_flags_amount_features_not_ratios(detector):
    result = detector.evaluate(feature_frame(5000, seed=3, amount_scale=3.0))
    drifted = set(result.drifted_features)
    assert AMOUNT_FEATURES <= drifted
    assert not (RATIOS & drifted)  # ratios and unrelated features did not change
    assert result.drift_share == pytest.approx(len(drifted) / len(DEFAULT_FEATURES))
    assert result.dataset_drift == (result.drift_share >= 0.3)


def test_merchant_mix_change_flags_merchant_features(detector):
    result = detector.evaluate(feature_frame(5000, seed=4, merchant_mix=True))
    assert {"risk_tier", "merchant_txn_count_1h", "merchant_amount_mean_1h"} <= set(result.drifted_features)
    assert "txn_amount" not in result.drifted_features


def test_scores_match_an_independent_computation(reference, detector):
    """Wasserstein normed by the reference std (Evidently's definition) recomputed with scipy."""
    window = feature_frame(3000, seed=5, amount_scale=1.5)
    result = detector.evaluate(window)
    for name in ("txn_amount", "account_age_days", "txn_sum_1h"):
        ref = reference[name].to_numpy()
        expected = stats.wasserstein_distance(ref, window[name].to_numpy()) / max(np.std(ref), 0.001)
        assert result.features[name].method == "wasserstein"
        assert result.features[name].score == pytest.approx(expected, rel=1e-9)
    # risk_tier has 3 values: Jensen-Shannon distance of the category frequencies
    cats = [0.0, 1.0, 2.0]
    p = reference["risk_tier"].value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
    q = window["risk_tier"].value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
    from scipy.spatial import distance

    assert result.features["risk_tier"].method == "jensenshannon"
    assert result.features["risk_tier"].score == pytest.approx(distance.jensenshannon(p, q), rel=1e-6)


def test_scores_equal_evidently_report_values(reference, detector):
    """The fast path and Evidently's full DataDriftPreset Report give the same per-column drift scores."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    window = feature_frame(2000, seed=6, amount_scale=2.0)
    result = detector.evaluate(window)
    methods = detector.methods()
    cols = [*DEFAULT_FEATURES, "score"]
    cat = [c for c, is_cat in detector.categorical_columns().items() if is_cat]
    definition = DataDefinition(numerical_columns=[c for c in cols if c not in cat], categorical_columns=cat)
    report = Report(
        [
            DataDriftPreset(
                per_column_method={c: m for c, (m, _) in methods.items()},
                per_column_threshold={c: t for c, (_, t) in methods.items()},
            )
        ]
    )
    snap = report.run(
        Dataset.from_pandas(window[cols], data_definition=definition),
        Dataset.from_pandas(reference[cols], data_definition=definition),
    )
    values = {}
    for metric in snap.dict()["metrics"]:
        cfg = metric["config"]
        if cfg.get("type", "").endswith("ValueDrift"):
            values[cfg["column"]] = metric["value"]
    assert set(values) == set(cols)
    for name in DEFAULT_FEATURES:
        assert result.features[name].score == pytest.approx(values[name], rel=1e-6, abs=1e-9), name
    assert result.prediction.score == pytest.approx(values["score"], rel=1e-6)


def test_missing_values_rate_and_a_broken_column(reference):
    """A column that goes missing is drift (a broken upstream), not an untested column."""
    detector = DriftDetector(reference, DEFAULT_FEATURES, DriftConfig(min_rows=100, missing_tolerance=0.2))
    window = feature_frame(1000, seed=7)
    window.loc[:149, "account_age_days"] = np.nan  # 15% missing: within the tolerance
    window.loc[:299, "txn_amount"] = np.nan  # 30% missing: above it
    window["credit_limit"] = np.nan  # all missing: nothing left to test, still flagged
    result = detector.evaluate(window)
    age, amount, limit = (result.features[f] for f in ("account_age_days", "txn_amount", "credit_limit"))
    assert age.missing_rate == pytest.approx(0.15) and not age.missing_drift and not age.detected
    assert amount.missing_rate == pytest.approx(0.3) and amount.n == 700 and amount.missing_drift and amount.detected
    assert not math.isnan(amount.score)  # the 700 present values are still tested
    assert limit.missing_rate == 1.0 and math.isnan(limit.score) and limit.missing_drift and limit.detected
    assert limit.reference_missing_rate == 0.0
    secs = result.features["secs_since_prev_txn"]  # missing in ~20% of the reference rows too: no alarm
    assert secs.reference_missing_rate == pytest.approx(reference["secs_since_prev_txn"].isna().mean())
    assert not secs.missing_drift
    assert result.drifted_features[0] == "credit_limit"  # a broken column is the most severe
    assert set(result.drifted_features) == {"credit_limit", "txn_amount"}
    assert result.drift_share == pytest.approx(2 / len(DEFAULT_FEATURES))


def test_method_and_threshold_are_configurable(reference):
    config = DriftConfig(
        num_method="psi",
        threshold=0.2,
        per_feature_method={"txn_amount": "ks"},
        per_feature_threshold={"account_age_days": 0.5},
    )
    detector = DriftDetector(reference, DEFAULT_FEATURES, config)
    methods = detector.methods()
    assert methods["txn_sum_1h"] == ("psi", 0.2)
    assert methods["txn_amount"] == ("ks", 0.2)
    assert methods["account_age_days"] == ("psi", 0.5)
    result = detector.evaluate(feature_frame(5000, seed=8, amount_scale=3.0))
    assert result.features["txn_amount"].detected  # K-S p-value ~ 0 < 0.2
    assert result.features["txn_amount"].score < 0.2


def test_unknown_method_and_missing_reference_columns_are_clear_errors(reference):
    with pytest.raises(ValueError, match="nope"):
        DriftDetector(reference, DEFAULT_FEATURES, DriftConfig(num_method="nope"))
    with pytest.raises(ValueError, match="lacks columns"):
        DriftDetector(reference.drop(columns=["txn_amount"]), DEFAULT_FEATURES)
