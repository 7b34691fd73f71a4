"""The drift monitor: windows of the ``predictions`` stream vs the reference of the model that made them.

:class:`Monitor` wires the parts and runs the window pipeline (:meth:`Monitor.process_window`: drift,
gauges, report, alerts, performance, retraining), which unit tests drive directly. The other jobs
live in their own modules: the Kafka loop (:mod:`monitoring.loop`), the alert policy
(:mod:`monitoring.policy`), the report rate limit (:mod:`monitoring.report_limit`) and the state
that survives restarts (:mod:`monitoring.state`).

Defaults come from the model's calibration (:mod:`monitoring.calibration`): a seasonal reference and
per-feature thresholds measured on clean history, stored next to the model.

Which model: serving may pin its model (``RTML_MODEL_TAG``, the image's tag) while the registry's
production pointer moves (a promotion, a rollback, a retraining). With a ``model_loader`` (the CLI's),
the monitor follows the records: each names its model (``model_name:model_version``), and when the
production variant's records name another model, the window in progress is closed against the old
model's reference and that model's reference and calibration are used from then on. The registry's
pointer is then not polled. Records served by a rollout's challenger are the rollout's to compare
(:mod:`monitoring.rollout`). Without a ``model_loader`` (unit tests) the pointer is followed as before.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.alerts import AlertSink, AlertTracker, iso
from monitoring.decode import PredictionDecoder
from monitoring.drift import SCORE_COLUMN, DriftConfig, DriftDetector, WindowDrift
from monitoring.lineage import Lineage, identity
from monitoring.metrics import MonitorMetrics
from monitoring.performance import Performance, PerformanceTracker
from monitoring.policy import FEATURE_DRIFT, PERFORMANCE_DECAY, PREDICTION_DRIFT, AlertPolicy, Pending
from monitoring.reference import ModelReferenceLoader, Reference, ReferenceLoader, as_reference, registry_reference
from monitoring.report_limit import RENDER_DRIFT, RENDER_LATEST, SKIP, ReportLimiter
from monitoring.reports import ReportStore, render_report
from monitoring.retrain import RetrainConfig, RetrainController
from monitoring.state import MonitorState, StateFile
from monitoring.windows import WindowSpec

log = logging.getLogger(__name__)

__all__ = ["FEATURE_DRIFT", "PERFORMANCE_DECAY", "PREDICTION_DRIFT", "Monitor", "MonitorConfig"]

DEFAULT_PR_AUC_FLOOR = 0.2  # when the model's offline PR-AUC is unknown
PR_AUC_FLOOR_RATIO = 0.7  # else: floor = ratio x offline PR-AUC


@dataclass(frozen=True)
class MonitorConfig:
    window: WindowSpec = field(default_factory=WindowSpec)
    drift: DriftConfig = field(default_factory=DriftConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    alert_min_features: int = 1  # drifted features that make a window count for FeatureDrift
    alert_windows: int = 1  # consecutive such windows before FeatureDrift fires
    repeat_every: int = 12  # re-send a firing alert every N windows
    perf_window: int = 5000  # labelled predictions in the rolling performance
    perf_min_labels: int = 500
    perf_min_positives: int = 10
    min_pr_auc: float | None = None  # None: 0.7 x the model's offline PR-AUC, or 0.2
    min_recall: float | None = None  # None: no recall floor
    # A firing PerformanceDecay resolves only once PR-AUC (and recall) clear their floors by this fraction: a
    # rolling PR-AUC hovering at the floor does not fire and resolve over and over.
    perf_resolve_margin: float = 0.05
    decision_threshold: float | None = None  # None: the model's threshold, or 0.5
    reports_keep: int = 20
    latest_report_every_s: float = 300.0
    render_reports: bool = True
    drift_report_every_s: float = 60.0  # persistent drift: a drifted window's report at most this often
    reference_check_every_s: float = 300.0
    commit_every_window: bool = True
    use_calibration: bool = True  # the model's calibrated thresholds (explicit thresholds still win)
    label_key: str = "transaction_id"  # label messages: event key and label fields (the repo's label view)
    label_column: str = "is_fraud"


class Monitor:
    def __init__(
        self,
        config: MonitorConfig | None = None,
        reference_loader: ReferenceLoader = registry_reference,
        state_dir: Path | None = None,
        metrics: MonitorMetrics | None = None,
        sink: AlertSink | None = None,
        clock: Callable[[], float] = time.time,
        model_loader: ModelReferenceLoader | None = None,
    ) -> None:
        from core.settings import settings

        self.config = config or MonitorConfig()
        self.state_dir = Path(state_dir or settings().state_dir)
        self.metrics = metrics or MonitorMetrics()
        self.sink = sink or AlertSink(metrics=self.metrics)
        self.clock = clock
        self.reference_loader = reference_loader
        self.model_loader = model_loader
        self._references: dict[str, Reference] = {}  # by model tag: a rollback switches back without reloading
        self._unloadable: set[str] = set()
        self.reports = ReportStore(self.state_dir / "reports" / "drift", self.config.reports_keep)
        self.report_limit = ReportLimiter(self.config.drift_report_every_s, self.config.latest_report_every_s)
        self.state_file = StateFile(self.monitor_dir / "state.json")
        state = self.state_file.load()
        self.window_id = state.window_id
        self.policy = AlertPolicy(
            AlertTracker(self.config.repeat_every, state.alerts),
            identity([]),
            self.config.alert_min_features,
            self.config.alert_windows,
            state.feature_streak,
            state.feature_streak_start,
        )
        self.retrain = RetrainController(
            self.config.retrain, self.monitor_dir / "retrain", self.metrics, clock, state.retrain
        )
        self.reference: Reference
        self.detector: DriftDetector
        self.decoder: PredictionDecoder | None = None
        self._install_reference(as_reference(reference_loader()))
        if self.reference.model not in ("dataframe", "unknown"):
            self._references[self.reference.model] = self.reference
        self.performance = PerformanceTracker(self.config.perf_window, self._decision_threshold())
        self.performance.pairs.extend(state.pairs)
        self.performance.load_state(state.pending)
        self.results: list[WindowDrift] = []
        self.malformed = 0
        self._labels_seen = -1
        self._last_reference_check = clock()

    @property
    def monitor_dir(self) -> Path:
        return self.state_dir / "monitor"

    @property
    def alerts(self) -> AlertTracker:
        return self.policy.tracker

    # ------------------------------------------------------------------ reference

    def drift_config(self, ref: Reference) -> DriftConfig:
        """The configured drift settings, with the model's calibration filling what was not set."""
        if ref.calibration is None or not self.config.use_calibration:
            return self.config.drift
        return ref.calibration.drift_config(self.config.drift, self.config.window.size)

    def _install_reference(self, ref: Reference) -> None:
        self.reference = ref
        self.detector = DriftDetector(ref.frame, ref.features, self.drift_config(ref))
        self.policy.lineage = Lineage.from_dict(ref.lineage) if ref.lineage else identity(ref.features)
        if self.decoder is None or self.decoder.features != list(ref.features):
            self.decoder = PredictionDecoder(ref.features, self.config.label_key)
        m = self.metrics
        for gauge in (m.drift_score, m.drift_detected, m.missing_value_rate, m.drift_threshold):
            gauge.clear()
        log.info(
            "reference: model %s, %d rows, %d features, %s, %s; methods %s",
            ref.model,
            len(ref.frame),
            len(ref.features),
            "seasonal" if self.detector.seasonal is not None else "flat",
            "calibrated thresholds" if ref.calibration is not None else "default thresholds",
            sorted({m for m, _t in self.detector.methods().values()}),
        )

    def _decision_threshold(self) -> float:
        if self.config.decision_threshold is not None:
            return self.config.decision_threshold
        return self.reference.threshold if self.reference.threshold is not None else 0.5

    def pr_auc_floor(self) -> float:
        if self.config.min_pr_auc is not None:
            return self.config.min_pr_auc
        offline = self.reference.metrics.get("pr_auc")
        if isinstance(offline, int | float) and math.isfinite(offline):
            return PR_AUC_FLOOR_RATIO * float(offline)
        return DEFAULT_PR_AUC_FLOOR

    def reference_for(self, tag: str) -> Reference | None:
        """The reference of model ``tag`` (cached); None without a ``model_loader`` or when it cannot be
        loaded (logged once; the current reference stays in use)."""
        if self.model_loader is None:
            return None
        ref = self._references.get(tag)
        if ref is not None or tag in self._unloadable:
            return ref
        try:
            ref = as_reference(self.model_loader(tag))
        except Exception as exc:  # noqa: BLE001 - keep monitoring with the current reference
            self._unloadable.add(tag)
            log.error("records name model %s, whose reference cannot be loaded (%s); still comparing with %s",
                      tag, exc, self.reference.model)
            return None
        if ref.model in ("dataframe", "unknown"):
            ref = replace(ref, model=tag)
        while len(self._references) >= 4:
            del self._references[next(iter(self._references))]
        self._references[tag] = ref
        return ref

    def use_reference(self, ref: Reference) -> None:
        """Compare from now on with ``ref`` (its drift settings, lineage and decision threshold)."""
        if ref.features != self.reference.features:
            log.warning("model %s has other features than %s", ref.model, self.reference.model)
        self._install_reference(ref)
        self._references.setdefault(ref.model, ref)
        self.performance.threshold = self._decision_threshold()

    def follow_model(self, tag: str) -> bool:
        """Records of the production variant name model ``tag``: use its reference; True if it changed."""
        if not tag or tag == self.reference.model:
            return False
        ref = self.reference_for(tag)
        if ref is None:
            return False
        log.info("records come from model %s (was %s): its reference in use", tag, self.reference.model)
        self.use_reference(ref)
        return True

    def reload_reference(self) -> bool:
        """Reload the production model's reference (after retraining or a promotion); True if the model
        changed. Not when the monitor follows the records' model (``model_loader``): serving may still
        serve the previous model, and its records say when it changed."""
        if self.model_loader is not None:
            return False
        try:
            ref = as_reference(self.reference_loader())
        except Exception as exc:  # noqa: BLE001 - keep monitoring with the old reference
            log.error("could not reload the reference: %s", exc)
            return False
        same_model = ref.model == self.reference.model and ref.model not in ("dataframe", "unknown")
        if same_model or (ref.features == self.reference.features and ref.frame.equals(self.reference.frame)):
            return False
        if ref.features != self.reference.features:
            log.warning("the new model has other features; windows in progress are dropped")
        self._install_reference(ref)
        self.performance.threshold = self._decision_threshold()
        return True

    def maybe_check_reference(self) -> None:
        now = self.clock()
        if now - self._last_reference_check >= self.config.reference_check_every_s:
            self._last_reference_check = now
            if self.reload_reference():
                log.info("production model changed to %s; new reference in use", self.reference.model)

    # ------------------------------------------------------------------ one window

    def process_window(
        self, rows: np.ndarray | pd.DataFrame, start: float = 0.0, end: float = 0.0, ts: np.ndarray | None = None
    ) -> WindowDrift:
        """Evaluate one window (float matrix in ``features + [score]`` order, or a DataFrame; ``ts`` the
        rows' event times for the seasonal reference) and act on it."""
        self.window_id += 1
        t0 = time.perf_counter()
        result = self.detector.evaluate(rows, start, end, self.window_id, ts=ts)
        result = replace(result, eval_seconds=time.perf_counter() - t0)
        self.results.append(result)
        del self.results[:-100]
        self._export(result)
        report = self._maybe_render(rows, result)
        for pending in self.policy.on_window(result, self.reference.model):
            self._send(pending, report)
        perf_low = self.update_performance(report)
        self._retrain(result, perf_low)
        self._save_state()
        drifted = result.drifted_features
        log.info(
            "window %d: %d rows, drift share %.2f (%d/%d features%s), score drift %.3f%s, eval %.0f ms",
            result.window_id,
            result.n_rows,
            result.drift_share,
            len(drifted),
            sum(c.tested for c in result.features.values()),
            f": {', '.join(drifted[:5])}" if drifted else "",
            result.prediction.score,
            " DRIFT" if result.prediction.detected else "",
            result.eval_seconds * 1000,
        )
        return result

    def _export(self, r: WindowDrift) -> None:
        m = self.metrics
        for name, c in r.features.items():
            m.drift_score.labels(feature=name).set(c.score)
            m.drift_detected.labels(feature=name).set(1.0 if c.detected else 0.0)
            m.missing_value_rate.labels(feature=name).set(c.missing_rate)
            m.drift_threshold.labels(feature=name).set(c.threshold)
        m.drift_share.set(r.drift_share)
        m.dataset_drift.set(1.0 if r.dataset_drift else 0.0)
        m.prediction_drift_score.set(r.prediction.score)
        m.prediction_drift_detected.set(1.0 if r.prediction.detected else 0.0)
        m.window_size.set(r.n_rows)
        m.window_eval_seconds.set(r.eval_seconds)
        m.windows_total.inc()
        m.last_window_timestamp.set(self.clock())

    def _send(self, pending: Pending, report: str) -> None:
        self.sink.send(self.policy.message(pending, report, self.reference.model, self.window_id))

    # ------------------------------------------------------------------ performance

    def update_performance(self, report: str = "") -> bool:
        """Recompute the rolling performance from the labels joined so far, export it, fire or resolve
        PerformanceDecay; returns whether performance is below its floor."""
        perf = self.performance.metrics()
        low, detail = self._performance_check(perf)
        self.metrics.performance_low.set(1.0 if low else 0.0)
        extra = {"model": self.reference.model, "pr_auc_floor": self.pr_auc_floor(), "min_recall": self.config.min_recall}
        pending = self.policy.on_performance(low, detail, perf, self.clock(), extra)
        if pending is not None:
            self._send(pending, report)
        self._labels_seen = self.performance.labelled
        return low

    def refresh_performance(self) -> None:
        """Update the performance if labels arrived since the last update."""
        if self.performance.labelled != self._labels_seen:
            self.update_performance()

    def _performance_check(self, perf: Performance | None) -> tuple[bool, str]:
        self.metrics.pr_auc_floor.set(self.pr_auc_floor())
        if perf is None:
            return False, ""
        m = self.metrics
        m.precision.set(perf.precision)
        m.recall.set(perf.recall)
        m.pr_auc.set(perf.pr_auc)
        m.labelled_rows.set(perf.n)
        cfg = self.config
        if perf.n < cfg.perf_min_labels or perf.positives < cfg.perf_min_positives:
            return False, ""
        problems = []
        state = self.policy.tracker.states.get(PERFORMANCE_DECAY)
        clear = 1.0 + cfg.perf_resolve_margin if state is not None and state.active else 1.0  # hysteresis
        floor = self.pr_auc_floor()
        if perf.pr_auc < floor * clear:
            problems.append(f"PR-AUC {perf.pr_auc:.3f} < {floor:.3f}" + ("" if clear == 1.0 else f" (+{cfg.perf_resolve_margin:.0%} to resolve)"))
        if cfg.min_recall is not None and perf.recall < cfg.min_recall * clear:
            problems.append(f"recall {perf.recall:.3f} < {cfg.min_recall:.3f}")
        return bool(problems), "; ".join(problems)

    # ------------------------------------------------------------------ reports

    def _maybe_render(self, rows: np.ndarray | pd.DataFrame, r: WindowDrift) -> str:
        """Path of the report that documents this window ('' if none): its own, or under persistent
        drift the latest drift report when this window's was skipped to save time."""
        if not self.config.render_reports:
            return ""
        now = self.clock()
        decision = self.report_limit.decide(r.any_drift, self.policy.active(FEATURE_DRIFT, PREDICTION_DRIFT), now)
        if decision == RENDER_DRIFT:
            path = self._render(rows, r)
            self.report_limit.drift_rendered(path, now)
            return path
        if decision == SKIP:
            self.metrics.reports_skipped.inc()
            return self.report_limit.last_drift_report
        if decision == RENDER_LATEST:
            self._render(rows, r)
        return ""

    def _render(self, rows: np.ndarray | pd.DataFrame, r: WindowDrift) -> str:
        columns = [*self.detector.features, SCORE_COLUMN]
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=columns)
        cols = [*r.features.values(), r.prediction]
        methods = {c.column: (c.method, c.threshold) for c in cols}
        categorical = [c for c, col in self.detector.categorical_columns().items() if col]
        meta = {
            "model": self.reference.model,
            "window_id": str(r.window_id),
            "window_start": iso(r.start),
            "window_end": iso(r.end),
        }
        path = self.reports.drift_path(r.window_id, r.end) if r.any_drift else self.reports.latest_path
        reference = self.detector.reference_frame(self.detector.last_reference_rows)
        try:
            render_report(reference, frame, methods, categorical, self.config.drift.drift_share, path, meta)
        except Exception as exc:  # noqa: BLE001 - a report failure must not stop monitoring
            log.error("drift report for window %d failed: %s", r.window_id, exc)
            return ""
        if r.any_drift:
            self.metrics.reports_written.labels(kind="drift").inc()
            self.reports.prune()
            try:  # the drifted window is also the latest one
                self.reports.latest_path.unlink(missing_ok=True)
                os.link(path, self.reports.latest_path)
            except OSError:
                pass
        else:
            self.metrics.reports_written.labels(kind="latest").inc()
        self.report_limit.latest_rendered(self.clock())
        return str(path)

    # ------------------------------------------------------------------ retraining, state, loop

    def _retrain(self, r: WindowDrift, perf_low: bool) -> None:
        code = self.retrain.poll()
        if code == 0 and self.reload_reference():
            log.info("retraining produced a new production model %s; new reference in use", self.reference.model)
        self.retrain.observe(r.drift_share, perf_low)

    def tick(self) -> None:
        """Periodic work between windows (the loop's stats tick): performance, reference, retraining."""
        self.refresh_performance()
        self.maybe_check_reference()
        if self.retrain.poll() == 0:
            self.reload_reference()

    def _save_state(self) -> None:
        self.state_file.save(
            MonitorState(
                window_id=self.window_id,
                feature_streak=self.policy.streak,
                feature_streak_start=self.policy.streak_start,
                alerts=self.alerts.to_state(),
                retrain=self.retrain.to_state(),
                pairs=list(self.performance.pairs),
                reference_model=self.reference.model,
                pending=self.performance.to_state(),
            )
        )

    def save_state(self) -> None:
        """Save the state (before the consumer commits offsets: what they cover is then on disk)."""
        self._save_state()

    def run(self, consumer, *args, **kwargs) -> int:
        """Consume from Kafka: :func:`monitoring.loop.consume` (same arguments after ``consumer``);
        returns the number of windows evaluated."""
        from monitoring.loop import consume

        return consume(self, consumer, *args, **kwargs)
