"""XGBoost binary classifier: time-based split, class weighting, bounded hyperparameter search with early
stopping, deterministic for a seed (fixed ``nthread``, seeded sampling)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import average_precision_score
from tqdm.auto import tqdm

from core.errors import UserFacingError
from training.datasets import EVENT_TIME, frame_columns

log = logging.getLogger(__name__)

TIME_COLUMN = EVENT_TIME


def label_column() -> str:
    """The training frame's label column (named by the feature repo's LabelView)."""
    return frame_columns().label

NTHREAD = 2  # fixed: XGBoost's hist results depend on the thread count only through float summation order
BASE_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": ["aucpr", "logloss"],
    "tree_method": "hist",
    "nthread": NTHREAD,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "max_bin": 256,
}
# The search space; `trials` configurations are taken from it in a fixed (seeded) order.
SEARCH_SPACE: dict[str, list[Any]] = {
    "max_depth": [3, 4, 6],
    "eta": [0.05, 0.1, 0.2],
    "min_child_weight": [1, 5],
    "lambda": [1.0, 5.0],
}


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    bounds: dict[str, str] = field(default_factory=dict)


def time_split(df: pd.DataFrame, valid_frac: float = 0.15, test_frac: float = 0.15) -> Split:
    """Split by event time: oldest rows train, then validation, newest test (no shuffling)."""
    if len(df) < 50:
        raise UserFacingError(f"only {len(df)} labelled rows; need at least 50 to train and evaluate")
    cols = frame_columns()
    label = cols.label
    df = df.sort_values([TIME_COLUMN, cols.event_id], kind="stable").reset_index(drop=True)
    n = len(df)
    i_valid = int(n * (1 - valid_frac - test_frac))
    i_test = int(n * (1 - test_frac))
    parts = df.iloc[:i_valid], df.iloc[i_valid:i_test], df.iloc[i_test:]
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        positives = int(part[label].sum())
        if positives == 0 or positives == len(part):
            raise UserFacingError(
                f"the {name} split ({len(part)} rows from {part[TIME_COLUMN].min()}) has {positives} positive labels; "
                "need both classes in every split: use a longer time range or a later label cutoff"
            )
    bounds = {
        "train": f"{parts[0][TIME_COLUMN].min().isoformat()} .. {parts[0][TIME_COLUMN].max().isoformat()}",
        "validation": f"{parts[1][TIME_COLUMN].min().isoformat()} .. {parts[1][TIME_COLUMN].max().isoformat()}",
        "test": f"{parts[2][TIME_COLUMN].min().isoformat()} .. {parts[2][TIME_COLUMN].max().isoformat()}",
    }
    return Split(*(p.reset_index(drop=True) for p in parts), bounds=bounds)


def matrix(df: pd.DataFrame, features: list[str], label: bool = True) -> xgb.DMatrix:
    """DMatrix with the model's column order; missing values are NaN (XGBoost's missing branch)."""
    X = df[features].astype("float64")
    return xgb.DMatrix(X, label=df[label_column()].to_numpy() if label else None, feature_names=features, nthread=NTHREAD)


def predict(booster: xgb.Booster, df: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Scores for the rows of ``df`` (all trees: :func:`fit` keeps only the trees up to the best iteration)."""
    return booster.predict(matrix(df, features, label=False))


def candidate_configs(trials: int, seed: int) -> list[dict[str, Any]]:
    """``trials`` distinct configurations from :data:`SEARCH_SPACE`, in a seeded order."""
    keys = list(SEARCH_SPACE)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*SEARCH_SPACE.values())]
    order = np.random.default_rng(seed).permutation(len(grid))
    return [grid[i] for i in order[: max(1, min(trials, len(grid)))]]


@dataclass
class FitResult:
    booster: xgb.Booster
    params: dict[str, Any]
    best_iteration: int
    valid_pr_auc: float
    trials: list[dict[str, Any]]


def fit(
    split: Split,
    features: list[str],
    trials: int = 4,
    seed: int = 7,
    max_rounds: int = 400,
    early_stopping: int = 30,
    progress: bool = True,
    on_trial: Callable[[int, dict[str, Any], dict[str, Any]], None] | None = None,
) -> FitResult:
    """Try ``trials`` configurations (early stopping on validation PR-AUC); keep the best.
    ``on_trial(index, params, metrics)`` is called after each (experiment tracking)."""
    label = label_column()
    y = split.train[label].to_numpy()
    scale_pos_weight = float((y == 0).sum() / max(1, (y == 1).sum()))
    dtrain, dvalid = matrix(split.train, features), matrix(split.valid, features)
    best: FitResult | None = None
    history = []
    for index, config in enumerate(
        tqdm(candidate_configs(trials, seed), desc="hyperparameter search", unit="config", disable=not progress)
    ):
        params = {**BASE_PARAMS, **config, "seed": seed, "scale_pos_weight": scale_pos_weight}
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=max_rounds,
            evals=[(dvalid, "valid")],
            early_stopping_rounds=early_stopping,
            verbose_eval=False,
        )
        # keep only the trees up to the best iteration, so any caller (serving's inplace_predict) gets it
        booster = booster[: booster.best_iteration + 1]
        scores = predict(booster, split.valid, features)
        pr_auc = float(average_precision_score(split.valid[label], scores))
        rounds = booster.num_boosted_rounds()
        history.append({**config, "best_iteration": rounds - 1, "valid_pr_auc": pr_auc})
        log.info("config %s: best_iteration=%d valid PR-AUC=%.4f", config, rounds - 1, pr_auc)
        if on_trial is not None:
            on_trial(index, params, {"best_iteration": rounds - 1, "valid_pr_auc": pr_auc})
        if best is None or pr_auc > best.valid_pr_auc:
            best = FitResult(booster, params, rounds - 1, pr_auc, history)
    assert best is not None
    best.trials = history
    return best
