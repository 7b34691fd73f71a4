"""The registry contract: metadata keys, reference sample, promote / rollback, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xgboost as xgb

from core import model_store
from core.errors import UserFacingError
from rtml.cli import main as cli
from tests.fixtures import models as fixture_models


def test_test_model_has_contract_metadata(state_dir):
    tag = fixture_models.save_test_model(n_rows=500, rounds=3)
    model = model_store.production_model()
    assert str(model.tag) == tag
    assert model.path.startswith(str(state_dir / "bentoml"))
    meta = model.info.metadata
    for key in (
        "feature_service",
        "features",
        "feature_refs",
        "threshold",
        "training_set_hash",
        "manifest",
        "metrics",
        "params",
        "code_version",
        "created_at",
        "defaults",
        "request_fields",
    ):
        assert key in meta, key
    assert meta["feature_service"] == "fraud_model_v1"
    assert [r.split(":")[1] for r in meta["feature_refs"]] == meta["features"]
    assert math.isnan(meta["defaults"]["txn_amount"])
    ref = model_store.reference_sample(model)
    assert list(ref.columns) == [*meta["features"], "score"]
    booster = model_store.load_booster(model)
    # the stored reference scores are what the stored booster predicts for the stored rows
    again = booster.predict(xgb.DMatrix(ref[meta["features"]], feature_names=meta["features"]))
    np.testing.assert_allclose(again, ref["score"].to_numpy(), rtol=1e-6)


def test_promote_and_rollback(state_dir):
    with pytest.raises(UserFacingError, match="no production model"):
        model_store.production_model()
    a = fixture_models.save_test_model(n_rows=300, rounds=2, seed=1)
    b = fixture_models.save_test_model(n_rows=300, rounds=2, seed=2, promote_it=False)
    assert model_store.production_tag() == a
    model_store.promote(b)
    assert model_store.production_tag() == b
    assert model_store.rollback() == a
    assert str(model_store.production_model().tag) == a
    with pytest.raises(UserFacingError, match="nothing to roll back"):
        model_store.rollback()
    assert [e["action"] for e in model_store.history()] == ["promote", "promote", "rollback"]
    rows = model_store.list_models()
    assert {r["tag"] for r in rows} == {a, b}
    assert [r["tag"] for r in rows if r["production"]] == [a]
    with pytest.raises(UserFacingError, match="no model"):
        model_store.promote("fraud_model:doesnotexist")


def test_models_cli(state_dir, capsys):
    a = fixture_models.save_test_model(n_rows=300, rounds=2, seed=1)
    b = fixture_models.save_test_model(n_rows=300, rounds=2, seed=2, promote_it=False)
    assert cli(["models", "promote", b.split(":")[1]]) == 1  # no gate decision: refused
    assert "promotion gate" in capsys.readouterr().err and model_store.production_tag() == a
    assert cli(["models", "promote", b.split(":")[1], "--force", "--reason", "hotfix", "--actor", "alice"]) == 0
    assert model_store.production_tag() == b
    last = model_store.history()[-1]
    assert last["actor"] == "alice" and last["reason"].startswith("forced past the gate") and "hotfix" in last["reason"]
    assert cli(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"* {b}" in out and f"  {a}" in out
    assert cli(["models", "rollback"]) == 0
    assert model_store.production_tag() == a
    assert cli(["models", "promote", "nope"]) == 1
    assert "no model" in capsys.readouterr().err
