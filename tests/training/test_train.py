"""Training end to end on a crafted history: the model learns the signal, runs are reproducible, the
promotion gate refuses a model that is not better and promotes one that is, the CLI reports it."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import average_precision_score

from core import model_store
from core.errors import UserFacingError
from rtml.cli import main as cli
from tests.training.conftest import ROUNDS


def test_model_learns_the_fraud_signal_and_registers_the_contract(world, fresh_registry):
    from training.pipeline import train

    out = train(training_set=world["training_set"].path, trials=2, seed=3, progress=False, max_rounds=ROUNDS)
    m = out.evaluation.metrics
    # holdout quality, recomputed independently from the stored booster and the newest rows
    df = world["training_set"].frame.sort_values("event_time")
    test = df.iloc[int(len(df) * 0.85) :]
    model = model_store.production_model()
    assert str(model.tag) == out.tag and out.promoted
    meta = model.info.metadata
    booster = model_store.load_booster(model)
    scores = booster.predict(xgb.DMatrix(test[meta["features"]].astype(float), feature_names=meta["features"]))
    pr_auc = average_precision_score(test["is_fraud"], scores)
    base = test["is_fraud"].mean()
    assert pr_auc == pytest.approx(m["pr_auc"], abs=1e-9)
    assert pr_auc > max(4 * base, 0.3), (pr_auc, base)
    # contract
    assert meta["features"] == world["training_set"].manifest["features"]
    assert meta["training_set_hash"] == world["training_set"].manifest["content_hash"]
    assert 0 < meta["threshold"] < 1 and all(math.isnan(v) for v in meta["defaults"].values())
    assert meta["metrics"]["pr_auc"] == pytest.approx(m["pr_auc"])
    ref = model_store.reference_sample(model)
    assert list(ref.columns) == [*meta["features"], "score"] and 0 < len(ref) <= 5000
    np.testing.assert_allclose(
        booster.predict(xgb.DMatrix(ref[meta["features"]], feature_names=meta["features"])), ref["score"], rtol=1e-6
    )
    # threshold was set at 1% FPR on validation: on the holdout the FPR is in the same range
    assert m["fpr_at_threshold"] < 0.05
    # report in both places, with plots and the segment / robustness / importance sections
    for folder in (
        out.report.parent,
        fresh_registry / "bentoml" / "models" / "fraud_model" / out.tag.split(":")[1] / "report",
    ):
        text = (folder / "report.md").read_text()
        for section in (
            "ROC-AUC",
            "Calibration",
            "### by category",
            "### by country",
            "Robustness",
            "missing_user_txn_aggregates",
            "mean abs SHAP",
            "Checks",
            "Promoted",
        ):
            assert section in text, (folder, section)
        for png in ("roc_pr.png", "calibration.png", "importance.png", "scores.png"):
            assert (folder / png).stat().st_size > 1000
    ev = json.loads((out.report.parent / "evaluation.json").read_text())
    # SHAP contributions sum to the margin: the importance table is consistent with the booster
    contribs = booster.predict(
        xgb.DMatrix(test[meta["features"]].astype(float), feature_names=meta["features"]), pred_contribs=True
    )
    np.testing.assert_allclose(1 / (1 + np.exp(-contribs.sum(axis=1))), scores, rtol=1e-4)
    assert {r["feature"] for r in ev["importance"]} == set(meta["features"])


def test_same_seed_same_data_same_model_and_the_gate_refuses_an_equal_one(world, fresh_registry):
    from training.pipeline import train

    a = train(training_set=world["training_set"].path, trials=2, seed=11, progress=False, max_rounds=ROUNDS)
    b = train(training_set=world["training_set"].path, trials=2, seed=11, progress=False, max_rounds=ROUNDS)
    assert a.evaluation.metrics == b.evaluation.metrics
    ba, bb = model_store.load_booster(model_store.get_model(a.tag)), model_store.load_booster(model_store.get_model(b.tag))
    assert ba.save_raw("json") == bb.save_raw("json")
    assert a.promoted and not b.promoted
    assert "does not beat production" in b.decision.reason
    assert model_store.production_tag() == a.tag
    assert {r["tag"] for r in model_store.list_models()} == {a.tag, b.tag}


def test_gate_refuses_a_worse_model_and_promotes_a_better_one(world, fresh_registry, monkeypatch):
    from training.datasets import build_training_set
    from training.pipeline import train

    weak_set = build_training_set(
        features=[
            "user_profile:account_age_days",
            "user_profile:credit_limit",
            "merchant_txn_aggregates:merchant_txn_count_1h",
        ],
        join="fast",
    )
    weak = train(training_set=weak_set.path, trials=1, seed=1, progress=False, max_rounds=ROUNDS, margin=0.0)
    strong = train(training_set=world["training_set"].path, trials=2, seed=1, progress=False, max_rounds=ROUNDS)
    assert strong.evaluation.metrics["pr_auc"] > weak.evaluation.metrics["pr_auc"] + 0.05
    if weak.promoted:  # weak model passed its checks and became the first production model
        assert strong.promoted and "beats production" in strong.decision.reason
    else:
        assert strong.promoted and "first model" in strong.decision.reason
        model_store.promote(weak.tag)  # force the weak one in, to test the gate against it
        again = train(training_set=world["training_set"].path, trials=2, seed=1, progress=False, max_rounds=ROUNDS)
        assert again.promoted and "beats production" in again.decision.reason
    current = model_store.production_tag()
    # a worse candidate is refused, with a reason, and production is unchanged
    monkeypatch.setenv("RTML_PROMOTION_MARGIN", "0.0")
    worse = train(training_set=weak_set.path, trials=1, seed=2, progress=False, max_rounds=ROUNDS)
    assert not worse.promoted
    assert "does not beat production" in worse.decision.reason or "checks failed" in worse.decision.reason
    assert model_store.production_tag() == current


def test_too_little_data_is_a_clear_error(world, fresh_registry):
    from training.model import time_split

    frame = world["training_set"].frame
    with pytest.raises(UserFacingError, match="labelled rows"):
        time_split(frame.head(20))
    no_fraud = frame[frame.is_fraud == 0]
    with pytest.raises(UserFacingError, match="0 positive labels"):
        time_split(no_fraud)


def test_cli_train_and_models(world, fresh_registry, capsys):
    assert cli(["train", "--training-set", str(world["training_set"].path), "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "PROMOTED to production: first model" in out and "holdout: PR-AUC" in out
    assert cli(["train", "--training-set", str(world["training_set"].path), "--trials", "1", "--margin", "0.01"]) == 0
    assert "NOT promoted: PR-AUC" in capsys.readouterr().out
    assert cli(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("fraud_model:") == 2 and listing.count("* fraud_model:") == 1
    assert cli(["train", "--start", "2031-01-01", "--end", "2031-02-01", "--join", "fast"]) == 1
    assert "no events in the time range" in capsys.readouterr().err


def test_cli_builds_the_training_set_through_feast(world, fresh_registry, capsys):
    """`rtml train` with the default Feast join (duckdb offline store) end to end."""
    from training.datasets import load_training_set

    assert cli(["train", "--trials", "1", "--no-promote"]) == 0
    out = capsys.readouterr().out
    path = out.split("training set: ")[1].split(" (")[0]
    built = load_training_set(path)
    assert built.manifest["join"] == "feast" and built.manifest["offline_store"] == "duckdb"
    assert built.manifest["content_hash"] == world["training_set"].manifest["content_hash"]
    assert "not promoted (--no-promote)" in out
    pd.testing.assert_frame_equal(built.frame, world["training_set"].frame)
