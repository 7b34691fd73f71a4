"""The monitor at DEFAULT settings on time-ordered simulated traffic (daily and weekly cycles): quiet on
clean days with the model's calibration, loud without it, and an amount shift is caught within two
windows and explained by its raw input. (The 14-day version with every incident is the benchmark,
tests/benchmarks/deployment_eval.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.calibration import calibrate
from monitoring.lineage import repo_lineage
from monitoring.reference import Reference
from tests.benchmarks.deployment_eval import run_monitor
from tests.fixtures.traffic import Incident, day_start, fit_score_model, score, simulate_traffic

TRAIN_DAYS, EVAL_DAYS, USERS, WINDOW = 14, 3, 1500, 2000  # two weeks: every weekday twice


@pytest.fixture(scope="module")
def setup():
    from core.feature_refs import ref_names, service_feature_refs

    features = ref_names(service_feature_refs())
    clean = simulate_traffic(TRAIN_DAYS + EVAL_DAYS, USERS, seed=3)
    train = clean[clean["event_timestamp"] < day_start(TRAIN_DAYS)]
    model = fit_score_model(train, features)
    history = train[features].assign(score=score(model, train, features), event_timestamp=train["event_timestamp"])
    cal, ref = calibrate(history, features, WINDOW, lineage=repo_lineage().to_dict(), model="t")
    calibrated = Reference(ref, features, "t", 0.5, {"pr_auc": 0.05}, calibration=cal, lineage=cal.lineage)
    flat = Reference(history.drop(columns=["event_timestamp"]).sample(5000, random_state=0), features, "t", 0.5, {"pr_auc": 0.05})
    return features, model, clean, calibrated, flat


def _eval_part(frame, model, features):
    part = frame[frame["event_timestamp"] >= day_start(TRAIN_DAYS)].reset_index(drop=True)
    return part.assign(score=score(model, part, features))


def test_clean_days_raise_nothing_with_the_calibration_but_do_without(setup):
    features, model, clean, calibrated, flat = setup
    traffic = _eval_part(clean, model, features)
    quiet = run_monitor(traffic, calibrated, features, WINDOW)
    assert quiet["windows"] == len(traffic) // WINDOW >= 3 * EVAL_DAYS
    assert quiet["fired"] == []
    noisy = run_monitor(traffic, flat, features, WINDOW)  # flat reference sample, Evidently's default thresholds
    assert {name for _w, name, _t in noisy["fired"]} & {"FeatureDrift", "PredictionDrift"}


def test_amount_shift_is_caught_within_two_windows_and_named_by_its_input(setup):
    features, model, _clean, calibrated, _flat = setup
    start = day_start(TRAIN_DAYS + 1) + 10 * 3600
    shifted = simulate_traffic(TRAIN_DAYS + EVAL_DAYS, USERS, seed=3, incident=Incident("amount_shift", int(start * 1e6), 0.5))
    run = run_monitor(_eval_part(shifted, model, features), calibrated, features, WINDOW)
    first_window = int(np.searchsorted(run["ends"], start)) + 1
    assert [f for f in run["fired"] if f[0] < first_window] == []
    drift = [f for f in run["fired"] if f[1] == "FeatureDrift"]
    assert drift and drift[0][0] - first_window + 1 <= 2
    assert run["summaries"][drift[0][0]].startswith("amount shifted:")
