"""XGBoost on Spark executors (``xgboost.spark.SparkXGBClassifier``) with the single-process path's search.

:func:`fit_spark` is :func:`training.model.fit` with each configuration trained by ``num_workers`` Spark
tasks (XGBoost's collective, rabit tracker on the driver) instead of one process: same time split, same
candidate configurations and base parameters, same class weighting, early stopping on the same validation
rows (``validation_indicator_col``), trees cut at the best iteration, best configuration chosen on
validation PR-AUC. It returns the same :class:`training.model.FitResult` (a plain ``xgb.Booster``), so the
evaluation report, registry, gate and serving are unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score
from tqdm.auto import tqdm

from training.model import BASE_PARAMS, FitResult, Split, candidate_configs, label_column, predict

log = logging.getLogger(__name__)
VALID = "__is_valid"
# xgboost.train parameter names -> the sklearn-style names SparkXGBClassifier takes
_RENAMED = {"eta": "learning_rate", "lambda": "reg_lambda", "seed": "random_state"}


def _spark_params(params: dict[str, Any], max_rounds: int, early_stopping: int) -> dict[str, Any]:
    # eval_metric as in the single-process path: early stopping watches its last metric
    out = {_RENAMED.get(k, k): v for k, v in params.items() if k not in ("nthread", "objective")}
    out.update(n_estimators=max_rounds, early_stopping_rounds=early_stopping, missing=np.nan, verbose=False)
    return out


def _frame(spark, split: Split, features: list[str], seed: int):
    # rows shuffled (seeded): xgboost.spark fails on an Arrow batch without validation rows
    # (KeyError 'values' with a list of feature columns), which train-then-valid order produces
    rows = pd.concat([split.train.assign(**{VALID: False}), split.valid.assign(**{VALID: True})], ignore_index=True)
    rows = rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    pdf = rows[features].astype("float64")
    label = label_column()
    pdf[label] = rows[label].astype("int64").to_numpy()
    pdf[VALID] = rows[VALID].to_numpy()
    return spark.createDataFrame(pdf)


def fit_spark(
    split: Split,
    features: list[str],
    trials: int = 4,
    seed: int = 7,
    max_rounds: int = 400,
    early_stopping: int = 30,
    progress: bool = True,
    spark=None,
    num_workers: int = 2,
    on_trial: Callable[[int, dict[str, Any], dict[str, Any]], None] | None = None,
) -> FitResult:
    """Try ``trials`` configurations on Spark (``num_workers`` XGBoost workers); keep the best on validation.
    ``on_trial(index, params, metrics)`` is called after each (experiment tracking), as in :func:`fit`."""
    from xgboost.spark import SparkXGBClassifier

    for name in ("XGBoost-PySpark", "SparkXGBClassifier"):  # one line per step, not per task
        logging.getLogger(name).setLevel(logging.WARNING)
    if spark is None:
        from streaming.spark_session import build_session

        spark = build_session("rtml-train", kafka=False)
    label = label_column()
    y = split.train[label].to_numpy()
    scale_pos_weight = float((y == 0).sum() / max(1, (y == 1).sum()))
    data = _frame(spark, split, features, seed).repartition(num_workers).cache()
    best: FitResult | None = None
    history = []
    try:
        for index, config in enumerate(tqdm(candidate_configs(trials, seed), desc="hyperparameter search (spark)",
                                            unit="config", disable=not progress)):
            params = {**BASE_PARAMS, **config, "seed": seed, "scale_pos_weight": scale_pos_weight}
            clf = SparkXGBClassifier(features_col=features, label_col=label, validation_indicator_col=VALID,
                                     num_workers=num_workers, device="cpu",
                                     **_spark_params(params, max_rounds, early_stopping))
            booster = clf.fit(data).get_booster()
            booster = booster[: booster.best_iteration + 1]
            scores = predict(booster, split.valid, features)
            pr_auc = float(average_precision_score(split.valid[label], scores))
            rounds = booster.num_boosted_rounds()
            history.append({**config, "best_iteration": rounds - 1, "valid_pr_auc": pr_auc})
            log.info("spark config %s: best_iteration=%d valid PR-AUC=%.4f", config, rounds - 1, pr_auc)
            if on_trial is not None:
                on_trial(index, {**params, "engine": "spark", "num_workers": num_workers},
                         {"best_iteration": rounds - 1, "valid_pr_auc": pr_auc})
            if best is None or pr_auc > best.valid_pr_auc:
                best = FitResult(booster, {**params, "engine": "spark", "num_workers": num_workers}, rounds - 1,
                                 pr_auc, history)
    finally:
        data.unpersist()
    assert best is not None
    best.trials = history
    return best
