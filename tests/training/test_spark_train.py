"""Training on Spark (xgboost.spark on local[2] executors): the same search on the same split reaches the
single-process model's holdout PR-AUC, and `train(engine="spark")` goes through evaluation, registry and gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import average_precision_score

from core import model_store
from core.settings import settings
from tests.training.conftest import ROUNDS

pytestmark = pytest.mark.integration
FEATURES = [f"x{i}" for i in range(8)]


def synthetic(n: int, seed: int = 5) -> pd.DataFrame:
    """Fraud-like rows: ~4% positives from a known logistic model with an interaction, 5% missing values."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    logit = 1.6 * X[:, 0] - 1.1 * X[:, 1] + 0.9 * X[:, 2] * X[:, 3] + 0.5 * np.abs(X[:, 4]) - 4.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    X[rng.random(X.shape) < 0.05] = np.nan
    df = pd.DataFrame(X, columns=FEATURES)
    df["is_fraud"] = y
    df["event_time"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 7, unit="s")
    df["transaction_id"] = [f"t{i:07d}" for i in range(n)]
    return df


@pytest.fixture(scope="module")
def spark():
    from streaming.spark_session import build_session

    session = build_session("rtml-test-spark-train", "local[2]", kafka=False)
    yield session
    session.stop()


def test_spark_training_matches_single_process_pr_auc(spark):
    from training.model import fit, predict, time_split
    from training.spark_train import fit_spark

    split = time_split(synthetic(30_000))
    local = fit(split, FEATURES, trials=2, seed=7, max_rounds=150, progress=False)
    remote = fit_spark(split, FEATURES, trials=2, seed=7, max_rounds=150, progress=False, spark=spark)
    y = split.test["is_fraud"]
    pr_local = average_precision_score(y, predict(local.booster, split.test, FEATURES))
    pr_spark = average_precision_score(y, predict(remote.booster, split.test, FEATURES))
    assert pr_local > 3 * y.mean()  # the signal is learnt at all
    assert abs(pr_spark - pr_local) <= 0.01, (pr_local, pr_spark)
    assert remote.params["engine"] == "spark" and remote.params["num_workers"] == 2
    assert [t["max_depth"] for t in remote.trials] == [t["max_depth"] for t in local.trials]  # same search
    assert remote.booster.num_boosted_rounds() == remote.best_iteration + 1 > 5


def test_train_engine_spark_registers_an_evaluated_model(world, fresh_registry, spark):
    from mlflow import MlflowClient

    from training.pipeline import train

    out = train(training_set=world["training_set"].path, trials=2, seed=3, progress=False, max_rounds=ROUNDS,
                engine="spark")
    # tracked like the single-process path: one MLflow run with the engine, one nested run per trial
    client = MlflowClient(tracking_uri=settings().mlflow_tracking_uri)
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED" and run.data.params["arg.engine"] == "spark"
    assert run.data.tags["rtml.model_tag"] == out.tag
    trials = client.search_runs([run.info.experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert len(trials) == 2 and all(t.data.params["engine"] == "spark" for t in trials)
    assert max(t.data.metrics["valid_pr_auc"] for t in trials) == pytest.approx(
        run.data.metrics["valid_pr_auc"], abs=1e-12)
    model = model_store.get_model(out.tag)
    meta = model.info.metadata
    assert meta["params"]["engine"] == "spark"
    df = world["training_set"].frame.sort_values("event_time")
    test = df.iloc[int(len(df) * 0.85):]
    booster = model_store.load_booster(model)
    scores = booster.predict(xgb.DMatrix(test[meta["features"]].astype(float), feature_names=meta["features"]))
    assert average_precision_score(test["is_fraud"], scores) == pytest.approx(out.evaluation.metrics["pr_auc"])
    assert out.evaluation.metrics["pr_auc"] > max(4 * test["is_fraud"].mean(), 0.3)
    assert (out.report.parent / "evaluation.json").exists() or out.report.exists()


CLUSTER_DRIVER_UI = 18084
_ON_CLUSTER = """
import json, sys
from sklearn.metrics import average_precision_score
from streaming.spark_session import build_session
from tests.fixtures.spark_cluster import cluster_executor_tasks
from tests.training.test_spark_train import FEATURES, synthetic
from training.model import predict, time_split
from training.spark_train import fit_spark

spark = build_session("rtml-test-train-cluster", sys.argv[1], kafka=False, ui_port=int(sys.argv[2]))
split = time_split(synthetic(30_000))
fit = fit_spark(split, FEATURES, trials=1, seed=7, max_rounds=150, progress=False, spark=spark)
pr = average_precision_score(split.test["is_fraud"], predict(fit.booster, split.test, FEATURES))
print(json.dumps({"pr_auc": pr, "tasks": cluster_executor_tasks(int(sys.argv[2])), "num_workers": fit.params["num_workers"]}))
spark.stop()
"""


def test_spark_training_on_a_standalone_cluster_matches_single_process(spark_cluster):
    """`xgboost.spark` on the standalone cluster (a master, two 1-core workers): both workers' executors run
    training tasks, and the holdout PR-AUC is within 0.01 of the single-process model of the same search."""
    import json
    import subprocess
    import sys

    from training.model import fit, predict, time_split

    done = subprocess.run([sys.executable, "-c", _ON_CLUSTER, spark_cluster, str(CLUSTER_DRIVER_UI)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout.strip().splitlines()[-1])
    assert remote["num_workers"] == 2
    assert len(remote["tasks"]) == 2 and all(n > 0 for n in remote["tasks"].values()), remote["tasks"]
    split = time_split(synthetic(30_000))
    local = fit(split, FEATURES, trials=1, seed=7, max_rounds=150, progress=False)
    pr_local = average_precision_score(split.test["is_fraud"], predict(local.booster, split.test, FEATURES))
    assert pr_local > 3 * split.test["is_fraud"].mean()
    assert abs(remote["pr_auc"] - pr_local) <= 0.01, (pr_local, remote["pr_auc"])
