"""`rtml train`: point-in-time training set -> XGBoost search -> evaluation report -> registry, with a
promotion gate (the new model becomes production only if it beats the current one on the same holdout)."""

from __future__ import annotations

import argparse

from training.gate import DEFAULT_MARGIN


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", help="first transaction time (ISO-8601, UTC); default: all history")
    parser.add_argument("--end", help="transactions before this time (ISO-8601, UTC)")
    parser.add_argument("--cutoff", help="use only labels known at this time (label_timestamp <= cutoff); default: now")
    parser.add_argument(
        "--join",
        choices=["feast", "fast"],
        default="feast",
        help="feast: Feast get_historical_features (offline store from RTML_OFFLINE_STORE); "
        "fast: training.pit_join (same result, faster)",
    )
    parser.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local: XGBoost in this process; spark: xgboost.spark on RTML_SPARK_MASTER's executors "
        "(with RTML_OFFLINE_STORE=spark the point-in-time frame is built on Spark too)",
    )
    parser.add_argument("--trials", type=int, default=4, help="hyperparameter configurations to try (default 4)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help=f"PR-AUC margin over production needed to promote (default RTML_PROMOTION_MARGIN or {DEFAULT_MARGIN})",
    )
    parser.add_argument("--no-promote", action="store_true", help="register only; never promote")
    parser.add_argument("--training-set", help="reuse a saved training set folder instead of building one")
    parser.add_argument(
        "--trigger", default="manual", help="why this run started (recorded on the MLflow run; the monitor passes drift)"
    )
    parser.add_argument(
        "--reproduce",
        metavar="RUN_ID",
        help="rebuild the training set of a past MLflow run from its manifest, retrain with its arguments and "
        "check the holdout predictions are identical (registers, never promotes)",
    )


def run(args: argparse.Namespace) -> int:
    import logging
    from datetime import UTC, datetime

    logging.getLogger("feast").setLevel(logging.WARNING)

    from training.pipeline import train

    cutoff = args.cutoff or datetime.now(UTC).isoformat()
    if args.reproduce:
        out = train(reproduce=args.reproduce, margin=args.margin, trigger="reproduce")
        return _report(out)
    out = train(
        start=args.start,
        end=args.end,
        cutoff=cutoff,
        join=args.join,
        trials=args.trials,
        seed=args.seed,
        margin=args.margin,
        auto_promote=not args.no_promote,
        training_set=args.training_set,
        trigger=args.trigger,
        engine=args.engine,
    )
    return _report(out)


def _report(out) -> int:
    m = out.evaluation.metrics
    print(
        f"training set: {out.training_set.path} ({out.training_set.manifest['rows']} rows, "
        f"label rate {out.training_set.manifest['label_rate']:.4f})"
    )
    print(f"model: {out.tag}")
    print(
        f"holdout: PR-AUC {m['pr_auc']:.4f}  ROC-AUC {m['roc_auc']:.4f}  recall@1%FPR {m['recall_at_1pct_fpr']:.4f}  "
        f"base rate {m['base_rate']:.4f}  threshold {out.evaluation.threshold:.4f}"
    )
    print(f"report: {out.report}")
    for failed in out.evaluation.failed_checks():
        print(f"check failed: {failed}")
    if out.promoted:
        print(f"PROMOTED to production: {out.decision.reason}")
    elif out.decision.promote:
        print(f"not promoted (--no-promote); the gate would promote: {out.decision.reason}")
    else:
        print(f"NOT promoted: {out.decision.reason}")
    print(f"mlflow run: {out.run_id} (tracking added {out.tracking_overhead_s:.2f} s)")
    if out.reproduction is not None:
        r = out.reproduction
        if r.identical:
            print(f"REPRODUCED run {r.of_run}: holdout predictions identical ({r.rows} rows)")
        else:
            print(f"NOT reproduced: holdout predictions of run {r.of_run} differ (max abs diff {r.max_abs_diff:g})")
            return 1
    return 0
