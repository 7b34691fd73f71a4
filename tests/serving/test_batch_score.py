"""Batch scoring's model step: chunked on-demand features + compiled trees give the scores of one XGBoost
call on the whole matrix, with the service's value conversion (no stack needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb

from bentos import batch_score

FEATURES = ["a", "b", "c", "ratio"]


def _ratio_view():
    """A python-mode on-demand view stub (row-wise, as Feast's python bodies are): ratio = a / c."""

    def udf(inputs):
        return {"ratio": [a / c if c else 0.0 for a, c in zip(inputs["a"], inputs["c"], strict=True)]}

    return SimpleNamespace(mode="python", feature_transformation=SimpleNamespace(udf=udf)), ["ratio"]


def _data(n: int = 1000, seed: int = 3):
    rng = np.random.default_rng(seed)
    a = rng.gamma(2.0, 50.0, n)
    b = rng.integers(0, 40, n)
    c = rng.gamma(2.0, 20.0, n)
    b_null = rng.random(n) < 0.1
    table = pa.table({"a": a, "b": pa.array(b, mask=b_null), "c": c})
    ratio = a / c
    X = np.column_stack([a, np.where(b_null, np.nan, b), c, ratio]).astype(np.float32)
    y = (ratio + rng.normal(size=n) > 2.5).astype(np.float32)
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "nthread": 1, "seed": seed}
    booster = xgb.train(params, xgb.DMatrix(X, label=y, feature_names=FEATURES), num_boost_round=25)
    return table, X, booster


@pytest.mark.parametrize("compiled", ["1", "0"])
def test_chunked_scores_equal_one_xgboost_call(monkeypatch, compiled):
    monkeypatch.setenv("RTML_SERVING_COMPILED_TREES", compiled)
    monkeypatch.setattr(batch_score, "CHUNK_ROWS", 96)  # 10 full chunks + a partial one, each split over the threads
    table, X, booster = _data()
    expected = booster.inplace_predict(X)
    scorer = batch_score._Scorer(booster, len(FEATURES))
    assert (scorer.compiled is not None) == (compiled == "1")
    got = scorer.score(table, [_ratio_view()], FEATURES)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert 0.0 < float(got.min()) < 0.5 < float(got.max()) < 1.0


def test_feature_values_convert_as_the_service_does():
    """float(value) then float32, nulls NaN: an int64 beyond 2**53 rounds as the service's float() does
    (a direct int64 -> float32 cast would round up here)."""
    big = 2**60 + 2**36 + 1
    values = batch_score.feature_values(pa.chunked_array([[big, None, 7]]))
    assert values.dtype == np.float64 and np.isnan(values[1]) and values[2] == 7.0
    narrowed = values.astype(np.float32)
    assert narrowed[0] == np.float32(float(big)) == np.float32(2.0**60)
    assert np.float32(2.0**60) != np.array([big], dtype=np.int64).astype(np.float32)[0]


def test_on_demand_inputs_are_the_python_values_of_to_pylist():
    """The on-demand body's inputs: the same values (and types) as ``to_pylist``, nulls None, by fast routes."""
    columns = [
        pa.chunked_array([[1.5, 2.0], [3.25]]),
        pa.chunked_array([[1.5, None, float("nan")]]),
        pa.chunked_array([[2**60 + 1, -3, 0]]),
        pa.chunked_array([[True, False]]),
        pa.chunked_array([["DE", "FR", None], ["DE", None, ""]]),
        pa.chunked_array([pa.array(["x", "y", "x"], pa.large_string())]),
        pa.chunked_array([pa.array([1, None], pa.int32())]),
        pa.chunked_array([pa.array([0, 1_000_000], pa.timestamp("us", "UTC"))]),
    ]
    for col in columns:
        got, expected = batch_score.python_values(col), col.to_pylist()
        assert [type(x) for x in got] == [type(x) for x in expected]
        assert [(x != x) if isinstance(x, float) and x != x else x for x in got] == \
            [(x != x) if isinstance(x, float) and x != x else x for x in expected]
