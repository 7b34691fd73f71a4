"""`rtml train` end to end: training set -> time split -> search -> evaluation -> registry -> gate,
tracked as one MLflow run (:mod:`training.tracking`); ``reproduce=RUN_ID`` rebuilds a past run's
training set from its manifest and checks that the new model's holdout predictions are identical."""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import errors, feature_refs, model_store, storage
from core.settings import settings
from training import registry
from training.datasets import TimeLike, TrainingSet, build_training_set, frame_columns, load_training_set
from training.evaluate import Evaluation, evaluate, write_report
from training.gate import Decision, decide
from training.model import fit, predict, time_split
from training.tracking import Tracker, flat

log = logging.getLogger(__name__)
REFERENCE_ROWS = 5000
PREDICTIONS_ARTIFACT = "holdout/predictions.parquet"
ARGS_ARTIFACT = "run/train_args.json"
MANIFEST_ARTIFACT = "training_set/manifest.json"
ENGINES = ("local", "spark")


@dataclass
class Reproduction:
    """How a reproduced run compares with the original on the holdout."""

    of_run: str
    identical: bool
    rows: int
    max_abs_diff: float


@dataclass
class TrainOutcome:
    tag: str
    decision: Decision
    evaluation: Evaluation
    report: Path
    training_set: TrainingSet
    promoted: bool
    run_id: str = ""
    tracking_overhead_s: float = 0.0
    holdout_predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    reproduction: Reproduction | None = None


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
    features: str | list[str] | None = None,
    trigger: str = "manual",
    reproduce: str | None = None,
    validate: bool = True,
    engine: str = "local",
) -> TrainOutcome:
    """Validate the data, train, evaluate and register a model; promote it if the gate says so (and
    ``auto_promote``). A failed expectation (:mod:`training.validation`) stops the run before training.

    Every call is an MLflow run. ``reproduce``: a run id (or unique prefix) whose training set is
    rebuilt from its manifest and whose training arguments are reused; the model is registered but
    not promoted, and :attr:`TrainOutcome.reproduction` says whether the holdout predictions match.

    ``engine``: ``local`` (XGBoost in this process) or ``spark`` (``xgboost.spark`` on ``RTML_SPARK_MASTER``'s
    executors, :mod:`training.spark_train`); split, search, evaluation, registry, gate and tracking are the same."""
    if engine not in ENGINES:
        raise errors.UserFacingError(f"unknown training engine {engine!r} (one of {', '.join(ENGINES)})")
    original = None
    if reproduce:
        original = _original_run(reproduce)
        args = original["args"]
        start, end, cutoff, join = args["start"], args["end"], args["cutoff"], args["join"]
        features, trials, seed, max_rounds = args["features"], args["trials"], args["seed"], args["max_rounds"]
        engine = args.get("engine", "local")
        training_set, auto_promote = None, False
    args = {
        "start": _iso(start),
        "end": _iso(end),
        "cutoff": _iso(cutoff),
        "join": join,
        "features": features,
        "trials": trials,
        "seed": seed,
        "max_rounds": max_rounds,
        "margin": margin,
        "engine": engine,
        "training_set": str(training_set) if training_set else None,
    }
    tags = {
        "rtml.code_commit": registry.code_version(),
        "rtml.trigger": trigger,
        "mlflow.source.name": "rtml train",
    }
    if original:
        tags["rtml.reproduce_of"] = original["run_id"]
    tracker = Tracker(run_name=f"train-{trigger}", tags=tags)
    try:
        outcome = _train(tracker, args, training_set, margin, auto_promote, progress, original, validate)
    except BaseException:
        try:
            tracker.finish("FAILED")
        except errors.UserFacingError as exc:
            log.warning("%s", exc)
        raise
    tracker.finish()
    outcome.tracking_overhead_s = tracker.overhead_s
    log.info("mlflow run %s (tracking added %.2f s)", outcome.run_id, tracker.overhead_s)
    return outcome


def _iso(value: TimeLike) -> str | None:
    from training.datasets import to_utc

    ts = to_utc(value)
    return ts.isoformat() if ts is not None else None


