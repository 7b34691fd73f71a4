"""The compiled tree walk reproduces XGBoost exactly (it is the model the service and shadow scoring run),
and a model it cannot reproduce keeps XGBoost."""

from __future__ import annotations

import numpy as np
import pytest
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
    assert rp._columns  # the two kernels agreed at load: 8+ rows take the feature-major one
    assert np.array_equal(rp.predict_rows(rows[:130].tolist()), expected[:130])  # feature-major kernel
    assert np.array_equal(rp.predict_rows(rows[:5].tolist()), expected[:5])  # row kernel (fewer than COLUMNS_MIN_ROWS)
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


@pytest.mark.parametrize("rounds", [60, 61])  # trees walked in pairs, and an odd last one
def test_batch_walk_on_feature_major_rows_equals_xgboost_bit_for_bit(rounds):
    """Batch scoring's walk (complete trees, feature-major matrix, any row range) gives inplace_predict's
    float32 scores exactly, missing values included; deeper models keep the node-array walk, also exact."""
    booster, X = _train("binary:logistic", rounds=rounds)
    rows = np.vstack([X[:700], predictor.probe_rows(12, 300, seed=4)])
    expected = booster.inplace_predict(rows)
    compiled = predictor.compile_columns(booster, 12, extra_rows=X[:100])
    assert compiled is not None and compiled.complete_trees()[4] == 5  # padded to the deepest tree
    Xt = np.ascontiguousarray(rows.T)
    out = np.full(len(rows), -1.0, dtype=np.float32)
    for lo, hi in [(0, 1), (1, 64), (64, 130), (130, 999), (999, 1000)]:  # partial blocks, ranges as threads split them
        compiled.predict_columns(Xt, out, lo, hi)
    assert np.array_equal(out, expected)
    assert len(np.unique(out)) > 500  # real scores, not one leaf everywhere


def test_batch_walk_of_deep_trees_uses_node_arrays(monkeypatch):
    booster, X = _train("binary:logistic", rounds=10)
    monkeypatch.setattr(predictor, "MAX_COMPLETE_DEPTH", 3)
    compiled = predictor.compile_columns(booster, 12)
    assert compiled is not None and compiled.complete_trees() is None
    out = np.empty(500, dtype=np.float32)
    compiled.predict_columns(np.ascontiguousarray(X[:500].T), out)
    assert np.array_equal(out, booster.inplace_predict(X[:500]))


def test_batch_walk_follows_the_service_setting(monkeypatch):
    booster, _ = _train("binary:logistic", rounds=5)
    monkeypatch.setenv("RTML_SERVING_COMPILED_TREES", "0")
    assert predictor.compile_columns(booster, 12) is None
    monkeypatch.delenv("RTML_SERVING_COMPILED_TREES")
    assert predictor.compile_columns(_train("reg:squarederror", rounds=5)[0], 12) is None  # objective not reproduced


def test_base_margin_is_computed_in_float32_as_xgboost_does():
    """base_score 0.543: -log(1/p - 1) in float64 is one float32 ulp away from XGBoost's float32 margin,
    which shifted every score by ~6e-8; the row, matrix and batch walks all match XGBoost exactly."""
    booster, X = _train("binary:logistic", rounds=20)
    booster.set_param({"base_score": 0.543})
    expected = booster.inplace_predict(X[:300])
    rp = predictor.RowPredictor(booster, 12)
    assert rp.compiled is not None
    assert np.array_equal(rp.predict_rows(X[:300]), expected)
    assert np.array_equal(np.array([rp.predict_row(r) for r in X[:50].tolist()], dtype=np.float32), expected[:50])
    compiled = predictor.compile_columns(booster, 12)
    assert compiled is not None
    out = np.empty(300, dtype=np.float32)
    compiled.predict_columns(np.ascontiguousarray(X[:300].T), out)
    assert np.array_equal(out, expected)


def test_batch_walk_refuses_matrices_it_would_read_out_of_bounds():
    booster, X = _train("binary:logistic", rounds=3)
    compiled = predictor.compile_columns(booster, 12)
    out = np.empty(10, dtype=np.float32)
    for bad in (np.ascontiguousarray(X[:10, :11].T), np.ascontiguousarray(X[:10].T, dtype=np.float64), X[:10].T):
        with pytest.raises(ValueError, match="C-contiguous float32 matrix of 12"):
            compiled.predict_columns(bad, out)
    with pytest.raises(ValueError, match="do not fit"):
        compiled.predict_columns(np.ascontiguousarray(X[:20].T), out)  # 20 rows, 10 outputs
