"""XGBoost training on Spark (``xgboost.spark``, ``local[2]``) vs in one process, on the same training set.

Same split, same search (``trials`` configurations, early stopping), same seed: ``training.model.fit`` vs
``training.spark_train.fit_spark``. Rows/s = training rows / wall seconds of the whole search (Spark's
includes moving the frame into Spark). Holdout PR-AUC of both models on the newest 15% of rows.

Part of ``bench_training`` (run in its own child process there): its keys in ``tests/benchmarks/results/training.json``
are ``spark_train_rows_per_s``, ``local_train_rows_per_s``, ``spark_vs_local_pr_auc_abs_diff`` (goal <= 0.01) and
``spark_train`` (details, rows actually used, load). Env: BENCH_SPARK_TRAIN_ROWS, default 5 000 000;
BENCH_SPARK_TRAIN_ROUNDS, default 100; RTML_SPARK_DRIVER_MEMORY.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from sklearn.metrics import average_precision_score

from tests.benchmarks.common import machine

ROWS = int(os.environ.get("BENCH_SPARK_TRAIN_ROWS", 5_000_000))
ROUNDS = int(os.environ.get("BENCH_SPARK_TRAIN_ROUNDS", 100))
TRIALS = 1


def main() -> dict:
    """Both searches on the same split; returns the keys for training.json."""
    from streaming.spark_session import build_session
    from tests.training.test_spark_train import FEATURES, synthetic
    from training.model import fit, predict, time_split
    from training.spark_train import fit_spark

    split = time_split(synthetic(ROWS, seed=11))
    n_train = len(split.train)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    local = fit(split, FEATURES, trials=TRIALS, seed=7, max_rounds=ROUNDS, progress=False)
    local_s = time.perf_counter() - t0
    spark = build_session("rtml-bench-spark-train", "local[2]", kafka=False)
    try:
        t0 = time.perf_counter()
        remote = fit_spark(split, FEATURES, trials=TRIALS, seed=7, max_rounds=ROUNDS, progress=False, spark=spark)
        spark_s = time.perf_counter() - t0
    finally:
        spark.stop()
    load_after = os.getloadavg()
    y = split.test["is_fraud"]
    pr_local = float(average_precision_score(y, predict(local.booster, split.test, FEATURES)))
    pr_spark = float(average_precision_score(y, predict(remote.booster, split.test, FEATURES)))
    result = {
        "spark_train_rows_per_s": round(n_train / spark_s, 1),
        "local_train_rows_per_s": round(n_train / local_s, 1),
        "spark_vs_local_pr_auc_abs_diff": round(abs(pr_spark - pr_local), 5),
        "spark_train": {
            "what": f"xgboost.spark SparkXGBClassifier on local[2] (2 workers) vs xgboost.train (nthread 2), "
                    f"{TRIALS} configuration(s), <= {ROUNDS} rounds with early stopping; baseline = single process",
            "rows_total": ROWS,
            "rows_train": n_train,
            "rows_test": len(split.test),
            "local_seconds": local_s,
            "spark_seconds": spark_s,
            "local_holdout_pr_auc": pr_local,
            "spark_holdout_pr_auc": pr_spark,
            "local_rounds": local.best_iteration + 1,
            "spark_rounds": remote.best_iteration + 1,
            "load": {"loadavg_before": load_before[0], "loadavg_after": load_after[0]},
            "machine": machine(),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    return result