def _train(
    tracker: Tracker,
    args: dict[str, Any],
    training_set: Path | None,
    margin: float | None,
    auto_promote: bool,
    progress: bool,
    original: dict[str, Any] | None,
    validate: bool,
) -> TrainOutcome:
    from core.feast_store import get_store

    features_arg = args["features"] or feature_refs.service_definition().name
    if training_set:
        ts = load_training_set(training_set)
        # the recorded arguments describe how to rebuild this set (`--reproduce`)
        args.update(
            start=ts.manifest["requested_range"][0],
            end=ts.manifest["requested_range"][1],
            cutoff=ts.manifest["label_cutoff"],
            join=ts.manifest["join"],
            features=ts.manifest.get("feature_service") or ts.manifest["feature_refs"],
        )
    else:
        ts = build_training_set(args["start"], args["end"], args["cutoff"], features=features_arg, join=args["join"])
    if original and ts.manifest["content_hash"] != original["manifest"]["content_hash"]:
        raise errors.UserFacingError(
            f"cannot reproduce run {original['run_id']}: the rebuilt training set differs "
            f"(content hash {ts.manifest['content_hash'][:16]} != recorded {original['manifest']['content_hash'][:16]}); "
            "the history or the feature definitions changed since"
        )
    tracker.run_id()  # the store answers (or the run fails here, before training)
    registry_version = registry.feature_registry_version(get_store())
    features, refs = ts.manifest["features"], ts.manifest["feature_refs"]
    tracker.log(
        params={
            **{f"arg.{k}": v for k, v in args.items()},
            "feature_refs": refs,
            "training_set.rows": ts.manifest["rows"],
        },
        metrics={"training_set.rows": ts.manifest["rows"], "training_set.label_rate": ts.manifest["label_rate"]},
        tags={
            "rtml.training_set_hash": ts.manifest["content_hash"],
            "rtml.feature_registry_version": registry_version["version_id"],
            "rtml.feature_registry_updated": registry_version["last_updated"],
            "rtml.label_cutoff": ts.manifest["label_cutoff"],
        },
    )
    tracker.log_dict(ts.manifest, MANIFEST_ARTIFACT)
    tracker.log_dict({**args, "feature_registry": registry_version}, ARGS_ARTIFACT)
    if validate:
        _validate(tracker, ts, features, refs)

    split = time_split(ts.frame)
    log.info("split: %s", split.bounds)
    if args["engine"] == "spark":
        from training.spark_train import fit_spark

        fitter = fit_spark
    else:
        fitter = fit
    result = fitter(
        split,
        features,
        trials=args["trials"],
        seed=args["seed"],
        max_rounds=args["max_rounds"],
        progress=progress,
        on_trial=tracker.trial,
    )
    ev = evaluate(result.booster, split.test, split.valid, features, refs, seed=args["seed"])
    current = None
    try:
        current = model_store.production_model()
    except errors.UserFacingError:
        current = None
    decision = decide(ev, split.test, current, margin, feature_refs=refs)

    scores = predict(result.booster, split.test, features)
    holdout = pd.DataFrame({"event_id": split.test[frame_columns().event_id].to_numpy(), "score": scores})
    ref = split.test[features].assign(score=scores)
    if len(ref) > REFERENCE_ROWS:
        ref = ref.sample(REFERENCE_ROWS, random_state=args["seed"]).sort_index()
    run_id = tracker.run_id()
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
        "mlflow_run_id": run_id,
        "mlflow_tracking_uri": tracker.uri,
    }
    tag = registry.register_model(result.booster, metadata, ref)
    promote = decision.promote and auto_promote
    context = {
        "tag": tag,
        "training_set_hash": ts.manifest["content_hash"],
        "rows": ts.manifest["rows"],
        "feature_service": metadata["feature_service"],
        "code_version": registry.code_version(),
        "split": split.bounds,
        "trials": result.trials,
        "decision": ("**Promoted.** " if promote else "**Not promoted.** ") + decision.reason,
    }
    out = report_dir(tag)
    report = write_report(ev, split.test, result.booster, features, out, context)
    model_report = Path(model_store.get_model(tag).path_of(model_store.REPORT_DIR))
    shutil.copytree(out, model_report, dirs_exist_ok=True)
    if settings().data_on_s3:  # the report also lands beside the data on object storage
        storage.data_root().join("reports", "models", tag).upload_dir(out)
    predictions_dir = Path(tempfile.mkdtemp(prefix="rtml-holdout-"))
    predictions_file = predictions_dir / Path(PREDICTIONS_ARTIFACT).name
    holdout.to_parquet(predictions_file, index=False)
    reproduction = _compare(original, holdout) if original else None
    if promote:
        model_store.promote(tag, reason=decision.reason)
    gate = "promoted" if promote else ("would_promote" if decision.promote else "refused")
    tracker.log(
        params={f"model.{k}": v for k, v in result.params.items() if k != "eval_metric"}
        | {"model.best_iteration": result.best_iteration},
        metrics={
            **flat("holdout", {k: v for k, v in ev.summary().items() if k != "gaps"}),
            "valid_pr_auc": result.valid_pr_auc,
            "gate.promote": decision.promote,
            "gate.promoted": promote,
            **({"reproduced.identical": reproduction.identical} if reproduction else {}),
        },
        tags={
            "rtml.model_tag": tag,
            "rtml.gate": gate,
            "rtml.gate_reason": decision.reason,
            **({"rtml.reproduced_identical": str(reproduction.identical).lower()} if reproduction else {}),
        },
    )
    tracker.log_dict(decision.as_dict(), "gate/decision.json")
    tracker.log_artifacts(out, "report")
    tracker.log_artifact(predictions_file, Path(PREDICTIONS_ARTIFACT).parent.as_posix())
    tracker.then(lambda: shutil.rmtree(predictions_dir, ignore_errors=True))
    return TrainOutcome(
        tag, decision, ev, report, ts, promote, run_id=run_id, holdout_predictions=holdout, reproduction=reproduction
    )


