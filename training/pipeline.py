"""`rtml train` end to end: training set -> time split -> search -> evaluation -> registry -> gate."""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from core import errors, feature_refs, model_store, storage
from core.settings import settings
from training import registry
from training.datasets import TimeLike, TrainingSet, build_training_set, load_training_set
from training.evaluate import Evaluation, evaluate, write_report
from training.gate import Decision, decide
from training.model import fit, predict, time_split

log = logging.getLogger(__name__)
REFERENCE_ROWS = 5000


@dataclass
class TrainOutcome:
    tag: str
    decision: Decision
    evaluation: Evaluation
    report: Path
    training_set: TrainingSet
    promoted: bool


def report_dir(tag: str) -> Path:
    return settings().state_dir / "reports" / "models" / tag


def train(
    start: TimeLike = None,
    end: TimeLike = None,
    cutoff: TimeLike = None,
    join: str = "feast",
    trials: int = 4,
    seed: int = 7,
    margin: float | None = None,
    auto_promote: bool = True,
    training_set: Path | None = None,
    progress: bool = True,
    max_rounds: int = 400,
    engine: str = "local",
) -> TrainOutcome:
    """Train, evaluate and register a model; promote it if the gate says so (and ``auto_promote``).

    ``engine``: ``local`` (XGBoost in this process) or ``spark`` (``xgboost.spark`` on ``RTML_SPARK_MASTER``'s
    executors, :mod:`training.spark_train`); split, search, evaluation, registry and gate are the same."""
    ts = load_training_set(training_set) if training_set else build_training_set(start, end, cutoff, join=join)
    features, refs = ts.manifest["features"], ts.manifest["feature_refs"]
    split = time_split(ts.frame)
    log.info("split: %s", split.bounds)
    if engine == "spark":
        from training.spark_train import fit_spark

        result = fit_spark(split, features, trials=trials, seed=seed, max_rounds=max_rounds, progress=progress)
    elif engine == "local":
        result = fit(split, features, trials=trials, seed=seed, max_rounds=max_rounds, progress=progress)
    else:
        raise errors.UserFacingError(f"unknown training engine {engine!r} (local or spark)")
    ev = evaluate(result.booster, split.test, split.valid, features, refs, seed=seed)
    current = None
    try:
        current = model_store.production_model()
    except errors.UserFacingError:
        current = None
    decision = decide(ev, split.test, current, margin)

    scores = predict(result.booster, split.test, features)
    ref = split.test[features].assign(score=scores)
    if len(ref) > REFERENCE_ROWS:
        ref = ref.sample(REFERENCE_ROWS, random_state=seed).sort_index()
    metadata = {
        "feature_service": ts.manifest.get("feature_service") or feature_refs.service_definition().name,
        "features": features,
        "feature_refs": refs,
        "threshold": ev.threshold,
        # NaN: a feature missing at serving goes down XGBoost's missing branch, exactly like a training
        # row without feature history (the point-in-time join leaves those null)
        "defaults": {f: math.nan for f in features},
        "training_set_hash": ts.manifest["content_hash"],
        "manifest": ts.manifest,
        "metrics": {**ev.summary(), "decision": decision.as_dict()},
        "params": {**{k: v for k, v in result.params.items()}, "best_iteration": result.best_iteration},
        "split": split.bounds,
    }
    tag = registry.register_model(result.booster, metadata, ref)
    context = {
        "tag": tag,
        "training_set_hash": ts.manifest["content_hash"],
        "rows": ts.manifest["rows"],
        "feature_service": metadata["feature_service"],
        "code_version": registry.code_version(),
        "split": split.bounds,
        "trials": result.trials,
        "decision": ("**Promoted.** " if decision.promote and auto_promote else "**Not promoted.** ") + decision.reason,
    }
    out = report_dir(tag)
    report = write_report(ev, split.test, result.booster, features, out, context)
    model_report = Path(model_store.get_model(tag).path_of(model_store.REPORT_DIR))
    shutil.copytree(out, model_report, dirs_exist_ok=True)
    if settings().data_on_s3:  # the report also lands beside the data on object storage
        storage.data_root().join("reports", "models", tag).upload_dir(out)
    promoted = False
    if decision.promote and auto_promote:
        model_store.promote(tag, reason=decision.reason)
        promoted = True
    return TrainOutcome(tag, decision, ev, report, ts, promoted)
