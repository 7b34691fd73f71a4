"""The compiled tree walk reproduces XGBoost exactly (it is the model the service and shadow scoring run),
and a model it cannot reproduce keeps XGBoost."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from bentos import predictor


def _train(objective: str, seed: int = 0, rounds: int = 40) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3000, 12)).astype(np.float32) * np.array([1, 10, 100, 1000] * 3, dtype=np.float32)
    X[rng.random(X.shape) < 0.2] = np.nan  # missing values: default directions differ per split
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 5]) / 10 + rng.normal(size=3000) > 0.8).astype(np.float32)
    params = {"objective": objective, "max_depth": 5, "eta": 0.3, "nthread": 1, "seed": seed}
    return xgb.train(params, xgb.DMatrix(X, label=y, missing=np.nan), num_boost_round=rounds), X


def test_compiled_trees_equal_xgboost_bit_for_bit():
    booster, X = _train("binary:logistic")
    compiled = predictor.compile_booster(booster, 12)
    assert compiled is not None and compiled.n_trees == 40
    rows = np.vstack([X[:500], predictor.probe_rows(12, 500, seed=9)])
    expected = booster.inplace_predict(rows)
    assert np.array_equal(compiled.predict_matrix(np.ascontiguousarray(rows)), expected)
    rp = predictor.RowPredictor(booster, 12)
    assert rp.compiled is not None
    singles = np.array([rp.predict_row(r) for r in rows[:200].tolist()], dtype=np.float32)
    assert np.array_equal(singles, expected[:200])
    assert np.array_equal(rp.predict_rows(rows[:130].tolist()), expected[:130])  # 2 blocks + a partial one
    assert 0.0 < float(expected.min()) and float(expected.max()) < 1.0


def test_other_objectives_keep_xgboost():
    booster, X = _train("reg:squarederror")
    assert predictor.compile_booster(booster, 12) is None
    rp = predictor.RowPredictor(booster, 12)
    assert rp.compiled is None
    assert rp.predict_row(X[0].tolist()) == float(booster.inplace_predict(X[:1])[0])


def test_the_setting_turns_compiled_trees_off(monkeypatch):
    booster, X = _train("binary:logistic", rounds=5)
    monkeypatch.setenv("RTML_SERVING_COMPILED_TREES", "0")
    rp = predictor.RowPredictor(booster, 12)
    assert predictor.compile_booster(booster, 12) is None and rp.compiled is None
    assert rp.predict_row(X[3].tolist()) == float(booster.inplace_predict(X[3:4])[0])