def reference_stats() -> dict[str, Any] | None:
    """Feature statistics of the previous training set: the production model's manifest (None: no model yet)."""
    try:
        model = model_store.production_model()
    except errors.UserFacingError:
        return None
    return (model.info.metadata.get("manifest") or {}).get("feature_stats") or None


def _validate(tracker: Tracker, ts: TrainingSet, features: list[str], refs: list[str]) -> None:
    """Great Expectations suites on the raw history and the frame; failing ones stop the run here."""
    from training.validation import validate_training_set

    if isinstance(ts.path, Path):
        local = ts.path / "validation.html"
    else:  # a training set on S3: the report is written locally (MLflow artifact), then put beside the set
        local = settings().state_dir / "reports" / "validation" / ts.manifest["content_hash"][:16] / "validation.html"
    report = validate_training_set(ts.frame, features, refs, reference_stats(), local)
    if not isinstance(ts.path, Path):
        storage.location(ts.path).join("validation.html").write_bytes(local.read_bytes())
    tracker.log_artifact(report.path, "validation")
    tracker.log_dict(report.summary(), "validation/summary.json")
    tracker.log(
        metrics={
            "validation.expectations": len(report.checks),
            "validation.failed": len(report.failed),
            "validation.seconds": report.seconds,
        },
        tags={"rtml.validation": "passed" if report.success else "failed", "rtml.validation_report": str(report.path)},
    )
    if not report.success:
        tracker.log(tags={"rtml.gate": "validation_failed"})
        report.raise_if_failed()


def _original_run(run_ref: str) -> dict[str, Any]:
    """Arguments, manifest and holdout predictions recorded by a past run."""
    import json

    from training import tracking

    client = tracking.client()
    run = tracking.find_run(client, run_ref)
    with tempfile.TemporaryDirectory(prefix="rtml-reproduce-") as tmp:
        try:
            args = json.loads(tracking.download(client, run.info.run_id, ARGS_ARTIFACT, Path(tmp)).read_text())
            manifest = json.loads(tracking.download(client, run.info.run_id, MANIFEST_ARTIFACT, Path(tmp)).read_text())
            predictions = pd.read_parquet(tracking.download(client, run.info.run_id, PREDICTIONS_ARTIFACT, Path(tmp)))
        except Exception as exc:  # noqa: BLE001 - MLflow raises its own error types for missing artifacts
            raise errors.UserFacingError(
                f"run {run.info.run_id} has no complete training record to reproduce from ({exc})"
            ) from None
    return {"run_id": run.info.run_id, "args": args, "manifest": manifest, "predictions": predictions}


def _compare(original: dict[str, Any], holdout: pd.DataFrame) -> Reproduction:
    before = original["predictions"]
    same_rows = len(before) == len(holdout) and np.array_equal(
        before["event_id"].to_numpy(), holdout["event_id"].to_numpy()
    )
    if not same_rows:
        return Reproduction(original["run_id"], False, len(holdout), math.inf)
    a, b = before["score"].to_numpy(), holdout["score"].to_numpy()
    return Reproduction(
        original["run_id"], bool(np.array_equal(a, b)), len(holdout), float(np.max(np.abs(a - b))) if len(a) else 0.0
    )
